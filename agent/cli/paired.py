"""``edge devices``: the paired devices of this host, by owner account (list, show, unpair, factory-reset).

``edge devs`` (agent/cli/devices.py) lists the boards attached to the bench;
this group lists what is paired, wherever it is.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click

from edge_agent.cli import EdgeGroup, complete
from edge_agent.cli.options import Duration, sim_dir_option
from edge_agent.cli.pair import account_option, check_account, load_bond
from edge_agent.cli.telemetry import db_option
from edge_agent.errors import Busy, EdgeError, NotFound


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _store(db, create: bool = False):
    from edge_agent.paths import default_db
    from edge_agent.store import Store

    return Store(db or default_db(), create=create)


@click.group(cls=EdgeGroup, invoke_without_command=True)
@account_option("Only the devices of this owner account.", default=False)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def devices(ctx, account, db, as_json):
    """The paired devices of this host: list (the default), show, unpair, factory-reset.

    Each paired device is bound to one owner account (the one `edge pair`
    used); its bond lets `edge gateway run` reconnect with no code. Bond
    keys are never shown. `edge devs` lists the boards attached instead.

    \b
    Examples:
      edge devices                         # every paired device
      edge devices list --account home --json
      edge devices show esp32-3f9a0c12b7d4
      edge devices unpair esp32-3f9a0c12b7d4
      edge devices factory-reset esp32-1   # a bench board: drop its bonds
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_, account=account, db=db, as_json=as_json)


@devices.command("list")
@account_option("Only the devices of this owner account.", default=False)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_(account, db, as_json):
    """List the paired devices: id, board, account, paired and last connected.

    \b
    Examples:
      edge devices list
      edge devices list --account home --json
    """
    if account:
        check_account(account)
    try:
        store = _store(db)
    except NotFound:
        rows: list[dict] = []
    else:
        with store:
            rows = store.bonds(account)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from edge_agent.cli import table_console
    from edge_agent.cli.telemetry import cells

    console = table_console()
    if not rows:
        console.print("no paired devices" + (f" of account {account!r}" if account else "")
                      + "; pair one with `edge pair DEVICE --code CODE` (`edge scan` finds them)")
        return
    table = Table(box=None, header_style="bold")
    for name in ("device", "board", "account", "paired", "last connected", "key fingerprint"):
        table.add_column(name)
    for r in rows:
        table.add_row(*cells(r["device_id"], r["board"] or "?", r["account"], _when(r["paired_at"]),
                             _when(r["last_connected"]), r["key_fingerprint"] or "?"))
    console.print(table)


@devices.command()
@click.argument("device", shell_complete=complete.paired_devices)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(device, db, as_json):
    """Show one device: its bond (never the key), its registry row and its audit log.

    \b
    Examples:
      edge devices show esp32-3f9a0c12b7d4
      edge devices show esp32-3f9a0c12b7d4 --json
    """
    with _store(db) as store:
        bond = next((b for b in store.bonds() if b["device_id"] == device), None)
        row = store.device(device)
        log = store.audit_log(device)
        records = store.count(device) if row else 0
    if bond is None and row is None and not log:
        raise NotFound(f"no device {device} in the registry", "`edge devices` lists the paired devices")
    out = {"device_id": device, "paired": bond is not None, "bond": bond, "device": row, "records": records,
           "audit": log}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if bond:
        click.echo(f"{device}: paired to account {bond['account']!r} since {_when(bond['paired_at'])}; "
                   f"last connected {_when(bond['last_connected'])}")
    else:
        click.echo(f"{device}: not paired")
    if row:
        click.echo(f"  board {row['board'] or '?'}, key fingerprint {row['key_fingerprint'] or '?'}, "
                   f"{records} record(s), last seen {_when(row['last_seen'])}")
    for entry in log:
        click.echo(f"  {_when(entry['t'])}  {entry['action']:<13} account {entry['account'] or '-'}"
                   + (f"  ({entry['detail']})" if entry["detail"] else ""))


@devices.command()
@click.argument("device", shell_complete=complete.paired_devices)
@account_option("Only if bound to this account (as its owner).", default=False)
@click.option("--forget", is_flag=True,
              help="Drop the bond here without contacting the device (lost or out of range): it stays "
                   "bound to its account until a factory reset.")
