"""``edge ota publish``, ``rollout``, ``status`` and ``push``: releases in the
gateway's update store (:mod:`edge_agent.update_store`), their staged rollout,
and what each device reports (:mod:`edge_agent.ota_server`, docs/protocol.md
section 7). The keys, manifests and images these take are made by the other
``edge ota`` commands (:mod:`edge_agent.cli.ota`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from edge_agent.cli.options import Duration, check_regular_file
from edge_agent.cli.ota import _current_list, ota
from edge_agent.errors import BadInput, NotFound
from edge_agent.update_store import iso as _iso

# -- the gateway's update store: publish, rollout, status ---------------------------------------------

class Growth(click.ParamType):
    """``STEP/PERIOD``: the rollout fraction grows by STEP every PERIOD (``0.1/6h``)."""

    name = "growth"

    def get_metavar(self, param, ctx=None) -> str:
        return "STEP/PERIOD"

    def convert(self, value, param, ctx) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        step, _, period = str(value).partition("/")
        try:
            amount = float(step)
        except ValueError:
            amount = float("nan")
        if not period or not 0 < amount <= 1:
            self.fail(f"{value!r} is not STEP/PERIOD: a step in 0..1 and a duration, e.g. 0.1/6h", param, ctx)
        return amount, Duration(min=60).convert(period, param, ctx)


def _db_option(f):
    return click.option("--db", type=click.Path(dir_okay=False), default=None,
                        help="Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db].")(f)


def _registry(db: str | None, create: bool = True):
    from edge_agent.paths import default_db
    from edge_agent.store import Store

    return Store(db or default_db(), create=create)


def _find_release(store, name: str):
    """The release ``name`` names: its number, or ``board/component/sequence``."""
    release = None
    if name.isdigit():
        release = store.release(int(name))
    else:
        parts = name.split("/")
        if len(parts) == 3 and parts[2].isdigit():
            release = store.release_by_sequence(parts[0], parts[1], int(parts[2]))
    if release is None:
        raise NotFound(f"no release {name!r} in the registry {store.path}",
                       "name it by its number or board/component/sequence; `edge ota status` lists them")
    return release


@ota.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--fraction", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of the board's devices offered the release at first (0..1).")
@click.option("--halt-at", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              help="Halt the rollout when this share of the devices that tried it rolled back or failed.")
@click.option("--min-devices", type=click.IntRange(1), default=3, show_default=True,
              help="... once at least this many devices have tried it.")
@click.option("--grow", type=Growth(), default=None,
              help="Grow the fraction by STEP every PERIOD while `edge gateway run` runs (0.1/6h).")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
def publish(image: str, manifest: str, fraction: float, halt_at: float, min_devices: int,
            grow: tuple[float, float] | None, db: str | None, as_json: bool) -> None:
    """Put a signed image into the gateway's update store and start its staged rollout.

    The manifest is checked first as a device would check it, against the
    root's current key list ($EDGE_HOME/keys): its signing key listed and
    not expired, its signature, its expiry, and the image's size and SHA-256.
    A failed check exits 5 naming it and nothing is stored. The image goes to
    $EDGE_HOME/updates/<sha256>, the release to the registry; `edge gateway
    run` offers it to the FRACTION of the board's devices picked by a hash of
    (device, release), so a device stays in or out as the fraction grows.
    Publishing the same sequence again with the same image replaces its
    manifest (a re-signed one: later expiry) and keeps its rollout.

    \b
    Example:
      edge ota publish build/agent.bin agent.manifest --fraction 0.1 --grow 0.2/1d
      edge ota publish build/agent.bin agent.manifest --fraction 1 --json
    """
    from edge_agent.update_store import UpdateStore
    from edge_agent.update_store import publish as publish_release
    from edge_ota.keys import root_public_key

    check_regular_file(image, "image")
    check_regular_file(manifest, "manifest")
    key_list, names = _current_list(root_public_key(create=False))
    data = Path(manifest).read_bytes()
    updates = UpdateStore()
    with _registry(db) as store:
        release, new = publish_release(store, updates, data, Path(image), key_list, names, fraction=fraction,
                                       halt_at=halt_at, min_devices=min_devices, grow=grow)
    out = {**release.as_dict(), "new": new, "path": str(updates.path_of(release.digest)),
           "expires_at": _iso(release.expires)}
    if as_json:
        click.echo(json.dumps(out))
        return
    what = "published" if new else "already published; manifest kept up to date for"
    click.echo(f"{what} release {release.id}: {release.component} {release.version} for {release.board} "
               f"(sequence {release.sequence}), {release.size} bytes, expires {out['expires_at']}")
    click.echo(f"  rollout {release.state}: fraction {release.fraction:g}, halts at {release.halt_at:g} "
               f"failed of at least {release.min_devices} devices"
               + (f", grows {release.grow_step:g} every {release.grow_period:g} s" if release.grow_step else ""))


@ota.command()
@click.argument("release")
@click.option("--fraction", type=click.FloatRange(0, 1), default=None, help="Set the share of devices (0..1).")
@click.option("--pause", "action", flag_value="paused", help="Offer it to nobody until --resume.")
@click.option("--resume", "action", flag_value="active", help="Offer it again (also after a halt).")
@click.option("--halt", "action", flag_value="halted", help="Stop it for good unless resumed, saying why.")
@click.option("--reason", default="halted by hand", show_default=True, help="Why, with --halt.")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the release as JSON.")
def rollout(release: str, fraction: float | None, action: str | None, reason: str, db: str | None,
            as_json: bool) -> None:
    """Grow, pause, resume or halt a release's staged rollout.

    RELEASE is its number or board/component/sequence (`edge ota status`).
    A device's place in the rollout is fixed by a hash of (device, release):
    raising the fraction only adds devices; a device that started the
    update keeps it if the fraction is lowered. A halted release (by hand or
    by its failure threshold) is offered to nobody until --resume.

    \b
    Example:
      edge ota rollout 3 --fraction 0.5
      edge ota rollout esp32/agent/7 --pause
      edge ota rollout 3 --resume
    """
    if fraction is None and action is None:
        raise click.UsageError("give --fraction F, --pause, --resume or --halt")
    with _registry(db) as store:
        rid = _find_release(store, release).id
        updated = store.set_rollout(rid, fraction=fraction, state=action,
                                    reason=reason if action == "halted" else None)
    if as_json:
        click.echo(json.dumps(updated.as_dict()))
        return
    click.echo(f"release {updated.id} ({updated.key}): {updated.state}, fraction {updated.fraction:g}"
               + (f", halted: {updated.halt_reason}" if updated.halt_reason else ""))


_COUNTS = {"offered": ("offered",), "downloading": ("downloading", "stalled", "verified", "installed",
                                                    "applying", "trial"),
           "confirmed": ("confirmed",), "rolled_back": ("rolled-back",), "failed": ("failed",),
           "refused": ("refused",)}


def _release_row(store, r) -> dict[str, Any]:
    """A release with its devices counted by state; ``eligible``: the board's devices in its rollout."""
    from edge_ota.rollout import eligible

    counts = store.ota_counts(r.id)
    started = {d["device_id"] for d in store.ota_devices(release_id=r.id) if d["state"] != "offered"}
    devices = store.boards_devices(r.board)
    row = {**r.as_dict(), "expires_at": _iso(r.expires), "devices": len(devices),
           "eligible": sum(1 for d in devices if d in started or eligible(d, r.key, r.fraction))}
    row.update({name: sum(counts.get(s, 0) for s in states) for name, states in _COUNTS.items()})
    return row


