"""``edge telemetry``: read the registry's telemetry (show, export, live).

``edge telemetry ingest`` (the writer) lives in ``edge_agent.cli.ingest`` and
is added to this group by ``edge_agent.cli``; the commands here only read, so
they run alongside a running ingest (the registry is in WAL mode).

Times on the command line are ISO-8601 (``2026-11-23T14:05:00Z``; no offset
means UTC) or relative to now (``-10m``, ``-2h``, ``-1d``); times printed are
ISO-8601 UTC.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import sys
import tempfile
import time
from collections import deque
from itertools import islice
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable

import click

from edge_agent.cli import EdgeGroup, complete
from edge_agent.cli.options import Duration
from edge_agent.errors import BadInput
from edge_agent.paths import default_db

if TYPE_CHECKING:
    from rich.text import JustifyMethod

_RELATIVE = re.compile(r"-?\s*(\d+(?:\.\d*)?)\s*(s|m|h|d|w)(?:\s+ago)?", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TIME_HELP = "ISO-8601 (2026-11-23T14:05:00Z) or a time ago (10m, 2h, 1d; also -10m)"


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds for an ISO-8601 time (UTC if no offset), ``now``, or a time
    ago: ``N[smhdw]``, ``-N[smhdw]`` or ``N[smhdw] ago``.

    Raises ValueError naming the accepted forms.
    """
    text = text.strip()
    now = time.time() if now is None else now
    if text.lower() == "now":
        return now
    m = _RELATIVE.fullmatch(text)
    if m:
        return now - float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
    iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use {TIME_HELP}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class TimeType(click.ParamType):
    """A click parameter holding a time; converts to Unix seconds."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_time(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


TIME = TimeType()


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(t: float | None, timespec: str = "milliseconds") -> str:
    """``t`` (Unix seconds) as ISO-8601 UTC with a ``Z``; "" for None; never raises."""
    if t is None:
        return ""
    try:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{t} s (not a date)"


def iso_ms(t_ms: int | None) -> str:
    """``t_ms`` (ms since 1970, an integer: exact, no float rounding) as ISO-8601 UTC; never raises.

    A time no calendar holds (a registry may hold anything) is shown as its number.
    """
    if t_ms is None:
        return ""
    try:
        return (_EPOCH + timedelta(milliseconds=t_ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError, TypeError):
        return f"{t_ms} ms (not a date)"


def cells(*values: Any) -> list:
    """Table cells as plain text: what a device sent is never read as rich markup."""
    from rich.text import Text

    return [Text(str(v)) for v in values]


def show_value(value: Any) -> str:
    """A value for a person: floats to float32 precision, booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def _export_value(value: Any) -> str:
    """A value for a CSV cell, lossless: shortest round-trip float text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _short_time(t_ms: int | None) -> str:
    """``t_ms`` as ``HH:MM:SS`` UTC when it is today, else ``YYYY-MM-DD HH:MM``, for tables; "-" for None."""
    if t_ms is None:
        return "-"
    try:
        when = _EPOCH + timedelta(milliseconds=t_ms)
    except (OverflowError, ValueError, TypeError):
        return f"{t_ms} ms?"
    if when.date() == datetime.now(timezone.utc).date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%Y-%m-%d %H:%M")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def registry_error(path, error):
    from edge_agent.store import registry_error as name_it

    return name_it(path, error)


def _open_store(db: str | None):
    from edge_agent.store import Store

    return Store(db or default_db(), create=False)


def _record_dict(r) -> dict:
    return {"device_id": r.device_id, "seq": r.seq, "time": iso_ms(r.t_ms), "t_ms": r.t_ms, "name": r.name,
            "value": r.value, "unit": r.unit, "estimated": r.estimated, "boot": r.boot,
            "received": iso_ms(r.received_ms)}


def _refused_dict(b: dict) -> dict:
    return {"device_id": b["device_id"], "source": b["source"], "first_seq": b["first_seq"],
            "end_seq": b["end_seq"], "records": b["end_seq"] - b["first_seq"], "reason": b["reason"],
            "detail": b["detail"], "received": iso_ms(b["received"]), "payload_hex": b["payload"].hex()}


def db_option(f):
    return click.option("--db", type=click.Path(dir_okay=False), default=None,
                        help="Registry file [default: $EDGE_DB or ~/.local/share/edge/registry.db].")(f)


def filter_options(f):
    for option in reversed([
        click.option("--device", "-d", default=None, help="Only this device id.",
                     shell_complete=complete.device_ids),
        click.option("--since", type=TIME, default=None, help=f"From this time, inclusive: {TIME_HELP}."),
        click.option("--until", type=TIME, default=None, help="Before this time, exclusive."),
        click.option("--name", "-n", default=None, help="Only sensors matching this glob (temp, temp*)."),
    ]):
        f = option(f)
    return f


def account_option(f):
    return click.option("--account", "-a", default=None, shell_complete=complete.accounts,
                        help="Only the devices paired to this owner account (`edge devices`).")(f)


def _owned(store, account: str | None) -> set[str] | None:
    """The device ids of ``account`` (None: no filter)."""
    if account is None:
        return None
    from edge_agent.cli.pair import check_account

    return store.account_devices(check_account(account))


def _only(rows: Iterable, owned: set[str] | None, key: Callable[[Any], str]) -> Iterable:
    return rows if owned is None else (r for r in rows if key(r) in owned)


@click.group(cls=EdgeGroup)
def telemetry() -> None:
    """Telemetry in the registry: ingest it, show it, export it, watch it live.

    \b
    Examples:
      edge telemetry show                      per-device summary
      edge telemetry show -d esp32-1a2b --since -10m
      edge telemetry export --format csv --since -1h -o last-hour.csv
      edge telemetry live
    """


# `edge telemetry ingest` is added to this group by edge_agent.cli (see edge_agent.cli.ingest).


@telemetry.command()
@filter_options
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Show at most this many records, the latest [default: 20].")
@click.option("--records", "-r", "records_mode", is_flag=True,
              help="List the latest records instead of the per-device summary.")
@account_option
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(device, since, until, name, limit, records_mode, account, db, as_json):
    """Show a summary per device, or the latest records.

    Without options: one row per device (records, sensors, time range, gaps in
    the sequence numbers, records the device dropped). With --records, or any
    filter (--device, --since, --until, --name, --limit): the latest records
    that match, oldest first.
    """
    store = _open_store(db)
    try:
        owned = _owned(store, account)
        if records_mode or any(v is not None for v in (device, since, until, name, limit)):
            if owned is None:
                rows = list(store.query(device=device, since=since, until=until, name=name,
                                        limit=limit or 20, newest_first=True))
            else:
                rows = list(islice(_only(store.query(device=device, since=since, until=until, name=name,
                                                     newest_first=True), owned, lambda r: r.device_id),
                                   limit or 20))
            rows.reverse()
            _print_records(rows, store.path, as_json)
        else:
            by_id = lambda r: r["device_id"]   # noqa: E731
            bad = store.bad_frames()
            if owned is not None:
                bad = [b for b in bad if b["source"] in {f"ble:{d}" for d in owned}]
            _print_summary(list(_only(store.summary(), owned, by_id)), bad,
                           list(_only(store.refused_batches(device), owned, by_id)),
                           list(_only(store.conflicts(device), owned, by_id)), store.path, as_json)
    except sqlite3.Error as e:        # read whole before printing: nothing half shown
        raise registry_error(store.path, e) from None
    finally:
        store.close()


def _print_summary(summary: list[dict], bad: list[dict], refused: list[dict], conflicts: list[dict],
                   path: Path, as_json: bool) -> None:
    if as_json:
        # ms fields stay numbers; "first"/"last" repeat the range in ISO-8601.
        devices = [{**d, "first": iso_ms(d["first_t"]) or None, "last": iso_ms(d["last_t"]) or None}
                   for d in summary]
        errors = [{**b, "sample": b["sample"].decode("utf-8", "replace") if b["sample"] else None}
                  for b in bad]
        click.echo(json.dumps({"db": str(path), "devices": devices, "bad_frames": errors,
                               "refused": [_refused_dict(b) for b in refused],
                               "conflicts": [{**c, "received": iso_ms(c["received"])} for c in conflicts]},
                              indent=2))
        return
    from rich.table import Table

    from edge_agent.cli import table_console

    console = table_console(highlight=False)
    if not summary:
        console.print(f"no devices in the registry {path} yet; run `edge telemetry ingest`")
        return
    # No box: the table fits 80 columns with two spaces between columns.
    table = Table(title=f"telemetry in {path}", title_justify="left", box=None, pad_edge=False,
                  header_style="bold underline")
    # Times wrap at the space between date and time; ids and numbers never wrap.
    columns: tuple[tuple[str, JustifyMethod, bool], ...] = (
        ("device", "left", False), ("board", "left", True), ("records", "right", False),
        ("sensors", "right", False), ("first (UTC)", "left", True), ("last (UTC)", "left", True),
        ("gaps", "right", False), ("dropped", "right", False))
    for column, justify, wrap in columns:
        table.add_column(column, justify=justify, no_wrap=not wrap, overflow="fold",
                         min_width=10 if "UTC" in column else None if wrap else len(column))
    for d in summary:
        estimated = f" ({d['estimated']} est.)" if d["estimated"] else ""
        table.add_row(*cells(d["device_id"], d["board"] or "?", f"{d['records']}{estimated}",
                      str(len(d["names"])), _short_time(d["first_t"]),
                      _short_time(d["last_t"]), str(d["gaps"]), str(d["dropped"])))
    console.print(table)
    from rich.text import Text

    if bad:
        total = sum(b["count"] for b in bad)
        parts = ", ".join(f"{b['source']} {b['reason']} x{b['count']}" for b in bad)
        console.print(Text(f"bad frames: {total} ({parts})", style="yellow"))
    if refused:
        console.print(Text(f"refused batches: {len(refused)} (export them: edge telemetry export --refused)",
                           style="yellow"))
        for b in refused[-10:]:
            console.print(Text(f"  {b['device_id']} records {b['first_seq']}..{b['end_seq'] - 1}: "
                               f"{b['reason']} ({b['detail']}) at {iso_ms(b['received'])} on {b['source']}"))
    if conflicts:
        console.print(Text(f"conflicts: {len(conflicts)} record(s) sent again with other content; "
                           "the first kept", style="yellow"))
        for c in conflicts[-10:]:
            console.print(Text(f"  {c['device_id']} seq {c['seq']}: kept {c['stored']}, "
                               f"refused {c['offered']} from {c['source']}"))


def _print_records(rows: list, path: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([_record_dict(r) for r in rows], indent=2))
        return
    from rich.table import Table

    from edge_agent.cli import table_console

    console = table_console(highlight=False)
    if not rows:
        console.print(f"no records in {path} match")
        return
    table = Table(title=f"{len(rows)} records (latest last)", title_justify="left", box=None,
                  pad_edge=False, header_style="bold underline")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("time (UTC)", "left"), ("device", "left"), ("seq", "right"), ("sensor", "left"),
        ("value", "right"), ("unit", "left"), ("note", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(*cells(iso_ms(r.t_ms), r.device_id, str(r.seq), r.name, show_value(r.value), r.unit or "",
                      "estimated" if r.estimated else ""))
    console.print(table)


EXPORT_COLUMNS = ("device_id", "seq", "time", "name", "value", "unit", "estimated", "boot", "received")
REFUSED_COLUMNS = ("device_id", "source", "first_seq", "end_seq", "records", "reason", "detail", "received",
                   "payload_hex")
FORMATS = ["csv", "json", "jsonl", "senml-json", "senml-cbor"]


@telemetry.command()
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True,
              help="csv, a JSON array, JSON Lines, or a SenML pack (RFC 8428) in JSON or CBOR.")
@filter_options
@click.option("--refused", is_flag=True,
              help="Export the batches the host refused (bytes, range, reason) instead of records.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to this file (replaced only once the export is complete) [default: stdout].")
@account_option
@db_option
def export(fmt, device, since, until, name, refused, as_json, output, account, db):
    """Export records as CSV, JSON or SenML, oldest first (or the refused batches).

    Rows are streamed, so the registry may be larger than memory. Times are
    ISO-8601 UTC with milliseconds (SenML: seconds since 1970); values keep
    their full precision and integers stay integers; "estimated" marks times
    placed from a device's uptime. SenML names are <device id>/<sensor>.

    \b
    Examples:
      edge telemetry export > all.csv
      edge telemetry export --format json --since -1h -d esp32-1a2b -o hour.json
      edge telemetry export --format senml-cbor -o all.cbor
      edge telemetry export --refused --json
      edge telemetry export --account home -o home.csv
    """
    if as_json:
        fmt = "json"
    if refused and fmt.startswith("senml"):
        raise click.UsageError("--refused exports batches, not records: use --format csv, json or jsonl")
    target = None if output is None else _export_target(Path(output))
    store = _open_store(db)
    try:
        # Built whole before anything is written where the user looks: an
        # error halfway (a damaged registry, a full disk) leaves stdout empty
        # and -o's file as it was. To stdout through an unnamed temporary
        # file (the export may be larger than memory); to a file through a
        # new file beside it, renamed over it at the end.
        if target is None:
            with tempfile.TemporaryFile() as spool:
                count = _export_into(spool, store, fmt, refused, device, since, until, name, account)
                spool.seek(0)
                try:
                    shutil.copyfileobj(spool, sys.stdout.buffer)
                    sys.stdout.flush()
                except BrokenPipeError:       # `edge telemetry export | head`: the reader has enough
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        try:
            fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        except OSError as e:
            raise _export_error(target, e) from None
        try:
            with os.fdopen(fd, "w+b") as out:
                count = _export_into(out, store, fmt, refused, device, since, until, name, account)
                os.fchmod(out.fileno(), _export_mode(target))
            _export_target(target)        # still not a link, FIFO or device: os.replace would take its place
            os.replace(partial, target)   # a reader never sees half an export
        except OSError as e:
            raise _export_error(target, e) from None
        finally:
            Path(partial).unlink(missing_ok=True)
        click.echo(f"exported {count} {'refused batches' if refused else 'records'} to {target}", err=True)
    finally:
        store.close()


def _export_into(out: IO[bytes], store, fmt: str, refused: bool, device, since, until, name,
                 account: str | None = None) -> int:
    """Write the whole export into ``out``; how many rows. A registry error is an :class:`EdgeError`."""
    try:
        owned = _owned(store, account)
        rows: Iterable = (_only(store.refused_batches(device), owned, lambda b: b["device_id"]) if refused
                          else _only(store.query(device=device, since=since, until=until, name=name), owned,
                                     lambda r: r.device_id))
        if fmt == "senml-cbor":
            from edge_agent.senml import write_cbor
            return write_cbor(rows, out)
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        try:
            return _write_export(fmt, rows, text, refused)
        finally:
            text.flush()
            text.detach()
    except sqlite3.Error as e:
        raise registry_error(store.path, e) from None


def _export_target(target: Path) -> Path:
    """``target`` if it is absent or a regular file; a link, FIFO, device, socket or folder is refused.

    ``-o`` replaces the file at its path once the export is complete, which
    would put a regular file in place of a device node or a FIFO, or replace
    a symbolic link instead of writing where it points. Writing *into* such a
    path is what shell redirection is for (``> PATH``), so it is left to it.
    """
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return target
    except OSError as e:
        raise _export_error(target, e) from None
    if stat.S_ISREG(mode):
        return target
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    raise BadInput(f"the export target {target} is {kind}; -o writes only regular files",
                   "pass -o with a regular file's path (a link's own target, if that is meant), "
                   "or leave out -o and redirect: `edge telemetry export > PATH`")


def _export_mode(target: Path) -> int:
    """The mode of the file being replaced, or a new file's (0666 less the umask)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _export_error(target: Path, e: OSError) -> BadInput:
    if e.errno == errno.ENOSPC:
        return BadInput(f"cannot write the export to {target}: the disk is full",
                        "free some space, or pass -o with a path on another disk")
    return BadInput(f"cannot write the export to {target}: {e.strerror or e}",
                    "check that the folder exists and is writable, or leave out -o")