@click.option("--scan-for", type=Duration(min=0.5), default=10.0, show_default=True, metavar="DURATION",
              help="How long to look for the device.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def unpair(device, account, forget, scan_for, db, as_json):
    """Unpair DEVICE: it deletes its bonds (UNPAIR), and the registry forgets it.

    The device must be in range: it is reached with its bond and told to
    unpair, so any account may pair it next with the label's code. With
    --forget the registry forgets it without contacting it.

    \b
    Examples:
      edge devices unpair esp32-3f9a0c12b7d4
      edge devices unpair esp32-3f9a0c12b7d4 --forget    # lost: drop it here only
    """
    with _store(db, create=True) as store:
        bond = load_bond(store, device)
    if bond is None:
        raise NotFound(f"{device} is not paired with this host", "`edge devices` lists the paired devices")
    if account and check_account(account) != bond.account:
        raise Busy(f"{device} is bound to the account {bond.account!r}, not {account!r}",
                   f"unpair it as its owner: --account {bond.account}")
    if forget:
        with _store(db, create=True) as store:
            store.drop_bond(device, "forgotten", "dropped here only (--forget)")
        click.echo(f"warning: {device} was not told: it stays bound to account {bond.account!r} until its "
                   "owner unpairs it or it is factory reset", err=True)
        _done(device, bond.account, told=False, as_json=as_json)
        return
    told = asyncio.run(_unpair(bond, scan_for))
    with _store(db, create=True) as store:
        store.drop_bond(device, "unpaired", "device confirmed" if told else "device had dropped the bond")
    _done(device, bond.account, told=True, as_json=as_json)


def _done(device: str, account: str, told: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"device_id": device, "account": account, "unpaired": True, "device_told": told}))
    else:
        click.echo(f"unpaired {device} (was account {account!r})" + ("" if told else ", here only"))


async def _unpair(bond: Any, scan_for: float) -> bool:
    """True once the device confirmed; False if it no longer held the bond. Errors name --forget."""
    from edge_agent.links.ble import BleConnection, find, pairing_failure
    from edge_agent.pairing import PairingError

    try:
        seen = await find(bond.device_id, scan_for)
        async with BleConnection(seen.address, bond.device_id) as conn:
            try:
                session = await conn.resume(bond)
            except PairingError as e:
                if getattr(e, "reason", None) == "unknown_bond":
                    return False
                raise pairing_failure(bond.device_id, e) from None
            if not await conn.unpair(session):
                raise EdgeError(f"{bond.device_id} did not confirm UNPAIR", "retry")
            return True
    except EdgeError as e:
        fix = (e.hint + "; or " if e.hint else "") + f"`edge devices unpair {bond.device_id} --forget` drops it here only"
        raise type(e)(e.message, fix) from None


@devices.command("factory-reset")
@click.argument("port", shell_complete=complete.ports)
@sim_dir_option()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def factory_reset(port, sim_dir, db, as_json):
    """Factory-reset the board on PORT: it forgets every bond and its wrong-code count.

    Runs edgefw.bonds.factory_reset() at the board's REPL, then restarts its
    agent; its identity (and so its label) is kept. The registry forgets its
    bond, and the reset is written to the audit log. PORT is a port, a board
    name or a device id.

    \b
    Examples:
      edge devices factory-reset esp32-1
      edge devices factory-reset /dev/ttyUSB0 --json
    """
    from edge_agent.board_link import BoardLink
    from edge_agent.cli.options import port_resolver
    from edge_agent.device_fs import CONFIG_JSON

    port = port_resolver(sim_dir, db)(port)
    with BoardLink(port) as link:
        raw = link.get(CONFIG_JSON)
        try:
            device_id = json.loads(raw or b"{}").get("device_id")
        except ValueError:
            device_id = None
        link.exec("import edgefw.bonds\nedgefw.bonds.factory_reset()", timeout=20)
        link.soft_reset()
    account = None
    with _store(db, create=True) as store:
        if device_id:
            account = store.drop_bond(device_id, "factory_reset", f"on {port}")
    if as_json:
        click.echo(json.dumps({"port": port, "device_id": device_id, "factory_reset": True,
                               "was_account": account}))
    else:
        click.echo(f"factory reset {device_id or 'the board'} on {port}: bonds dropped, identity kept"
                   + (f" (was bound to account {account!r} here)" if account else ""))
