"""A board of the rig with its drivers bound: the one place drivers are chosen.

:func:`open_target` reads a :class:`~edge_hil.rig.RigBoard`'s resources and
gives it a power, a reset and a console driver (docs/hil.md section 2);
nothing else asks which kind of board it holds. Boards of the virtual
bench are reached through the bench :func:`start_bench` started (or the
running one the rig file names).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.errors import DeviceError, NotFound
from edge_hil.drivers.ble import CommandDrop, LinkDrop
from edge_hil.drivers.console import SerialConsole
from edge_hil.drivers.power import Ask, BenchPower, ManualPower, RelayPower, SwitchedPower, UhubctlPower
from edge_hil.drivers.relay import LcusRelay
from edge_hil.drivers.reset import BenchReset, DtrRtsReset, RelayReset, ReplReset, Reset
from edge_hil.rig.model import Rig, RigBoard

BENCH_START_TIMEOUT_S = 180.0
MAX_BLE_HOSTS = 16         # `edge sim up --ble-hosts` takes 0..16


def edge_command() -> list[str]:
    """The ``edge`` executable of this Python's environment (else the one on PATH)."""
    here = Path(sys.executable).parent / "edge"
    found = str(here) if here.exists() else shutil.which("edge")
    if found is None:
        raise NotFound("the `edge` command is not installed in this environment", "pip install -e . (or edge-agent)")
    return [found]


@dataclass
class RigBench:
    """The virtual benches of a rig's virtual and emulated boards.

    One bench runs all virtual boards and holds the virtual air; emulated
    boards, which a bench starts all-or-none, run in a second one in
    ``SIM_DIR/emulated``. ``where[rig board name] = (Bench, its name there)``.
    """

    benches: list[Any]
    where: dict[str, tuple[Any, str]]
    started: bool = True            # False when the rig file named a running bench: never stopped here

    def locate(self, name: str) -> tuple[Any, str]:
        try:
            return self.where[name]
        except KeyError:
            raise NotFound(f"board {name} is not on the rig's virtual bench",
                           "start the bench with start_bench(rig, ...) before opening its boards") from None

    @property
    def sim_dir(self) -> Path:
        """The folder of the bench with the virtual air (``EDGE_SIM_DIR`` for BLE commands)."""
        return self.benches[0].rundir

    def down(self) -> None:
        if self.started:
            for b in self.benches:
                b.down()


def _map_rows(boards: list[RigBoard], rows: list[dict], bench: Any) -> dict[str, tuple[Any, str]]:
    """Rig boards onto a bench's rows: a row of the same name, else the next unused row of the same type."""
    where: dict[str, tuple[Any, str]] = {}
    used: set[str] = set()
    for b in boards:
        row = next((r for r in rows if r["name"] == b.name and r["name"] not in used), None) or \
            next((r for r in rows if r["board"] == b.board and (r.get("kind") or "virtual") == b.kind
                  and r["name"] not in used), None)
        if row is None:
            raise NotFound(f"rig board {b.name} ({b.kind} {b.board}, line {b.line}) has no board on the bench in "
                           f"{bench.rundir}", f"start it there: `edge sim up --board {b.board} --sim-dir "
                           f"{bench.rundir}`, or remove bench: from the rig file so the run starts its own")
        used.add(row["name"])
        where[b.name] = (bench, row["name"])
    return where


def start_bench(rig: Rig, sim_dir: Path | str, env: dict[str, str] | None = None,
                timeout: float = BENCH_START_TIMEOUT_S) -> RigBench | None:
    """Start the virtual bench of ``rig``'s virtual and emulated boards in ``sim_dir`` with ``edge sim
    up`` (``env``: its environment, whose ``EDGE_DB`` receives the boards' identities); None when the
    rig has none. A rig file with ``bench: {sim_dir: DIR}`` uses the bench running there instead."""
    from edge_hil.virtual.control import Bench

    groups = {kind: [b for b in rig.bench_boards if b.kind == kind] for kind in ("virtual", "emulated")}
    if not rig.bench_boards:
        return None
    if rig.bench_dir is not None:
        bench = Bench(rig.bench_dir)
        rows = bench.boards()
        return RigBench([bench], _map_rows(list(rig.bench_boards), rows, bench), started=False)
    sim_dir = Path(sim_dir)
    benches, where = [], {}
    try:
        for kind, boards in groups.items():
            if not boards:
                continue
            folder = sim_dir if kind == "virtual" or not groups["virtual"] else sim_dir / "emulated"
            args = [a for b in boards for a in ("--board", b.board)]
            argv = [*edge_command(), "sim", "up", *args, "--sim-dir", str(folder), "--json"]
            if kind == "emulated":
                argv.append("--emulated")
            else:
                # A BLE host controller for each board's worker (-n: one worker a board), and one more.
                argv += ["--ble-hosts", str(min(len(boards) + 1, MAX_BLE_HOSTS))]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=env if env is not None else dict(os.environ), stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                said = proc.stderr.strip() or proc.stdout.strip()
                raise DeviceError(f"the rig's virtual bench ({kind}: "
                                  f"{', '.join(b.name for b in boards)}) did not start in {folder}:\n{said}",
                                  f"see {folder / 'bench.log'}")
            bench = Bench(folder)
            benches.append(bench)
            where.update(_map_rows(boards, json.loads(proc.stdout), bench))
    except BaseException:
        for b in benches:
            b.down()
        raise
    return RigBench(benches, where)


