"""``edge telemetry ingest``: consoles in, registry out."""

from __future__ import annotations

import json
import logging
import time

import click

from edge_agent.cli import complete
from edge_agent.cli.options import DURATION, port_resolver, sim_dir_option
from edge_agent.errors import NotFound, Partial
from edge_agent.links.serial import MAX_BAUD, MIN_BAUD
from edge_agent.paths import default_db, default_sim_dir


def sim_ports(run_dir) -> list[str]:
    """The console ports of the boards the board sources report in ``run_dir``
    (:mod:`edge_agent.drivers`; the virtual bench is one)."""
    from edge_agent.discover import source_candidates

    return [c.driver.console_port() for c in source_candidates(run_dir)]


@click.command()
@click.argument("ports", nargs=-1, shell_complete=complete.ports)
@click.option("--sim", "use_sim", is_flag=True,
              help="Also ingest from every running virtual board (edge sim up).")
@sim_dir_option()
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db].")
@click.option("--for", "duration", type=DURATION, default=None,
              help="Stop after this long: 30, 30s, 10m, 1h (default: run until Ctrl-C).")
@click.option("--idle", type=DURATION, default=None,
              help="Stop once no port has delivered a new record for this long, counted from the "
                   "start: for boards that stop sending (a drained journal, a test device). Boards "
                   "that stream never go idle: combine with --for.")
@click.option("--quiet-after", type=DURATION, default=30.0, show_default=True,
              help="Warn when a port that delivered records sends none for this long (its agent "
                   "stopped, the board lost power); counted as `quiet` in the summary.")
@click.option("-b", "--baud", type=click.IntRange(MIN_BAUD, MAX_BAUD), default=115200, show_default=True,
              help="Serial speed of real ports (ignored by ptys and socket:// URLs).")
@click.option("--console", is_flag=True, help="Also print each board's console text.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", count=True, help="Log each connection and bad frame.")
def ingest(ports, use_sim, sim_dir, db, duration, idle, quiet_after, baud, console, as_json, verbose):
    """Read telemetry frames from serial PORTS and store them in the registry.

    Each record is stored once under (device, sequence) and acknowledged only
    after it is committed (one writer groups the commits of every port), so
    the device frees it from its journal; a batch the host cannot store is
    refused and kept (`edge telemetry show`); a port that goes away is reopened
    when it comes back. Exits 7 if some batch could not be written to the
    registry (the devices keep those records and send them again). PORTS are device paths
    (/dev/ttyUSB0, /dev/pts/5), pyserial URLs (socket://host:port, rfc2217://...)
    or names from `edge devs` (a virtual board's name, esp32-1, or a device id).

    Each port is taken exclusively for the whole run (see `edge monitor
    --help`): a port another command holds exits 4 naming it, a missing one
    exits 3, before anything is written.

    \b
    Examples:
      edge telemetry ingest /dev/ttyUSB0 /dev/ttyACM0
      edge telemetry ingest esp32-1 picow-1 --for 30
      edge telemetry ingest --sim --for 30
      edge telemetry ingest --sim --for 10m --idle 5 --json   # ends when the boards fall silent, or after 10 min
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from edge_agent.links.serial import IngestResult, run_ports

    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 1),
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    ports = [port_resolver(sim_dir, db)(p) for p in ports]
    if use_sim:
        found = sim_ports(sim_dir or default_sim_dir())
        if not found:
            raise NotFound("no virtual board is running", "start some with `edge sim up`")
        ports += found
    if not ports:
        raise click.UsageError("give at least one PORT, or --sim")
    from edge_agent.ports import check_port

    for p in ports:     # before the registry is made, and before "ingesting" is said
        check_port(p)
    db = str(db or default_db())
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def show_console(port: str, text: bytes) -> None:
        # Console text is the board's: printed as text, never read as markup.
        err.print(Text.assemble((port, "dim"), " ", text.decode(errors="replace")))
    started = time.time()
    if not as_json:
        err.print(Text(f"ingesting from {len(ports)} port(s) into {db}; Ctrl-C to stop"))
    outcome: list[IngestResult] = []
    stats = run_ports(ports, db, duration=duration, idle=idle, baud=baud, quiet_after=quiet_after,
                      on_console=show_console if console else None,
                      on_quiet=lambda line: err.print(Text(line, style="yellow")), result=outcome)
    elapsed = time.time() - started
    failures = outcome[0].failures if outcome else 0
    quiet = outcome[0].quiet if outcome else {}
    rows = [{"port": p, "devices": sorted(s.devices), "batches": s.batches, "records": s.records,
             "duplicates": s.duplicates, "conflicts": s.conflicts, "refused": s.refused,
             "failed": s.failed, "bad_frames": dict(s.bad), "early": s.early, "connects": s.connects,
             "quiet": quiet.get(p, 0)}
            for p, s in stats.items()]
    if as_json:
        click.echo(json.dumps({"db": db, "seconds": round(elapsed, 2), "ports": rows,
                               "registry_failures": failures,
                               "last_error": outcome[0].last_error if failures else None}, indent=2))
    else:
        _print_table(rows, elapsed, Table)
    if failures:
        raise Partial(f"{failures} registry write(s) failed ({outcome[0].last_error}); those "
                      "batches were not acknowledged and the devices will send them again",
                      "check the registry's disk space and that no other process holds it locked")


def _print_table(rows: list[dict], elapsed: float, Table) -> None:
    """The summary, whole in 120 columns (a pipe's width, see
    :func:`~edge_agent.cli.table_console`): no vertical rules, one space
    between columns, each number column at least as wide as its one-word
    header, one device id and one kind of bad frame a line; a port longer
    than its share folds onto more lines, so no cell is ever cut."""
    from rich import box
    from rich.text import Text

    t = Table(title=f"ingested in {elapsed:.1f} s", box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    for col in ("port", "devices", "batches", "records", "dupes", "conflicts", "refused", "failed",
                "bad", "connects", "quiet"):
        text = col in ("port", "devices", "bad")
        t.add_column(col, justify="left" if col in ("port", "devices") else "right", overflow="fold",
                     no_wrap=not text, min_width={"port": 12, "devices": 20, "bad": 9}.get(col, len(col)))
    for r in rows:
        bad = "\n".join(f"{k}={v}" for k, v in r["bad_frames"].items()) or "0"
        t.add_row(*[Text(str(v)) for v in (
            r["port"], "\n".join(r["devices"]) or "-", r["batches"], r["records"], r["duplicates"],
            r["conflicts"], r["refused"], r["failed"], bad, r["connects"], r["quiet"])])
    from edge_agent.cli import table_console

    table_console().print(t)
