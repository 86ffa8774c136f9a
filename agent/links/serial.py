"""The serial link: a board's console, its frames, and the port (pyserial).

:class:`SerialLink` owns a port and a :class:`~edge_agent.frames.FrameDecoder`;
it hands each frame's payload to its
:class:`~edge_agent.telemetry.ingest.LinkSession` and writes the replies the
session sends, from any thread (the registry writer sends ACKs), under a lock.
:meth:`SerialLink.feed` is the sans-I/O half (bytes in); :meth:`SerialLink.run`
reads the port, reopening it when it goes away and comes back.

A failure costs at most a line: anything raised while handling one (a bad
frame, a console callback that fails, a bug) is logged and counted, and the
link reads on.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from edge_agent.frames import BadFrame, ConsoleLine, Frame, FrameDecoder, encode_frame
from edge_agent.store import Store
from edge_agent.telemetry.ingest import IngestCore, LinkStats
from edge_agent.telemetry.writer import RegistryWriter

log = logging.getLogger("edge.serial")

MIN_BAUD, MAX_BAUD = 50, 12_000_000


class SerialLink:
    """One console port carrying one device's messages."""

    def __init__(self, port: str, core: IngestCore, baud: int = 115200,
                 on_console: Callable[[str, bytes], None] | None = None,
                 write: Callable[[bytes], Any] | None = None):
        self.port = port
        self.baud = baud
        self.on_console = on_console
        self.decoder = FrameDecoder()
        self._lock = threading.Lock()
        self._write = write           # the open port's write (None while closed)
        self.session = core.link(port, self._send)

    @property
    def stats(self) -> LinkStats:
        """What this link delivered."""
        return self.session.stats

    def _send(self, payload: bytes) -> None:
        frame = encode_frame(payload)
        with self._lock:
            if self._write is None:
                raise OSError(f"{self.port} is closed")
            self._write(frame)

    def opened(self, write: Callable[[bytes], Any]) -> None:
        """The port is open: replies go to ``write``; greet the device."""
        with self._lock:
            self._write = write
        self.decoder = FrameDecoder()
        self.session.opening()

    def closed(self) -> None:
        """The port went away: replies are dropped until it reopens (the device asks again)."""
        with self._lock:
            self._write = None

    def feed(self, data: bytes) -> None:
        """Take console bytes: console lines to ``on_console``, frames to the session."""
        for ev in self.decoder.feed(data):
            try:
                if isinstance(ev, Frame):
                    self.session.receive_message(ev.payload)
                elif isinstance(ev, ConsoleLine):
                    if self.on_console:
                        self.on_console(self.port, ev.text)
                elif isinstance(ev, BadFrame):
                    log.warning("%s: skipped bad frame (%s): %r", self.port, ev.reason, ev.line[:60])
                    self.session.bad(ev.reason, ev.line)
            except Exception:   # never the link: this line only
                log.exception("%s: error handling a console line", self.port)
                try:
                    self.session.bad("internal_error", b"")
                except Exception:
                    pass

    def run(self, stop: threading.Event) -> None:
        """Read the port until ``stop`` is set, reopening it whenever it goes away."""
        import serial

        delay = 0.2
        while not stop.is_set():
            try:
                ser = serial.serial_for_url(self.port, baudrate=self.baud, timeout=0.05, write_timeout=2)
            except (serial.SerialException, OSError, ValueError) as e:
                log.debug("%s: cannot open (%s); retrying", self.port, e)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            log.info("%s: connected", self.port)
            try:
                self.opened(ser.write)
                while not stop.is_set():
                    data = ser.read(4096)
                    if data:
                        self.feed(data)
            except (serial.SerialException, OSError) as e:
                log.warning("%s: port lost (%s); waiting for it to come back", self.port, e)
            finally:
                self.closed()
                try:
                    ser.close()
                except Exception:  # closing a vanished port may fail; nothing to keep
                    pass


def check_baud(baud: int) -> None:
    """Raise ValueError naming the accepted range if ``baud`` is not a usable rate."""
    if type(baud) is not int or not MIN_BAUD <= baud <= MAX_BAUD:
        raise ValueError(f"{baud!r} is not a baud rate; use {MIN_BAUD}..{MAX_BAUD} (115200 for the agent)")


class IngestResult:
    """What :func:`run_ports` did: per-link stats and the writer's failures."""

    def __init__(self, stats: dict[str, LinkStats], writer: RegistryWriter):
        self.stats = stats
        self.failures = writer.failures
        self.retries = writer.retries
        self.last_error = writer.last_error


def run_ports(ports: list[str], db: str, *, duration: float | None = None,
              idle: float | None = None, baud: int = 115200,
              on_console: Callable[[str, bytes], None] | None = None,
              on_tick: Callable[[dict[str, LinkStats]], None] | None = None,
              result: list[IngestResult] | None = None) -> dict[str, LinkStats]:
    """Ingest from every port at once until ``duration`` passes, ``idle`` seconds
    go by with no new record (after at least one), or Ctrl-C.

    One registry writer serves every port; each port has its thread. The
    writer's failure counts are appended to ``result`` if given.
    """
    check_baud(baud)
    writer = RegistryWriter(db)
    registry = Store(db, shared=True)
    core = IngestCore(writer, registry)
    links = [SerialLink(p, core, baud, on_console) for p in ports]
    stop = threading.Event()
    threads = [threading.Thread(target=link.run, args=(stop,), name=f"ingest {link.port}", daemon=True)
               for link in links]
    for t in threads:
        t.start()
    stats = {link.port: link.stats for link in links}
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
        writer.close()
        registry.close()
        if result is not None:
            result.append(IngestResult(stats, writer))
    return stats
