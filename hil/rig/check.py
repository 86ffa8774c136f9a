"""Probe every board of a rig: the library behind ``edge hil check``.

Each probe is one question a person would ask at the bench: does the
console answer (the REPL's prompt or an agent frame)? does the board come
back after its power is switched off and on? after a reset? does it
advertise over BLE? A probe the rig cannot make is "-" (not a failure);
one that fails says why in the notes.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import asdict, dataclass, field

from edge_agent.errors import EdgeError
from edge_hil.drivers.reset import ReplReset
from edge_hil.rig.target import Target, edge_command

ANSWER = re.compile(rb">>> |#EA:")
ANSWER_TIMEOUT_S = 15.0
BOOT_TIMEOUT_S = 30.0
OK, FAIL, NA = "ok", "FAIL", "-"


@dataclass
class BoardCheck:
    board: str
    kind: str
    type: str
    port: str
    console: str = NA
    power: str = NA
    reset: str = NA
    ble: str = NA
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return FAIL not in (self.console, self.power, self.reset, self.ble)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def _answers(target: Target, timeout: float) -> None:
    # A REPL answers a newline with its prompt; an agent with no host is silent
    # until a TIME asks it to announce itself (a REPL takes that line as a comment).
    from edge_agent.frames import announce_request

    c = target.console
    c.write(b"\r\n" + announce_request())
    c.expect(ANSWER, timeout)


def _probe(result: BoardCheck, what: str, fn) -> bool:
    try:
        fn()
    except EdgeError as e:
        setattr(result, what, FAIL)
        result.notes.append(f"{what}: {e.message}")
        return False
    setattr(result, what, OK)
    return True


def check_board(target: Target, env: dict[str, str], ble_address: str | None) -> BoardCheck:
    """Probe one board; never raises for a board that does not answer (that is a FAIL in the result)."""
    rb = target.rig_board
    r = BoardCheck(rb.name, rb.kind, rb.board, target.port)
    console = target.console

    def console_probe() -> None:
        console.open()
        _answers(target, ANSWER_TIMEOUT_S)

    if not _probe(r, "console", console_probe):
        console.close()
        return r

    if target.power is not None:
        def power_probe() -> None:
            target.power.cycle(off_s=0.5)
            console.reopen(BOOT_TIMEOUT_S)      # a USB port vanishes while the board is off
            _answers(target, BOOT_TIMEOUT_S)
        _probe(r, "power", power_probe)
    elif rb.power.method == "manual":
        r.notes.append("power: manual, and nobody to ask (run in a terminal or give --answers FILE)")

    if "reset" in rb.capabilities:
        def reset_probe() -> None:
            # machine.reset() goes through the REPL on the same port: let it have the port.
            if isinstance(target.reset, ReplReset):
                console.close()
            target.reset.reset()
            console.reopen(BOOT_TIMEOUT_S)
            _answers(target, BOOT_TIMEOUT_S)
        _probe(r, "reset", reset_probe)
    console.close()

    if "ble" in rb.capabilities and ble_address:
        def ble_probe() -> None:
            from edge_agent.errors import DeviceError

            proc = subprocess.run([*edge_command(), "scan", "--for", "5s", "--json"], capture_output=True,
                                  text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                raise DeviceError(f"edge scan failed: {proc.stderr.strip()}", "")
            seen = {str(d.get("address", "")).upper().split("/")[0] for d in json.loads(proc.stdout or "[]")}
            if ble_address.upper() not in seen:
                raise DeviceError(f"{ble_address} is not advertising (seen: {', '.join(sorted(seen)) or 'none'})", "")
        _probe(r, "ble", ble_probe)
    return r
