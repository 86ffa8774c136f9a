"""``edge sim``: start, list, drive and stop virtual boards."""

from __future__ import annotations

import json

import click

from edge_agent.paths import default_sim_dir

DIR_HELP = "Run folder of the bench [default: $EDGE_SIM_DIR or ~/.local/share/edge/sim]."


def _dir_option(f):
    return click.option("--dir", "rundir", type=click.Path(file_okay=False), default=None, help=DIR_HELP)(f)


def _bench(rundir):
    from edge_hil.virtual.control import Bench
    return Bench(rundir if rundir is not None else default_sim_dir())


def _table(rows: list[dict], live: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, pad_edge=False)
    # Ports and folders are copied into other commands: fold, never cut.
    for col in ("name", "board", "serial port", "filesystem", "BLE address"):
        t.add_column(col, overflow="fold")
    if live:
        t.add_column("state")
        t.add_column("pid", justify="right")
    for r in rows:
        cells = [r["name"], r["board"], r["port"], r["fs"], r.get("ble_address") or "-"]
        if live:
            state = r.get("state", "?")
            color = {"running": "green", "starting": "green", "off": "yellow"}.get(state, "red")
            cells += [f"[{color}]{state}[/{color}]", str(r.get("pid") or "-")]
        t.add_row(*cells)
    console = Console()
    if not console.is_terminal:
        console = Console(width=240)     # a pipe or a file gets whole lines
    console.print(t)


@click.group()
def sim() -> None:
    """Virtual boards: the MicroPython Unix port running the Edge Agent.

    Each board has a serial port (a pseudo-terminal that `mpremote connect
    PORT ...` drives like a real board, soft reset included), a folder that
    is its filesystem, and a console log. One supervisor process per run
    folder owns the boards.

    \b
      edge sim up --board esp32 --board picow     # esp32-1, picow-1
      edge sim up -n 3 --board esp32               # esp32-1 .. esp32-3
      mpremote connect $(edge sim ls --json | jq -r '.[0].port') fs ls
      edge sim reset esp32-1
      edge sim power esp32-1 off
      esptool --port $(edge sim ls --json | jq -r '.[0].flash_url') chip-id
      edge sim bootsel picow-1                     # RPI-RP2 drive folder appears
      edge sim down

    ESP boards also listen on flash_url (rfc2217://127.0.0.1:PORT): esptool
    resets them into the ROM download mode over DTR/RTS as on a real board
    and writes RUNDIR/<name>/flash.bin; rp2 boards take a .uf2 in BOOTSEL.
    """


@sim.command()
@click.option("--board", "boards", multiple=True, metavar="NAME",
              help="Board type (a file in boards/); repeat for more. [default: virtual]")
@click.option("-n", "count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many boards of each --board type.")
@_dir_option
@click.option("--blank", is_flag=True, help="Do not install the firmware: empty filesystems.")
@click.option("--unprovisioned", is_flag=True,
              help="Install the firmware but mint no identity (as a board before `edge provision`).")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Registry the identities go to [default: $EDGE_DB or ~/.local/share/edge/registry.db].")
@click.option("--reflash", is_flag=True,
              help="Replace the firmware (main.py, edgefw/, board.json) of boards that have one; "
                   "identity (config.json) and data stay.")
