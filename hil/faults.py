"""Faults as fixtures (docs/hil.md section 3): one call each breaks the board under test on
purpose (a power cut now, after N bytes of an update or at an install step; a reset; a BLE link
drop; on virtual boards serial noise, a full filesystem, a clock jump). The plugin's ``faults``
fixture hands a :class:`Faults` to a test; a fault the board cannot take skips the test saying
why."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import pytest

from edge_agent.errors import DeviceError, EdgeError

if TYPE_CHECKING:
    from edge_hil.pytest_plugin import Host


def error_text(e: EdgeError) -> str:
    """An error and its fix, as a test's skip or failure shows it."""
    return e.message + (f"\n  fix: {e.hint}" if e.hint else "")


# -- power cuts during an update ---------------------------------------------------------

# The OTA_STATEs a board reports while it installs an update (docs/protocol.md 7.7), in order.
INSTALL_STEPS = ("downloading", "verified", "installed", "applying", "trial")
# States that say the board holds the whole image.
_WHOLE = ("verified", "installed", "applying", "trial", "confirmed")
OTA_CUT_TIMEOUT_S = 300.0
OTA_POLL_S = 0.02


def board_device_id(target: Any, host: Host) -> str:
    """The device id the board holds: `edge devs` reads a bench board's from its files; a USB
    board's only the board knows, so `edge flash` reads it back (keeping the identity), as the
    strategy does."""
    sim = ["--sim-dir", str(target.bench.rundir)] if target.bench is not None else []
    for row in json.loads(host.edge("devs", "--json", *sim).stdout or "[]"):
        if row.get("device_id") and (row.get("port") == target.port
                                     or (target.bench_name and row.get("name") == target.bench_name)):
            return str(row["device_id"])
    rows = json.loads(host.edge("flash", *target.flash_args, "--json").stdout or "[]")
    found = next((r["device_id"] for r in rows if r.get("device_id")), None)
    if found is None:
        raise DeviceError(f"{target.name} has no device identity", f"run `edge flash {' '.join(target.flash_args)}`")
    return str(found)


class OtaHeard:
    """What the run's registry hears of one device's updates from the moment this is made: the
    OTA states it reports and the bytes it acknowledges, whichever link carries them (`edge ota
    push` over serial or BLE, the gateway), as they write them to the registry."""

    def __init__(self, host: Host, device_id: str, since: int | None = None) -> None:
        """``since``: count the history from that entry on (where an earlier cut fell), not from now."""
        self.host, self.device_id = host, device_id
        with host.registry() as store:
            self._before = len(store.ota_history(device_id)) if since is None else since
            self._rows = {r["release"]: self._key(r) for r in store.ota_devices(device_id)}
        self.upto = self._before    # the history's length at the last look (states)

    @staticmethod
    def _key(row: dict) -> tuple:
        return row["state"], row["held"], row["updated"]

    def states(self, store: Any) -> list[str]:
        """The states the device reported since then, oldest first."""
        history = store.ota_history(self.device_id)
        self.upto = len(history)
        return [h["state"] for h in history[self._before:] if h["state"] != "offered"]

    def held(self, store: Any) -> int | None:
        """The most bytes of an image the device has acknowledged since then (None: no transfer moved);
        a device past ``verified`` holds the whole image."""
        most = None
        for r in store.ota_devices(self.device_id):
            if self._rows.get(r["release"]) == self._key(r):
                continue
            held = r["size"] if r["state"] in _WHOLE else r["held"]
            if held is not None:
                most = max(most or 0, int(held))
        return most


