"""Emulated boards: the real MicroPython firmware of a port on an emulated chip.

:mod:`.build` makes the firmware (the rp2 port for ``RPI_PICO``, from
Debian's packages, cached per source versions); ``edge emulator build`` is
its command (:mod:`.cli`).
"""
