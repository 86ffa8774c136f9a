# MicroPython (Unix port) module, not host code: the `machine` module of a
# virtual board. The runner imports it before the board's filesystem is
# mounted and installs it as sys.modules["machine"], so `import machine` on
# the board gets the Unix port's machine plus what a board has and the Unix
# port lacks. A builtin module's attributes cannot be set, hence a module.
from machine import *  # noqa: F401,F403


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
