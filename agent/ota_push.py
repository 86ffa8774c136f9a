"""``edge ota push`` for the bench: one release to one device, over its serial port or its BLE bond.

The link is the ingest's own (:class:`~edge_agent.links.serial.SerialLink`,
or a :class:`~edge_agent.links.ble.TelemetryPump` on a resumed bond), so the
device's telemetry is stored while the update runs, and its
:class:`~edge_agent.ota_server.OtaServer` serves the pushed release whatever
its rollout (``pinned``): an unsolicited OTA_OFFER first, then the device's
own queries (a resume after a cut) find it again.

Rules it keeps:

- **The device says when it is done.** :class:`PushWatch` follows the
  device's OTA_STATEs for the release: ``refused``, ``failed`` or
  ``rolled-back`` end the push with the device's check and reason;
  ``current`` means it runs it already; the target (``confirmed`` by default,
  or ``installed`` / ``applying``) ends it well. The device resets after
  ``applying`` and confirms some 30 s later from its new image: a serial
  push keeps the port (reopened if it went away); a BLE push reconnects and
  resumes the bond.
- **A stall is offered again.** A device that closes a transfer as
  ``stalled`` (7.5) or drops the link before ``applying`` is offered the
  release again, from what it holds.
- **Bounded.** Nothing waits past ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from edge_agent.errors import DeviceError, EdgeError
from edge_agent.store import Release, Store

log = logging.getLogger("edge.ota.push")

UNTIL = ("installed", "applying", "confirmed")
_ORDER = ("installed", "applying", "trial", "confirmed")      # each one past the one before
HELLO_WAIT = 15.0           # seconds a serial device has to say HELLO once the port is open


class PushFailed(EdgeError):
    """The device refused (exit 3), failed or rolled back (exit 4), or the push timed out (exit 5)."""

    def __init__(self, message: str, hint: str, exit_code: int):
        super().__init__(message, hint)
        self.exit_code = exit_code


@dataclass
class PushWatch:
    """Listens to an OtaServer for ``release`` and knows when the push is over."""

    release: Release
    until: str = "confirmed"
    on_progress: Callable[[int, int, str], None] | None = None
    states: list[dict] = field(default_factory=list)
    held: int = 0
    outcome: dict | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)

    @property
    def last(self) -> str | None:
        """The latest state the device reported."""
        return self.states[-1]["state"] if self.states else None

    @property
    def state(self) -> str | None:
        """The state that ended the push, else the latest one."""
        return self.outcome["state"] if self.outcome is not None else self.last

    def __call__(self, event: str, fields: dict) -> None:
        seq = fields.get("sequence")
        # A refusal before the manifest could be read (its signature, its
        # key), or an offer the device had no heap to check just now (`busy`:
        # it asks again and is offered again), cannot name the sequence: 0 then.
        if seq not in (None, self.release.sequence) and not (seq == 0 and fields.get("state")
                                                              in ("refused", "failed", "busy")):
            return
        if event == "progress":
            self.held = fields["held"]
            self._progress()
        elif event == "error":
            self.error = f"{fields['error']}; fix: {fields['fix']}"
            self.done.set()
        elif event == "state":
            state = fields["state"]
            self.states.append({k: v for k, v in fields.items() if v is not None and k != "device"})
            if fields.get("held") is not None:
                self.held = fields["held"]
            elif state == "verified":       # the whole image, whether its last window came first or not
                self.held = self.release.size
            self._progress()
            if state == "stalled":
                self.stalled.set()
            if self.outcome is None and (state in ("refused", "failed", "rolled-back", "current")
                                         or self._reached(state)):
                self.outcome = self.states[-1]
                self.done.set()

    def _reached(self, state: str) -> bool:
        return state in _ORDER and _ORDER.index(state) >= _ORDER.index(self.until)

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.held, self.release.size, self.last or "offered")

    @property
    def applied(self) -> bool:
        """The device has switched to the new image: from now on, no offer again."""
        return any(s["state"] in ("applying", "trial", "confirmed") for s in self.states)

    def result(self) -> None:
        """Raise :class:`PushFailed` for an outcome that is not success."""
        if self.error is not None:
            raise PushFailed(f"the update store cannot serve release {self.release.id}: {self.error}",
                             "publish the image again (`edge ota publish`)", 4)
        o = self.outcome
        if o is None:
            return
        what = f"{self.release.component} {self.release.version} (sequence {self.release.sequence})"
        if o["state"] == "refused":
            raise PushFailed(f"the device refused {what}: check {o.get('check', '?')}"
                             + (f" ({o['reason']})" if o.get("reason") else ""),
                             _REFUSED_FIX.get(o.get("check", ""), "check the manifest with `edge ota verify`"), 3)
        if o["state"] in ("failed", "rolled-back"):
            raise PushFailed(f"the device {o['state']} {what}" + (f": {o['reason']}" if o.get("reason") else ""),
                             "read its console (`edge monitor`), fix the image, and push a higher sequence", 4)


_REFUSED_FIX = {
    "rollback": "the device runs this sequence or a later one: sign the image with a higher --sequence",
    "rolled-back": "the device rolled back from this sequence: push a fixed image with a higher --sequence",
    "wrong-board": "sign the image for the device's board",
    "unknown-key": "the device's key list does not hold the signing key: `edge ota keygen` lists it, "
                   "and the push sends the key list along",
    "expired": "sign the manifest again (`edge ota sign`)",
    "too-large": "the image does not fit the device's slot: make it smaller",
    "version-too-old": "update the device to the manifest's min_version first",
    "digest-mismatch": "the image changed in transit or in the update store: publish it again",
    "bad-bundle": "build the bundle again (`edge ota bundle`)",
}


def _timeout(watch: PushWatch, seconds: float) -> PushFailed:
    where = f"last state {watch.last}" if watch.last else "no state from the device"
    return PushFailed(f"the device did not reach {watch.until} within {seconds:g} s ({where}, "
                      f"{watch.held} of {watch.release.size} bytes held)",
                      "check it runs an agent with OTA (`edge monitor`), or pass a longer --timeout", 5)


def push_serial(port: str, db: str, release: Release, watch: PushWatch, *, timeout: float,
                baud: int = 115200, on_bound: Callable[[str], None] | None = None) -> None:
    """Push ``release`` to the device on serial ``port``; returns when ``watch`` is done, else PushFailed."""
    from edge_agent import ports
    from edge_agent.links.serial import SerialLink
    from edge_agent.ota_server import OtaServer
    from edge_agent.telemetry.ingest import IngestCore
    from edge_agent.telemetry.writer import RegistryWriter

    deadline = time.monotonic() + timeout
    claim = ports.claim(port)
    writer = RegistryWriter(db)
    registry = Store(db, shared=True)
    stop = threading.Event()
    thread = None
    try:
        core = IngestCore(writer, registry)
        link = SerialLink(port, core, baud)
        server = link.session.ota = OtaServer(link.session, listener=watch)
        thread = threading.Thread(target=link.run, args=(stop, claim), name=f"push {port}", daemon=True)
        thread.start()
        hello = time.monotonic() + min(timeout, HELLO_WAIT)
        while link.session.bound is None:
            if time.monotonic() > hello:
                raise PushFailed(f"no device said HELLO on {port} within {min(timeout, HELLO_WAIT):g} s",
                                 "check the board runs the agent (`edge monitor PORT`)", 5)
            time.sleep(0.05)
        device_id = link.session.bound
        _check_board(core, device_id, release)
        if on_bound is not None:
            on_bound(device_id)
        server.pinned = release
        server.offer(release, release.component, key_list=server.key_list_for(0))
        while not watch.done.wait(0.2):
            _again(server, watch, release)
            server.poll()
            if time.monotonic() > deadline:
                raise _timeout(watch, timeout)
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=5)
        writer.close()
        registry.close()
        claim.release()
    watch.result()


def _again(server: Any, watch: PushWatch, release: Release) -> None:
    """Offer again when the device stalled before the switch."""
    if watch.stalled.is_set():
        watch.stalled.clear()
        if not watch.applied:
            server.offer(release, release.component, key_list=server.key_list_for(0))


def _check_board(core: Any, device_id: str, release: Release) -> None:
    board = core.registered_board(device_id)
    if board is not None and board != release.board:
        from edge_agent.errors import BadInput

        raise BadInput(f"the manifest is for board {release.board}, and {device_id} is a {board}",
                       f"push an image signed for {board} (`edge ota sign --board {board}`)")


async def push_ble(device_id: str, db: str, release: Release, watch: PushWatch, *, timeout: float,
                   on_bound: Callable[[str], None] | None = None) -> None:
    """Push ``release`` to the paired ``device_id`` over BLE, reconnecting after its reset."""
    from edge_agent.cli.pair import load_bond
    from edge_agent.links.ble import BleConnection, TelemetryPump, find, pairing_failure
    from edge_agent.pairing import PairingError
    from edge_agent.telemetry.ingest import IngestCore
    from edge_agent.telemetry.writer import RegistryWriter

    deadline = time.monotonic() + timeout
    writer = RegistryWriter(db)
    registry = Store(db, shared=True)
    loop = asyncio.get_running_loop()
    try:
        core = IngestCore(writer, registry)
        with core.lock:
            bond = load_bond(registry, device_id)
        _check_board(core, device_id, release)
        told = False
        while not watch.done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise _timeout(watch, timeout)
            try:
                seen = await find(device_id, min(left, 10.0))
                conn = BleConnection(seen.address, device_id)
                await conn.connect()
                try:
                    session = await conn.resume(bond)
                except PairingError as e:
                    await conn.close()
                    raise pairing_failure(device_id, e) from None
            except EdgeError as e:
                if isinstance(e, DeviceError) or "not in range" in e.message:
                    log.info("%s: %s; looking again", device_id, e.message)   # resetting into the new image
                    await asyncio.sleep(0.5)
                    continue
                raise
            pump = TelemetryPump(conn, session, core, serve_updates=True, ota_listener=watch)
            pump.ota.pinned = release
            if not told and on_bound is not None:
                on_bound(device_id)
                told = True
            run = asyncio.ensure_future(pump.run())
            try:
                if not watch.applied:       # first, or a cut before the switch: offer (again)
                    pump.ota.offer(release, release.component, key_list=pump.ota.key_list_for(0))
                while not run.done() and not watch.done.is_set() and time.monotonic() < deadline:
                    await asyncio.wait({run}, timeout=0.2)
                    _again(pump.ota, watch, release)
                    pump.ota.poll()
            finally:
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
                await loop.run_in_executor(None, writer.flush, 5.0)
                await conn.close()
    finally:
        await loop.run_in_executor(None, writer.close)
        registry.close()
    watch.result()
