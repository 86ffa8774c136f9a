"""``edge provision`` and ``edge label``: a device's identity and its pairing label."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from edge_agent import device_fs
from edge_agent.cli import complete
from edge_agent.cli.options import port_resolver, sim_dir_option
from edge_agent.errors import NotFound
from edge_agent.paths import default_db, state_dir

_DB_HELP = "Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db]."


@click.command()
@click.option("-p", "--port", required=True, metavar="PORT", shell_complete=complete.ports,
              help="The board's serial port (/dev/ttyUSB0, a virtual board's /dev/pts/N, a pyserial URL), "
                   "or its name in `edge devs` (esp32-1, a device id).")
@click.option("--board", "board_name", default=None, metavar="NAME", shell_complete=complete.board_types,
              help="Board type (a file in boards/) [default: the board.json on the board].")
@click.option("--reprovision", is_flag=True,
              help="Mint a new identity even if the board has one (owners must pair again).")
@click.option("--operator", default=None, help="Who provisions, for the registry [default: user@host].")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help=_DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the identity as JSON.")
@sim_dir_option()
def provision(port, board_name, reprovision, operator, db, as_json, sim_dir):
    """Mint the identity of the board on PORT and record it in the registry.

    The board makes its own X25519 key pair (only the public key leaves it);
    the bench picks the device id and an 8-digit setup code, writes
    config.json, identity/setup and identity/anchors.json (the OTA root
    public key) on the board, and records the public key and a salted hash
    of the code. A board that already has an identity the registry knows
    keeps it unless --reprovision.

    This does not mark the device provisioned: `edge flash` does that once
    the board's self-test passed (it runs this step itself).

    \b
      edge provision --port /dev/ttyUSB0
      edge provision -p esp32-1
      edge provision --port /dev/pts/5 --board esp32 --json
      edge provision --port /dev/ttyACM0 --reprovision
      edge label esp32-3f9a0c12b7d4          # then print its label
    """
    from edge_agent.board_link import BoardLink
    from edge_agent.boards import load_board
    from edge_agent.identity import provision as run
    from edge_agent.store import Store

    port = port_resolver(sim_dir, db)(port)
    with BoardLink(port) as link:
        if board_name is None:
            board_name = _board_on(link)
        board = load_board(board_name)
        with Store(db or default_db()) as store:
            ident = run(link, store, board, reprovision=reprovision, operator=operator)
        link.soft_reset()   # the agent starts again, under its (new) identity
    if as_json:
        click.echo(json.dumps({"device_id": ident.device_id, "board": board_name,
                               "public_key": ident.public_key.hex(),
                               "fingerprint": ident.fingerprint, "created": ident.created,
                               "label_pending": ident.setup_code is not None,
                               "key_from_bench": ident.key_from_bench}, indent=2))
        return
    verb = "minted" if ident.created else "kept"
    click.echo(f"{ident.device_id}: identity {verb} (board {board_name}, key {ident.fingerprint})")
    if ident.key_from_bench:
        click.secho("warning: the board's os.urandom failed its health check: its key was drawn "
                    "here and sent once (expected on the emulated RP2040; a real board doing this "
                    "is faulty)", fg="yellow", err=True)
    if ident.created:
        click.echo(f"next: `edge label {ident.device_id}` prints its pairing label "
                   "(the setup code is shown once)")
    else:
        click.echo("the board already had this identity; --reprovision mints a new one")


def _board_on(link) -> str:
    from edge_agent.errors import BadInput

    raw = link.get(device_fs.BOARD_JSON)
    if raw is None:
        raise NotFound(f"the board on {link.port} has no board.json",
                       "pass --board NAME, or deploy the agent with `edge flash`")
    try:
        name = json.loads(raw)["name"]
    except (ValueError, KeyError, TypeError):
        name = None
    if not isinstance(name, str):
        raise BadInput(f"board.json on {link.port} names no board", "pass --board NAME")
    return name


@click.command()
@click.argument("device", shell_complete=complete.device_ids)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for DEVICE.png and DEVICE.svg [default: $EDGE_HOME/labels].")
@click.option("--no-terminal", is_flag=True, help="Do not draw the QR code in the terminal.")
@click.option("--db", type=click.Path(dir_okay=False), default=None, help=_DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the label's files and payload as JSON.")
def label(device, out_dir, no_terminal, db, as_json):
    """Make the pairing label of DEVICE: PNG + SVG with a QR code and the setup code.

    The QR carries the pairing payload (device id, setup code, key
    fingerprint, board: docs/protocol.md section 4); the setup code is also
    printed in digits (1234-5678) with the device id and board. The label is
    shown in the terminal too. Afterwards the registry forgets the plain code
    (it keeps a salted hash), so a label can be made once per identity; for a
    new code, mint a new identity with `edge flash --reprovision`.

    Both files hold the setup code: they are written readable only by you
    (0600); delete them once the label is printed (docs/security.md).

    \b
      edge label esp32-3f9a0c12b7d4
      edge label esp32-3f9a0c12b7d4 --out /media/labels --no-terminal
      edge label picow-0b1c2d3e4f50 --json
    """
    from edge_agent.label import format_code, pairing_payload, render
    from edge_agent.store import Store

    with Store(db or default_db(), create=False) as store:
        ident = store.identity(device)
        if ident is None:
            raise NotFound(f"device {device} has no identity in the registry {store.path}",
                           "check the id (`edge telemetry show` lists devices), or run "
                           "`edge provision --port PORT` on the board")
        if not ident["identity_complete"]:
            raise NotFound(f"the identity of {device} was never completed on its board (its "
                           "provisioning was cut short), so it gets no label",
                           "provision the board again (`edge flash --port PORT` or `edge provision "
                           "--port PORT`): that removes this orphan and mints the identity whole")
        code = ident["setup_code_pending"]
        if code is None:
            when = ident["label_printed_at"]
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "earlier"
            raise NotFound(f"the setup code of {device} was already printed ({stamp}); the "
                           "registry keeps only its salted hash",
                           "use the printed label, or mint a new identity and code with "
                           "`edge flash --port PORT --reprovision` (owners must pair again)")
        out = Path(out_dir) if out_dir else state_dir() / "labels"
        terminal = None if (no_terminal or as_json) else sys.stdout
        png, svg = render(out, device, ident["board"], code, ident["key_fingerprint"],
                          terminal=terminal)
        store.take_setup_code(device)   # only once both files are written
    if as_json:
        click.echo(json.dumps({"device_id": device, "board": ident["board"],
                               "setup_code": format_code(code), "png": str(png), "svg": str(svg),
                               "payload": pairing_payload(device, code, ident["key_fingerprint"],
                                                          ident["board"])}, indent=2))
        return
    click.echo(f"{device} (board {ident['board']})  setup code {format_code(code)}")
    click.echo(f"label: {png}\n       {svg}")
    click.echo("the registry no longer holds this code: keep the label with the device, "
               "and delete these files once it is printed")
