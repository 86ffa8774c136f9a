"""``edge pair``: bind a device in range to an owner account with its setup code (docs/protocol.md 5.4, 5.7).

Also the pieces the other BLE commands share: the ``--account`` option and
its default, and the bond read back from the registry.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from typing import Any

import click

from edge_agent.cli import complete
from edge_agent.cli.options import Duration
from edge_agent.cli.telemetry import db_option
from edge_agent.errors import BadInput, Busy

ACCOUNT_ENV = "EDGE_ACCOUNT"
DEFAULT_ACCOUNT = "default"
_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")   # the device-id alphabet (protocol 2.2, 5.4)


def check_account(account: str) -> str:
    """``account`` if it is 1..64 characters of the device-id alphabet; BadInput naming the rule."""
    if not _ACCOUNT.fullmatch(account or ""):
        raise BadInput(f"{account!r} is not an account name",
                       "use 1 to 64 characters of a-z 0-9 - . starting with a letter or digit (e.g. home)")
    return account


def default_account() -> str:
    """``$EDGE_ACCOUNT`` or ``default``."""
    return check_account(os.environ.get(ACCOUNT_ENV, "").strip() or DEFAULT_ACCOUNT)


def account_option(help_text: str, *, default: bool = True):
    """``--account A``; with ``default`` the value falls back to :func:`default_account`."""
    return click.option("--account", "-a", default=None, shell_complete=complete.accounts,
                        help=help_text + (f" [default: ${ACCOUNT_ENV} or {DEFAULT_ACCOUNT!r}]" if default else ""))


def load_bond(store: Any, device_id: str) -> Any:
    """The registry's bond of ``device_id`` as a :class:`edge_agent.pairing.Bond`, or None."""
    from edge_agent.pairing import Bond

    row = store.bond_secret(device_id)
    if row is None:
        return None
    return Bond(row["device_id"], row["account"], row["host_id"], row["bond_id"], row["bond_key"],
                row["device_key"])


def _code(text: str) -> str:
    digits = re.sub(r"[\s-]", "", text)
    if not re.fullmatch(r"[0-9]{8}", digits):
        raise BadInput(f"{text!r} is not a setup code",
                       "type the 8 digits printed on the device's label (1234-5678), or pass --qr PAYLOAD")
    return digits


@click.command()
@click.argument("target", required=False, shell_complete=complete.device_ids, metavar="ADDRESS|DEVICE")
@click.option("--code", "-c", default=None, help="The setup code on the label (1234-5678).")
@click.option("--qr", default=None, metavar="PAYLOAD",
              help="The label's QR payload (EA1:...): names the device and its key fingerprint too.")
@account_option("Owner account to bind the device to.")
@click.option("--scan-for", type=Duration(min=0.5), default=10.0, show_default=True, metavar="DURATION",
              help="How long to look for the device.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the bond (never its key) as JSON.")
