"""The ingest core: message payloads in, reply payloads out, for every link.

Transport-neutral: a link (serial frames today, BLE next) hands each message
payload to its :class:`LinkSession` and gives it a thread-safe ``send``
callable for replies. Per-device state (sensor tables) lives in the
:class:`IngestCore`, shared by every link; writes go to the one
:class:`~edge_agent.telemetry.writer.RegistryWriter`.

Rules it keeps (docs/protocol.md sections 2.3-2.9):

- **A link carries one device.** The first accepted HELLO binds the link to
  its device id; SENSORS and BATCH for another id on that link are not
  stored, not answered, and counted (``foreign``). A HELLO whose board
  differs from the one the registry holds (provisioning recorded it) is
  refused and the link stays unbound; a HELLO never overwrites the board.
- **Acknowledge after the commit.** A batch's ACK (or REFUSE) is sent from
  the writer's completion, after its transaction is durable.
- **Nothing dropped silently.** A well-formed batch of the link's device that
  cannot be stored (unknown sensor index, a time outside 2020..2100) is
  refused with a reason word and kept in the registry (bytes, range,
  reason, time); a batch naming a table the host has not seen is answered
  with TIME key 2 = true (the device then sends its tables) and waits. Bad
  messages are logged and counted with their reason.
- **A failure costs at most its message.** Nothing a message does can stop
  the session: errors are counted and logged, the batch is not acknowledged
  and comes again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, Callable, Sequence

import cbor2

from edge_agent.messages import (END_TIME_MS, MIN_TIME_MS, TIME_ESTIMATED, Ack, Batch, Hello,
                                 MessageError, OldProtocol, OtaQuery, OtaState, OtaWindow, Refuse, Sensors,
                                 Status, Time, decode_message, encode_message)
from edge_agent.store import BOOLEAN, Store
from edge_agent.telemetry.writer import Job, RegistryWriter

log = logging.getLogger("edge.ingest")

Row = tuple[int, int, int, int, Any, int]     # a samples row: (dev, seq, series, t_ms, value, flags)
_FLAGS = {int: 0, float: 0, str: 0, bool: BOOLEAN}   # samples.flags by the type of a value (the decoder
                                                     # allows no other)


class LinkClosed(OSError):
    """A link's ``send`` when it is closed: the reply is dropped and the device asks again."""


