"""Emulated boards: the real MicroPython firmware of a port on an emulated chip.

:mod:`.build` makes the firmware (the rp2 port for ``RPI_PICO``, from
Debian's packages, cached per source versions); ``edge emulator build`` is
its command (:mod:`.cli`).
An emulated Pico is a board of the virtual bench (``edge sim up --board pico
--emulated``) whose chip is rp2040js running the rp2 port's firmware through
our runner (``runner/``: the flash chip, USB CDC, hard reset); :mod:`.chip`
is its side of the board seam, :mod:`.assets` fetches the emulator and the
boot ROM into the user cache.
"""
