"""Device ids, sensor names and units: the one rule of docs/protocol.md section 2.2.

The device (``edgefw``) keeps the same rule; both are tested against
``tests/vectors/names.json``. The patterns are ASCII-only on purpose: bidi
controls, zero-width characters and look-alike letters never reach a
terminal, a file name or a SenML name, and ``<device id>/<sensor name>`` is
always a valid SenML name (RFC 8428 section 4.5.1).
"""

from __future__ import annotations

import re

# \Z, not $: "$" would let a trailing newline through.
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9.\-]{0,63}\Z")
_SENSOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}\Z")
_UNIT = re.compile(r"[!-~]{0,16}\Z")


def is_device_id(text: object) -> bool:
    """True if ``text`` is a device id: 1-64 of ``a-z 0-9 - .``, first a letter or digit."""
    return type(text) is str and _DEVICE_ID.match(text) is not None


def is_sensor_name(text: object) -> bool:
    """True if ``text`` is a sensor name: 1-32 of ``A-Z a-z 0-9 _ - .``, first a letter or digit."""
    return type(text) is str and _SENSOR_NAME.match(text) is not None


def is_unit(text: object) -> bool:
    """True if ``text`` is a unit: 0-16 printable ASCII characters other than space."""
    return type(text) is str and _UNIT.match(text) is not None
