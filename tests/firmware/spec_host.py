"""A minimal host written from docs/protocol.md alone (base64, zlib's CRC-32, cbor2).

Device tests use it instead of the host package, so they check the firmware
against the specification and keep working whatever the host's state.
"""

from __future__ import annotations

import base64
import re
import time
import zlib

import cbor2

FRAME = re.compile(rb"#EA:([A-Za-z0-9+/=]*):([0-9a-f]{8})\r?$")


def encode(msg: dict) -> bytes:
    """One frame line carrying ``msg``."""
    payload = cbor2.dumps(msg)
    return b"#EA:" + base64.b64encode(payload) + b":%08x\r\n" % zlib.crc32(payload)


def messages(console: bytes) -> list[dict]:
    """Every valid frame on ``console``, decoded."""
    out = []
    for line in console.split(b"\n"):
        m = FRAME.match(line)
        if m:
            payload = base64.b64decode(m.group(1))
            if zlib.crc32(payload) == int(m.group(2), 16):
                out.append(cbor2.loads(payload))
    return out


def time_msg(announce: bool = False) -> dict:
    msg = {0: 2, 1: int(time.time() * 1000)}
    if announce:
        msg[2] = True
    return msg


class SpecHost:
    """Answers HELLO with TIME and BATCH with ACK; keeps the records it received."""

    def __init__(self) -> None:
        self.buf = b""
        self.messages: list[dict] = []
        self.tables: dict[int, list] = {}
        self.records: dict[int, tuple[str, object]] = {}   # seq -> (sensor name, value)

    def start(self) -> bytes:
        return encode(time_msg(announce=True))

    def receive(self, data: bytes) -> list[bytes]:
        """Console bytes in, reply frames out."""
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        replies = []
        for msg in messages(b"\n".join(lines) + b"\n"):
            self.messages.append(msg)
            kind = msg.get(0)
            if kind == 1:
                replies.append(encode(time_msg()))
            elif kind == 6:
                self.tables[msg[2]] = msg[3]
            elif kind == 7:
                seq = msg[2]
                table = self.tables.get(msg[6], [])
                for tick in msg[9]:
                    for i in range(1, len(tick), 2):
                        k = tick[i]
                        name = table[k][0] if k < len(table) else f"#{k}"
                        self.records[seq] = (name, tick[i + 1])
                        seq += 1
                replies.append(encode({0: 4, 1: msg[1], 2: seq}))
        return replies

    def statuses(self) -> list[dict]:
        return [m for m in self.messages if m.get(0) == 5]

    def values(self, name: str) -> list:
        return [v for _, (n, v) in sorted(self.records.items()) if n == name]
