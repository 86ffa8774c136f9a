# Serial frames (docs/protocol.md section 1): one message per text line,
#   #EA:<base64 payload>:<crc32 hex>\r\n
# The leading '#' makes a stray frame a comment to the REPL.
import binascii

from micropython import const

PREFIX = b"#EA:"
MAX_PAYLOAD = const(1024)
# prefix + base64(1024) + ':' + 8 hex digits
MAX_LINE = const(1381)


def encode(payload):
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("frame payload over 1024 bytes")
    crc = binascii.crc32(payload) & 0xFFFFFFFF
    return b"".join((PREFIX, binascii.b2a_base64(payload, newline=False),
                     b":%08x\r\n" % crc))


def is_frame(line):
    return line[:4] == PREFIX


def decode(line):
    # Returns the payload of one frame line (line ending optional); raises
    # ValueError naming what is wrong.
    end = len(line)
    while end and line[end - 1] in (10, 13):
        end -= 1
    if end > MAX_LINE:
        raise ValueError("frame too long")
    if line[:4] != PREFIX:
        raise ValueError("not a frame")
    sep = line.rfind(b":", 4, end)
    if sep < 4 or end - sep != 9:
        raise ValueError("frame malformed")
    crc = 0
    for c in line[sep + 1:end]:
        if 48 <= c <= 57:
            crc = crc * 16 + c - 48
        elif 97 <= c <= 102:
            crc = crc * 16 + c - 87
        else:
            raise ValueError("frame malformed")
    b64 = line[4:sep]
    try:
        payload = binascii.a2b_base64(b64)
    except ValueError:
        raise ValueError("frame bad base64")
    # Decoders differ in what they tolerate; only the one canonical
    # encoding of the payload is a frame, on the device as on the host.
    if binascii.b2a_base64(payload, newline=False) != b64:
        raise ValueError("frame bad base64")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("frame too long")
    if (binascii.crc32(payload) & 0xFFFFFFFF) != crc:
        raise ValueError("frame bad crc")
    return payload
