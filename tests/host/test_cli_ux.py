"""What users of mpremote, esptool and PlatformIO expect of the `edge`
command line (issue 7): names for boards, one spelling per option,
completion, tables that fit a pipe's 120 columns."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

import edge_agent.cli as cli
from edge_agent.cli.ingest import _print_table

HEADERS = ("port", "devices", "batches", "records", "dupes", "conflicts", "refused", "failed", "bad",
           "connects", "quiet")


def _summary(monkeypatch, rows) -> str:
    out = io.StringIO()
    monkeypatch.setattr(cli, "table_console", lambda **k: Console(file=out, width=120))
    _print_table(rows, 20.0, Table)
    return out.getvalue()


def _row(port, devices, bad=None, n=3400):
    return {"port": port, "devices": devices, "batches": 120, "records": n, "duplicates": 7,
            "conflicts": 0, "refused": 1, "failed": 0, "bad_frames": bad or {}, "connects": 2, "quiet": 1}


@pytest.mark.parametrize("rows", [
    [_row("/dev/pts/12", ["esp32c3-3f9a0c12b7d4"], {"bad_crc": 2})],
    [_row("rfc2217://127.0.0.1:40001", ["esp32c3-3f9a0c12b7d4", "esp32s3-0b1c2d3e4f50"],
          {"bad_crc": 2, "too_long": 1, "bad_cbor": 12}, n=1234567)],
], ids=["pty", "long port, two devices, three kinds of bad frame"])
def test_the_ingest_summary_fits_120_columns_with_no_header_or_cell_cut(monkeypatch, rows):
    text = _summary(monkeypatch, rows)
    assert "…" not in text, text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if line.lstrip().startswith("port"))
    assert header.split() == list(HEADERS)
    for r in rows:
        for cell in (r["port"], *r["devices"], *(f"{k}={v}" for k, v in r["bad_frames"].items()),
                     str(r["records"])):
            assert cell in text, f"{cell!r} is cut or folded:\n{text}"


# -- what is attached, USB ports faked through discovery's own hook ------------------------

def _usb(monkeypatch, *ports):
    import serial.tools.list_ports as lp
    from serial.tools.list_ports_common import ListPortInfo

    infos = []
    for device, vid, pid in ports:
        p = ListPortInfo(device, skip_link_detection=True)
        p.vid, p.pid, p.description = vid, pid, "USB serial"
        infos.append(p)
    monkeypatch.setattr(lp, "comports", lambda *a, **k: infos)


def _invoke(*args, env=None):
    import json

    from click.testing import CliRunner

    from edge_agent.cli import main
    r = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return r, (json.loads(r.output) if "--json" in args and r.exit_code == 0 else None)


def test_devs_lists_usb_ports_with_their_usb_id_and_board_or_choices_and_identity_unknown(monkeypatch, tmp_path):
    _usb(monkeypatch, ("/dev/ttyACM0", 0x2E8A, 0x0005), ("/dev/ttyUSB0", 0x10C4, 0xEA60),
         ("/dev/ttyUSB1", 0x067B, 0x2303))      # a bridge no board file lists
    env = {"EDGE_SIM_DIR": str(tmp_path / "sim"), "EDGE_DB": str(tmp_path / "none.db")}
    r, rows = _invoke("devs", "--json", env=env)
    assert [(x["name"], x["kind"], x["port"], x["usb_id"]) for x in rows] == [
        ("ttyACM0", "usb", "/dev/ttyACM0", "2e8a:0005"), ("ttyUSB0", "usb", "/dev/ttyUSB0", "10c4:ea60")]
    pico, cp210x = rows
    # The rp2 port's USB id is the same on a Pico and a Pico W: left open.
    assert pico["board"] is None and set(pico["choices"]) == {"pico", "picow"}
    assert cp210x["board"] is None and {"esp32", "esp32c3"} <= set(cp210x["choices"])
    # Never opened here: the identity of a USB board is unknown.
    assert all(x["device_id"] is None and x["provisioned"] is None for x in rows)
    r, _ = _invoke("devs", env=env)
    assert "ttyUSB0" in r.output and "10c4:ea60" in r.output and "unknown" in r.output
    assert "esp32|" in r.output


def test_a_usb_boards_name_resolves_to_its_port_and_a_path_is_taken_as_given(monkeypatch, tmp_path):
    from edge_agent.board_names import resolve_port
    from edge_agent.errors import NotFound

    _usb(monkeypatch, ("/dev/ttyACM0", 0x2E8A, 0x0005))
    assert resolve_port("ttyACM0", tmp_path, tmp_path / "none.db") == "/dev/ttyACM0"
    assert resolve_port("/dev/ttyACM9", tmp_path, tmp_path / "none.db") == "/dev/ttyACM9"
    assert resolve_port("rfc2217://127.0.0.1:4000", tmp_path, None) == "rfc2217://127.0.0.1:4000"
    with pytest.raises(NotFound) as e:
        resolve_port("picow-9", tmp_path, tmp_path / "none.db")
    assert e.value.exit_code == 3 and "'picow-9'" in e.value.message and "ttyACM0" in e.value.hint


# -- one spelling per option ----------------------------------------------------------------

def _commands():
    from edge_agent.cli import main

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")
    return list(walk(main, "edge"))


def test_every_port_option_is_dash_p_and_every_sim_folder_option_is_sim_dir():
    ports = sims = 0
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, __import__("click").Option) and p.name in ("port", "ports"):
                assert {"-p", "--port"} <= set(p.opts), path
                ports += 1
            if p.name in ("sim_dir", "rundir"):
                assert "--sim-dir" in p.opts, path
                sims += 1
    assert ports >= 2 and sims >= 10


def test_durations_are_spelled_for_and_telemetry_live_keeps_duration_hidden():
    import click

    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option) and "--duration" in p.opts:
                assert p.hidden and path == "edge telemetry live", path
    live = dict(_commands())["edge telemetry live"]
    assert any("--for" in p.opts for p in live.params)


def test_telemetry_live_stops_after_for_or_its_old_spelling(tmp_path):
    from edge_agent.store import Store

    db = tmp_path / "r.db"
    Store(db).close()
    for spelling in ("--for", "--duration"):
        r, _ = _invoke("telemetry", "live", "--db", str(db), spelling, "0.2")
        assert r.exit_code == 0, r.output
    r, _ = _invoke("telemetry", "live", "--db", str(db), "--for", "1", "--duration", "1")
    assert r.exit_code == 2


def test_sim_commands_take_sim_dir_and_still_dir(tmp_path):
    for spelling in ("--sim-dir", "--dir"):
        r, _ = _invoke("sim", "ls", spelling, str(tmp_path))
        assert r.exit_code == 0 and f"no virtual bench is running in {tmp_path}" in r.output


# -- completion ----------------------------------------------------------------------------

def _complete(args: list[str], incomplete: str, env: dict | None = None) -> list[str]:
    from click.shell_completion import ShellComplete

    from edge_agent.cli import main
    import os
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return [c.value for c in ShellComplete(main, {}, "edge", "_EDGE_COMPLETE")
                .get_completions(args, incomplete)]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_completion_offers_board_types_after_board():
    assert _complete(["flash", "--board"], "esp32s") == ["esp32s3"]
    assert "picow" in _complete(["provision", "--board"], "")


def test_completion_offers_the_registrys_device_ids_for_label_and_device(tmp_path):
    from edge_agent.store import Store

    db = tmp_path / "r.db"
    store = Store(db)
    for d in ("esp32-aaaaaaaaaaaa", "picow-bbbbbbbbbbbb"):
        store._db.execute("INSERT INTO devices (device_id, first_seen, last_seen) VALUES (?, 0, 0)", (d,))
    store._db.commit()
    store.close()
    assert _complete(["label"], "", {"EDGE_DB": str(db)}) == ["esp32-aaaaaaaaaaaa", "picow-bbbbbbbbbbbb"]
    assert _complete(["telemetry", "export", "--db", str(db), "--device"], "pi") == ["picow-bbbbbbbbbbbb"]
    assert _complete(["label"], "", {"EDGE_DB": str(tmp_path / "none.db")}) == []


def test_completion_offers_usb_board_names_for_ports(monkeypatch, tmp_path):
    _usb(monkeypatch, ("/dev/ttyACM0", 0x2E8A, 0x0005))
    env = {"EDGE_SIM_DIR": str(tmp_path), "EDGE_DB": str(tmp_path / "none.db")}
    assert _complete(["monitor"], "tty", env) == ["ttyACM0"]
    assert _complete(["flash", "-p"], "tty", env) == ["ttyACM0"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_edge_completion_prints_the_script_for_the_shell(shell):
    r, _ = _invoke("completion", shell)
    assert r.exit_code == 0 and "_EDGE_COMPLETE" in r.output and f"{shell}_complete" in r.output