def _write_export(fmt: str, rows: Iterable, out: IO[str], refused: bool = False) -> int:
    from edge_agent.senml import senml_json

    count = 0
    as_dict = _refused_dict if refused else senml_json if fmt == "senml-json" else _record_dict
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(REFUSED_COLUMNS if refused else EXPORT_COLUMNS)
        for r in rows:
            if refused:
                d = _refused_dict(r)
                writer.writerow([d[c] for c in REFUSED_COLUMNS])
            else:
                writer.writerow((r.device_id, r.seq, iso_ms(r.t_ms), r.name, _export_value(r.value),
                                 r.unit or "", int(r.estimated), r.boot, iso_ms(r.received_ms)))
            count += 1
    elif fmt == "jsonl":
        for r in rows:
            out.write(json.dumps(as_dict(r)) + "\n")
            count += 1
    else:
        out.write("[")
        for r in rows:
            out.write(("\n" if count == 0 else ",\n") + json.dumps(as_dict(r)))
            count += 1
        out.write("\n]\n" if count else "]\n")
    return count


class LiveView:
    """The state behind ``edge telemetry live``: last value per sensor, rate per device.

    Each :meth:`poll` reads only what is new since the last one (a range of
    the primary key per device), so it stays cheap on a large registry.
    """

    def __init__(self, store, device: str | None = None, window: float = 10.0,
                 clock=time.time, owned: set[str] | None = None):
        self.store, self.device, self.window, self.clock = store, device, window, clock
        self.owned = owned      # only these devices (an account's), None: all
        self.latest: dict[tuple[str, str], Any] = {}
        self.cursor: dict[str, int] = {}
        self.boards: dict[str, str] = {}
        self.history: dict[str, deque] = {}
        self.started = clock()
        self._poll(first=True)

    def poll(self) -> None:
        """Take in the records stored since the last poll."""
        self._poll(first=False)

    def _poll(self, first: bool) -> None:
        now = self.clock()
        for dev in self.store.devices():
            device_id = dev["device_id"]
            if (self.device is not None and device_id != self.device) or \
                    (self.owned is not None and device_id not in self.owned):
                continue
            self.boards[device_id] = dev["board"] or "?"
            after = self.cursor.get(device_id, -1)
            count, top = self.store.seq_range(device_id, after)
            history = self.history.setdefault(device_id, deque())
            if not first:
                history.append((now, count))
            while history and history[0][0] < now - self.window:
                history.popleft()
            if count:
                for r in self.store.latest_values(device_id, after_seq=after):
                    self.latest[(device_id, r.name)] = r
                self.cursor[device_id] = top

    def rate(self, device_id: str) -> float | None:
        """Records per second over the last ``window`` seconds (None before the first poll)."""
        history = self.history.get(device_id)
        if not history:
            return None
        span = min(self.window, self.clock() - self.started)
        return sum(n for _, n in history) / span if span > 0 else None

    def table(self):
        """A rich Table of the current state."""
        from rich.table import Table

        now = self.clock()
        table = Table(title=f"live telemetry, {self.store.path} ({iso(now, 'seconds')})",
                      title_justify="left", caption="Ctrl-C to stop", caption_justify="left")
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("device", "left"), ("board", "left"), ("rate/s", "right"), ("sensor", "left"),
            ("value", "right"), ("unit", "left"), ("age", "right"))
        for column, justify in columns:
            # One line per sensor: a long text value is cut, not wrapped.
            table.add_column(column, justify=justify, no_wrap=column == "value",
                             overflow="ellipsis", max_width=40 if column == "value" else None)
        for device_id in sorted(self.boards):
            rate = self.rate(device_id)
            sensors = sorted((r for (d, _), r in self.latest.items() if d == device_id),
                             key=lambda r: r.name)
            if not sensors:
                table.add_row(*cells(device_id, self.boards[device_id], "-", "-", "", "", ""))
            for i, r in enumerate(sensors):
                age = _age(now - r.t) + (" est." if r.estimated else "")
                table.add_row(*cells(device_id if i == 0 else "", self.boards[device_id] if i == 0 else "",
                              ("-" if rate is None else f"{rate:.1f}") if i == 0 else "",
                              r.name, show_value(r.value), r.unit or "", age))
        if not self.boards:
            table.add_row("(no devices yet)", "", "", "", "", "", "")
        return table


