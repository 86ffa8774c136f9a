"""``edge flash``: MicroPython, the agent and an identity onto one board or all of them."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from edge_agent.cli import complete
from edge_agent.cli.options import check_regular_file, port_resolver, sim_dir_option
from edge_agent.errors import EXIT_PARTIAL, BadInput, EdgeError, NotFound
from edge_agent.paths import default_db, default_sim_dir


def _targets(board, ports, all_boards, sim_dir) -> list:
    """The boards to flash, from the options (see the command's help)."""
    from edge_agent.boards import known_boards, load_board
    from edge_agent.discover import discover, find_port
    from edge_agent.flash import Target, rpi_instructions

    if board is not None:
        # An unknown name lists the known ones.
        if load_board(board).get("micropython_port") == "cpython":
            raise BadInput(*rpi_instructions(board))
    targets = []
    if ports:
        for port in ports:
            found = find_port(port, sim_dir)
            if found is None and "://" not in port and not Path(port).exists():
                raise NotFound(f"serial port {port} does not exist",
                               "plug the board in and check the name (`edge flash --all` finds "
                               "attached boards; ls /dev/ttyUSB* /dev/ttyACM*)")
            # Whatever --board says, the check step asks the board what it is.
            kind = board or (found.board if found else None)
            if kind is None:
                choices = found.choices if found else known_boards()
                raise click.UsageError(f"which board is on {port}? pass --board "
                                       f"(one of: {', '.join(choices)})")
            targets.append(Target(found.name if found else Path(port).name, port, kind,
                                  found.driver if found else None))
        return targets
    found = discover(sim_dir)
    if not found:
        raise NotFound("no board found: no USB serial port with a known board's USB id, "
                       f"and no virtual bench running in {sim_dir}",
                       "plug a board in (or start virtual ones with `edge sim up`), or name it with "
                       "--port P --board B")
    if not all_boards and len(found) > 1:
        raise click.UsageError("several boards found (" + ", ".join(f"{c.name} on {c.port}" for c in found)
                               + "): pass --all to flash them all, or --port to pick one")
    for c in found:
        kind = board if board in c.choices else c.board
        if kind is None:
            kind = _ask(c)
        targets.append(Target(c.name, c.port, kind, c.driver))
    return targets


def _ask(c) -> str:
    """Settle an ambiguous USB id (a CP210x on some ESP32) by asking the board."""
    from edge_agent.board_link import BoardLink
    from edge_agent.discover import ask_board

    try:
        with BoardLink(c.port) as link:
            kind = ask_board(link, c.choices)
    except EdgeError:
        kind = None
    if kind is None:
        raise click.UsageError(f"cannot tell which board is on {c.port} (USB {c.usb_id}: one of "
                               f"{', '.join(c.choices)}): pass --board")
    return kind


def _table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    for col in ("board", "type", "port", "device id", "steps", "result", "s"):
        t.add_column(col, overflow="fold", justify="right" if col == "s" else "left")
    for r in results:
        verdict = "[green]ok[/green]" if r.ok else f"[red]failed at {r.failed_step}[/red]"
        t.add_row(r.target.name, r.target.board, r.target.port, r.device_id or "-",
                  f"{len(r.steps)}/{5 + ('firmware' in r.steps)}", verdict, f"{r.seconds:.1f}")
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)
    console.print(t)
    for r in results:
        if not r.ok:
            click.secho(f"{r.target.name}: {r.failed_step}: {r.error}", fg="red", err=True)
            if r.hint:
                click.echo(f"  fix: {r.hint}", err=True)
        elif r.files_copied or r.identity_created or r.frozen:
            note = f"{r.files_copied} file(s) copied ({r.bytes_copied} B), {r.files_skipped} already right"
            if r.frozen and not r.warning:
                note += f"; agent {r.frozen} runs frozen in the board's image (edgefw/ not copied)"
            if r.identity_created:
                note += f"; new identity {r.device_id}: print its label with `edge label {r.device_id}`"
            click.echo(f"{r.target.name}: {note}", err=True)
        if r.ok and r.warning:
            click.secho(f"{r.target.name}: warning: {r.warning}", fg="yellow", err=True)


