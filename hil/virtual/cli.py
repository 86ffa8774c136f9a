"""``edge sim``: start, list, drive and stop virtual boards."""

from __future__ import annotations

import json
import os

import click

from edge_agent.cli import complete
from edge_agent.cli.options import DURATION, sim_dir_option
from edge_agent.paths import default_sim_dir


def _dir_option(f):
    # --sim-dir as in every other command; --dir, its first spelling here, stays.
    return sim_dir_option("--dir", dest="rundir")(f)


def _name_argument(f):
    return click.argument("name", shell_complete=complete.sim_boards)(f)


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
        t.add_column("BLE")
        t.add_column("state")
        t.add_column("pid", justify="right")
    for r in rows:
        cells = [r["name"], r["board"], r["port"], r["fs"], r.get("ble_address") or "-"]
        if live:
            state = r.get("state", "?")
            color = {"running": "green", "starting": "green", "off": "yellow"}.get(state, "red")
            # BLE: the board's radio bridge runs (it advertises once its agent starts).
            ble = "up" if r.get("ble") else "-"
            cells += [ble, f"[{color}]{state}[/{color}]", str(r.get("pid") or "-")]
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
@click.option("--board", "boards", multiple=True, metavar="NAME", shell_complete=complete.board_types,
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
@click.option("--ble-hosts", type=click.IntRange(0, 16), default=2, show_default=True,
              help="BLE controllers on the virtual air for host processes (RUNDIR/air/host-<k>.hci).")
@click.option("--emulated", is_flag=True,
              help="Emulated RP2040s running the real MicroPython rp2 firmware (--board pico) instead of "
                   "the Unix port; their filesystem is littlefs in RUNDIR/<name>/flash.bin.")
@click.option("--json", "as_json", is_flag=True, help="Print the boards as JSON.")
def up(boards, count, rundir, blank, unprovisioned, db, reflash, ble_hosts, emulated, as_json):
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

    The bench has a virtual air: each board's BLE controller, at a static
    random address derived from its name (the BLE address column), and
    --ble-hosts controllers for host processes, all on one emulated link
    (Bumble). Each is an HCI transport on a unix socket, RUNDIR/air/<name>.hci
    and RUNDIR/air/host-<k>.hci (Bumble transport `unix:PATH`), serving one
    host process at a time; a host that leaves, however it dies, takes its
    connections with it.

    --emulated boards are RP2040s emulated by rp2040js (Node) running the
    MicroPython rp2 firmware built by `edge emulator build`: the real
    port's REPL, littlefs on flash and machine module, about a tenth of a
    Pico's speed, no radio. Their flash image keeps the firmware and the
    files across power off/on; `edge flash` deploys the agent on them.

    One bench per run folder: if a bench already runs in RUNDIR this fails
    (exit code 4); stop it with `edge sim down` or use another --sim-dir.
    """
    from edge_hil.virtual.control import Bench

    from edge_agent.paths import default_db

    bench = Bench.up(list(boards), count=count, rundir=rundir if rundir is not None else default_sim_dir(),
                     blank=blank, reflash=reflash, registry=None if unprovisioned else (db or default_db()),
                     ble_hosts=ble_hosts, emulated=emulated)
    rows = bench.boards()
    air_error = bench.air().get("error")
    if air_error:
        click.echo(f"warning: {air_error}; the boards run without BLE", err=True)
    if as_json:
        click.echo(json.dumps([_public(r) for r in rows], indent=2))
    else:
        _table(rows, live=False)
        click.echo(f"{len(rows)} board(s) running; run folder {bench.rundir}")
        if not air_error and os.environ.get("EDGE_BLE") != "sim":
            click.echo("BLE commands (edge scan, pair, gateway run) reach this bench's air with "
                       "`export EDGE_BLE=sim`")


def _public(r: dict) -> dict:
    keys = ("name", "board", "kind", "port", "fs", "console_log", "pid", "ble_address", "flash_url", "flash_file",
            "uf2_drive")
    out = {k: r.get(k) for k in keys}
    for k in ("device_id", "state", "alive", "power", "repl", "restarts", "mode", "ble"):
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
                   f"`edge sim down --sim-dir {bench.rundir}` cleans up")


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
@_name_argument
@_dir_option
def reset(name, rundir):
    """Hard-reset board NAME: it boots again and runs main.py."""
    _bench(rundir).reset(name)
    click.echo(f"{name}: reset")


@sim.command()
@_name_argument
@click.argument("state", type=click.Choice(["on", "off"]))
@_dir_option
def power(name, state, rundir):
    """Switch board NAME's power on or off (off: its interpreter is killed, as by a power cut)."""
    bench = _bench(rundir)
    (bench.power_on if state == "on" else bench.power_off)(name)
    click.echo(f"{name}: power {state}")


@sim.command()
@_name_argument
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
@_name_argument
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


def _console_log(rundir, name: str):
    """The console log of board ``name``: RUNDIR/<name>/console.log, there
    while the bench runs and after `sim down` too."""
    from pathlib import Path

    from edge_agent.errors import NotFound

    root = Path(rundir if rundir is not None else default_sim_dir())
    path = root / name / "console.log"
    if path.is_file():
        return path
    known = sorted(p.parent.name for p in root.glob("*/console.log"))
    raise NotFound(f"no console log of a board named {name!r} in {root}",
                   "boards with a log: " + ", ".join(known) if known else
                   f"start boards with `edge sim up --sim-dir {root}`")


def last_lines(data: bytes, n: int) -> bytes:
    """The last ``n`` lines of ``data`` (a last line without its newline counts)."""
    if n == 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


@sim.command()
@_name_argument
@click.option("-n", "--lines", type=click.IntRange(min=0), default=None, metavar="N",
              help="Print only the last N lines (then follow, with -f).")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing what the board prints, as `tail -f`, until Ctrl-C (or --for).")
@click.option("--for", "duration", type=DURATION, default=None,
              help="With --follow, stop after this long: 30, 30s, 10m.")
@_dir_option
def logs(name, lines, follow, duration, rundir):
    """Print the console log of board NAME: what it printed since it was made.

    The log (RUNDIR/NAME/console.log) is kept across `sim down` and `sim
    up`; past 16 MB it moves to console.log.1 and a new one starts, which
    --follow notices. It is printed as `edge monitor --raw` shows a
    console: telemetry frames (#EA: lines) undecoded, control bytes other
    than CR, LF and TAB as \\xNN (the raw REPL's), a bad UTF-8 byte as
    U+FFFD; `edge monitor NAME` decodes the frames, but takes the board's
    port. The file itself holds the bytes as sent.

    \b
      edge sim logs esp32-1 -n 20
      edge sim logs picow-1 -f
      edge sim logs picow-1 -f --for 10s
    """
    import codecs
    import os
    import time

    from edge_agent.cli.monitor import printable

    path = _console_log(rundir, name)
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def show(data: bytes) -> None:
        # A character cut between two reads is joined, not shown as two U+FFFD.
        click.echo(printable(text.decode(data)), nl=False)

    f = open(path, "rb")
    try:
        data = f.read()
        show(data if lines is None else last_lines(data, lines))
        if not follow:
            return
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            chunk = f.read(65536)
            if chunk:
                show(chunk)
                continue
            try:
                moved = os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                moved = False     # between the rename and the new file
            if moved:             # rolled over: the old file is drained, read the new one
                f.close()
                f = open(path, "rb")
                continue
            time.sleep(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        f.close()
