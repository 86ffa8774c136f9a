"""``edge telemetry ingest``: consoles in, registry out."""

from __future__ import annotations

import json
import logging
import time

import click

from edge_agent.errors import NotFound
from edge_agent.paths import default_db, default_sim_dir


def sim_ports(run_dir) -> list[str]:
    """The console ports of the virtual boards running in ``run_dir``."""
    from edge_hil.virtual.control import Bench

    boards = Bench(run_dir).boards()
    return [b["port"] for b in boards if b.get("alive", True)]


@click.command()
@click.argument("ports", nargs=-1)
@click.option("--sim", "use_sim", is_flag=True,
              help="Also ingest from every running virtual board (edge sim up).")
@click.option("--sim-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder of the virtual bench [default: $EDGE_SIM_DIR or ~/.local/share/edge/sim].")
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db].")
@click.option("--for", "duration", type=float, default=None, metavar="SECONDS",
              help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("--idle", type=float, default=None, metavar="SECONDS",
              help="Stop once no new record has arrived for this long (after the first).")
@click.option("--baud", type=int, default=115200, show_default=True)
@click.option("--console", is_flag=True, help="Also print each board's console text.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-v", "--verbose", count=True, help="Log each connection and bad frame.")
def ingest(ports, use_sim, sim_dir, db, duration, idle, baud, console, as_json, verbose):
    """Read telemetry frames from serial PORTS and store them in the registry.

    Each record is stored once under (device, sequence) and acknowledged only
    after it is committed, so the device frees it from its journal; a port that
    goes away is reopened when it comes back. PORTS are device paths
    (/dev/ttyUSB0, /dev/pts/5) or pyserial URLs (socket://host:port, rfc2217://...).

    \b
    Examples:
      edge telemetry ingest /dev/ttyUSB0 /dev/ttyACM0
      edge telemetry ingest --sim --for 30
      edge telemetry ingest --sim --idle 5 --json
    """
    from rich.console import Console
    from rich.table import Table

    from edge_agent.ingest import run_ports

    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 1),
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    ports = list(ports)
    if use_sim:
        found = sim_ports(sim_dir or default_sim_dir())
        if not found:
            raise NotFound("no virtual board is running", "start some with `edge sim up`")
        ports += found
    if not ports:
        raise click.UsageError("give at least one PORT, or --sim")
    db = str(db or default_db())
    err = Console(stderr=True)
    def show_console(port, text):
        err.print(f"[dim]{port}[/] {text.decode(errors='replace')}", markup=True, highlight=False)
    started = time.time()
    if not as_json:
        err.print(f"ingesting from {len(ports)} port(s) into {db}; Ctrl-C to stop")
    stats = run_ports(ports, db, duration=duration, idle=idle, baud=baud,
                      on_console=show_console if console else None)
    elapsed = time.time() - started
    rows = [{"port": p, "devices": sorted(s.devices), "batches": s.batches, "records": s.records,
             "duplicates": s.duplicates, "bad_frames": dict(s.bad), "connects": s.connects}
            for p, s in stats.items()]
    if as_json:
        click.echo(json.dumps({"db": db, "seconds": round(elapsed, 2), "ports": rows}, indent=2))
        return
    t = Table(title=f"ingested in {elapsed:.1f} s")
    for col in ("port", "devices", "batches", "records", "dupes", "bad frames", "connects"):
        t.add_column(col, justify="right" if col not in ("port", "devices") else "left",
                     no_wrap=col in ("port", "devices"))
    for r in rows:
        bad = ", ".join(f"{k}={v}" for k, v in r["bad_frames"].items()) or "0"
        t.add_row(r["port"], ", ".join(r["devices"]) or "-", str(r["batches"]), str(r["records"]),
                  str(r["duplicates"]), bad, str(r["connects"]))
    from edge_agent.cli import table_console

    table_console().print(t)