@click.command()
@click.option("--board", default=None, metavar="NAME", shell_complete=complete.board_types,
              help="Board type (a file in boards/) of the board on --port, or of attached boards "
                   "whose USB id several boards share.")
@click.option("-p", "--port", "ports", multiple=True, metavar="PORT", shell_complete=complete.ports,
              help="Serial port or pyserial URL of a board, or its name in `edge devs` (esp32-1, a "
                   "device id); repeat for more.")
@click.option("--all", "all_boards", is_flag=True,
              help="Flash every attached board and every running virtual board, at once.")
@sim_dir_option()
@click.option("--firmware", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="MicroPython image to write first: .bin (ESP family, via esptool) or .uf2 (Pico W).")
@click.option("--reprovision", is_flag=True,
              help="Mint a new identity even if the board has one (owners must pair again).")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Boards flashed at once [default: all of them].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db].")
def flash(board, ports, all_boards, sim_dir, firmware, reprovision, jobs, as_json, db):
    """Flash boards: MicroPython (with --firmware), the agent, an identity, a self-test.

    Each board goes through: firmware (esptool or UF2), check (MicroPython
    and its .mpy version), deploy (the agent compiled to .mpy; files already
    on the board are skipped), provision (identity kept unless
    --reprovision), selftest (reset; the agent's HELLO and STATUS read back),
    register (marked provisioned only now). A board that fails at any step
    is not marked provisioned; running the command again completes it.

    \b
    Examples:
      edge flash --all                               # every attached and virtual board
      edge flash --board esp32 --port /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.29.bin
      edge flash --board picow --port /dev/ttyACM0 --firmware RPI_PICO_W-v1.29.uf2
      edge flash -p esp32-1 -p picow-1               # virtual boards, by name
      edge sim up --blank --board esp32 --board picow && edge flash --all --json

    A Raspberry Pi (--board rpi) runs the agent under CPython, not
    MicroPython: there is nothing to flash; the command says how to install
    it with pip on the Pi, and exits 5.

    Exit codes: 0 all boards ok; 7 some of several boards failed; a single
    board's failure exits with its error's code (3 absent, 4 busy, 5 bad
    input, 6 board did not answer as expected).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from edge_agent.flash import flash_many

    sim_dir = sim_dir or default_sim_dir()
    ports = [port_resolver(sim_dir, db)(p) for p in ports]
    targets = _targets(board, ports, all_boards, sim_dir)
    fw = Path(firmware) if firmware else None
    if fw is not None:
        check_regular_file(fw, "firmware image")
    from edge_agent.ports import ensure_free
    for t in targets:   # before the registry and the OTA root key are made
        ensure_free(t.port)
    progress = Progress(TextColumn("{task.fields[board]:<12}"), TextColumn("{task.fields[step]:<9}"),
                        BarColumn(), TextColumn("{task.fields[detail]:>15}"), TimeElapsedColumn(),
                        console=_stderr_console(), disable=as_json)
    tasks = {t.name: progress.add_task("", total=None, board=t.name, step="waiting", detail="")
             for t in targets}

    def on_progress(t, step, done, total):
        # Bytes for the steps that copy; the others are one unit each.
        detail = f"{done / 1024:.1f}/{total / 1024:.1f} kB" if step in ("firmware", "deploy") else ""
        progress.update(tasks[t.name], step=step, completed=done, total=max(total, 1), detail=detail)

    # Libraries print (mpremote on a failed raw REPL, the key notice):
    # stdout carries only the results.
    with progress, contextlib.redirect_stdout(sys.stderr):
        results = flash_many(targets, db or default_db(), jobs=jobs, progress=on_progress,
                             firmware=fw, reprovision=reprovision)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        _table(results)
    failed = [r for r in results if not r.ok]
    if not failed:
        return
    if len(results) == 1:
        # One board: its own error and exit code, as any single command gives.
        r = failed[0]
        err = EdgeError(f"{r.target.name}: {r.failed_step}: {r.error}", r.hint)
        err.exit_code = r.exit_code or 1
        raise err
    sys.exit(EXIT_PARTIAL)


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True)
