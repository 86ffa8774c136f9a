"""The gateway: keeps every bonded device of an owner account connected over BLE, ingests its telemetry and serves its updates.

One asyncio loop; one task per bonded device and one scanner. Telemetry goes
through the same :class:`~edge_agent.telemetry.ingest.IngestCore` and
:class:`~edge_agent.telemetry.writer.RegistryWriter` as serial ingest, so a
record is stored once whichever link carried it (DESIGN decision 11).

Rules it keeps:

- **One radio operation at a time.** Scans and connection set-ups take the
  radio lock (a connecting central and a scanner on one controller get in
  each other's way on some stacks); established links run concurrently.
- **Back-off per device.** A failed connection or RESUME waits 1 s, doubling
  to 30 s; a session that opened resets it. A device not heard advertising
  waits for the scanner.
- **A link that goes quiet is dropped.** A device sends telemetry or at
  least HELLO/STATUS regularly; after ``quiet_after`` seconds with nothing
  opened on its link (a power cut the controller never reported) the link is
  closed and the device looked for again.
- **A clean stop.** On stop (Ctrl-C, SIGTERM, ``--for``) the writer is
  flushed while links are still up (the last ACKs go out), then links are
  closed and the writer closed.
- **A bond the device no longer holds** (``unknown_bond``) is reported once
  and that device is left alone until it is paired again.
- **Updates on every link.** Each link has an OTA server
  (:mod:`edge_agent.ota_server`): a device's OTA_QUERY is answered from the
  update store and the registry's releases, image bytes go on the bulk
  characteristic, and its OTA_STATEs are recorded. Every ``grow_every``
  seconds the releases whose growth schedule is due grow their fraction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_agent.errors import EdgeError

log = logging.getLogger("edge.gateway")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
SCAN_WINDOW = 3.0
QUIET_AFTER = 60.0
GROW_EVERY = 60.0         # seconds between two looks at the releases' growth schedules


STOP_GRACE_S = 10.0     # how long a stop waits for the links' tasks to end


class EventLog:
    """One line per event on ``out``: text, or JSON lines with ``json_lines``.

    Called from the event loop and from the store's writer thread (the OTA servers'
    news), so each line is built and written whole under one lock."""

    def __init__(self, json_lines: bool = False, out: Any = None, clock: Callable[[], float] = time.time):
        self.json_lines = json_lines
        self.out: Any = out or sys.stdout
        self.clock = clock
        self.events: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, event: str, device: str | None = None, **fields: Any) -> None:
        t = self.clock()
        entry = {"t": round(t, 3), "event": event, **({"device": device} if device else {}), **fields}
        if self.json_lines:
            line = json.dumps(entry)
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(t))
            rest = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{stamp} {event:<12} {device or ''} {rest}".rstrip()
        with self._lock:
            self.events.append(entry)
            if self.out is None:
                return
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError) as e:
                # The log's reader went away (`| head`): the gateway goes on without its log.
                self.out = None
                log.warning("the event log can no longer be written (%s); the gateway goes on", e)


@dataclass
class DeviceState:
    """What the gateway knows of one bonded device."""

    device_id: str
    address: str | None = None
    connected: bool = False
    delay: float = BACKOFF_FIRST
    connects: int = 0
    failures: int = 0
    lost_bond: bool = False
    records: int = 0
    stats: list = field(default_factory=list)   # the LinkStats of each session


class Gateway:
    """Keeps the bonded devices of ``account`` connected until ``stop`` is set."""

    def __init__(self, db: str, account: str, event: EventLog, *, scan_window: float = SCAN_WINDOW,
                 quiet_after: float = QUIET_AFTER, serve_updates: bool = True, grow_every: float = GROW_EVERY):
        self.db = db
        self.account = account
        self.event = event
        self.scan_window = scan_window
        self.quiet_after = quiet_after
        self.serve_updates = serve_updates
        self.grow_every = grow_every
        self.devices: dict[str, DeviceState] = {}
        self.radio = asyncio.Lock()
        self.stop = asyncio.Event()
        self._tasks: dict[str, asyncio.Task] = {}

    async def run(self, duration: float | None = None) -> dict[str, DeviceState]:
        from edge_agent.store import Store
        from edge_agent.telemetry.ingest import IngestCore
        from edge_agent.telemetry.writer import RegistryWriter

        self.writer = RegistryWriter(self.db)
        self.registry = Store(self.db, shared=True)
        self.core = IngestCore(self.writer, self.registry)
        self.event("start", account=self.account, devices=len(self._bonded()))
        scanner = asyncio.ensure_future(self._scanner())
        timer = asyncio.ensure_future(self._timer(duration)) if duration is not None else None
        grower = asyncio.ensure_future(self._grow_rollouts()) if self.serve_updates else None
        try:
            await self.stop.wait()
        finally:
            self.event("stopping")
            loop = asyncio.get_running_loop()
            # The last ACKs go out while the links are still up.
            await loop.run_in_executor(None, self.writer.flush, 5.0)
            extra = [t for t in (timer, grower) if t is not None]
            tasks = [scanner, *self._tasks.values(), *extra]
            for task in tasks:
                task.cancel()
            # Bounded: a link stuck in its radio's connect or disconnect must not keep
            # the gateway from stopping (the registry is flushed either way).
            _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            if stuck:
                names = [d for d, t in self._tasks.items() if t in stuck] or ["its scanner or timers"]
                log.warning("stopping: %s did not end within %.0f s of the stop; left behind",
                            ", ".join(names), STOP_GRACE_S)
            await loop.run_in_executor(None, self.writer.close)
            with self.core.lock:
                self.registry.close()
            records = sum(d.records for d in self.devices.values())
            self.event("stopped", records=records, failures=self.writer.failures)
        return self.devices

    async def _timer(self, duration: float) -> None:
        await asyncio.sleep(duration)
        self.stop.set()

    async def _grow_rollouts(self) -> None:
        """Grow the releases whose schedule is due, now and every ``grow_every`` seconds."""
        from edge_agent.telemetry.writer import Job

        def grown(result: Any, error: BaseException | None) -> None:
            if error is not None:
                self.event("rollout_error", error=str(error))
                return
            for release, before in result or ():
                self.event("rollout_grown", release=release.id, key=release.key, fraction=release.fraction,
                           before=before)
        while not self.stop.is_set():
            self.writer.submit(Job(lambda s: s.grow_rollouts(), grown, what="rollout growth"))
            await asyncio.sleep(self.grow_every)

    def _ota_listener(self, device_id: str) -> Callable[[str, dict], None]:
        """The event log's lines for what a device's OTA server does (not each window's progress)."""
        def heard(event: str, fields: dict) -> None:
            fields = {k: v for k, v in fields.items() if v is not None and k != "device"}
            if event == "offered" and fields.get("install"):
                self.event("ota_offered", device_id, release=fields["release"], version=fields["version"],
                           sequence=fields["sequence"])
            elif event == "state":
                self.event("ota_state", device_id, **fields)
            elif event == "halted":
                self.event("rollout_halted", device_id, release=fields["release"], reason=fields["reason"])
            elif event == "error":
                self.event("ota_error", device_id, **fields)
        return heard

    def _bonded(self) -> list[str]:
        with self.core.lock:
            return sorted(self.registry.account_devices(self.account))

    def _watch_bonds(self) -> None:
        """Start a keeper for each newly bonded device; forget the unpaired ones."""
        bonded = set(self._bonded())
        for device_id in bonded - set(self.devices):
            self.devices[device_id] = DeviceState(device_id)
            self._tasks[device_id] = asyncio.ensure_future(self._keep(self.devices[device_id]))
        for device_id in set(self.devices) - bonded:
            state = self.devices.pop(device_id)
            task = self._tasks.pop(device_id, None)
            if task:
                task.cancel()
            if not state.lost_bond:
                self.event("unbonded", device_id)

    async def _scanner(self) -> None:
        from edge_agent.links.ble import scan

        while not self.stop.is_set():
            self._watch_bonds()
            missing = {d for d, s in self.devices.items() if s.address is None and not s.lost_bond}
            if not missing:
                await asyncio.sleep(1.0)
                continue
            wanted = set(missing)

            def all_heard(s: Any) -> bool:     # ends the scan once every missing device is heard
                wanted.discard(s.device_id)
                return not wanted
            async with self.radio:
                try:
                    seen = await scan(self.scan_window, want=all_heard)
                except EdgeError as e:
                    self.event("scan_failed", error=e.message)
                    await asyncio.sleep(BACKOFF_MAX / 6)
                    continue
            for s in seen:
                state = self.devices.get(s.device_id)
                if state is not None and state.address is None and not state.connected:
                    state.address = s.address
                    self.event("found", s.device_id, address=s.address, rssi=s.rssi)
            await asyncio.sleep(0.2)

    async def _keep(self, state: DeviceState) -> None:
        from edge_agent.cli.pair import load_bond
        from edge_agent.links.ble import BleConnection, TelemetryPump, pairing_failure
        from edge_agent.pairing import PairingError

        while not self.stop.is_set():
            if state.address is None:      # the scanner fills it in
                await asyncio.sleep(0.3)
                continue
            with self.core.lock:
                bond = load_bond(self.registry, state.device_id)
            if bond is None:
                return
            conn = BleConnection(state.address, state.device_id)
            try:
                async with self.radio:
                    await conn.connect()
                    session = await conn.resume(bond)
            except PairingError as e:
                await conn.close()
                err = pairing_failure(state.device_id, e)
                if getattr(e, "reason", None) == "unknown_bond":
                    state.lost_bond = True
                    self.event("bond_lost", state.device_id, error=err.message, fix=err.hint)
                    return
                await self._back_off(state, err.message)
                continue
            except EdgeError as e:
                await conn.close()
                await self._back_off(state, e.message)
                continue
            state.delay = BACKOFF_FIRST
            state.connected = True
            state.connects += 1
            self.event("connected", state.device_id, address=state.address, mtu=conn.segment_size + 3)
            self.writer.submit(_note_connected(state.device_id))
            pump = TelemetryPump(conn, session, self.core, serve_updates=self.serve_updates,
                                 ota_listener=self._ota_listener(state.device_id))
            state.stats.append(pump.link.stats)
            try:
                await self._pump(pump)
            finally:
                state.connected = False
                await conn.close()
                state.records = sum(s.records for s in state.stats)
                self.event("disconnected", state.device_id, records=pump.link.stats.records,
                           bad_sealed=pump.bad_sealed)
                state.address = None   # look for it again: it advertises once it is free

    async def _pump(self, pump: Any) -> None:
        run = asyncio.ensure_future(pump.run())
        try:
            last = (pump.received, time.monotonic())
            while not run.done():
                await asyncio.wait({run}, timeout=1.0)
                if pump.ota is not None:
                    pump.ota.poll()       # re-offers an unanswered transfer (7.5)
                if pump.received != last[0]:
                    last = (pump.received, time.monotonic())
                elif time.monotonic() - last[1] > self.quiet_after:
                    self.event("quiet", pump.conn.device_id, seconds=round(self.quiet_after))
                    break
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    async def _back_off(self, state: DeviceState, why: str) -> None:
        state.failures += 1
        self.event("retry", state.device_id, error=why, wait_s=state.delay)
        state.address = None
        try:
            await asyncio.wait_for(self.stop.wait(), state.delay)
        except asyncio.TimeoutError:
            pass
        state.delay = min(state.delay * 2, BACKOFF_MAX)


def _note_connected(device_id: str) -> Any:
    from edge_agent.telemetry.writer import Job

    now = time.time()
    return Job(lambda s: s.note_connected(device_id, now), what=f"connection of {device_id}")
