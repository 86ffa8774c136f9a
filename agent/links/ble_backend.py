"""Which BLE stack bleak drives: configuration, never a branch in host logic.

Host code builds every scanner and client as
``BleakScanner(..., **scanner_kwargs())`` and
``BleakClient(address, ..., **client_kwargs())``. With ``EDGE_BLE`` unset
both return ``{}`` and bleak picks its platform backend (BlueZ on a Raspberry
Pi) unchanged. With ``EDGE_BLE=sim`` they name the backend on Bumble
(:mod:`edge_agent.links.bumble_bleak`), which reaches an emulated controller
through the HCI transport in ``EDGE_BLE_HCI`` (any Bumble transport spec, such
as ``unix:<rundir>/air/host-0.hci``).

Two functions, not one, because bleak's ``backend=`` takes a scanner class for
``BleakScanner`` and a client class for ``BleakClient``. The Bumble backend is
imported only when chosen, so a host on real hardware never loads Bumble.
"""

from __future__ import annotations

import os
from typing import Any

from edge_agent.errors import BadInput

BACKEND_ENV = "EDGE_BLE"
TRANSPORT_ENV = "EDGE_BLE_HCI"
SIM = "sim"


def _selected() -> str | None:
    value = os.environ.get(BACKEND_ENV, "").strip()
    if not value:
        return None
    if value != SIM:
        raise BadInput(f"{BACKEND_ENV}={value!r} names no BLE backend",
                       f"unset {BACKEND_ENV} for the platform's stack, or set it to {SIM!r} "
                       f"for the virtual air (with {TRANSPORT_ENV}=<Bumble transport spec>)")
    if not os.environ.get(TRANSPORT_ENV, "").strip():
        raise BadInput(f"{BACKEND_ENV}={SIM} but {TRANSPORT_ENV} is not set",
                       f"set {TRANSPORT_ENV} to the host controller's transport, "
                       "e.g. unix:<rundir>/air/host-0.hci (edge sim up prints it)")
    return value


def scanner_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``BleakScanner`` (and its ``discover`` /
    ``find_device_*`` class methods): ``{}`` or ``{"backend": <scanner class>}``."""
    if _selected() is None:
        return {}
    from edge_agent.links.bumble_bleak import BumbleScanner
    return {"backend": BumbleScanner}


def client_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``BleakClient``: ``{}`` or ``{"backend": <client class>}``."""
    if _selected() is None:
        return {}
    from edge_agent.links.bumble_bleak import BumbleClient
    return {"backend": BumbleClient}
