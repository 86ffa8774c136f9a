# Serial frames (docs/protocol.md section 1): one message per text line,
#   #EA:<base64 payload>:<crc32 hex>\r\n
# The leading '#' makes a stray frame a comment to the REPL. The payload limit
# is the message limit (messages.MAX_MESSAGE); the line limit follows from it.
import binascii

from edgefw.messages import MAX_MESSAGE

from micropython import const

PREFIX = b"#EA:"
# prefix + base64 of the largest payload + ':' + 8 hex digits (1381 bytes)
MAX_LINE = 4 + 4 * ((MAX_MESSAGE + 2) // 3) + 9


_CHUNK = const(96)  # payload bytes base64-encoded at a time (3 | 96)


def encode(payload):
    parts = []
    send(parts.append, payload)
    return b"".join(parts)


def send(write, payload):
    # Writes the frame line of payload through write(bytes). Base64 is made
    # a chunk at a time: no allocation is larger than a chunk, so a board's
    # heap, fragmented after days, always has room, and no line-sized output
    # buffer is kept.
    n = len(payload)
    if n > MAX_MESSAGE:
        raise ValueError("frame payload over %d bytes" % MAX_MESSAGE)
    mv = memoryview(payload)
    write(PREFIX)
    for i in range(0, n, _CHUNK):
        write(binascii.b2a_base64(mv[i:i + _CHUNK], newline=False))
    write(b":%08x\r\n" % (binascii.crc32(payload) & 0xFFFFFFFF))


def is_frame(line):
    # Byte by byte: `line` may be a memoryview of the link's line buffer.
    if len(line) < 4:
        return False
    for i in range(4):
        if line[i] != PREFIX[i]:
            return False
    return True


def decode(line):
    # Returns the payload of one frame line (bytes, bytearray or memoryview;
    # line ending optional); raises ValueError naming what is wrong. Only the
    # payload is allocated, so the link can decode from its line buffer.
    end = len(line)
    while end and line[end - 1] in (10, 13):
        end -= 1
    if end > MAX_LINE:
        raise ValueError("frame too long")
    if not is_frame(line):
        raise ValueError("not a frame")
    sep = end - 9
    if sep < 4 or line[sep] != 58:
        raise ValueError("frame malformed")
    crc = 0
    for i in range(sep + 1, end):
        c = line[i]
        if 48 <= c <= 57:
            crc = crc * 16 + c - 48
        elif 97 <= c <= 102:
            crc = crc * 16 + c - 87
        else:
            raise ValueError("frame malformed")
    b64 = memoryview(line)[4:sep]
    for c in b64:
        if c == 58:
            raise ValueError("frame malformed")
    try:
        payload = binascii.a2b_base64(b64)
    except ValueError:
        raise ValueError("frame bad base64")
    # Decoders differ in what they tolerate; only the one canonical
    # encoding of the payload is a frame, on the device as on the host.
    enc = binascii.b2a_base64(payload, newline=False)
    if len(enc) != len(b64):
        raise ValueError("frame bad base64")
    for i in range(len(enc)):
        if enc[i] != b64[i]:
            raise ValueError("frame bad base64")
    if len(payload) > MAX_MESSAGE:
        raise ValueError("frame too long")
    if (binascii.crc32(payload) & 0xFFFFFFFF) != crc:
        raise ValueError("frame bad crc")
    return payload
