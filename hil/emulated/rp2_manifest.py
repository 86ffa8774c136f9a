# mypy: ignore-errors
# MicroPython freeze manifest of the emulated Pico's firmware (RPI_PICO), read
# by MicroPython's makemanifest.py, not imported (docs/emulated.md).
#
# The rp2 port's default manifest (ports/rp2/boards/manifest.py) also
# freezes four drivers from micropython-lib (onewire, ds18x20, dht,
# neopixel). Debian does not package micropython-lib and the emulated chip
# has none of those parts, so this one keeps the rest of the default: the
# port's own modules (_boot.py, which makes and mounts littlefs on the
# flash, and rp2.py, the PIO assembler) and asyncio. The agent is not
# frozen: `edge flash` deploys it as .mpy files, as on a stock Pico.
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
