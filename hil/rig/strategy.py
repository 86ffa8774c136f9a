"""Walk a board through its states: off -> bootloader -> flashed -> agent-up -> paired -> updated.

A test asks for the state it needs (``strategy.to("paired")``); the
strategy does only what is missing and records the seconds spent reaching
each state (``times``), for the run's report. Every step goes through the
product's own commands on the host side (``host.edge(...)``: ``edge flash``,
``edge label``/``edge pair``, ``edge ota push``) and the target's drivers,
so a suite tests what a person would do.

States that cannot be reached on a board (no power switch, no image, no
update given) are :class:`DeviceError`\\ s naming the board and what to add.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from xml.etree import ElementTree
from typing import Any, Protocol

from edge_agent.errors import DeviceError
from edge_hil.rig.model import STATES
from edge_hil.rig.target import Target

AGENT_FRAME = re.compile(rb"#EA:[A-Za-z0-9+/=]*:[0-9a-f]{8}\r?\n")
AGENT_TIMEOUT_S = 30.0


class Host(Protocol):
    """The host side a strategy uses: ``edge(*args)`` returns a completed process (returncode, stdout,
    stderr), run with ``env`` (its registry, keys and BLE backend)."""

    env: dict[str, str]

    def edge(self, *args: str) -> Any: ...


def label_payload(host: Host, device_id: str) -> str:
    """The pairing payload on ``device_id``'s label, read as a person scans it.

    `edge label` shows a setup code once per identity, so the label it
    prints into the host's folder ($EDGE_HOME) is kept and read again by
    every later pairing of the run; it is printed the first time.
    """
    folder = Path(host.env.get("EDGE_HOME", "."))
    svg = folder / f"{device_id}.svg"
    if not svg.exists():
        proc = host.edge("label", device_id, "--json", "--no-terminal", "--out", str(folder))
        if getattr(proc, "returncode", 0) != 0:
            raise DeviceError(f"`edge label {device_id}` failed ({proc.returncode}): "
                              f"{(proc.stderr or proc.stdout or '').strip()}",
                              f"its code was shown once already: pair with that label, or `edge flash "
                              f"--reprovision` the board for a new identity and code")
        return str(json.loads(proc.stdout)["payload"])
    try:
        desc = ElementTree.parse(svg).getroot().find("{http://www.w3.org/2000/svg}desc")
    except ElementTree.ParseError:
        desc = None
    if desc is None or not desc.text:
        raise DeviceError(f"the label {svg} carries no pairing payload",
                          "the code is shown once: `edge flash --reprovision` the board for a new identity and label")
    return desc.text


class Strategy:
    """The states of ``target`` and the steps between them.

    ``firmware``: a MicroPython image ``flashed`` writes first (else only the
    agent is deployed); ``update``: ``(image, manifest)`` that ``updated`` pushes.
    """

    def __init__(self, target: Target, host: Host, *, firmware: Path | str | None = None,
                 update: tuple[Path | str, Path | str] | None = None) -> None:
        self.target, self.host, self.firmware, self.update = target, host, firmware, update
        self.state: str | None = None           # None: not known yet
        self.device_id: str | None = None
        self.times: dict[str, float] = {}      # state -> seconds spent in its own steps
        self._walked = 0.0                      # seconds of the states the current step walked through

    # -- the walk ---------------------------------------------------------------------

    def to(self, state: str) -> None:
        """Bring the board to ``state``, doing only the steps that are missing."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}; states: {', '.join(STATES)}")
        if self.state == state:
            return
        step = getattr(self, "_" + state.replace("-", "_"))
        start = time.monotonic()
        outer, self._walked = self._walked, 0.0
        try:
            step()
        finally:
            spent = time.monotonic() - start
            # A state's own time: not that of the states its step walked through (agent-up flashes).
            self.times[state] = self.times.get(state, 0.0) + spent - self._walked
            self._walked = outer + spent
        self.state = state

    def _reached(self, state: str) -> bool:
        return self.state in STATES[STATES.index(state):] and self.state not in ("off", "bootloader")

    def _off(self) -> None:
        self._power().off()

    def _bootloader(self) -> None:
        if self.state == "off":
            self._power().on()
        self.target.reset.reset_to_bootloader()

    def _flashed(self) -> None:
        if self.state == "off":
            self._power().on()
        args = ["flash", *self.target.flash_args, "--json"]
        if self.firmware is not None:
            args += ["--firmware", str(self.firmware)]
        rows = json.loads(self._edge(*args).stdout or "[]")
        ids = [r.get("device_id") for r in rows if r.get("device_id")]
        if ids:
            self.device_id = ids[0]

    def _agent_up(self) -> None:
        # Unknown or beyond: the agent may already run; off or in the bootloader: deploy it.
        if self.state not in ("off", "bootloader") and self._agent_answers():
            return
        if self.state == "off":
            self._power().on()
        self.to("flashed")
        if not self._agent_answers():
            raise DeviceError(f"{self.target.name}: the agent sent no frame on {self.target.port} within "
                              f"{AGENT_TIMEOUT_S:.0f} s of a reset",
                              "see the console log; `edge flash` the board again")

    def _paired(self) -> None:
        if not self._reached("agent-up"):
            self.to("agent-up")
        self._edge("pair", "--qr", label_payload(self.host, self._device_id()), "--json")

    def _updated(self) -> None:
        if self.update is None:
            raise DeviceError(f"{self.target.name}: no update to push",
                              "give Strategy(update=(IMAGE, MANIFEST)) made with `edge ota bundle` and `edge ota sign`")
        if not self._reached("agent-up"):
            self.to("agent-up")
        image, manifest = self.update
        self._edge("ota", "push", self.target.flash_args[1], str(image), str(manifest), "--json")

    # -- helpers ------------------------------------------------------------------------

    def _power(self):
        if self.target.power is None:
            raise DeviceError(f"{self.target.name} has no power switch the rig can drive",
                              "give it a relay or uhubctl power in the rig file, or run with a person "
                              "(a terminal or --rig-answers FILE)")
        return self.target.power

    def _edge(self, *args: str) -> Any:
        proc = self.host.edge(*args)
        if getattr(proc, "returncode", 0) != 0:
            said = (getattr(proc, "stderr", "") or getattr(proc, "stdout", "") or "").strip()
            raise DeviceError(f"{self.target.name}: `edge {' '.join(args)}` failed ({proc.returncode}): {said}",
                              "see the command's error above; the board's console log is in the report")
        return proc

    def _agent_answers(self) -> bool:
        """Whether the agent sends a frame on the console after a reset."""
        console = self.target.console
        console.open()
        try:
            self.target.reset.reset()
            console.expect(AGENT_FRAME, AGENT_TIMEOUT_S)
            return True
        except DeviceError:
            return False
        finally:
            console.close()

    def _device_id(self) -> str:
        if self.device_id is None:
            rows = json.loads(self._edge("flash", *self.target.flash_args, "--json").stdout or "[]")
            self.device_id = next((r["device_id"] for r in rows if r.get("device_id")), None)
        if self.device_id is None:
            raise DeviceError(f"{self.target.name} has no device identity", "run `edge flash` on it")
        return self.device_id
