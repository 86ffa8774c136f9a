"""BLE link drop: end a real board's BLE links now, from the host (docs/hil.md section 2).

A virtual board's link is dropped by the bench (its BLE bridge, as a radio
going out of range); a real board's by a command on the host. The default asks
BlueZ, which holds every link of a Linux host's adapter whichever process
opened it, to disconnect the board: ``busctl call org.bluez
/org/bluez/ADAPTER/dev_AA_BB_.. org.bluez.Device1 Disconnect``. The board
sees its link terminated by the host rather than timing out; a rig that wants
the radio silence of out-of-range gives ``drop:`` a command that does that
(switching the host adapter's USB power with uhubctl, an RF attenuator's
tool), with ``{address}`` and ``{adapter}`` filled in.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import Protocol, runtime_checkable

from edge_hil.drivers.tool import Run, Which, run_tool

DEFAULT_ADAPTER = "hci0"
BLUEZ_DISCONNECT = ("busctl --system call org.bluez /org/bluez/{adapter}/dev_{path_address} "
                    "org.bluez.Device1 Disconnect")
DROP_TIMEOUT_S = 20.0


@runtime_checkable
class LinkDrop(Protocol):
    def drop(self) -> None: ...


class CommandDrop:
    """A board's BLE links ended by one command on the host (BlueZ's Disconnect by default)."""

    def __init__(self, name: str, address: str, adapter: str = DEFAULT_ADAPTER, command: str | None = None,
                 run: Run = subprocess.run, which: Which = shutil.which) -> None:
        self.name, self.address, self.adapter = name, address.upper(), adapter
        self.command = command or BLUEZ_DISCONNECT
        self._run, self._which = run, which

    def argv(self) -> list[str]:
        """The command, its ``{address}``, ``{adapter}`` and ``{path_address}`` (AA_BB_..) filled in."""
        text = self.command.format(address=self.address, adapter=self.adapter,
                                   path_address=self.address.replace(":", "_"))
        return shlex.split(text)

    def drop(self) -> None:
        argv = self.argv()
        tool = argv[0]
        run_tool(self.name, argv, timeout=DROP_TIMEOUT_S,
                 missing=(f"its BLE link is dropped by `{tool}`, which is not on PATH",
                          "install systemd's busctl, or give the board's ble: a drop: command" if tool == "busctl"
                          else f"install {tool}, or change the board's ble: drop: command"),
                 stuck_fix="run it by hand to see what it waits for",
                 failed_fix=f"check that the host is connected to {self.address} (BlueZ: `bluetoothctl info "
                            f"{self.address}`) on adapter {self.adapter}, or set ble: drop: in the rig file",
                 run=self._run, which=self._which)
