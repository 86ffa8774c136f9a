"""An emulated Pico flashed with the agent, for the tests and benchmarks that run firmware on it.

`edge flash` deploys the agent (as `.mpy` compiled by the firmware's own
mpy-cross) and provisions it; :meth:`Pico.park` then keeps the agent from
starting at boot, so snippets run over the raw REPL with no agent (and no
watchdog) under them, and :meth:`Pico.unpark` lets it start again.
"""

from __future__ import annotations

import serial

from edge_agent.board_link import BoardLink
from tests.harness import Home
from tests.hil.test_emulated_board import wait_repl

NAME = "pico-1"
PARKED = "main.py.parked"   # main.py renamed: the chip boots to its REPL, no agent, no watchdog


class Pico:
    """An emulated Pico of ``home``'s bench, flashed with the agent, and what tests do to it."""

    def __init__(self, home: Home):
        self.home = home
        self.port = home.port(NAME)
        self.agent_on_boot = True

    def exec(self, code: str, timeout: float = 120) -> str:
        """Run ``code`` over the raw REPL, from a fresh heap (a soft reset); what it printed."""
        with BoardLink(self.port) as link:
            return link.exec(code, timeout=timeout)

    def power_cycle(self) -> None:
        """Cut the power (the emulator is killed between two flash operations) and boot again."""
        self.home.control.power_off(NAME)
        self.home.control.power_on(NAME)
        wait_repl(self.port)

    def park(self) -> None:
        """Boot to the REPL from now on: no agent (and so no watchdog) running under the snippets.

        The rename follows the interrupt request in the same write, for the REPL to run as soon
        as it has the console, and is checked after a power cycle: tried again when the request
        was not taken or a reset came first."""
        if not self.agent_on_boot:
            return
        # "\r\n" first: a 0x03 counts as an interrupt request only at a line's start
        # (docs/protocol.md 2.11), and the last line may have been cut short.
        rename = b"import os; 'main.py' in os.listdir() and os.rename('main.py', '%s')\r" % PARKED.encode()
        for _ in range(5):
            with serial.Serial(self.port, timeout=15) as s:
                s.write(b"\r\n\x03\x03" + rename)
                s.read_until(b"the REPL has the console")
                s.read_until(rename.rstrip(b"\r"))
                s.read_until(b"\r\n>>> ")
            self.power_cycle()
            if self.exec("import os\nprint('main.py' in os.listdir())").strip() == "False":
                self.agent_on_boot = False
                return
        raise AssertionError(f"could not keep the agent on {self.port} from starting at boot")

    def unpark(self) -> None:
        """Boot the agent again, as `edge flash` left the board."""
        if not self.agent_on_boot:
            self.exec(f"import os\nos.rename({PARKED!r}, 'main.py')")
            self.home.control.power_off(NAME)
            self.home.control.power_on(NAME)
            self.agent_on_boot = True


def flashed_pico(home: Home) -> Pico:
    """Start one emulated Pico in ``home``'s bench and `edge flash` it; the agent runs."""
    (row,) = home.up("pico", extra=("--emulated", "--unprovisioned"), timeout=300)
    wait_repl(row["port"])
    home.edge("flash", "-p", NAME, timeout=600)
    return Pico(home)