@click.option("--json", "as_json", is_flag=True, help="Print the boards as JSON.")
def up(boards, count, rundir, blank, unprovisioned, db, reflash, as_json):
    """Start virtual boards; return once they all run.

    Boards are named <type>-<k> (esp32-1, esp32-2, picow-1, ...); their
    folders RUNDIR/<name>/ keep their filesystem (fs/) and console log
    (console.log) across `sim down` and `sim up`, so a board restarted with
    the same name keeps its identity and journal. A board that has firmware
    keeps it unless --reflash.

    Each board gets its identity as `edge flash` gives it: a key made on the
    board, recorded in the registry with a setup code (print its label with
    `edge label DEVICE`); a board that has one keeps it. --unprovisioned
    leaves that to `edge provision`; --blank installs nothing.

    One bench per run folder: if a bench already runs in RUNDIR this fails
    (exit code 4); stop it with `edge sim down` or use another --dir.
    """
    from edge_hil.virtual.control import Bench

    from edge_agent.paths import default_db

    bench = Bench.up(list(boards), count=count, rundir=rundir if rundir is not None else default_sim_dir(),
                     blank=blank, reflash=reflash, registry=None if unprovisioned else (db or default_db()))
    rows = bench.boards()
    if as_json:
        click.echo(json.dumps([_public(r) for r in rows], indent=2))
    else:
        _table(rows, live=False)
        click.echo(f"{len(rows)} board(s) running; run folder {bench.rundir}")


def _public(r: dict) -> dict:
    keys = ("name", "board", "port", "fs", "console_log", "pid", "ble_address", "flash_url", "flash_file",
            "uf2_drive")
    out = {k: r.get(k) for k in keys}
    for k in ("device_id", "state", "alive", "power", "repl", "restarts", "mode"):
        if k in r:
            out[k] = r[k]
    return out


@sim.command(name="ls")
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the boards as JSON.")
def ls(rundir, as_json):
    """List the bench's boards and whether each is alive."""
    bench = _bench(rundir)
    rows = bench.status()
    if as_json:
        click.echo(json.dumps([_public(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo(f"no virtual bench is running in {bench.rundir}")
        return
    _table(rows, live=True)
    if not bench.is_running():
        click.echo(f"the bench in {bench.rundir} is not running (its supervisor died); "
                   f"`edge sim down --dir {bench.rundir}` cleans up")


@sim.command()
@_dir_option
def down(rundir):
    """Stop every board and the supervisor; leave the boards' folders."""
    bench = _bench(rundir)
    if not bench.is_running():
        bench.down()
        click.echo(f"no virtual bench is running in {bench.rundir}")
        return
    n = bench.down()
    click.echo(f"stopped {n} board(s) in {bench.rundir}")


@sim.command()
@click.argument("name")
@_dir_option
def reset(name, rundir):
    """Hard-reset board NAME: it boots again and runs main.py."""
    _bench(rundir).reset(name)
    click.echo(f"{name}: reset")


@sim.command()
@click.argument("name")
@click.argument("state", type=click.Choice(["on", "off"]))
@_dir_option
def power(name, state, rundir):
    """Switch board NAME's power on or off (off: its interpreter is killed, as by a power cut)."""
    bench = _bench(rundir)
    (bench.power_on if state == "on" else bench.power_off)(name)
    click.echo(f"{name}: power {state}")


@sim.command()
@click.argument("name")
@_dir_option
def bootsel(name, rundir):
    """Reset rp2 board NAME into BOOTSEL: its RPI-RP2 drive folder appears.

    Copy a .uf2 for the RP2040 into the folder: the board writes it into its
    flash file and boots MicroPython again (as a real Pico does).

    \b
      edge sim bootsel picow-1
      cp firmware.uf2 "$(edge sim ls --json | jq -r '.[] | select(.name=="picow-1") | .uf2_drive')"/
    """
    row = _bench(rundir).bootsel(name)
    click.echo(f"{name}: BOOTSEL, drive {row.get('uf2_drive')}")


@sim.command()
@click.argument("name")
@_dir_option
def download(name, rundir):
    """Reset ESP board NAME into its ROM download mode (as holding BOOT and pressing EN).

    esptool usually does this itself over flash_url; this is for
    `esptool --before no-reset` and for tests. A hard reset (`edge sim
    reset NAME`, or esptool's) boots MicroPython again.

    \b
      edge sim download esp32-1
    """
    row = _bench(rundir).download_mode(name)
    click.echo(f"{name}: download mode, {row.get('flash_url')}")