@ota.command()
@click.option("--release", "release_name", default=None, help="Only this release, with its devices and history.")
@click.option("--device", "-d", "device_id", default=None, help="Only this device: its updates and history.")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print releases, devices and history as JSON.")
def status(release_name: str | None, device_id: str | None, db: str | None, as_json: bool) -> None:
    """Show the releases, their rollouts, and where each device's update stands.

    Per release: its rollout (state, fraction, why it halted) and how many
    of the board's devices are eligible, offered, downloading (up to trial),
    confirmed, rolled back, failed or refused. With --release, each of its
    devices and the release's history; with --device, that device's state
    for each release (with the percent held while downloading) and its history.

    \b
    Example:
      edge ota status
      edge ota status --release 3 --json
      edge ota status --device esp32-3f9a0c12b7d4
    """
    with _registry(db, create=False) as store:
        if release_name is not None:
            releases = [_find_release(store, release_name)]
        else:
            releases = store.releases()
        rid = releases[0].id if release_name is not None else None
        if device_id is not None:
            board = store.registered_board(device_id)
            if board is None and store.device(device_id) is None:
                raise NotFound(f"no device {device_id} in the registry {store.path}",
                               "check the id with `edge devs` or `edge telemetry show`")
            releases = [r for r in releases if r.board == board]
        rows = [_release_row(store, r) for r in releases]
        detail = release_name is not None or device_id is not None
        devices = store.ota_devices(device_id=device_id, release_id=rid) if detail else []
        history = store.ota_history(device_id=device_id, release_id=rid) if detail else []
    if as_json:
        click.echo(json.dumps({"releases": rows, "devices": devices, "history": history}))
        return
    _print_status(rows, devices, history)