class OtaPowerCut:
    """A power cut armed to fall during an update (what the two OTA faults return).

    A thread watches the registry (:class:`OtaHeard`) and, once ``reached(states,
    held)`` holds, switches the board off, waits ``off_s`` and switches it on:
    the board boots from cold, mid-update. ``with cut: <run the update>``
    checks at the end of the block that the cut fell (it fires then at the
    latest, if the update reached its point just as it ended); ``cut.wait()``
    waits for it. Then ``fired``, ``state`` (the last state the device had
    reported), ``states`` and ``held`` say where the power went.
    """

    def __init__(self, what: str, heard: OtaHeard, reached: Callable[[list[str], int | None], bool],
                 power: Any, off_s: float, timeout: float) -> None:
        self.what, self.heard, self._reached, self.power = what, heard, reached, power
        self.off_s, self.timeout = off_s, timeout
        self.fired = False
        self.upto: int | None = None    # the device's OTA history up to what made the cut fall
        self.states: list[str] = []
        self.state: str | None = None
        self.held: int | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._watch, name=what, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            with self.heard.host.registry() as store:
                while True:
                    last = self._stop.is_set() or time.monotonic() > deadline
                    self.states, self.held = self.heard.states(store), self.heard.held(store)
                    self.state = self.states[-1] if self.states else None
                    if self._reached(self.states, self.held):
                        self.upto = self.heard.upto
                        self.power.off()
                        time.sleep(self.off_s)
                        self.power.on()
                        self.fired = True
                        return
                    if last:
                        return
                    time.sleep(OTA_POLL_S)
        except BaseException as e:      # re-raised in the test's thread
            self._error = e
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> OtaPowerCut:
        """Wait until the cut has fallen and the power is back (at most ``timeout``, else the armed
        timeout); fails the test, saying what the board reported, when it did not fall."""
        if not self._done.wait(self.timeout + self.off_s + 5 if timeout is None else timeout):
            self._stop.set()
            self._done.wait(self.off_s + 5)
        return self._result()

    def _result(self) -> OtaPowerCut:
        if self._error is not None:
            raise self._error
        if not self.fired:
            pytest.fail(f"{self.what} never fell: the board reported {', '.join(self.states) or 'nothing'}"
                        + (f" and acknowledged {self.held} bytes" if self.held is not None else "")
                        + " since it was armed", pytrace=False)
        return self

    def __enter__(self) -> OtaPowerCut:
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> None:
        self._stop.set()
        self._done.wait(self.off_s + 30)
        if kind is None:
            self._result()


