"""`edge telemetry show|export|live` against a temporary registry, through the real `edge` group."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from datetime import datetime, timezone

import pytest

from edge_agent.cli.telemetry import LiveView, parse_time
from edge_agent.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_USAGE
from edge_agent.messages import Hello
from edge_agent.store import Record, Store
from tests.harness import invoke

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=timezone.utc).timestamp()


def rec(seq, name, unit, value, t, estimated, boot) -> Record:
    """A record with its time in Unix seconds (stored as integer ms)."""
    return Record(seq, name, unit or "", value, None if t is None else round(t * 1000), estimated, boot)


@pytest.fixture
def db(tmp_path):
    """Two devices: esp32-a (temp every 10 s for 100 s, a gap, a door) and picow-b (humidity)."""
    path = tmp_path / "registry.db"
    with Store(path) as s:
        s.note_device(Hello("esp32-a", "esp32", "0.1.0", 3, 1000, 0, 0, 4), T0)
        s.note_device(Hello("picow-b", "picow", "0.1.0", 1, 1000, 0, 0, 0), T0)
        s.add_batch("esp32-a", [rec(i, "temp", "Cel", 20 + i / 2, T0 + 10 * i, False, 3)
                                for i in range(10)], T0 + 100)
        s.add_batch("esp32-a", [rec(12, "door", None, True, T0 + 120, False, 3),
                                rec(13, "state", None, "idle, ok", T0 + 121, True, 3)], T0 + 130)
        s.add_batch("picow-b", [rec(i, "humidity", "%RH", 40.25 + i, T0 + 5 + 10 * i, False, 1)
                                for i in range(5)], T0 + 60)
        s.note_bad_frame("/dev/pts/4", "bad_crc", b"#EA:QUJD:00000000", seen=T0)
    return path


def at(seconds: float) -> str:
    return datetime.fromtimestamp(T0 + seconds, timezone.utc).isoformat().replace("+00:00", "Z")


# -- time arguments

def test_parse_time_reads_iso_8601_and_relative_times():
    now = 2_000_000_000.0
    assert parse_time("2026-11-23T14:00:00Z") == T0
    assert parse_time("2026-11-23T15:00:00+01:00") == T0
    assert parse_time("2026-11-23 14:00") == T0          # no offset: UTC
    assert parse_time("2026-11-23") == T0 - 14 * 3600
    assert parse_time("-10m", now) == now - 600
    assert parse_time("-2h", now) == now - 7200
    assert parse_time("-1.5d", now) == now - 1.5 * 86400
    assert parse_time("-30s", now) == now - 30
    assert parse_time("now", now) == now
    # A time ago, as `--since 10m` reads to a person (and journalctl's "10m ago").
    assert parse_time("10m", now) == now - 600
    assert parse_time("2h ago", now) == now - 7200


@pytest.mark.parametrize("bad", ["yesterday", "10", "-10x", "10m later", "2026-13-01", ""])
def test_a_bad_time_gets_a_usage_error_naming_the_accepted_forms(db, bad):
    result = invoke("telemetry", "show", "--db", str(db), "--since", bad)
    assert result.exit_code == EXIT_USAGE
    assert "is not a time" in result.output and "-10m" in result.output and "ISO-8601" in result.output


# -- show

def test_show_summarises_each_device(db):
    result = invoke("telemetry", "show", "--db", str(db))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    esp = next(line for line in lines if line.startswith("esp32-a"))
    # device, board, records (estimated ones noted), number of sensors
    assert esp.split()[:6] == ["esp32-a", "esp32", "12", "(1", "est.)", "3"]
    assert "14:00" in esp and "14:02" in esp  # HH:MM:SS today, YYYY-MM-DD HH:MM on other days
    assert esp.split()[-2:] == ["2", "4"]                 # gaps, dropped
    assert any(line.startswith("picow-b") for line in lines)
    assert "bad frames: 1" in result.output and "bad_crc" in result.output


def test_show_json_summary(db):
    result = invoke("telemetry", "show", "--db", str(db), "--json")
    data = json.loads(result.output)
    esp = next(d for d in data["devices"] if d["device_id"] == "esp32-a")
    assert (esp["records"], esp["gaps"], esp["dropped"], esp["estimated"]) == (12, 2, 4, 1)
    assert esp["names"] == ["door", "state", "temp"]
    assert esp["first"] == "2026-11-23T14:00:00.000Z" and esp["last"] == "2026-11-23T14:02:01.000Z"
    assert data["bad_frames"][0]["count"] == 1 and data["bad_frames"][0]["sample"].startswith("#EA:")


def test_show_device_lists_its_latest_records_oldest_first(db):
    result = invoke("telemetry", "show", "--db", str(db), "--device", "esp32-a", "--limit", "3", "--json")
    rows = json.loads(result.output)
    assert [r["seq"] for r in rows] == [9, 12, 13]
    assert rows[1]["value"] is True and rows[2]["value"] == "idle, ok" and rows[2]["estimated"]
    table = invoke("telemetry", "show", "--db", str(db), "--device", "esp32-a", "--limit", "3").output
    assert "estimated" in table and "idle, ok" in table and "true" in table


def test_show_filters_by_time_range_and_name(db):
    rows = json.loads(invoke("telemetry", "show", "--db", str(db), "--since", at(20), "--until", at(50),
                           "--json").output)
    assert [(r["device_id"], r["seq"]) for r in rows] == [   # [20 s, 50 s), by time
        ("esp32-a", 2), ("picow-b", 2), ("esp32-a", 3), ("picow-b", 3), ("esp32-a", 4), ("picow-b", 4)]
    rows = json.loads(invoke("telemetry", "show", "--db", str(db), "-n", "hum*", "--json").output)
    assert {r["name"] for r in rows} == {"humidity"} and len(rows) == 5


def test_show_relative_times_count_back_from_now(tmp_path):
    path = tmp_path / "r.db"
    now = time.time()
    with Store(path) as s:
        s.add_batch("d", [rec(0, "old", None, 1, now - 3600, False, 0),
                          rec(1, "new", None, 2, now - 60, False, 0)], now)
    rows = json.loads(invoke("telemetry", "show", "--db", str(path), "--since", "-10m", "--json").output)
    assert [r["name"] for r in rows] == ["new"]


def test_show_says_so_when_nothing_matches(db):
    result = invoke("telemetry", "show", "--db", str(db), "--device", "nobody")
    assert result.exit_code == 0 and "no records" in result.output


def test_show_on_a_missing_registry_says_how_to_make_one(tmp_path):
    result = invoke("telemetry", "show", "--db", str(tmp_path / "none.db"))
    assert result.exit_code == EXIT_NOT_FOUND
    assert "error: no registry at" in result.output
    assert "fix: run `edge telemetry ingest` first" in result.output
    assert not (tmp_path / "none.db").exists()


def test_show_on_a_file_that_is_not_a_registry_is_a_bad_input_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n" * 200)
    result = invoke("telemetry", "show", "--db", str(path))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "not an Edge registry" in result.output and "fix:" in result.output


def test_db_defaults_to_edge_db_environment_variable(db):
    result = invoke("telemetry", "show", "--json", env={"EDGE_DB": str(db)})
    assert {d["device_id"] for d in json.loads(result.output)["devices"]} == {"esp32-a", "picow-b"}


# -- export

def test_export_csv_streams_every_record_with_iso_utc_times(db):
    result = invoke("telemetry", "export", "--db", str(db))
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 17
    first = rows[0]
    assert first["device_id"] == "esp32-a" and first["time"] == "2026-11-23T14:00:00.000Z"
    assert first["value"] == "20.0" and first["unit"] == "Cel" and first["estimated"] == "0"
    by_name = {r["name"]: r for r in rows}
    assert by_name["door"]["value"] == "true" and by_name["state"]["value"] == "idle, ok"
    assert by_name["state"]["estimated"] == "1"
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)


def test_export_json_with_filters_is_a_json_array(db):
    result = invoke("telemetry", "export", "--db", str(db), "--format", "json", "--device", "picow-b",
                  "--since", at(15), "--until", at(40))
    rows = json.loads(result.output)
    assert [(r["seq"], r["value"], r["time"]) for r in rows] == [
        (1, 41.25, "2026-11-23T14:00:15.000Z"), (2, 42.25, "2026-11-23T14:00:25.000Z"),
        (3, 43.25, "2026-11-23T14:00:35.000Z")]


def test_export_json_of_nothing_is_an_empty_array(db):
    assert json.loads(invoke("telemetry", "export", "--db", str(db), "--format", "json",
                           "--device", "nobody").output) == []


def test_export_jsonl_has_one_record_per_line(db):
    lines = invoke("telemetry", "export", "--db", str(db), "--format", "jsonl", "-n", "temp").output.splitlines()
    assert len(lines) == 10 and all(json.loads(line)["name"] == "temp" for line in lines)


def test_export_to_a_file_leaves_no_partial_file(db, tmp_path):
    out = tmp_path / "out.json"
    result = invoke("telemetry", "export", "--db", str(db), "--format", "json", "-o", str(out))
    assert result.exit_code == 0 and "exported 17 records" in result.output
    assert len(json.loads(out.read_text())) == 17
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == ["out.json"]


def test_export_to_a_folder_that_does_not_exist_is_a_clear_error(db, tmp_path):
    result = invoke("telemetry", "export", "--db", str(db), "-o", str(tmp_path / "nope" / "out.csv"))
    assert result.exit_code == EXIT_BAD_INPUT
    assert "cannot write the export" in result.output and "fix:" in result.output


# -- live

def test_live_once_shows_the_last_value_of_every_sensor(db):
    result = invoke("telemetry", "live", "--db", str(db), "--once")
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if "humidity" in line)
    assert "picow-b" in line and "44.25" in line and "%RH" in line
    assert "idle, ok" in result.output and "24.5" in result.output


def test_live_runs_for_its_duration_and_picks_up_new_records(db):
    def writer():
        with Store(db) as s:
            for i in range(5):
                time.sleep(0.1)
                s.add_batch("picow-b", [rec(100 + i, "humidity", "%RH", 99.5, time.time(), False, 1)],
                            time.time())

    thread = threading.Thread(target=writer)
    started = time.monotonic()
    thread.start()
    result = invoke("telemetry", "live", "--db", str(db), "--duration", "1.0", "--interval", "0.1")
    thread.join()
    assert result.exit_code == 0
    assert 1.0 <= time.monotonic() - started < 10
    line = next(line for line in result.output.splitlines() if "humidity" in line)
    assert "99.5" in line


def test_live_view_rate_counts_new_records_per_second(db):
    clock = [T0 + 200]
    with Store(db) as s:
        view = LiveView(s, clock=lambda: clock[0])
        assert view.rate("esp32-a") is None
        clock[0] += 2
        s.add_batch("esp32-a", [rec(20 + i, "temp", "Cel", 1.0, T0 + 201, False, 3) for i in range(10)], T0)
        view.poll()
        assert view.rate("esp32-a") == pytest.approx(5.0)
        assert view.rate("picow-b") == 0
        assert view.latest[("esp32-a", "temp")].seq == 29


# -- protocol version 2: exact integers and times, refused batches, SenML, hostile text

@pytest.fixture
def v2db(tmp_path):
    path = tmp_path / "v2.db"
    with Store(path) as s:
        s.add_batch("esp32-a", [Record(0, "uptime", "ms", 2**53 + 1, 1_763_906_400_999, False, 1),
                                Record(1, "heap_free", "B", 48112, 1_763_906_400_999, False, 1),
                                Record(2, "mode", "", "[link=file:///etc/passwd]x[/link] [/]", 1_763_906_401_000,
                                       False, 1)], T0)
        with s.transaction():
            s.note_refused("esp32-a", "/dev/ttyUSB0", 3, 5, "time_range", "a record time of 0 ms", b"\xa1\x00\x07",
                           1_763_906_402_000)
    return path


def test_export_keeps_integers_exact_and_times_to_the_millisecond(v2db):
    rows = json.loads(invoke("telemetry", "export", "--format", "json", "--db", str(v2db)).output)
    assert [r["value"] for r in rows[:2]] == [2**53 + 1, 48112]
    assert rows[0]["time"] == "2025-11-23T14:00:00.999Z" and rows[0]["t_ms"] == 1_763_906_400_999
    out = invoke("telemetry", "export", "--db", str(v2db)).output
    assert "9007199254740993" in out and "2025-11-23T14:00:00.999Z" in out


def test_export_senml_json_names_records_device_slash_sensor(v2db):
    pack = json.loads(invoke("telemetry", "export", "--format", "senml-json", "--db", str(v2db)).output)
    assert pack[0] == {"n": "esp32-a/uptime", "u": "ms", "v": 2**53 + 1, "t": 1763906400.999}
    assert pack[2]["vs"].startswith("[link=") and "u" not in pack[2] and pack[2]["t"] == 1763906401


def test_export_senml_cbor_is_a_pack_with_integer_labels(v2db, tmp_path):
    import cbor2

    target = tmp_path / "out.cbor"
    result = invoke("telemetry", "export", "--format", "senml-cbor", "-o", str(target), "--db", str(v2db))
    assert result.exit_code == 0
    pack = cbor2.loads(target.read_bytes())
    assert pack[1] == {0: "esp32-a/heap_free", 1: "B", 2: 48112, 6: 1763906400.999}


def test_export_refused_lists_the_kept_batches(v2db):
    [b] = json.loads(invoke("telemetry", "export", "--refused", "--json", "--db", str(v2db)).output)
    assert (b["device_id"], b["first_seq"], b["end_seq"], b["reason"]) == ("esp32-a", 3, 5, "time_range")
    assert b["payload_hex"] == "a10007" and b["received"] == "2025-11-23T14:00:02.000Z"
    assert "time_range" in invoke("telemetry", "export", "--refused", "--db", str(v2db)).output


def test_show_lists_refused_batches_and_prints_device_text_as_text(v2db):
    out = invoke("telemetry", "show", "--db", str(v2db)).output
    assert "refused batches: 1" in out and "records 3..4: time_range" in out
    records = invoke("telemetry", "show", "-r", "--db", str(v2db)).output
    assert "[link=file:///etc/passwd]x[/link] [/]" in records


@pytest.mark.parametrize("t_ms", [2**63 - 1, -(2**63), 0, 253402300800000])
def test_read_commands_survive_any_stored_time(tmp_path, t_ms):
    path = tmp_path / "odd.db"
    with Store(path) as s:
        s.add_batch("esp32-a", [Record(0, "temp", "Cel", 1.5, t_ms, False, 1)], T0)
    for args in (["show"], ["show", "-r"], ["show", "--json"], ["export"], ["export", "--json"],
                 ["export", "--format", "senml-json"], ["live", "--once"]):
        result = invoke("telemetry", *args, "--db", str(path))
        assert result.exit_code == 0, (args, result.output)


@pytest.mark.parametrize("option", [["--baud", "-1"], ["--baud", "0"], ["--for", "-5"], ["--idle", "-1"]])
def test_ingest_refuses_bad_options_up_front(tmp_path, option):
    result = invoke("telemetry", "ingest", "/dev/null-port", "--db", str(tmp_path / "r.db"), *option)
    assert result.exit_code == EXIT_USAGE and "Invalid value" in result.output
