"""Which BLE stack bleak drives: configuration, never a branch in host logic.

Host code builds every scanner and client as
``BleakScanner(..., **scanner_kwargs())`` and
``BleakClient(address, ..., **client_kwargs())``. With ``EDGE_BLE`` unset
both return ``{}`` and bleak picks its platform backend (BlueZ on a Raspberry
Pi) unchanged. With ``EDGE_BLE=sim`` they name the backend on Bumble
(:mod:`edge_agent.links.bumble_bleak`), which reaches an emulated controller
through the HCI transport in ``EDGE_BLE_HCI`` (any Bumble transport spec, such
as ``unix:<rundir>/air/host-0.hci``). Without ``EDGE_BLE_HCI`` the process
takes the first free host controller of the running virtual bench (the run
folder ``edge sim`` uses): the air serves one host per controller, so each
host process holds the one it took (a lock file beside it, released when the
process ends) and one already served is skipped.

Two functions, not one, because bleak's ``backend=`` takes a scanner class for
``BleakScanner`` and a client class for ``BleakClient``. The Bumble backend is
imported only when chosen, so a host on real hardware never loads Bumble.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO, Any

from edge_agent.errors import BadInput, Busy

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
        os.environ[TRANSPORT_ENV] = "unix:" + str(claim_bench_host())
    return value


# The host controller this process took, held (with its lock) until it ends.
_claimed: tuple[Path, IO[bytes]] | None = None
_PROBE_S = 0.2


def _bench_hosts(rundir: Path) -> list[Path]:
    try:
        state = json.loads((rundir / "state.json").read_text())
    except (OSError, ValueError):
        raise BadInput(f"{BACKEND_ENV}={SIM}: no virtual bench is running in {rundir}",
                       f"start one with `edge sim up`, or set {TRANSPORT_ENV} to a host controller's "
                       "transport (unix:<rundir>/air/host-<k>.hci)") from None
    hosts = [Path(p) for p in (state.get("air") or {}).get("hosts") or []]
    if not hosts:
        raise BadInput(f"{BACKEND_ENV}={SIM}: the virtual bench in {rundir} has no air (no BLE host controllers)",
                       "restart it with `edge sim down` and `edge sim up --ble-hosts 2` "
                       "(a run folder too deep for unix sockets has no air: see air.log)")
    return hosts


def _served(path: Path) -> bool:
    """Whether the air already serves another host on ``path``: it closes a second one at once."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(_PROBE_S)
        s.connect(str(path))
        try:
            return s.recv(1) == b""
        except socket.timeout:
            return False
    except OSError:
        return True     # gone or refusing: not one to take
    finally:
        s.close()


def claim_bench_host(rundir: Path | None = None) -> Path:
    """The first host controller of the running bench that no other host holds; held until this process ends."""
    global _claimed
    if _claimed is not None:
        return _claimed[0]
    if rundir is None:
        from edge_agent.paths import default_sim_dir
        rundir = default_sim_dir()
    hosts = _bench_hosts(rundir)
    for path in hosts:
        lock = open(path.with_suffix(".lock"), "ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if _served(path):
            lock.close()
            continue
        _claimed = (path, lock)
        return path
    raise Busy(f"{BACKEND_ENV}={SIM}: all {len(hosts)} BLE host controllers of the bench in {rundir} are busy",
                   f"end another BLE host process, or restart the bench with more: "
                   f"`edge sim down` then `edge sim up --ble-hosts {len(hosts) + 1}`")


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