@telemetry.command()
@db_option
@click.option("--device", "-d", default=None, help="Only this device id.",
              shell_complete=complete.device_ids)
@click.option("--interval", type=Duration(min=0.05), default=1.0, show_default=True,
              help="Time between refreshes: 1, 500ms, 2s.")
@click.option("--once", is_flag=True, help="Print the table once and exit.")
@click.option("--for", "duration", type=Duration(), default=None,
              help="Stop after this long: 30, 30s, 10m (default: run until Ctrl-C).")
@click.option("--duration", "old_duration", type=Duration(), default=None, hidden=True,
              help="The former spelling of --for.")
@account_option
def live(db, device, interval, once, duration, old_duration, account):
    """Watch the last value of every sensor and the records/s of every device.

    Reads only; run it beside `edge telemetry ingest` (another terminal).
    """
    from rich.console import Console
    from rich.live import Live

    if duration is not None and old_duration is not None:
        raise click.UsageError("give --for once (--duration is its former spelling)")
    duration = duration if duration is not None else old_duration
    store = _open_store(db)
    console = Console(highlight=False)
    try:
        view = LiveView(store, device, owned=_owned(store, account))
        if once:
            console.print(view.table())
            return
        deadline = None if duration is None else time.monotonic() + duration
        try:
            with Live(view.table(), console=console, auto_refresh=False) as screen:
                while deadline is None or time.monotonic() < deadline:
                    pause = interval if deadline is None else min(interval, deadline - time.monotonic())
                    time.sleep(max(0.0, pause))
                    view.poll()
                    screen.update(view.table(), refresh=True)
        except KeyboardInterrupt:
            pass
    except sqlite3.Error as e:
        raise registry_error(store.path, e) from None
    finally:
        store.close()
