# Board entry point: MicroPython runs this after boot.py. Under CPython (a
# Linux computer running the agent) it adds the stand-in for MicroPython's
# `micropython` module first.
import sys

if sys.implementation.name != "micropython":
    sys.path.append(__file__.rpartition("/")[0] + "/cpython")

import edgefw.boot  # noqa: E402

edgefw.boot.main()
