"""``edge hil``: the HIL rig's commands (``edge hil check RIGFILE``)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click


@click.group()
def hil() -> None:
    """The hardware-in-the-loop rig: one rig file describes a bench's boards (docs/hil.md).

    \b
      edge hil check rig.yaml                 # validate, then probe every board
      pytest --rig rig.yaml hil/suites        # the suites on those boards
    """


@hil.command()
@click.argument("rigfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sim-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the virtual bench of the rig's virtual and emulated boards "
                   "[default: a new temporary folder, stopped afterwards].")
@click.option("--answers", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Answers to the questions of manual power, one line each (else the terminal is asked).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per board instead of a table.")
def check(rigfile: Path, sim_dir: Path | None, answers: Path | None, as_json: bool) -> None:
    """Validate RIGFILE and probe every board on it.

    Each board's console must answer (the MicroPython prompt or an agent
    frame); where the rig can switch its power, it is cycled and must come
    back; where it can reset it, it is reset and must come back; where it
    has a BLE identity, it must be advertising. Virtual and emulated boards
    run on a virtual bench this command starts (with --sim-dir, in that
    folder, left running) unless the rig file names a running one.

    \b
    Examples:
      edge hil check examples/rig-bench.yaml
      edge hil check rig.yaml --json | jq '.[] | select(.ok | not)'
      edge hil check rig.yaml --answers answers.txt     # manual power, scripted

    Exit codes: 0 every board passed every probe it has; 5 the rig file is
    not valid (each problem as FILE:LINE: key: what, with its fix); 6 some
    board failed a probe (its notes say which and why).
    """
    from edge_agent.cli import table_console
    from edge_agent.errors import DeviceError
    from edge_hil.drivers.power import AnswersFile, terminal_ask
    from edge_hil.rig import load_rig
    from edge_hil.rig.check import check_board
    from edge_hil.rig.target import open_target, start_bench

    ask = AnswersFile(answers) if answers is not None else (terminal_ask() if sys.stdin.isatty() else None)
    rig = load_rig(rigfile, person=ask is not None)
    keep = sim_dir is not None
    folder = sim_dir if sim_dir is not None else Path(tempfile.mkdtemp(prefix="edge-hil-"))
    env = dict(os.environ)
    if not keep:
        # Identities minted for a throwaway bench stay out of the user's registry.
        env["EDGE_DB"] = str(folder / "registry.db")
    bench = start_bench(rig, folder if keep else folder / "sim", env) if rig.bench_boards else None
    results = []
    try:
        for b in rig.boards:
            target = open_target(rig, b.name, bench=bench, ask=ask)
            address = b.ble.address if b.ble else None
            probe_env = env
            if bench is not None and b.kind != "usb":
                vbench, vname = bench.locate(b.name)
                address = vbench.board(vname).get("ble_address")
                probe_env = {**env, "EDGE_BLE": "sim", "EDGE_SIM_DIR": str(bench.sim_dir)}
            results.append(check_board(target, probe_env, address))
    finally:
        if bench is not None and not keep:
            bench.down()
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        from rich.table import Table

        t = Table(title=f"rig {rig.name} ({rigfile})", box=None, pad_edge=False)
        for col in ("board", "kind", "type", "port", "console", "power", "reset", "ble", "notes"):
            t.add_column(col, overflow="fold")
        colour = {"ok": "green", "FAIL": "red"}
        for r in results:
            cells = [f"[{colour[v]}]{v}[/{colour[v]}]" if v in colour else v
                     for v in (r.console, r.power, r.reset, r.ble)]
            t.add_row(r.board, r.kind, r.type, r.port, *cells, "; ".join(r.notes))
        table_console().print(t)
    failed = [r.board for r in results if not r.ok]
    if failed:
        raise DeviceError(f"{len(failed)} of {len(results)} board(s) failed a probe: {', '.join(failed)}",
                          "see the notes column; fix the wiring or the rig file and run again")
