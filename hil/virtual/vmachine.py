# MicroPython (Unix port) module, not host code: the `machine` module of a
# virtual board. The runner imports it before the board's filesystem is
# mounted and installs it as sys.modules["machine"], so `import machine` on
# the board gets the Unix port's machine plus what a board has and the Unix
# port lacks. A builtin module's attributes cannot be set, hence a module.
from machine import *  # noqa: F401,F403
import os as _os

# What the board says it is: the sys.platform and machine string of the chip
# it stands for (edge_agent.discover.PLATFORM_PROBE reads these first), set
# by the supervisor from the board file; a board with no chip to stand for
# says what the Unix port says.
PLATFORM = _os.getenv("EDGE_BOARD_PLATFORM") or "linux"
MACHINE = _os.getenv("EDGE_BOARD_MACHINE") or ""
del _os


def bootloader(value=None):
    # As on a board: the chip resets into its ROM bootloader (ESP download
    # mode, RP2040 BOOTSEL) and never returns. The supervisor reads the
    # marker (an APC string, stripped from the console) and stops this
    # interpreter.
    import sys
    import time
    sys.stdout.write("\x1b_edge:bootloader\x1b\\")
    while True:
        time.sleep(1)