class Refusal(Exception):
    """A well-formed batch the host will never store: ``reason`` is the REFUSE word."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def resolve(batch: Batch, series: Sequence[int], dev: int = 0) -> list[Row]:
    """The records of ``batch`` as samples rows; :class:`Refusal` if unstorable.

    ``series[k]`` is the series id of sensor index ``k`` (before the ids are
    known, pass ``range(len(table))``: the rows then carry the indexes).
    ``t_ms = epoch_ms + base_uptime_ms + dt_ms`` (section 2.7); ticks never go
    back in time (the decoder checked), so the first and last tick bound them all.
    Rows are built with C-level iterators over the whole batch: this runs once per record.
    """
    base = batch.epoch_ms + batch.base_uptime_ms
    ticks = batch.ticks
    for t in (base + ticks[0][0], base + ticks[-1][0]):
        if not MIN_TIME_MS <= t < END_TIME_MS:
            raise Refusal("time_range", f"a record time of {t} ms is outside 2020-01-01..2100-01-01 "
                          f"(epoch {batch.epoch_ms} + uptime {batch.base_uptime_ms} + dt)")
    values = list(chain.from_iterable([tick[2::2] for tick in ticks]))
    n = len(values)
    times = chain.from_iterable([[base + tick[0]] * (len(tick) >> 1) for tick in ticks])
    try:
        rows = list(zip(repeat(dev, n), range(batch.first_seq, batch.first_seq + n),
                        map(series.__getitem__, chain.from_iterable([tick[1::2] for tick in ticks])),
                        times, values, map(_FLAGS.__getitem__, map(type, values))))
    except IndexError:
        k = max(k for tick in ticks for k in tick[1::2])
        raise Refusal("bad_index", f"sensor index {k} in a table of {len(series)} sensors "
                      f"(table {batch.table_id})") from None
    return rows


@dataclass
class LinkStats:
    """What one link delivered; printed in the ingest summary."""

    source: str
    device: str | None = None
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    conflicts: int = 0
    refused: int = 0
    failed: int = 0          # batches the registry could not store (not acknowledged)
    bad: dict[str, int] = field(default_factory=dict)
    early: int = 0           # messages before the link's HELLO: asked for again (2.3), not bad
    connects: int = 0
    last_record: float = 0.0

    @property
    def devices(self) -> set[str]:
        """The device bound to this link, as a set (empty before a HELLO)."""
        return {self.device} if self.device else set()

    def bad_total(self) -> int:
        """Messages and frames rejected on this link, all reasons together."""
        return sum(self.bad.values())


class IngestCore:
    """Per-device state shared by every link, and the registry writer they all use.

    ``registry`` is a connection for reads (registered boards, known tables);
    it is used under the core's lock, so it may be shared between threads.
    """

    def __init__(self, writer: RegistryWriter, registry: Store, clock: Callable[[], float] = time.time):
        self.writer = writer
        self.registry = registry
        self.clock = clock
        self.lock = threading.RLock()
        self.tables: dict[tuple[str, int], list] = {}
        # (device, table id) -> (device number, series id per sensor index),
        # learnt from a committed transaction: ids that can no longer be undone.
        self.series: dict[tuple[str, int], tuple[int, list[int]]] = {}

    def link(self, source: str, send: Callable[[bytes], None]) -> "LinkSession":
        """A session for one link; ``send(payload)`` must be safe to call from any thread."""
        return LinkSession(self, source, send)

    def table(self, device_id: str, table_id: int) -> list | None:
        """A device's sensor table, from memory or the registry; None if never seen."""
        table = self.tables.get((device_id, table_id))   # a known table needs no lock: tables only grow
        if table is not None:
            return table
        with self.lock:
            key = (device_id, table_id)
            table = self.tables.get(key)
            if table is None:
                raw = self.registry.table(device_id, table_id)
                if raw is not None:
                    table = self.tables[key] = cbor2.loads(raw)
            return table

    def registered_board(self, device_id: str) -> str | None:
        """The board the registry holds for ``device_id``."""
        with self.lock:
            return self.registry.registered_board(device_id)


