"""A scripted device speaking protocol version 2, sans-I/O, for host tests.

It keeps the device's side of docs/protocol.md: a journal numbered from 0,
``acked`` and ``sent_end`` pointers, one batch in flight from the head of the
journal, the boot's epoch fixed by the first TIME, HELLO + SENSORS in answer
to a TIME whose key 2 is true (and the in-flight batch sent again), ACK and
REFUSE checked against ``acked`` <= n <= ``sent_end``. Messages go out as
payloads (``outbox``); the host's payloads come in through :meth:`receive`.
"""

from __future__ import annotations

from typing import Any

from edge_agent.messages import (Ack, Batch, Hello, Refuse, Sensors, Time, decode_message, encode_message,
                                 table_id)

SENSORS = [["temp", "Cel"], ["uptime", "ms"], ["heap_free", "B"], ["door", ""], ["mode", ""]]


class FakeDevice:
    """One device: ``sample()`` records, ``receive()`` host messages, read ``outbox``."""

    def __init__(self, device_id: str = "esp32-0123456789ab", board: str = "esp32", boot: int = 1,
                 sensors: list | None = None, per_batch: int = 8):
        self.device_id, self.board, self.boot = device_id, board, boot
        self.sensors = sensors or SENSORS
        self.table_id = table_id(self.sensors)
        self.per_batch = per_batch
        self.journal: list[tuple[int, int, Any]] = []     # (uptime_ms, index, value) by seq
        self.acked = 0
        self.sent_end = 0
        self.refused = 0
        self.epoch: int | None = None
        self.uptime_ms = 1000
        self.outbox: list[bytes] = []
        self.rejected: list[str] = []
        self.epoch_override: int | None = None

    # -- the device's own life

    def sample(self, *values: tuple[int, Any], at: int | None = None) -> None:
        """Record ``(index, value)`` pairs taken at uptime ``at`` (default: now, then 1 s later)."""
        at = self.uptime_ms if at is None else at
        for k, v in values:
            self.journal.append((at, k, v))
        self.uptime_ms = at + 1000

    def start(self) -> None:
        """Boot: announce ourselves (HELLO, SENSORS)."""
        self._announce()

    def _announce(self) -> None:
        self.outbox.append(encode_message(Hello(self.device_id, self.board, "0.2.0", self.boot,
                                                self.uptime_ms, len(self.journal), self.acked, 0,
                                                refused=self.refused)))
        self.outbox.append(encode_message(Sensors(self.device_id, self.table_id, self.sensors)))

    # -- messages from the host

    def receive(self, payload: bytes) -> None:
        """Handle one payload from the host, as the device's agent would."""
        msg = decode_message(payload)
        if isinstance(msg, Time):
            if self.epoch is None:
                self.epoch = msg.unix_ms - self.uptime_ms
            if msg.hello:
                self._announce()
                self.sent_end = self.acked        # the new host never saw the in-flight batch
            self._send_batch()
        elif isinstance(msg, Ack):
            if msg.next_seq <= self.acked:
                return
            if msg.next_seq > self.sent_end:
                self.rejected.append(f"ACK {msg.next_seq} past sent_end {self.sent_end}")
                return
            self.acked = msg.next_seq
            self.sent_end = max(self.sent_end, self.acked)
            self._send_batch()
        elif isinstance(msg, Refuse):
            if not self.acked <= msg.first_seq < msg.end_seq <= self.sent_end:
                self.rejected.append(f"REFUSE {msg.first_seq}..{msg.end_seq}")
                return
            self.refused += msg.end_seq - max(msg.first_seq, self.acked)
            self.acked = msg.end_seq
            self._send_batch()

    def _send_batch(self) -> None:
        if self.epoch is None or self.sent_end > self.acked or self.acked >= len(self.journal):
            return
        records = self.journal[self.acked:self.acked + self.per_batch]
        base = records[0][0]
        ticks: list[list] = []
        for uptime, k, v in records:
            if not ticks or ticks[-1][0] != uptime - base:
                ticks.append([uptime - base])
            ticks[-1] += [k, v]
        epoch = self.epoch if self.epoch_override is None else self.epoch_override
        self.outbox.append(encode_message(Batch(self.device_id, self.acked, self.boot, 0, 0, self.table_id,
                                                epoch, base, ticks)))
        self.sent_end = self.acked + len(records)

    def take(self) -> list[bytes]:
        """The payloads sent since the last call."""
        out, self.outbox = self.outbox, []
        return out