@dataclass
class Target:
    """A board under test: its rig entry, its board file and its drivers.

    ``power`` is None when the rig cannot switch it (manual power and no
    person); ``flash_args`` name it to ``edge flash``/``edge ota push``.
    """

    rig_board: RigBoard
    board_file: dict
    console: SerialConsole
    reset: Reset
    power: SwitchedPower | None
    flash_args: list[str]
    bench: Any = None
    bench_name: str | None = None
    notes: list[str] = field(default_factory=list)
    ble: LinkDrop | None = None       # ends the board's BLE links now (None: the rig cannot reach its radio)

    @property
    def name(self) -> str:
        return self.rig_board.name

    @property
    def kind(self) -> str:
        return self.rig_board.kind

    @property
    def port(self) -> str:
        return self.console.port

    def close(self) -> None:
        self.console.close()


def open_target(rig: Rig, name: str, host: Any = None, *, bench: RigBench | None = None,
                ask: Ask | None = None) -> Target:
    """Board ``name`` of ``rig`` with its drivers (nothing is opened yet).

    ``bench``: what :func:`start_bench` returned, for virtual and emulated
    boards. ``ask``: where ManualPower's questions go (a terminal or an
    answers file); without one a manual board gets no power driver.
    ``host`` is not needed to bind drivers; it is accepted so callers can
    pass what :class:`~edge_hil.rig.Strategy` takes.
    """
    b = rig.board(name)
    if b.kind != "usb":
        if bench is None:
            raise NotFound(f"board {name} is a {b.kind} board and no virtual bench was started for the rig",
                           "call start_bench(rig, sim_dir, env) first (the pytest plugin does)")
        vbench, vname = bench.locate(name)
        row = vbench.board(vname)
        return Target(b, b.board_file, SerialConsole(row["port"], name=name),
                      BenchReset(vbench, vname, b.board_file.get("micropython_port")),
                      BenchPower(vbench, vname), ["-p", vname, "--sim-dir", str(vbench.rundir)],
                      bench=vbench, bench_name=vname,
                      ble=BenchLinkDrop(vbench, vname) if "ble" in b.capabilities else None)
    assert b.port is not None        # the loader requires a port for usb boards
    console = SerialConsole(b.port, name=name)

    def relay(relay_name: str) -> LcusRelay:
        r = rig.relays[relay_name]
        return LcusRelay(r.name, r.port, r.channels)

    reset: Reset
    if b.reset.method == "dtr-rts":
        reset = DtrRtsReset(name, b.port, console_serial=lambda: console.serial)
    elif b.reset.method == "relay":
        assert b.reset.relay is not None and b.reset.channel is not None
        reset = RelayReset(name, relay(b.reset.relay), b.reset.channel)
    elif b.reset.method == "none":
        reset = NoReset(name)
    else:
        reset = ReplReset(b.port)
    power: SwitchedPower | None = None
    if b.power.method == "relay":
        assert b.power.relay is not None and b.power.channel is not None
        power = RelayPower(relay(b.power.relay), b.power.channel)
    elif b.power.method == "uhubctl":
        assert b.power.hub is not None and b.power.hub_port is not None
        power = UhubctlPower(name, b.power.hub, b.power.hub_port)
    elif ask is not None:
        power = ManualPower(name, ask)
    ble = None if b.ble is None else CommandDrop(name, b.ble.address, b.ble.adapter, b.ble.drop)
    return Target(b, b.board_file, console, reset, power, ["-p", b.port, "--board", b.board], ble=ble)


class BenchLinkDrop:
    """A virtual board's BLE links dropped by its bench (the BLE bridge: a radio out of range)."""

    def __init__(self, bench: Any, name: str) -> None:
        self.bench, self.name = bench, name

    def drop(self) -> None:
        self.bench.ble_drop(self.name)


class NoReset:
    """``reset: none``: the rig cannot restart this board."""

    def __init__(self, name: str) -> None:
        self.name = name

    def reset(self) -> None:
        raise DeviceError(f"{self.name} has reset: none in the rig file", "give it dtr-rts, repl or a relay")

    reset_to_bootloader = reset

