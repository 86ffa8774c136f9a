"""The SQLite registry: idempotent batches, atomicity, migrations, concurrent readers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import BadInput, NotFound
from edge_agent.frames import BadFrame, Frame, FrameDecoder, encode_frame
from edge_agent.messages import Hello, MessageError, decode_message
from edge_agent.store import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Record, Store

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "messages.json").read_text())
T0 = 1_763_906_400.0


def rec(seq, name, unit, value, t, estimated, boot) -> Record:
    """A record with its time in Unix seconds (stored as integer ms)."""
    return Record(seq, name, unit or "", value, None if t is None else round(t * 1000), estimated, boot)


def records(first_seq: int, n: int, name: str = "temp", t0: float = T0) -> list[Record]:
    return [rec(first_seq + i, name, "Cel", 20.0 + i / 4, t0 + i, False, 1) for i in range(n)]


def dump(path: Path, table: str | None = None) -> list[str]:
    """Every row of every table (or of one), as SQL: equal dumps mean nothing changed."""
    with sqlite3.connect(path) as db:
        lines = list(db.iterdump())
    return [line for line in lines if table is None or f'"{table}"' in line]


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "registry.db")
    yield s
    s.close()


def test_a_new_registry_is_wal_full_sync_with_foreign_keys_and_the_latest_schema(tmp_path):
    path = tmp_path / "sub" / "dir" / "registry.db"      # parent folders are created
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2        # FULL
        assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"devices", "samples", "series", "sensor_tables", "refused", "conflicts", "ingest_errors"} <= tables
    assert "telemetry" not in tables


def test_add_batch_returns_how_many_records_were_new(store):
    assert store.add_batch("dev-1", records(0, 20), T0 + 30) == 20
    assert store.add_batch("dev-1", records(10, 20), T0 + 40) == 10      # overlaps 10..19
    assert store.count("dev-1") == 30


def test_a_retransmitted_batch_stores_nothing_twice(store):
    store.add_batch("dev-1", records(0, 20), T0 + 30)
    before = dump(store.path, "samples")
    assert len(before) == 20
    assert store.add_batch("dev-1", records(0, 20), T0 + 99) == 0
    assert dump(store.path, "samples") == before    # same rows, first reception kept
    assert store.device("dev-1")["last_seen"] == T0 + 99


def test_values_of_every_kind_come_back(store):
    batch = [rec(0, "t", "Cel", 21.5, T0, False, 2), rec(1, "rssi", "dBm", -67, T0, False, 2),
             rec(2, "door", None, True, T0, False, 2), rec(3, "state", None, "heating", T0, True, 2)]
    store.add_batch("dev-1", batch, T0 + 1)
    got = {r.name: r for r in store.query()}
    assert got["t"].value == 21.5 and got["t"].unit == "Cel"
    assert got["rssi"].value == -67 and type(got["rssi"].value) is int
    assert got["door"].value is True and got["door"].unit == ""
    assert got["state"].value == "heating" and got["state"].estimated is True
    assert got["t"].received == T0 + 1 and got["t"].boot == 2


@pytest.mark.parametrize("broken", [
    rec(10, None, None, 1.0, T0, False, 1),         # NOT NULL name
    rec(10, "x", None, 1.0, None, False, 1),        # NOT NULL time
])
def test_a_batch_that_fails_midway_stores_nothing(store, broken):
    store.add_batch("dev-1", records(0, 5), T0)
    before = dump(store.path)
    with pytest.raises(ValueError):                   # never skipped silently (then acknowledged)
        store.add_batch("dev-1", records(5, 5) + [broken], T0 + 50, dropped=9)
    assert dump(store.path) == before                 # neither the records nor the device row


def test_bad_input_through_the_whole_path_leaves_the_telemetry_unchanged(store):
    """Frames -> messages -> ingest -> store: only good batches land; the rest is counted."""
    from edge_agent.ingest import PortSession

    hello, sensors, good = (next(v for v in VECTORS if v["type"] == t) for t in ("HELLO", "SENSORS", "BATCH"))
    session = PortSession("/dev/pts/1", store)
    session.receive(b"".join(encode_frame(bytes.fromhex(v["hex"])) for v in (hello, sensors, good)))
    assert store.count() == 13
    before = dump(store.path, "samples")
    msg = cbor2.loads(bytes.fromhex(good["hex"]))
    line = encode_frame(bytes.fromhex(good["hex"]))
    stream = b"".join([
        b"\x00\xff garbage \x1b[2J\r\n",
        line[:40] + b"\r\n",                                             # truncated frame
        line[:-4] + (b"0" if line[-4:-3] != b"0" else b"1") + line[-3:],  # bad CRC
        b"#EA:" + b"A" * 5000 + b"\r\n",                                 # oversized
        encode_frame(cbor2.dumps([1, 2, 3])),                            # valid CBOR, not a map
        encode_frame(cbor2.dumps({**msg, 9: [[0, 0]]})),                 # a tick without a value
        encode_frame(cbor2.dumps({**msg, 2: "1200"})),                   # wrong key type
        encode_frame(b"\xa1\x00"),                                       # truncated CBOR
    ])
    assert session.receive(stream) == []
    assert session.stats.bad == {"malformed": 1, "bad_crc": 1, "too_long": 1, "bad_message": 4}
    assert dump(store.path, "samples") == before


def runs(store: Store) -> list[tuple]:
    """The (first_seq, end_seq, t_min, t_max, boot, received) of every stored run, in order."""
    return store._db.execute("SELECT first_seq, end_seq, t_min, t_max, boot, received FROM batches "
                             "ORDER BY dev, first_seq").fetchall()


def seqs(first: int, n: int) -> list[Record]:
    """Records ``first`` .. ``first + n - 1`` with the same content whenever a seq is sent again."""
    return [rec(s, "temp", "Cel", s / 4, T0 + s, False, 1) for s in range(first, first + n)]


def test_an_overlapping_retransmission_keeps_each_records_first_reception(store):
    store.add_batch("dev-1", seqs(0, 20), T0 + 100)
    store.add_batch("dev-1", seqs(30, 5), T0 + 200)
    assert store.add_batch("dev-1", seqs(10, 30), T0 + 300) == 15      # 20..29 and 35..39 are new
    assert store.conflicts() == []
    got = {r.seq: r.received for r in store.query()}
    assert [got[s] for s in (0, 19, 20, 29, 30, 34, 35, 39)] == [T0 + 100] * 2 + [T0 + 300] * 2 + \
        [T0 + 200] * 2 + [T0 + 300] * 2
    ms = round(T0 * 1000)
    assert runs(store) == [(0, 20, ms, ms + 19000, 1, ms + 100000), (20, 30, ms + 20000, ms + 29000, 1, ms + 300000),
                           (30, 35, ms + 30000, ms + 34000, 1, ms + 200000),
                           (35, 40, ms + 35000, ms + 39000, 1, ms + 300000)]


def test_a_conflict_inside_an_overlap_is_kept_out_and_recorded(store):
    store.add_batch("dev-1", records(0, 5), T0)
    changed = [r._replace(value=99.0) if r.seq == 3 else r for r in records(0, 8)[2:]]
    assert store.add_batch("dev-1", changed, T0 + 1, source="/dev/ttyUSB0") == 3
    [conflict] = store.conflicts()
    assert conflict["seq"] == 3 and json.loads(conflict["offered"])[3] == 99.0
    assert [r.value for r in store.query() if r.seq == 3] == [20.75]
    assert [(first, end) for first, end, *_ in runs(store)] == [(0, 5), (5, 8)]


def test_records_of_one_call_with_two_boots_or_a_gap_get_their_own_runs(store):
    batch = records(0, 3) + [r._replace(boot=2, estimated=True) for r in records(3, 2)] + records(8, 2)
    store.add_batch("dev-1", batch, T0)
    assert [(first, end, boot) for first, end, _, _, boot, _ in runs(store)] == [(0, 3, 1), (3, 5, 2), (8, 10, 1)]
    assert sorted((r.seq, r.boot, r.estimated) for r in store.query()) == [
        (0, 1, False), (1, 1, False), (2, 1, False), (3, 2, True), (4, 2, True), (8, 1, False), (9, 1, False)]
    assert store.summary()[0]["estimated"] == 2 and store.summary()[0]["gaps"] == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["dev-1", "dev-2"]), st.integers(1, 6), st.integers(0, 50),
                          st.integers(0, 20)), min_size=1, max_size=12),
       st.integers(1, 12), st.none() | st.integers(0, 60), st.none() | st.integers(0, 80),
       st.none() | st.sampled_from(["dev-1", "dev-2"]))
def test_queries_by_time_find_exactly_the_records_a_full_scan_finds(tmp_path_factory, batches, limit, since,
                                                                    until, device):
    """Runs spanning a bound, out of time order, overlapping in time: the run ranges only narrow the search."""
    with Store(tmp_path_factory.mktemp("q") / "r.db") as s:
        next_seq: dict[str, int] = {}
        for dev, n, start, step in batches:
            first = next_seq.get(dev, 0)
            s.add_batch(dev, [rec(first + i, "temp", "Cel", float(i), T0 + start + i * step / 4, False, 1)
                              for i in range(n)], T0)
            next_seq[dev] = first + n
        every = list(s.query())         # by time, then device (in order of first arrival), then seq
        assert len(every) == sum(n for _, n, _, _ in batches)
        assert [r.t_ms for r in every] == sorted(r.t_ms for r in every)
        bounds = {"since": None if since is None else T0 + since, "until": None if until is None else T0 + until}
        want = [r for r in every if (device is None or r.device_id == device)
                and (since is None or r.t >= T0 + since) and (until is None or r.t < T0 + until)]
        assert list(s.query(device=device, **bounds)) == want
        assert list(s.query(device=device, limit=limit, newest_first=True, **bounds)) == want[::-1][:limit]


def test_staged_batches_go_in_together_with_their_runs_and_arrivals(store):
    store.add_batch("dev-1", records(0, 5), T0)
    dev = store.device_number("dev-1")
    series = store.series_numbers(dev, [("temp", "Cel")])[0]
    with store.transaction(), store.staging():
        for first in (5, 10):
            rows = [(dev, s, series, round(T0 * 1000) + s, float(s), 0) for s in range(first, first + 5)]
            assert store.insert_samples(dev, rows, 3, True, 7, "dev-1", "p") == (5, [])
            store.note_seen("dev-1", T0 + first, first)
        assert store.count() == 5                      # nothing yet
    assert store.count() == 15
    assert [(first, end, boot) for first, end, _, _, boot, _ in runs(store)] == [(0, 5, 1), (5, 10, 3), (10, 15, 3)]
    assert store.device("dev-1")["last_seen"] == T0 + 10 and store.device("dev-1")["dropped"] == 10


def test_a_batch_failing_inside_staging_is_undone_alone_with_its_staged_records(store):
    with store.transaction(), store.staging():
        store.add_batch("dev-1", records(0, 5), T0, dropped=1)
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.add_batch("dev-1", records(5, 5), T0 + 9, dropped=7)
                raise RuntimeError("after its records were staged")
        store.add_batch("dev-1", records(20, 5), T0)
    assert sorted(r.seq for r in store.query()) == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24]
    assert store.device("dev-1")["dropped"] == 1 and store.device("dev-1")["last_seen"] == T0


def test_staged_batches_meeting_stored_records_raise_overlap_and_store_nothing(store):
    from edge_agent.store import Overlap

    store.add_batch("dev-1", records(0, 5), T0)
    before = dump(store.path)
    dev = store.device_number("dev-1")
    with pytest.raises(Overlap):
        with store.transaction(), store.staging():
            for first in (5, 3):
                store.insert_samples(dev, [(dev, s, 1, 0, 1.0, 0) for s in range(first, first + 5)], 1, False, 7)
    assert dump(store.path) == before


def test_a_transaction_groups_batches_into_one_commit(store):
    path = store.path
    with store.transaction():
        assert store.add_batch("dev-1", records(0, 5), T0) == 5
        assert store.add_batch("dev-1", records(5, 5), T0) == 5
        with Store(path, create=False) as other:      # nothing visible before the commit
            assert other.count() == 0
    with Store(path, create=False) as other:
        assert other.count() == 10


def test_an_error_in_a_transaction_rolls_back_every_batch_in_it(store):
    store.add_batch("dev-1", records(0, 5), T0)
    before = dump(store.path)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_batch("dev-1", records(5, 5), T0)
            raise RuntimeError("the port went away")
    assert dump(store.path) == before


def test_a_failed_batch_inside_a_transaction_is_undone_alone(store):
    with store.transaction():
        store.add_batch("dev-1", records(0, 5), T0)
        with pytest.raises(OverflowError):        # row 10 fails in SQLite, after rows 5..9 went in
            store.add_batch("dev-1", records(5, 5) + [Record(10, "x", "", 1.0, 2**64, False, 1)], T0)
        store.add_batch("dev-1", records(20, 5), T0)
    assert sorted(r.seq for r in store.query()) == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24]


def test_note_device_records_the_hello_and_its_boot_start(store):
    store.note_device(Hello("dev-1", "esp32", "0.1.0", 4, 12_500, 100, 90, 2), T0)
    store.note_device(Hello("dev-1", "esp32", "0.2.0", 5, 1_000, 120, 100, 1), T0 + 60)
    row = store.device("dev-1")
    assert row["version"] == "0.2.0" and row["boot"] == 5
    assert row["boot_start"] == T0 + 59
    assert row["first_seen"] == T0 and row["last_seen"] == T0 + 60
    assert row["dropped"] == 2                        # a total never goes down
    assert store.device("nope") is None
    assert [d["device_id"] for d in store.devices()] == ["dev-1"]


def test_a_batch_before_any_hello_creates_the_device(store):
    store.add_batch("dev-9", records(0, 3), T0, dropped=4)
    assert store.device("dev-9")["dropped"] == 4
    assert store.device("dev-9")["board"] is None


def test_bad_frames_are_counted_per_source_and_reason_with_a_sample(store):
    for _ in range(3):
        store.note_bad_frame("/dev/ttyUSB0", "bad_crc", b"#EA:x" * 100, seen=T0)
    store.note_bad_frame("/dev/ttyUSB0", "too_long", b"#EA:AAAA", seen=T0 + 1)
    rows = {(r["source"], r["reason"]): r for r in store.bad_frames()}
    assert rows[("/dev/ttyUSB0", "bad_crc")]["count"] == 3
    assert len(rows[("/dev/ttyUSB0", "bad_crc")]["sample"]) == 256
    assert rows[("/dev/ttyUSB0", "too_long")]["count"] == 1


def test_query_filters_by_device_time_range_and_name_glob(store):
    store.add_batch("dev-1", records(0, 10, "temp"), T0)
    store.add_batch("dev-1", records(10, 10, "temp_out", t0=T0 + 0.5), T0)
    store.add_batch("dev-2", records(0, 10, "hum"), T0)
    assert len(list(store.query())) == 30
    assert {r.device_id for r in store.query(device="dev-2")} == {"dev-2"}
    assert [r.t for r in store.query(device="dev-2", since=T0 + 2, until=T0 + 5)] == [T0 + 2, T0 + 3, T0 + 4]
    assert {r.name for r in store.query(name="temp*")} == {"temp", "temp_out"}
    assert {r.name for r in store.query(name="temp")} == {"temp"}
    times = [r.t for r in store.query()]
    assert times == sorted(times)
    latest = list(store.query(device="dev-1", limit=3, newest_first=True))
    assert [r.t for r in latest] == [T0 + 9.5, T0 + 9, T0 + 8.5]


def test_summary_counts_records_names_range_gaps_and_dropped(store):
    store.add_batch("dev-1", records(0, 10), T0, dropped=3)
    store.add_batch("dev-1", records(15, 5, "hum"), T0)
    store.note_device(Hello("dev-2", "picow", "0.1.0", 1, 0, 0, 0, 0), T0)
    by_id = {d["device_id"]: d for d in store.summary()}
    one = by_id["dev-1"]
    assert (one["records"], one["gaps"], one["dropped"]) == (15, 5, 3)
    assert one["names"] == ["hum", "temp"]
    assert (one["first_t"], one["last_t"]) == (T0 * 1000, (T0 + 9) * 1000)
    assert (by_id["dev-2"]["records"], by_id["dev-2"]["gaps"], by_id["dev-2"]["names"]) == (0, 0, [])


def test_next_missing_is_the_first_gap_at_or_after_start(store):
    assert store.next_missing("dev-1") == 0
    store.add_batch("dev-1", records(0, 10) + records(12, 3), T0)
    assert store.next_missing("dev-1") == 10
    assert store.next_missing("dev-1", 12) == 15
    assert store.next_missing("dev-1", 11) == 11


def test_latest_values_and_seq_range_read_only_what_is_new(store):
    store.add_batch("dev-1", records(0, 4, "temp") + records(4, 2, "hum"), T0)
    assert {r.name: r.seq for r in store.latest_values()} == {"temp": 3, "hum": 5}
    assert store.seq_range("dev-1") == (6, 5)
    assert store.seq_range("dev-1", 5) == (0, None)
    store.add_batch("dev-1", records(6, 2, "temp"), T0)
    assert [r.seq for r in store.latest_values("dev-1", after_seq=5)] == [7]
    assert [r.seq for r in store.records_after("dev-1", 5)] == [6, 7]


# -- opening: migrations and files that are not registries

def test_an_old_registry_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("INSERT INTO devices (device_id, first_seen, last_seen) VALUES ('dev-1', 1, 1)")
    db.execute("INSERT INTO telemetry VALUES ('dev-1', 0, 'temp', 'Cel', 21.5, NULL, NULL, 5, 0, 1, 6)")
    db.execute("PRAGMA user_version = 1")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.commit()
    db.close()
    with Store(path) as s:
        assert s.schema_version == SCHEMA_VERSION == 7
        assert s.bonds() == [] and s.audit_log() == []   # the tables step 6 adds
        assert [(r.name, r.value, r.t_ms, r.received_ms) for r in s.query()] == [("temp", 21.5, 5000, 6000)]
        s.note_bad_frame("p", "bad_crc", b"x")          # the table step 2 adds
        assert s.bad_frames()[0]["count"] == 1


def version_3_registry(path: Path, telemetry: list[tuple]) -> Path:
    """A registry as schema version 3 left it: device dev-1 and these rows of its ``telemetry`` table."""
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:3]:
        for statement in step:
            db.execute(statement)
    db.execute("INSERT INTO devices (device_id, first_seen, last_seen) VALUES ('dev-1', 1, 1)")
    db.executemany("INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", telemetry)
    db.execute("PRAGMA user_version = 3")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.commit()
    db.close()
    return path


def test_migration_turns_old_rows_into_runs_that_keep_each_records_boot_and_reception(tmp_path):
    path = version_3_registry(tmp_path / "old.db", [
        ("dev-1", seq, "temp", "Cel", 1.5, None, None, 10 + seq, estimated, boot, received)
        for seq, boot, received, estimated in [(0, 1, 6, 0), (1, 1, 6, 0), (2, 2, 6, 0), (3, 1, 6, 0),
                                               (4, 1, 7, 0), (5, 1, 7, 1), (7, 1, 7, 1)]])
    with Store(path) as s:
        got = [(r.seq, r.boot, r.received_ms, r.estimated, r.t_ms) for r in s.query()]
        assert got == [(0, 1, 6000, False, 10000), (1, 1, 6000, False, 11000), (2, 2, 6000, False, 12000),
                       (3, 1, 6000, False, 13000), (4, 1, 7000, False, 14000), (5, 1, 7000, True, 15000),
                       (7, 1, 7000, True, 17000)]
        assert [run[:2] for run in runs(s)] == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 6), (7, 8)]


def test_a_registry_from_a_newer_version_is_refused_untouched(tmp_path):
    path = tmp_path / "future.db"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(BadInput, match="newer than this edge-agent") as info:
        Store(path)
    assert "upgrade" in info.value.hint
    assert path.read_bytes() == before


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 100)
    before = path.read_bytes()
    with pytest.raises(BadInput, match="not an Edge registry") as info:
        Store(path)
    assert info.value.hint
    assert path.read_bytes() == before


def test_a_sqlite_database_of_another_program_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE mine (x)")
    with pytest.raises(BadInput, match="not an Edge registry"):
        Store(path)


def test_a_missing_registry_is_not_created_when_reading(tmp_path):
    with pytest.raises(NotFound, match="no registry at") as info:
        Store(tmp_path / "absent.db", create=False)
    assert "edge telemetry ingest" in info.value.hint
    assert not (tmp_path / "absent.db").exists()


def test_a_folder_is_not_a_registry(tmp_path):
    with pytest.raises(BadInput, match="is a folder"):
        Store(tmp_path)


# -- concurrency: one writer, readers in other connections and processes

def test_a_reader_in_the_middle_of_a_query_does_not_block_the_writer(tmp_path):
    path = tmp_path / "r.db"
    with Store(path) as writer, Store(path, create=False, timeout=0.5) as reader:
        writer.add_batch("dev-1", records(0, 50), T0)
        rows = reader.query()
        first = next(rows)                              # a read snapshot is open
        assert writer.add_batch("dev-1", records(50, 50), T0) == 50   # commits at once
        assert first.seq == 0 and len(list(rows)) == 49  # the reader still sees its snapshot
        assert reader.count() == 100                     # and the new data on its next read


def test_a_writer_process_and_a_reader_run_side_by_side(tmp_path):
    path = tmp_path / "r.db"
    Store(path).close()
    writer = textwrap.dedent(f"""
        from edge_agent.store import Record, Store
        with Store({str(path)!r}) as s:
            for b in range(40):
                recs = [Record(b * 20 + i, "temp", "Cel", float(i), {int(T0 * 1000)} + b, False, 1)
                        for i in range(20)]
                assert s.add_batch("dev-1", recs, {T0}) == 20
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer])
    seen = []
    with Store(path, create=False, timeout=5) as reader:
        while proc.poll() is None:
            summary = reader.summary()
            seen.append(summary[0]["records"] if summary else 0)
            assert summary == [] or summary[0]["gaps"] == 0        # whole batches only
    assert proc.wait() == 0
    with Store(path, create=False) as reader:
        assert reader.count() == 800
    assert all(n % 20 == 0 for n in seen) and seen == sorted(seen)


