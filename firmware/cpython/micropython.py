# CPython stand-in for MicroPython's `micropython` module, so the firmware
# runs unchanged on a Linux computer (Raspberry Pi). Only on CPython's path:
# main.py adds this folder when the interpreter is not MicroPython.


def const(x):
    return x