def pair(target, code, qr, account, scan_for, db, as_json):
    """Pair ADDRESS|DEVICE with its setup code and bind it to an owner account.

    The code is proven without being sent (CPace, docs/protocol.md 5.4); the
    device also proves its key, which must be the one this registry minted
    for it (or the QR's fingerprint). The bond is kept in the registry, so
    `edge gateway run` can reconnect later with no code. A device bound to
    another account is refused, here and by the device itself.

    \b
    Examples:
      edge scan                                       # find it
      edge pair esp32-3f9a0c12b7d4 --code 1234-5678
      edge pair --qr 'EA1:ESP32-3F9A0C12B7D4:12345678:...:ESP32' --account home
      edge pair C0:11:22:33:44:55 --code 12345678 --json
    """
    from edge_agent.label import parse_pairing_payload
    from edge_agent.links.ble import looks_like_address
    from edge_agent.paths import default_db
    from edge_agent.store import Store

    account = check_account(account) if account else default_account()
    if (code is None) == (qr is None):
        raise click.UsageError("give the setup code with --code, or the label's QR payload with --qr")
    fingerprint = None
    if qr is not None:
        label = parse_pairing_payload(qr)
        code, fingerprint = label.setup_code, label.fingerprint
        if target is None:
            target = label.device_id
        elif not looks_like_address(target) and target != label.device_id:
            raise BadInput(f"the QR payload is for {label.device_id}, not {target}",
                           "scan the label of the device you want to pair")
    else:
        code = _code(code)
    if target is None:
        raise click.UsageError("name the device (ADDRESS or DEVICE id; `edge scan` lists them)")
    path = db or default_db()
    with Store(path) as store:
        host_id = store.host_id()
        host_key = store.host_key()
        if not looks_like_address(target):
            _refuse_if_bound(store, target, account)

    progress = _Progress(quiet=as_json)
    try:
        bond, seen = asyncio.run(_pair(target, code, account, host_id, fingerprint, scan_for, path, progress,
                                        host_key))
    finally:
        progress.stop()
    with Store(path) as store:
        store.save_bond(bond.device_id, account, bond.host_id, bond.bond_id, bond.bond_key, bond.device_key,
                        detail=f"at {seen.address}")
        row = next(b for b in store.bonds() if b["device_id"] == bond.device_id)
    if as_json:
        click.echo(json.dumps({**row, "address": seen.address, "board": row["board"] or seen.board}, indent=2))
    else:
        click.echo(f"paired {bond.device_id} (board {row['board'] or seen.board or '?'}) to account {account!r}; "
                   f"`edge gateway run --account {account}` keeps it connected")


def _refuse_if_bound(store: Any, device_id: str, account: str) -> None:
    owner = store.account_of(device_id)
    if owner is not None and owner != account:
        store.audit(device_id, account, "pair_refused", f"bound to account {owner} in this registry")
        raise Busy(f"{device_id} is bound to the account {owner!r}, not {account!r}",
                   f"its owner runs `edge devices unpair {device_id} --account {owner}`, or factory-reset "
                   "the device (`edge devices factory-reset PORT` on a bench)")


async def _pair(target, code, account, host_id, fingerprint, scan_for, path, progress,
                host_key=None) -> tuple[Any, Any]:
    from edge_agent.links.ble import BleConnection, find, pairing_failure
    from edge_agent.pairing import PairingError
    from edge_agent.store import Store

    progress.step(f"looking for {target}")
    seen = await find(target, scan_for)
    with Store(path) as store:
        _refuse_if_bound(store, seen.device_id, account)
        ident = store.identity(seen.device_id)
    device_key = ident["public_key"] if ident else None
    if device_key is None and fingerprint is None:
        progress.warn(f"warning: this registry did not mint {seen.device_id} and no QR payload was given: "
                      "its key is taken on trust (pair with --qr to check it)")
    progress.step(f"connecting to {seen.device_id} at {seen.address}")
    try:
        async with BleConnection(seen.address, seen.device_id) as conn:
            progress.step(f"proving the setup code to {seen.device_id}")
            bond, _session = await conn.pair(code, account, host_id, device_key=device_key,
                                              fingerprint=fingerprint, host_key=host_key)
    except PairingError as e:
        with Store(path) as store:
            store.audit(seen.device_id, account, "pair_refused", getattr(e, "reason", "") or str(e))
        raise pairing_failure(seen.device_id, e, account) from None
    return bond, seen


class _Progress:
    """What pairing is doing, on stderr (rich status line); nothing with --json."""

    def __init__(self, quiet: bool):
        self.status: Any = None
        self.console: Any = None
        if not quiet:
            from rich.console import Console

            self.console = Console(stderr=True)
            self.started = time.monotonic()

    def step(self, text: str) -> None:
        if self.console is None:
            return
        if self.status is None:
            self.status = self.console.status(text)
            self.status.start()
        else:
            self.status.update(text)
        if not self.console.is_terminal:
            self.console.print(f"{text} ...")

    def warn(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[yellow]{text}[/yellow]")
        else:
            click.echo(text, err=True)

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