def _print_status(rows: list[dict], devices: list[dict], history: list[dict]) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from edge_agent.cli import table_console

    console = table_console()
    if not rows:
        console.print("no releases: publish one with `edge ota publish IMAGE MANIFEST`")
    else:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0)
        heads = ("release", "board", "component", "version", "seq", "state", "fraction", "eligible", "offered",
                 "downloading", "confirmed", "rolled_back", "failed", "refused")
        # "updating": downloading up to trial, as the JSON's "downloading" counts them.
        names = {"release": "id", "downloading": "updating", "rolled_back": "rolled back"}
        for h in heads:
            name = names.get(h, h)
            t.add_column(name, justify="left" if h in ("board", "component", "version", "state") else "right",
                         no_wrap=True, min_width=len(name))
        for r in rows:
            t.add_row(*[Text(str(v)) for v in (r["id"], r["board"], r["component"], r["version"], r["sequence"],
                                              r["state"], f"{r['fraction']:g}", r["eligible"], *[
                                                  r[h] for h in heads[8:]])])
        console.print(t)
        for r in rows:
            if r["halt_reason"]:
                console.print(Text(f"release {r['id']} halted: {r['halt_reason']}", style="red"))
    if devices:
        t = Table(box=box.SIMPLE_HEAD, show_edge=False, title="devices")
        for h in ("device", "release", "version", "state", "percent", "check / reason", "updated"):
            t.add_column(h)
        for d in devices:
            t.add_row(*[Text(str(v)) for v in (
                d["device_id"], d["release"], d["version"], d["state"],
                "" if d["percent"] is None else f"{d['percent']} %",
                " ".join(x for x in (d["check"], d["reason"]) if x), time.strftime(
                    "%Y-%m-%d %H:%M:%S", time.localtime(d["updated"])))])
        console.print(t)
    if history:
        console.print(Text("history", style="bold"))
        for event in history:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["t"]))
            who = event["device_id"] or f"release {event['release']}"
            tail = " ".join(str(x) for x in (event["check"], event["reason"]) if x)
            console.print(Text(f"{stamp} {who} {event['state']}" + (f" (sequence {event['sequence']})"
                                                                   if event["sequence"] is not None else "")
                               + (f": {tail}" if tail else "")))


@ota.command()
@click.argument("target", metavar="DEVICE|PORT")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--until", type=click.Choice(["installed", "applying", "confirmed"]), default="confirmed",
              show_default=True, help="Stop once the device reports this state.")
@click.option("--timeout", type=Duration(min=1), default="10m", show_default=True,
              help="Give up (exit 5) after this long.")
@click.option("-b", "--baud", type=click.IntRange(50, 12_000_000), default=115200, show_default=True,
              help="Serial speed of a real port.")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (no progress bar).")
