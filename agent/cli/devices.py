"""``edge devs``: what is attached, and which identity each board holds."""

from __future__ import annotations

import json

import click

from edge_agent.cli.options import sim_dir_option
from edge_agent.paths import default_db, default_sim_dir


def attached(sim_dir, db, ports=None) -> list[dict]:
    """Every board :func:`edge_agent.discover.discover` finds, with its
    identity as far as it is known without opening a port.

    ``registered`` says whether the registry holds the identity of the
    device id the board holds, ``provisioned`` whether that identity also
    passed ``edge flash``'s self-test (both False for a board with no id);
    None ("unknown") for a USB board: only the board itself knows its id,
    and its port may be held by another command. ``last_device`` is then the
    registry's device whose telemetry last came on that port, a hint only.
    """
    from edge_agent.board_names import registry_ports
    from edge_agent.discover import discover
    from edge_agent.store import Store

    found = discover(sim_dir, ports=ports)
    identities: dict = {}
    on_port: dict[str, str] = {}
    if db.is_file():
        on_port = {port: device for device, port in registry_ports(db).items()}
        with Store(db, create=False) as store:
            identities = {d: store.identity(d) for c in found if c.driver is not None
                          and (d := c.driver.stored_device_id())}
    rows = []
    for c in found:
        row = c.as_dict()
        device_id = c.driver.stored_device_id() if c.driver is not None else None
        if c.driver is None:
            row.update(device_id=None, registered=None, provisioned=None,
                       last_device=on_port.get(c.port))
        else:
            ident = identities.get(device_id)
            row.update(port=c.driver.console_port(), device_id=device_id, registered=ident is not None,
                       provisioned=bool(ident and ident["provisioned"]), last_device=None)
        rows.append(row)
    return rows


def _provisioned(row: dict) -> str:
    if row["provisioned"] is None:
        return "unknown" + (f" (last: {row['last_device']})" if row["last_device"] else "")
    if row["provisioned"]:
        return "[green]yes[/green]"
    if not row["device_id"]:
        return "no (no identity)"
    return "no (not self-tested)" if row["registered"] else "no (not in the registry)"


@click.command()
@sim_dir_option()
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db].")
@click.option("--json", "as_json", is_flag=True, help="Print the boards as JSON.")
def devs(sim_dir, db, as_json):
    """List attached boards: USB serial ports and running virtual boards (as `mpremote devs`).

    A USB port is listed when a board file (boards/*.json) lists its USB id;
    its board type shows as the choices when several boards share the id (a
    CP210x bridge sits on every ESP32 variant). Virtual boards come from the
    bench in --sim-dir.

    "provisioned" says whether the board's identity is in the registry and
    passed `edge flash`'s self-test. A virtual board's identity is read from
    its filesystem. A USB board is never opened here (another command may
    hold its port): its identity shows as "unknown", with the device whose
    telemetry last came on that port as a hint; `edge flash --port PORT`
    reads and completes it.

    The NAME column is accepted wherever a port is (`edge monitor esp32-1`),
    and so is a device id.

    \b
      edge devs
      edge devs --json | jq -r '.[] | select(.kind=="virtual") | .port'
    """
    from pathlib import Path

    rows = attached(sim_dir or default_sim_dir(), Path(db) if db else default_db())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no board found: no USB serial port with a known board's USB id, and no virtual "
                   "bench running (`edge sim up` starts one)")
        return
    from rich.table import Table

    from edge_agent.cli import table_console

    t = Table(box=None, pad_edge=False)
    for col in ("name", "kind", "board", "port", "usb id", "device id", "provisioned"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["name"], r["kind"], r["board"] or "|".join(r["choices"]) + "?", r["port"],
                  r["usb_id"] or "-", r["device_id"] or "-", _provisioned(r))
    table_console().print(t)
