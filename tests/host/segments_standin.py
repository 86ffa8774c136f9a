"""A stand-in for ``edge_agent.segments`` (docs/protocol.md 5.3) until the `devlink` branch lands."""

from __future__ import annotations

MAX_MESSAGE = 1036


def split(message: bytes, size: int, counter: int):
    first = size - 3
    yield bytes((0x80 | (counter & 0x7F),)) + len(message).to_bytes(2, "big") + message[:first]
    pos, index = first, 1
    while pos < len(message):
        yield bytes((index & 0x7F,)) + message[pos:pos + size - 1]
        pos += size - 1
        index += 1


class Reassembler:
    def __init__(self) -> None:
        self.buf = b""
        self.length = 0
        self.next = 0
        self.bad_segments = 0

    def reset(self) -> None:
        self.buf, self.length = b"", 0

    def feed(self, segment: bytes) -> bytes | None:
        if segment and segment[0] & 0x80:
            if self.length:
                self.bad_segments += 1
            self.length, self.buf, self.next = int.from_bytes(segment[1:3], "big"), segment[3:], 1
        elif segment and self.length and segment[0] == self.next:
            self.buf += segment[1:]
            self.next = (self.next + 1) & 0x7F
        else:
            self.bad_segments += 1
            self.reset()
            return None
        if not 0 < self.length <= MAX_MESSAGE or len(self.buf) > self.length:
            self.bad_segments += 1
            self.reset()
            return None
        if len(self.buf) < self.length:
            return None
        out = self.buf
        self.reset()
        return out