class LinkSession:
    """The ingest protocol on one link (sans-I/O: payloads in, payloads out through ``send``)."""

    def __init__(self, core: IngestCore, source: str, send: Callable[[bytes], None]):
        self.core = core
        self.source = source
        self.send = send
        self.stats = LinkStats(source)
        self.bound: str | None = None
        self.hello_refused = False
        self._old_reported = False
        # The OTA server of this link (edge_agent.ota_server.OtaServer), set by
        # a link that serves updates; without one OTA messages are only logged.
        self.ota: Any = None

    def opening(self) -> None:
        """The link has (re)opened: say a host listens and ask the device to announce itself."""
        self.stats.connects += 1
        self._send(Time(unix_ms=self._now_ms(), hello=True))

    def receive_message(self, payload: bytes) -> None:
        """Take one message payload from the link; never raises for what the payload holds."""
        try:
            msg = decode_message(payload)
        except OldProtocol as e:
            self.bad("old_protocol", payload)
            if not self._old_reported:
                log.error("%s: %s; fix: %s", self.source, e.message, e.hint)
                self._old_reported = True
            return
        except MessageError as e:
            self.bad("bad_message", payload)
            log.warning("%s: skipped a bad message: %s", self.source, e.message)
            return
        try:
            self._handle(msg, payload)
        except Exception:   # a bug must cost this message, never the link
            self.bad("internal_error", payload)
            log.exception("%s: error handling %s", self.source, type(msg).__name__)

    # -- counting

    def bad(self, reason: str, sample: bytes) -> None:
        """Count one rejected frame or message, here and in the registry."""
        with self.core.lock:
            self.stats.bad[reason] = self.stats.bad.get(reason, 0) + 1
        source, now = self.source, self.core.clock()
        self.core.writer.submit(Job(lambda s: s.note_bad_frame(source, reason, bytes(sample[:200]), now),
                                    what=f"counting a {reason} from {source}"))

    # -- messages

    def _now_ms(self) -> int:
        return int(self.core.clock() * 1000)

    def _send(self, msg: Time | Ack | Refuse) -> None:
        self._send_payload(encode_message(msg), type(msg).__name__)

    def _send_payload(self, payload: bytes, what: str) -> None:
        try:
            self.send(payload)
        except LinkClosed as e:  # closed on purpose or gone: the device will ask again
            log.debug("%s: %s not sent: %s", self.source, what, e)
        except Exception as e:   # a failing link: the same, but worth a word
            log.warning("%s: could not send %s: %s", self.source, what, e)

    def _handle(self, msg: Any, payload: bytes) -> None:
        if isinstance(msg, Hello):
            self._hello(msg, payload)
        elif isinstance(msg, Sensors):
            if self._for_this_link(msg.device_id, payload):
                self._sensors(msg)
        elif isinstance(msg, Batch):
            if self._for_this_link(msg.device_id, payload):
                self._batch(msg, payload)
        elif isinstance(msg, Status):
            self._status(msg)
        elif isinstance(msg, (OtaQuery, OtaWindow, OtaState)):
            if self._for_this_link(msg.device_id, payload):
                if self.ota is not None:
                    self.ota.receive(msg, payload)
                else:
                    log.info("%s: %s of %s not served: this link serves no updates (`edge gateway run` "
                             "and `edge ota push` do)", self.source, type(msg).__name__, msg.device_id)
        else:   # TIME, ACK, REFUSE, OTA_OFFER and OTA_CHUNK travel host -> device
            self.bad("unexpected", payload)
            log.warning("%s: a device sent %s, which only a host sends", self.source, type(msg).__name__)

    def _for_this_link(self, device_id: str, payload: bytes) -> bool:
        if self.bound is None:
            # Sent to a host before this one (2.3): the device announces itself and
            # sends it again. Counted, but not a bad frame.
            with self.core.lock:
                self.stats.early += 1
            if not self.hello_refused:
                self._send(Time(unix_ms=self._now_ms(), hello=True))
            return False
        if device_id != self.bound:
            self.bad("foreign", payload)
            log.warning("%s: refused a message for %s on the link of %s", self.source, device_id, self.bound)
            return False
        return True

    def _hello(self, hello: Hello, payload: bytes) -> None:
        if self.bound is not None and hello.device_id != self.bound:
            self.bad("foreign", payload)
            log.warning("%s: refused a HELLO from %s on the link of %s", self.source, hello.device_id,
                        self.bound)
            return
        registered = self.core.registered_board(hello.device_id)
        if registered is not None and registered != hello.board:
            self.hello_refused = True
            self.bad("board_mismatch", payload)
            log.error("%s: refused HELLO of %s: it says board %r but the registry holds %r; "
                      "fix: re-provision the board (edge flash) if it really changed",
                      self.source, hello.device_id, hello.board, registered)
            return
        self.bound = hello.device_id
        self.hello_refused = False
        self.stats.device = hello.device_id
        now = self.core.clock()
        self.core.writer.submit(Job(lambda s: s.note_device(hello, now), what=f"HELLO of {hello.device_id}"))
        self._send(Time(unix_ms=self._now_ms()))

    def _sensors(self, msg: Sensors) -> None:
        with self.core.lock:
            self.core.tables[(msg.device_id, msg.table_id)] = msg.sensors
        raw = cbor2.dumps(msg.sensors, canonical=True)
        now = self._now_ms()
        self.core.writer.submit(Job(lambda s: s.put_table(msg.device_id, msg.table_id, raw, now),
                                    what=f"table {msg.table_id} of {msg.device_id}"))

    def _status(self, msg: Status) -> None:
        level = logging.INFO if msg.state == "ok" else logging.WARNING
        log.log(level, "%s: device %s reports %s: %s", self.source, msg.device_id or "?",
                msg.state, msg.reason)

    def _batch(self, batch: Batch, payload: bytes) -> None:
        sensors = self.core.table(batch.device_id, batch.table_id)
        if sensors is None:
            # Not refused: the device can send the table. Ask for it and wait for the batch again.
            self.bad("unknown_table", payload)
            self._send(Time(unix_ms=self._now_ms(), hello=True))
            return
        received = self.core.clock()
        known = self.core.series.get((batch.device_id, batch.table_id))
        try:
            rows = resolve(batch, known[1], known[0]) if known else resolve(batch, range(len(sensors)))
        except Refusal as r:
            self._refuse(batch, payload, r, received)
            return
        self._store(batch, sensors, rows, received, known)

    def _refuse(self, batch: Batch, payload: bytes, refusal: Refusal, received: float) -> None:
        end = batch.first_seq + batch.count
        source, device_id = self.source, batch.device_id
        seen_ms = int(received * 1000)
        log.warning("%s: refusing records %d..%d of %s: %s", source, batch.first_seq, end - 1, device_id,
                    refusal)

        def keep(store: Store) -> None:
            store.note_refused(device_id, source, batch.first_seq, end, refusal.reason, refusal.detail,
                               payload, seen_ms)

        def done(_: Any, error: BaseException | None) -> None:
            if error is not None:
                self._failed(batch, error)
                return
            with self.core.lock:
                self.stats.refused += batch.count
            self._send(Refuse(device_id, batch.first_seq, end, refusal.reason))

        self.core.writer.submit(Job(keep, done, what=f"refused batch {batch.first_seq} of {device_id}"))

    def _store(self, batch: Batch, sensors: list, rows: list[Row], received: float,
               known: tuple[int, list[int]] | None) -> None:
        """Submit the rows; without ``known`` ids they carry sensor indexes, mapped in the writer."""
        writer, core = self.core.writer, self.core
        device_id, table_id, boot, source = batch.device_id, batch.table_id, batch.boot, self.source
        estimated = batch.time_basis == TIME_ESTIMATED
        received_ms = int(received * 1000)
        end = batch.first_seq + len(rows)
        ack = encode_message(Ack(device_id, end))

        def apply(store: Store) -> tuple[int, list, tuple[int, list[int]]]:
            ids = known
            if ids is None:
                key = (device_id, table_id)
                ids = writer.cache.get(key)
                if ids is None:
                    dev = store.device_number(device_id, received_ms)
                    ids = writer.cache[key] = (dev, store.series_numbers(dev, [tuple(e) for e in sensors]))
                dev, series = ids
                samples = [(dev, seq, series[k], t, v, f) for _, seq, k, t, v, f in rows]
            else:
                samples = rows
            inserted, conflicts = store.insert_samples(ids[0], samples, boot, estimated, received_ms,
                                                       device_id, source)
            store.note_seen(device_id, received, batch.dropped)
            return inserted, conflicts, ids

        def done(result: tuple[int, list, tuple[int, list[int]]] | None, error: BaseException | None) -> None:
            if error is not None or result is None:
                self._failed(batch, error)
                return
            inserted, conflicts, ids = result
            with core.lock:
                if known is None:
                    core.series[(device_id, table_id)] = ids      # committed: safe for any link
                self.stats.batches += 1
                self.stats.records += inserted
                self.stats.conflicts += len(conflicts)
                self.stats.duplicates += len(rows) - inserted - len(conflicts)
                if inserted:
                    self.stats.last_record = received
            if conflicts:
                log.warning("%s: %d record(s) of %s sent again with other content (first: seq %d); "
                            "the first kept, see `edge telemetry show`", source, len(conflicts),
                            device_id, conflicts[0])
            self._send_payload(ack, "Ack")

        writer.submit(Job(apply, done, records=len(rows), what=f"batch {batch.first_seq} of {device_id}"))

    def _failed(self, batch: Batch, error: BaseException | None) -> None:
        with self.core.lock:
            self.stats.failed += 1
        log.error("%s: batch %d..%d of %s not stored (%s); not acknowledged, the device will send it again",
                  self.source, batch.first_seq, batch.first_seq + batch.count - 1, batch.device_id, error)