class Faults:
    """Faults on the board under test, one call each (docs/hil.md section 3).

    A fault the board cannot take skips the test saying why; faults that are
    not built yet skip with ``not yet: ...``.
    """

    def __init__(self, target: Any, host: Host | None = None) -> None:
        self.target, self.row = target, target.rig_board
        self.host = host            # the run's registry: where the OTA cuts hear the board's update
        self._device_id: str | None = None
        self._full_fs: Any = None       # edge_hil.virtual.full_fs.FullFs, once fill_fs() ran

    def undo(self) -> None:
        """At the end of the test: what a fault left behind is put back (a filled filesystem)."""
        if self._full_fs is not None:
            full, self._full_fs = self._full_fs, None
            full.restore()

    def _need(self, capability: str, what: str) -> None:
        if capability not in self.row.capabilities:
            pytest.skip(f"{self.row.name} cannot take {what}: the rig gives it no {capability}")

    def _virtual(self, what: str) -> None:
        if self.row.kind != "virtual":
            pytest.skip(f"{what} is a fault of virtual boards only; {self.row.name} is {self.row.kind}")

    def power_cut(self, off_s: float = 0.5) -> None:
        """Cut the board's power now, then restore it: it boots from cold."""
        self._need("power", "a power cut")
        if self.target.power is None:
            pytest.skip(f"{self.row.name} cannot take a power cut: nobody can switch its power in this run")
        self.target.power.cycle(off_s)

    def reset(self) -> None:
        """Reset the board now (its reset line, or ``machine.reset()``)."""
        self._need("reset", "a reset")
        self.target.reset.reset()

    def ble_drop(self) -> None:
        """Drop the board's BLE links now. A virtual board's bench drops them as a radio going
        out of range (both sides see the link time out); a real board's by the rig's command on
        the host (BlueZ's Disconnect, or the board's ``ble: drop:``; docs/hil.md section 2)."""
        self._need("ble", "a BLE link drop")
        if self.target.ble is None:
            pytest.skip(f"{self.row.name} cannot take a BLE link drop: the rig cannot reach its radio")
        try:
            self.target.ble.drop()
        except EdgeError as e:
            pytest.fail(f"{self.row.name}: the BLE link could not be dropped: {error_text(e)}", pytrace=False)

    def power_cut_after_ota_bytes(self, n: int, off_s: float = 0.5,
                                  timeout: float = OTA_CUT_TIMEOUT_S) -> OtaPowerCut:
        """Arm a power cut for the moment the board has acknowledged ``n`` bytes of an update.

        Returns at once with the armed :class:`OtaPowerCut`: start the update
        (``edge ota push``, a gateway) inside ``with cut:`` or call ``cut.wait()``
        after starting it. The cut falls at the first progress the registry
        records at or past ``n`` (the host notes progress every few percent of
        the image: ``cut.held`` says where it fell).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"power_cut_after_ota_bytes: n is a count of bytes (an int >= 0), not {n!r}")
        power = self._ota_power()
        heard = OtaHeard(self._host("a power cut during an update"), self._board_device())
        return OtaPowerCut(f"{self.row.name}: a power cut after {n} bytes of an update", heard,
                           lambda states, held: held is not None and held >= n, power, off_s, timeout)

    def power_cut_at_install_step(self, name: str, off_s: float = 0.5, timeout: float = OTA_CUT_TIMEOUT_S,
                                  after: OtaPowerCut | None = None) -> OtaPowerCut:
        """Arm a power cut for the moment the board reports install step ``name`` (an OTA_STATE:
        one of :data:`INSTALL_STEPS`); use the returned :class:`OtaPowerCut` as
        :meth:`power_cut_after_ota_bytes`'s. The cut follows the report as fast
        as the host hears it: a board that moves on within milliseconds may be
        one step further when its power goes (``cut.states`` says what it had
        reported). ``after``: a cut that fell earlier in this update; what the
        board reported since it fell counts, even when the registry heard it
        before this one was armed (a report in flight as the power went)."""
        if name not in INSTALL_STEPS:
            raise ValueError(f"power_cut_at_install_step: {name!r} is no install step; "
                             f"steps: {', '.join(INSTALL_STEPS)}")
        power = self._ota_power()
        since = after.upto if after is not None and after.fired else None
        heard = OtaHeard(self._host("a power cut during an update"), self._board_device(), since)
        return OtaPowerCut(f"{self.row.name}: a power cut at install step {name!r}", heard,
                           lambda states, held: name in states, power, off_s, timeout)

    def _ota_power(self) -> Any:
        self._need("power", "a power cut")
        if self.target.power is None:
            pytest.skip(f"{self.row.name} cannot take a power cut: nobody can switch its power in this run")
        return self.target.power

    def _host(self, what: str) -> Host:
        if self.host is None:
            raise EdgeError(f"{what} needs the run's host (its registry hears the update)",
                            "make Faults(board, host), as the faults fixture does")
        return self.host

    def _board_device(self) -> str:
        if self._device_id is None:
            self._device_id = board_device_id(self.target, self._host("an OTA fault"))
        return self._device_id

    def serial_noise(self, data: bytes) -> None:
        """Bytes on the board's serial line that no program sent (line noise)."""
        self._virtual("serial noise")
        self.target.console.write(data)

    def fill_fs(self, leave: int = 4096) -> Callable[[], None]:
        """Fill the board's filesystem now until ``leave`` bytes are free, so the agent meets a full
        flash; returns ``free()``, which removes the filler. The first call moves the board's folder
        onto a filesystem of its own (a tmpfs: root only; a power cut for the board), and the end of
        the test moves it back (another): see :mod:`edge_hil.virtual.full_fs`."""
        from edge_hil.virtual.full_fs import CannotFill, FullFs

        self._virtual("a full filesystem")
        if self._full_fs is None:
            self._full_fs = FullFs(self.target.bench, self.target.bench_name)
        try:
            self._full_fs.fill(leave)
        except CannotFill as e:
            self._full_fs = None
            pytest.skip(error_text(e))
        return self._full_fs.free

    def clock_jump(self, seconds: float) -> None:
        """Move the board's clock ``seconds`` ahead now (its tick counters and calendar), as a board
        that stalled that long; a clock never runs back, so ``seconds`` must be positive."""
        self._virtual("a clock jump")
        if not seconds > 0:
            raise ValueError(f"clock_jump({seconds!r}): a board's clock only jumps ahead; give seconds > 0")
        self.target.bench.clock_jump(self.target.bench_name, seconds)