def _open_when_released(path, barrier, results) -> None:
    barrier.wait()
    try:
        Store(path).close()
        results.put(None)
    except BaseException as e:  # reported to the parent, which asserts on it
        results.put(repr(e))


def test_many_processes_opening_a_new_registry_at_once_all_succeed(tmp_path):
    """`edge flash --all`, ingest and show may all create one registry at once:
    switching a new file to WAL can fail as "locked" without SQLite waiting."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    failures = []
    for trial in range(12):
        path = tmp_path / f"new-{trial}.db"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_when_released, args=(path, barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        failures += [r for r in (results.get(timeout=5) for _ in procs) if r]
    assert not failures, failures[:3]


def test_migration_moves_absurd_old_times_and_values_without_failing(tmp_path):
    path = version_3_registry(tmp_path / "old.db", [
        ("dev-1", 0, "up", "s", 1e300, None, None, 1e300, 0, 1, 6),
        ("dev-1", 1, "door", None, None, None, 1, -1e300, 1, 1, 6)])
    with Store(path) as s:
        got = list(s.query())
    assert [(r.seq, r.value, r.t_ms, r.estimated) for r in got] == [(1, True, -(2**63), True),
                                                                     (0, 1e300, 2**63 - 1, False)]


def test_with_no_registry_in_the_default_place_the_demos_registry_is_named(tmp_path, monkeypatch):
    # `make demo` keeps its state in the checkout's .edge/: right after it, a
    # user running `edge telemetry show` is told where it is and how to use it.
    demo = tmp_path / ".edge" / "registry.db"
    Store(demo).close()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFound) as info:
        Store(tmp_path / "home" / "registry.db", create=False)
    assert str(demo) in info.value.hint and f"EDGE_HOME={demo.parent}" in info.value.hint
