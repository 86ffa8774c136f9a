"""``edge gateway run``: keep an owner account's paired devices connected, store their telemetry, serve their updates."""

from __future__ import annotations

import asyncio
import signal

import click

from edge_agent.cli import EdgeGroup
from edge_agent.cli.options import Duration
from edge_agent.cli.pair import account_option, check_account, default_account
from edge_agent.cli.telemetry import db_option


@click.group(cls=EdgeGroup)
def gateway() -> None:
    """The gateway daemon: keeps paired devices connected over BLE, stores their telemetry, serves updates.

    \b
    Example:
      edge pair esp32-3f9a0c12b7d4 --code 1234-5678 --account home
      edge gateway run --account home
    """


@gateway.command()
@account_option("Keep the devices of this owner account.")
@click.option("--for", "duration", type=Duration(min=0.1), default=None, metavar="DURATION",
              help="Stop after this long (30s, 10m) [default: until Ctrl-C or SIGTERM].")
@click.option("--json-log", is_flag=True, help="Log one JSON object per line instead of text.")
@click.option("--no-updates", is_flag=True, help="Do not serve OTA updates (telemetry only).")
@click.option("--quiet-after", type=Duration(min=1), default=60.0, show_default=True, metavar="DURATION",
              help="Drop and re-find a link that carried nothing for this long.")
@db_option
def run(account, duration, json_log, no_updates, quiet_after, db):
    """Keep every paired device of the account connected and ingest its telemetry.

    Each device found advertising is connected with its bond (no code),
    its telemetry stored in the registry exactly once, through the same
    ingest as `edge telemetry ingest`. A device that goes away is looked
    for again, retrying after 1 s, 2 s, 4 s ... up to 30 s. One line per
    event (found, connected, disconnected, retry, ...) on stdout. Ctrl-C or
    SIGTERM stops it cleanly (records committed, links closed), exit 0.

    Updates: a device that asks is offered the newest release published for
    its board (`edge ota publish`) if the rollout includes it, the image sent
    on the BLE bulk characteristic, and each step it reports recorded
    (`edge ota status`); ota_offered, ota_state and rollout_halted lines say
    so. Releases published with --grow grow their fraction on schedule.

    \b
    Examples:
      edge gateway run --account home
      edge gateway run --for 10m --json-log >> gateway.log
      EDGE_BLE=sim edge gateway run --for 20s     # the virtual bench's air
    """
    from edge_agent.gateway import EventLog, Gateway
    from edge_agent.paths import default_db
    from edge_agent.store import Store

    account = check_account(account) if account else default_account()
    path = str(db or default_db())
    Store(path).close()          # made (and migrated) before the writer thread opens it
    event = EventLog(json_lines=json_log)

    async def main() -> None:
        gw = Gateway(path, account, event, quiet_after=quiet_after, serve_updates=not no_updates)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, gw.stop.set)
        try:
            await gw.run(duration)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    if event.out is None:     # stdout's reader left: say nothing more there at exit
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
