"""``edge scan``: the Edge devices advertising in range (docs/protocol.md 5.1)."""

from __future__ import annotations

import asyncio
import json

import click

from edge_agent.cli.options import Duration
from edge_agent.cli.telemetry import db_option


@click.command()
@click.option("--for", "duration", type=Duration(min=0.1), default=5.0, show_default=True, metavar="DURATION",
              help="How long to listen (5s, 500ms, 1m).")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def scan(duration, db, as_json):
    """List the Edge devices advertising in range: id, board, address, RSSI, paired, paused.

    A device is recognised by its advertisement alone (other BLE devices are
    left out). "paired" means it holds a bond (to some owner); "paused"
    means it is waiting after wrong setup codes. "account" is the owner
    account this host's registry binds it to, if any. A device connected to
    a host does not advertise, so it is not listed while connected.

    \b
    Examples:
      edge scan
      edge scan --for 10s --json
      EDGE_BLE=sim edge scan        # the virtual bench's air (`edge sim up`)
    """
    from edge_agent.links.ble import scan as run

    seen = asyncio.run(run(duration))
    accounts = _accounts(db)
    rows = [{**s.as_dict(), "account": accounts.get(s.device_id)} for s in seen]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from edge_agent.cli import table_console
    from edge_agent.cli.telemetry import cells

    console = table_console()
    if not rows:
        console.print(f"no Edge device heard in {duration:g} s; power one on, or listen longer (--for 15s)")
        return
    table = Table(box=None, header_style="bold")
    for name, justify in (("device", "left"), ("board", "left"), ("address", "left"), ("RSSI", "right"),
                          ("paired", "left"), ("paused", "left"), ("account (here)", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*cells(r["device_id"], r["board"] or "?", r["address"],
                             "" if r["rssi"] is None else str(r["rssi"]),
                             "yes" if r["paired"] else "no", "yes" if r["paused"] else "no",
                             r["account"] or "-"))
    console.print(table)


def _accounts(db) -> dict[str, str]:
    """device id -> its owner account in this host's registry (none if there is no registry)."""
    from edge_agent.paths import default_db
    from edge_agent.store import Store

    path = db or default_db()
    try:
        with Store(path, create=False) as store:
            return {b["device_id"]: b["account"] for b in store.bonds()}
    except Exception:    # no registry yet: nothing is bound here
        return {}
