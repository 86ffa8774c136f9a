"""Telemetry ingest: frames from a console in, records in the registry, ACKs out.

:class:`PortSession` is the sans-I/O core for one console: bytes in
(:meth:`PortSession.receive`), frames to write back out. It stores a batch
before it acknowledges it, so a record leaves the device's journal only once
it is committed here; retransmissions are idempotent because the store keys
records by (device, sequence).

:func:`run_ports` drives one session per serial port in a thread each,
reconnecting when a port goes away and comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from edge_agent.frames import BadFrame, ConsoleLine, Frame, FrameDecoder, encode_frame
from edge_agent.messages import (Ack, Batch, Hello, MessageError, Status, Time, decode_message,
                                 encode_message)
from edge_agent.senml import resolve
from edge_agent.store import Store

log = logging.getLogger("edge.ingest")


@dataclass
class PortStats:
    """What one console delivered; printed in the ingest summary."""

    port: str
    devices: set[str] = field(default_factory=set)
    batches: int = 0
    records: int = 0
    duplicates: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    connects: int = 0
    last_record: float = 0.0

    def bad_total(self) -> int:
        return sum(self.bad.values())


class PortSession:
    """Ingest protocol for one console (sans-I/O)."""

    def __init__(self, source: str, store: Store, clock: Callable[[], float] = time.time):
        self.source = source
        self.store = store
        self.clock = clock
        self.decoder = FrameDecoder()
        self.stats = PortStats(source)
        self.boot_start: dict[str, float] = {}
        self.on_console: Callable[[bytes], None] | None = None

    def start(self) -> bytes:
        """Bytes to write when the console (re)opens: our clock, which also says a host listens."""
        self.decoder = FrameDecoder()
        self.stats.connects += 1
        return self._time_frame(hello=True)

    def _time_frame(self, hello: bool = False) -> bytes:
        msg = Time(unix_ms=int(self.clock() * 1000), hello=True if hello else None)
        return encode_frame(encode_message(msg))

    def _bad(self, reason: str, sample: bytes) -> None:
        self.stats.bad[reason] = self.stats.bad.get(reason, 0) + 1
        log.warning("%s: skipped bad frame (%s): %r", self.source, reason, sample[:60])
        self.store.note_bad_frame(self.source, reason, sample[:200])

    def receive(self, data: bytes) -> list[bytes]:
        """Feed console bytes; returns the frames to write back, in order."""
        out: list[bytes] = []
        for ev in self.decoder.feed(data):
            if isinstance(ev, ConsoleLine):
                if self.on_console:
                    self.on_console(ev.text)
            elif isinstance(ev, BadFrame):
                self._bad(ev.reason, ev.line)
            elif isinstance(ev, Frame):
                try:
                    msg = decode_message(ev.payload)
                    reply = self._handle(msg)
                except MessageError as e:
                    self._bad("bad_message", ev.payload)
                    log.warning("%s: %s", self.source, e)
                    continue
                if reply is not None:
                    out.append(reply)
        return out

    def _handle(self, msg) -> bytes | None:
        now = self.clock()
        if isinstance(msg, Hello):
            self.stats.devices.add(msg.device_id)
            self.boot_start[msg.device_id] = now - msg.uptime_ms / 1000
            self.store.note_device(msg, now)
            return self._time_frame()
        if isinstance(msg, Batch):
            records = resolve(msg, now, self.boot_start.get(msg.device_id))
            inserted = self.store.add_batch(msg.device_id, records, now, dropped=msg.dropped)
            self.stats.devices.add(msg.device_id)
            self.stats.batches += 1
            self.stats.records += inserted
            self.stats.duplicates += len(records) - inserted
            if inserted:
                self.stats.last_record = now
            return encode_frame(encode_message(Ack(device_id=msg.device_id,
                                                   next_seq=msg.first_seq + len(records))))
        if isinstance(msg, Status):
            level = logging.INFO if msg.state == "ok" else logging.WARNING
            log.log(level, "%s: device %s reports %s: %s", self.source, msg.device_id or "?",
                    msg.state, msg.reason)
            return None
        # TIME/ACK travel host -> device; a device never sends them.
        raise MessageError(f"unexpected {type(msg).__name__} from a device")


def _open(port: str, baud: int):
    import serial

    return serial.serial_for_url(port, baudrate=baud, timeout=0.05, write_timeout=2)


def pump_port(port: str, db: str, stop: threading.Event, stats_out: dict[str, PortStats],
              baud: int = 115200, on_console: Callable[[str, bytes], None] | None = None) -> None:
    """Ingest from one port until ``stop`` is set, reopening it whenever it goes away."""
    import serial

    store = Store(db)
    session = PortSession(port, store)
    stats_out[port] = session.stats
    if on_console:
        session.on_console = lambda text: on_console(port, text)
    delay = 0.2
    try:
        while not stop.is_set():
            try:
                ser = _open(port, baud)
            except (serial.SerialException, OSError) as e:
                log.debug("%s: cannot open (%s); retrying", port, e)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            log.info("%s: connected", port)
            try:
                ser.write(session.start())
                while not stop.is_set():
                    data = ser.read(4096)
                    if data:
                        for reply in session.receive(data):
                            ser.write(reply)
            except (serial.SerialException, OSError) as e:
                log.warning("%s: port lost (%s); waiting for it to come back", port, e)
            finally:
                try:
                    ser.close()
                except Exception:  # closing a vanished port may fail; nothing to keep
                    pass
    finally:
        store.close()


def run_ports(ports: list[str], db: str, *, duration: float | None = None,
              idle: float | None = None, baud: int = 115200,
              on_console: Callable[[str, bytes], None] | None = None,
              on_tick: Callable[[dict[str, PortStats]], None] | None = None) -> dict[str, PortStats]:
    """Ingest from every port at once until ``duration`` passes, ``idle`` seconds
    go by with no new record (after at least one), or Ctrl-C."""
    Store(db).close()  # create / migrate once, before the threads race to
    stop = threading.Event()
    stats: dict[str, PortStats] = {}
    threads = [threading.Thread(target=pump_port, args=(p, db, stop, stats, baud, on_console),
                                name=f"ingest {p}", daemon=True) for p in ports]
    for t in threads:
        t.start()
    started = time.time()
    try:
        while True:
            time.sleep(0.2)
            now = time.time()
            if on_tick:
                on_tick(stats)
            if duration is not None and now - started >= duration:
                break
            if idle is not None:
                last = max((s.last_record for s in stats.values()), default=0.0)
                if last and now - last >= idle:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    return stats
