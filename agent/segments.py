"""Segments of the BLE link: a message cut into ATT values (docs/protocol.md 5.3).

Sans-I/O, as the device's ``edgefw.segments``; the shared vectors in
``tests/vectors/segments.json`` keep the two byte-compatible.

Each segment starts with one header byte. A **first** segment is
``1ccccccc`` (``c``: the sender's message counter modulo 128, informative)
followed by the whole message's length in two big-endian bytes (1..1036); a
**continuation** is ``0iiiiiii``, its index in the message modulo 128 (the
first segment is index 0). The data follows the header (and the length).

Rules :class:`Reassembler` keeps:

- at most :data:`MAX_MESSAGE` bytes are held, whatever arrives;
- a bad segment (empty; a first one shorter than 3 bytes, or with a length of
  0 or above 1036, or with more data than its length; a continuation with no
  message in progress or the wrong index; data running past the length)
  drops the message in progress, adds one to ``bad_segments`` and waits for
  the next first segment;
- a first segment while a message is unfinished counts the unfinished one,
  then is judged on its own;
- :meth:`Reassembler.reset` (a disconnect) drops the unfinished message
  without counting it.
"""

from __future__ import annotations

from collections.abc import Iterator

MAX_MESSAGE = 1036   # a sealed message: 4-byte counter, 1024 bytes, 8-byte tag
MIN_SEGMENT = 4      # a first segment's header and length, and one byte of data
_FIRST = 0x80
_INDEX = 0x7F


def split(message: bytes, size: int, counter: int) -> Iterator[bytes]:
    """The segments of ``message`` for ATT values of ``size`` bytes (MTU - 3).

    ``counter`` is the message's number on its characteristic (kept mod 128).
    """
    n = len(message)
    if not 0 < n <= MAX_MESSAGE:
        raise ValueError(f"a segmented message is 1..{MAX_MESSAGE} bytes, not {n}")
    if size < MIN_SEGMENT:
        raise ValueError(f"a segment is at least {MIN_SEGMENT} bytes, not {size}")
    take = min(size - 3, n)
    yield bytes((_FIRST | (counter & _INDEX), n >> 8, n & 0xFF)) + message[:take]
    pos, index = take, 1
    while pos < n:
        take = min(size - 1, n - pos)
        yield bytes((index & _INDEX,)) + message[pos:pos + take]
        pos += take
        index += 1


class Reassembler:
    """Joins segments into messages, one message in progress at a time."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._length = 0      # 0: no message in progress
        self._next = 0
        self.bad_segments = 0

    def reset(self) -> None:
        """Drop the unfinished message (a disconnect); not counted."""
        self._length = 0
        self._buf.clear()

    def _bad(self) -> None:
        self.reset()
        self.bad_segments += 1

    def feed(self, segment: bytes) -> bytes | None:
        """Take one ATT value; return the message it completes, if any."""
        if not segment:
            self._bad()
            return None
        header = segment[0]
        if header & _FIRST:
            if self._length:
                self._bad()
            if len(segment) < 3:
                self._bad()
                return None
            length = int.from_bytes(segment[1:3], "big")
            if not 0 < length <= MAX_MESSAGE or len(segment) - 3 > length:
                self._bad()
                return None
            self._buf[:] = segment[3:]
            self._length = length
            self._next = 1
        else:
            if not self._length or header != self._next:
                self._bad()
                return None
            if len(self._buf) + len(segment) - 1 > self._length:
                self._bad()
                return None
            self._buf += segment[1:]
            self._next = (self._next + 1) & _INDEX
        if len(self._buf) < self._length:
            return None
        message = bytes(self._buf)
        self.reset()
        return message
