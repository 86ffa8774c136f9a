"""Power drivers: switch a board's supply (docs/hil.md section 2).

Every driver is a :class:`SwitchedPower`: ``on()``, ``off()`` and
``cycle(off_s)``; it also answers the board seam's ``power_on`` /
``power_off`` (:class:`edge_agent.drivers.PowerProtocol`), so the host's
commands can drive a rig's board as they drive any other.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from edge_agent.errors import BadInput, DeviceError
from edge_hil.drivers.relay import LcusRelay
from edge_hil.drivers.tool import Run, Which, run_tool

MANUAL_TIMEOUT_S = 300.0


@runtime_checkable
class Power(Protocol):
    def on(self) -> None: ...

    def off(self) -> None: ...

    def cycle(self, off_s: float = 1.0) -> None: ...


class SwitchedPower:
    """What every power driver shares: a cycle is off, a pause, on."""

    def on(self) -> None:
        raise NotImplementedError

    def off(self) -> None:
        raise NotImplementedError

    def cycle(self, off_s: float = 1.0) -> None:
        self.off()
        time.sleep(off_s)
        self.on()

    # The board seam's names (edge_agent.drivers.PowerProtocol).
    def power_on(self) -> None:
        self.on()

    def power_off(self) -> None:
        self.off()


class RelayPower(SwitchedPower):
    """A relay channel in the board's supply: closed is powered."""

    def __init__(self, relay: LcusRelay, channel: int) -> None:
        self.relay, self.channel = relay, channel

    def on(self) -> None:
        self.relay.set(self.channel, True)

    def off(self) -> None:
        self.relay.set(self.channel, False)


class UhubctlPower(SwitchedPower):
    """Per-port USB power of a hub that supports it: ``uhubctl -l HUB -p PORT -a on|off``."""

    def __init__(self, name: str, hub: str, port: int,
                 run: Run = subprocess.run, which: Which = shutil.which) -> None:
        self.name, self.hub, self.port, self._run, self._which = name, hub, port, run, which

    def _switch(self, action: str) -> None:
        run_tool(self.name, ["uhubctl", "-l", self.hub, "-p", str(self.port), "-a", action], timeout=30,
                 missing=("its power is switched by uhubctl, which is not installed",
                          "apt-get install uhubctl (and run as root or with its udev rules)"),
                 stuck_fix="check the hub with `uhubctl` alone",
                 failed_fix=f"check that hub {self.hub} switches port power per port (`uhubctl` lists "
                            "the hubs it can) and that you may write to it",
                 run=self._run, which=self._which)

    def on(self) -> None:
        self._switch("on")

    def off(self) -> None:
        self._switch("off")


Ask = Callable[[str], "str | None"]


class ManualPower(SwitchedPower):
    """A person is the switch: each action is a question to ``ask(text) -> answer | None``.

    ``ask`` returns the person's answer (any line means done), or None when
    nobody answered within its timeout: that is an error naming the board.
    """

    def __init__(self, name: str, ask: Ask) -> None:
        self.name, self._ask = name, ask

    def _do(self, action: str) -> None:
        answer = self._ask(f"switch {self.name} {action}, then press Enter")
        if answer is None:
            raise DeviceError(f"{self.name}: nobody switched it {action} (no answer to the question)",
                              "run where a person can answer (a terminal), give --rig-answers FILE, "
                              "or give the board a relay or uhubctl power switch in the rig file")

    def on(self) -> None:
        self._do("on")

    def off(self) -> None:
        self._do("off")


def terminal_ask(timeout: float = MANUAL_TIMEOUT_S, tty: str = "/dev/tty") -> Ask:
    """Questions on the controlling terminal; an answer is one line typed within ``timeout``."""

    def ask(text: str) -> str | None:
        try:
            fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
        except OSError:
            return None
        try:
            os.write(fd, f"\n[rig] {text} ({timeout:.0f} s) ".encode())
            line = b""
            deadline = time.monotonic() + timeout
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    return None
                chunk = os.read(fd, 256)
                if not chunk:
                    return None
                line += chunk
            return line.decode(errors="replace").strip()
        finally:
            os.close(fd)

    return ask


class AnswersFile:
    """Scripted answers, one line per question in order (``--rig-answers FILE``).

    Each question asked is appended to ``log`` so a test or report shows what
    was asked; when the lines run out the next answer is None.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self._lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise BadInput(f"cannot read the answers file {self.path}: {e}",
                           "give a UTF-8 text file with one answer per line") from None
        self.log: list[str] = []

    def __call__(self, text: str) -> str | None:
        self.log.append(text)
        if len(self.log) > len(self._lines):
            return None
        print(f"[rig] {text}: {self._lines[len(self.log) - 1]!r} (from {self.path})", file=sys.stderr)
        return self._lines[len(self.log) - 1]


class BenchPower(SwitchedPower):
    """The virtual bench's supply switch (``edge sim power``) for a virtual or emulated board."""

    def __init__(self, bench, name: str) -> None:
        from edge_hil.virtual.drivers import BenchPower as SeamPower

        self._seam = SeamPower(bench, name)

    def on(self) -> None:
        self._seam.power_on()

    def off(self) -> None:
        self._seam.power_off()
