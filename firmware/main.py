# Board entry point: MicroPython runs this after boot.py. Stage 0 picks the
# agent's slot, then boots it (docs/protocol.md 7.7). Under CPython (a Linux
# computer running the agent) it adds the stand-in for MicroPython's
# `micropython` module first.
import sys

if sys.implementation.name != "micropython":
    sys.path.append(__file__.rpartition("/")[0] + "/cpython")

import stage0  # noqa: E402

stage0.boot()
