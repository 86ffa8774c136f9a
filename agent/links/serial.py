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
from typing import TYPE_CHECKING, Any, Callable

from edge_agent.frames import BadFrame, ConsoleLine, Frame, FrameDecoder, encode_frame
from edge_agent.store import Store
from edge_agent.telemetry.ingest import IngestCore, LinkClosed, LinkStats
from edge_agent.telemetry.writer import RegistryWriter

if TYPE_CHECKING:
    from edge_agent.ports import Claim

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
                raise LinkClosed(f"{self.port} is closed")
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

    def run(self, stop: threading.Event, owner: "Claim | None" = None) -> None:
        """Read the port until ``stop`` is set, reopening it whenever it goes away.

        With ``owner`` (the port's :class:`~edge_agent.ports.Claim`, held by
        the caller for the whole run) the port is opened exclusively, so no
        other program can open it between reconnections either.
        """
        import serial

        from edge_agent.errors import EdgeError

        delay = 0.2
        while not stop.is_set():
            try:
                kwargs = dict(baudrate=self.baud, timeout=0.05, write_timeout=2)
                ser = owner.open(**kwargs) if owner else serial.serial_for_url(self.port, **kwargs)
            except EdgeError as e:
                # A program that ignores our lock file (mpremote) took the
                # port while it was gone: say so once, and wait for it.
                log.log(logging.WARNING if delay == 0.2 else logging.DEBUG,
                        "%s: cannot open: %s; retrying", self.port, e.message)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
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
                    if owner:
                        owner.close_port(ser)
                    else:
                        ser.close()
                except Exception:  # closing a vanished port may fail; nothing to keep
                    pass


class QuietWatch:
    """Notices a link that streamed records and then went quiet.

    A board whose agent stopped (someone entered its REPL, a crash, a power
    cut) sends nothing, and nothing else would say so: after ``after``
    seconds with no new record on a link that had delivered some, it is one
    quiet spell, reported once until records flow again.
    """

    def __init__(self, after: float | None):
        self.after = after
        self.spells: dict[str, int] = {}
        self._quiet: set[str] = set()

    def check(self, stats: dict[str, LinkStats], now: float) -> tuple[list[tuple[str, LinkStats, float]], list[str]]:
        """(links that just went quiet with their silence in seconds, links that resumed)."""
        went: list[tuple[str, LinkStats, float]] = []
        resumed: list[str] = []
        if self.after is None:
            return went, resumed
        for port, s in stats.items():
            if not s.last_record:
                continue
            silent = now - s.last_record
            if silent >= self.after and port not in self._quiet:
                self._quiet.add(port)
                self.spells[port] = self.spells.get(port, 0) + 1
                went.append((port, s, silent))
            elif silent < self.after and port in self._quiet:
                self._quiet.discard(port)
                resumed.append(port)
        return went, resumed


def quiet_warning(port: str, s: LinkStats, silent: float) -> str:
    """The line a person reads when a streaming port goes quiet."""
    who = f" ({s.device})" if s.device else ""
    return (f"warning: {port}{who} sent no telemetry for {silent:.0f} s after {s.records} record(s); "
            f"its agent has likely stopped (a REPL or mpremote session left it there, a crash, "
            f"or lost power): look with `edge monitor {port}`, or reset the board")


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
        self.quiet: dict[str, int] = {}


def run_ports(ports: list[str], db: str, *, duration: float | None = None,
              idle: float | None = None, baud: int = 115200, quiet_after: float | None = None,
              on_console: Callable[[str, bytes], None] | None = None,
              on_tick: Callable[[dict[str, LinkStats]], None] | None = None,
              on_quiet: Callable[[str], None] | None = None,
              result: list[IngestResult] | None = None) -> dict[str, LinkStats]:
    """Ingest from every port at once until ``duration`` passes, ``idle`` seconds
    go by with no new record on any port (counted from the start, so a
    silent bench ends too), or Ctrl-C.

    Every port is claimed first (:func:`edge_agent.ports.claim`): a missing
    port raises NotFound and a held one Busy before the registry is touched;
    the claims are held until the end, across reconnections. A port whose
    records stop for ``quiet_after`` seconds is reported to ``on_quiet``
    (a line) and counted. One registry writer serves every port; each port
    has its thread. The writer's failure counts are appended to ``result``.
    """
    from edge_agent import ports as port_locks

    check_baud(baud)
    claims: list = []
    try:
        for p in ports:
            claims.append(port_locks.claim(p))
    except BaseException:
        for c in claims:
            c.release()
        raise
    try:
        return _run_claimed(claims, db, duration=duration, idle=idle, baud=baud, quiet_after=quiet_after,
                            on_console=on_console, on_tick=on_tick, on_quiet=on_quiet, result=result)
    finally:
        for c in claims:
            c.release()


def _run_claimed(claims: list, db: str, *, duration, idle, baud, quiet_after, on_console, on_tick,
                 on_quiet, result) -> dict[str, LinkStats]:
    writer = RegistryWriter(db)
    registry = Store(db, shared=True)
    core = IngestCore(writer, registry)
    links = [SerialLink(c.port, core, baud, on_console) for c in claims]
    stop = threading.Event()
    threads = [threading.Thread(target=link.run, args=(stop, c), name=f"ingest {link.port}", daemon=True)
               for link, c in zip(links, claims)]
    for t in threads:
        t.start()
    stats = {link.port: link.stats for link in links}
    watch = QuietWatch(quiet_after)
    started = time.time()
    try:
        while True:
            time.sleep(0.2)
            now = time.time()
            if on_tick:
                on_tick(stats)
            went, _ = watch.check(stats, now)
            for port, s, silent in went:
                line = quiet_warning(port, s, silent)
                log.debug("%s", line)
                if on_quiet:
                    on_quiet(line)
            if duration is not None and now - started >= duration:
                break
            if idle is not None:
                last = max((s.last_record for s in stats.values()), default=0.0)
                if now - max(last, started) >= idle:
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
            outcome = IngestResult(stats, writer)
            outcome.quiet = dict(watch.spells)
            result.append(outcome)
    return stats