def push(target: str, image: str, manifest: str, until: str, timeout: float, baud: int, db: str | None,
         as_json: bool) -> None:
    """Push a signed image to one device on the bench, over serial or BLE.

    DEVICE|PORT is a serial port (/dev/ttyUSB0, a virtual board's name such
    as esp32-1) or the id of a device paired with `edge pair` (then BLE,
    resuming its bond). The manifest and image are checked as `edge ota
    publish` checks them and kept in the update store as a paused release
    (the gateway offers it to nobody by itself). The device gets an OTA_OFFER,
    downloads in windows with a progress bar, installs, resets into the new
    image and confirms it some 30 s later: the serial port is kept, a BLE
    device is reconnected. Its telemetry is stored meanwhile, and each state
    it reports goes to the registry (`edge ota status --device ID`).

    \b
    Exit codes: 0 the device reached --until (or already runs the image:
    state current); 3 the device refused it (the check is named); 4 it failed
    or rolled back (its reason is named); 5 no answer within --timeout. Before
    the push starts, the usual codes: 3 a missing port or file, 4 a port in
    use, 5 a manifest that does not verify.

    \b
    Example:
      edge ota push esp32-1 agent.bin agent.manifest
      edge ota push /dev/ttyUSB0 agent.bin agent.manifest --until installed --json
      EDGE_BLE=sim edge ota push esp32-3f9a0c12b7d4 agent.bin agent.manifest
    """
    from edge_agent.cli.options import port_resolver
    from edge_agent.ota_push import PushFailed, PushWatch, push_ble, push_serial
    from edge_agent.paths import default_db
    from edge_agent.update_store import UpdateStore
    from edge_agent.update_store import publish as publish_release
    from edge_ota.keys import root_public_key

    check_regular_file(image, "image")
    check_regular_file(manifest, "manifest")
    path = str(db or default_db())
    key_list, names = _current_list(root_public_key(create=False))
    with _registry(path) as store:
        release, new = publish_release(store, UpdateStore(), Path(manifest).read_bytes(), Path(image), key_list,
                                       names, fraction=0.0, halt_at=1.0, min_devices=1)
        if new:
            release = store.set_rollout(release.id, state="paused")
        bonded = store.bond_secret(target) is not None
    port = None if bonded else port_resolver(None, path)(target)
    bar = None if as_json else _PushBar(release)
    watch = PushWatch(release, until, on_progress=bar.update if bar else None)
    started = time.monotonic()
    failure: PushFailed | None = None
    try:
        if bar:
            bar.start()
        if port is not None:
            push_serial(port, path, release, watch, timeout=timeout, baud=baud, on_bound=bar and bar.bound)
        else:
            import asyncio

            asyncio.run(push_ble(target, path, release, watch, timeout=timeout, on_bound=bar and bar.bound))
    except PushFailed as e:
        failure = e
    finally:
        if bar:
            bar.stop()
    out = {"target": target, "link": f"serial:{port}" if port else "ble", "release": release.id,
           "version": release.version, "sequence": release.sequence, "state": watch.state, "held": watch.held,
           "size": release.size, "seconds": round(time.monotonic() - started, 1), "states": watch.states}
    if as_json:
        click.echo(json.dumps(out))
    elif failure is None:
        click.echo(f"{target}: {release.component} {release.version} (sequence {release.sequence}) "
                   f"{watch.state} in {out['seconds']} s")
    if failure is not None:
        raise failure


class _PushBar:
    """The push's progress bar on stderr: bytes the device holds, and its latest state."""

    def __init__(self, release):
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.release = release
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TextColumn("{task.fields[state]}"),
                                 console=Console(stderr=True), transient=False)
        self.task = self.progress.add_task(f"{release.component} {release.version}", total=release.size,
                                           state="connecting")

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def bound(self, device_id: str) -> None:
        self.progress.update(self.task, description=f"{device_id} {self.release.component} {self.release.version}",
                             state="offered")

    def update(self, held: int, size: int, state: str) -> None:
        self.progress.update(self.task, completed=held, state=state)
