"""The firmware under the real MicroPython interpreter, wired to the host's
ingest core: what the device measures reaches the registry exactly once,
across kills, reboots, silence and clock jumps."""

from __future__ import annotations

import random
import time

import pytest

from edge_agent.ingest import PortSession
from edge_agent.store import Store
from tests.device import PipeDevice, install, pump
from tests.mpy import BOARDS

PERIOD_MS = 100


def seqs(store: Store, device: str) -> list[int]:
    return sorted(r.seq for r in store.query(device=device))


@pytest.fixture
def rig(tmp_path):
    fs = install(tmp_path / "fs", board="esp32", device_id="dev-1", sample_period_ms=PERIOD_MS)
    store = Store(tmp_path / "registry.db")
    dev = PipeDevice(fs, board="esp32")
    yield dev, store, tmp_path
    dev.stop()
    store.close()


def test_records_stream_into_the_registry_with_contiguous_sequence_numbers(rig):
    dev, store, _ = rig
    session = PortSession("pipe", store)
    dev.start()
    dev.write(session.start())
    pump(dev, session, 20, until=lambda: session.stats.records >= 60)
    got = seqs(store, "dev-1")
    assert len(got) >= 60
    assert got == list(range(len(got)))
    names = {r.name for r in store.query(device="dev-1")}
    assert {"uptime", "heap_free", "temp", "humidity", "battery"} <= names
    assert session.stats.bad_total() == 0
    # Opening the link asks the device to resend its in-flight batch (the
    # host may be new); beyond that one batch nothing is sent twice.
    assert session.stats.duplicates <= 48


def test_records_taken_before_the_host_answers_are_placed_on_the_host_clock(rig):
    dev, store, _ = rig
    session = PortSession("pipe", store)
    started = time.time()
    dev.start()
    # The host listens but does not answer: the device gets no TIME and no ACK.
    pump(dev, session, 2.5, answer=False)
    stored_silently = len(seqs(store, "dev-1"))
    dev.write(session.start())
    pump(dev, session, 15, until=lambda: len(seqs(store, "dev-1")) >= 40)
    rows = list(store.query(device="dev-1"))
    assert len(rows) >= 40
    first = rows[0]
    # The first sample was taken right after boot, about when we started it.
    assert abs(first.t - started) < 1.5, (first.t, started, stored_silently)
    ts = [r.t for r in rows if r.name == "uptime"]
    assert ts == sorted(ts)
    assert not any(r.estimated for r in rows)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(rig):
    dev, store, _ = rig
    rnd = random.Random(1234)
    session = PortSession("pipe", store)
    for _ in range(12):
        dev.start()
        dev.write(session.start())
        pump(dev, session, rnd.uniform(0.2, 1.2))
        dev.kill()
    dev.start()
    dev.write(session.start())
    pump(dev, session, 3)
    got = seqs(store, "dev-1")
    assert got == list(range(len(got))), "a record was lost: sequence numbers have a gap"
    boots = {r.boot for r in store.query(device="dev-1")}
    assert len(boots) >= 8
    dev_state = store.device("dev-1")
    assert dev_state is not None and dev_state["dropped"] == 0


def test_a_clock_jump_on_the_host_never_reorders_or_drops_records(rig):
    dev, store, _ = rig
    now = [time.time()]
    session = PortSession("pipe", store, clock=lambda: now[0])
    dev.start()
    dev.write(session.start())
    pump(dev, session, 1.5)
    now[0] += 3600  # the host's clock jumps an hour ahead...
    dev.write(session.start())
    pump(dev, session, 1.5)
    now[0] -= 7200  # ...then two hours back
    dev.write(session.start())
    pump(dev, session, 1.5)
    got = seqs(store, "dev-1")
    assert len(got) > 30
    assert got == list(range(len(got)))
    # The first TIME fixed the boot's epoch: later TIMEs moved no record.
    ts = [r.t for r in sorted(store.query(device="dev-1"), key=lambda r: r.seq)]
    assert ts == sorted(ts) and ts[-1] - ts[0] < 60


def test_records_of_a_boot_that_never_learned_the_time_are_estimated_before_the_next_boot(rig):
    dev, store, _ = rig
    session = PortSession("pipe", store)
    dev.start()
    time.sleep(1.5)  # nobody listens: no TIME, no ACK, everything stays on the device
    dev.kill()
    dev.start()
    reboot = time.time()
    dev.write(session.start())
    pump(dev, session, 10, until=lambda: len({r.boot for r in store.query(device="dev-1")}) > 1)
    rows = sorted(store.query(device="dev-1"), key=lambda r: r.seq)
    first_boot = [r for r in rows if r.boot == rows[0].boot]
    later = [r for r in rows if r.boot != rows[0].boot]
    assert first_boot and later
    assert all(r.estimated for r in first_boot)
    assert not any(r.estimated for r in later)
    # Estimated from the next boot's epoch: the last record of the earlier
    # boot lands just before the later boot began (docs/protocol.md 2.5).
    assert max(r.t for r in first_boot) < min(r.t for r in later)
    assert max(r.t for r in first_boot) <= reboot + 0.5


def test_the_same_firmware_runs_under_cpython_as_on_a_raspberry_pi(tmp_path):
    fs = tmp_path / "pi"
    fs.mkdir()
    (fs / "board.json").write_text((BOARDS / "rpi.json").read_text())
    (fs / "config.json").write_text('{"device_id": "pi-1", "sample_period_ms": 100}')
    store = Store(tmp_path / "registry.db")
    dev = PipeDevice(fs, board="rpi", cpython=True)
    session = PortSession("pipe", store)
    dev.start()
    try:
        dev.write(session.start())
        pump(dev, session, 15, until=lambda: session.stats.records >= 20)
        rows = list(store.query(device="pi-1"))
        assert len(rows) >= 20, bytes(dev.console).decode(errors="replace")
        assert sorted(r.seq for r in rows) == list(range(len(rows)))
        assert {"uptime", "heap_free"} <= {r.name for r in rows}
        assert (fs / "journal").is_dir() and (fs / "state").is_dir()
    finally:
        dev.stop()
        store.close()


def batch_end(batch) -> int:
    return batch.first_seq + sum((len(t) - 1) // 2 for t in batch.ticks)


def test_a_batch_the_host_refuses_is_kept_there_and_the_device_counts_it_and_goes_on(rig, monkeypatch, caplog):
    import edge_agent.telemetry.ingest as core

    dev, store, _ = rig
    real = core.resolve
    refused: list[tuple[int, int]] = []

    def resolve(batch, *args, **kwargs):
        if not refused and batch.first_seq > 0:
            refused.append((batch.first_seq, batch_end(batch)))
            raise core.Refusal("bad_value", "refused by this test")
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(core, "resolve", resolve)
    session = PortSession("pipe", store)
    dev.start()
    dev.write(session.start())
    pump(dev, session, 20, until=lambda: bool(refused) and len(seqs(store, "dev-1")) > refused[0][1] + 30)
    (first, end), = refused
    got = seqs(store, "dev-1")
    assert got == [s for s in range(got[-1] + 1) if not first <= s < end], "only the refused range is missing"
    kept = store.refused_batches("dev-1")
    assert [(k["first_seq"], k["end_seq"], k["reason"]) for k in kept] == [(first, end, "bad_value")]
    # The device counted them and said so: its next HELLO carries the total.
    dev.write(session.start())
    pump(dev, session, 3, until=lambda: (store.device("dev-1") or {}).get("refused") == end - first)
    assert store.device("dev-1")["refused"] == end - first
    # ...and its STATUS named the range and the reason.
    assert "reports error: host refused records %d..%d: bad_value" % (first, end - 1) in caplog.text


def test_a_host_killed_between_its_commit_and_the_ack_gets_the_batch_again_and_stores_it_once(rig):
    dev, store, _ = rig
    session = PortSession("pipe", store)
    dev.start()
    dev.write(session.start())
    pump(dev, session, 10, until=lambda: len(seqs(store, "dev-1")) >= 20)
    # The next batch is committed, but the host dies before its ACK leaves.
    before = len(seqs(store, "dev-1"))
    pump(dev, session, 5, answer=False, until=lambda: len(seqs(store, "dev-1")) > before)
    assert len(seqs(store, "dev-1")) > before
    session = PortSession("pipe", store)     # a new host process on the same registry
    dev.write(session.start())
    pump(dev, session, 10, until=lambda: session.stats.duplicates > 0 and session.stats.records > 20)
    assert session.stats.duplicates > 0, "the unacknowledged batch came again"
    got = seqs(store, "dev-1")
    assert got == list(range(len(got)))
    assert store.conflicts("dev-1") == []


def test_two_hosts_taking_turns_on_one_board_each_store_every_record_once_with_the_same_times(rig, tmp_path):
    dev, store_a, _ = rig
    store_b = Store(tmp_path / "other-host.db")
    try:
        hosts = [PortSession("pipe", store_a), PortSession("pipe", store_b)]
        dev.start()
        for turn in range(4):
            host = hosts[turn % 2]
            dev.write(host.start())
            pump(dev, host, 2.5)
        a = {r.seq: r for r in store_a.query(device="dev-1")}
        b = {r.seq: r for r in store_b.query(device="dev-1")}
        assert a and b
        union = sorted(set(a) | set(b))
        assert union == list(range(len(union))), "every record reached one host or the other"
        for seq in set(a) & set(b):      # a batch in flight when the hosts changed
            assert (a[seq].t, a[seq].value) == (b[seq].t, b[seq].value), "a record's time never moves"
    finally:
        store_b.close()


def test_a_registry_locked_by_another_process_for_seconds_loses_nothing(rig, tmp_path):
    import subprocess
    import sys

    dev, store, _ = rig
    session = PortSession("pipe", store)
    dev.start()
    dev.write(session.start())
    pump(dev, session, 10, until=lambda: len(seqs(store, "dev-1")) >= 10)
    locker = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(3)\n"
        "db.execute('COMMIT')\n"), str(tmp_path / "registry.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        pump(dev, session, 8)
    finally:
        locker.wait(timeout=10)
    pump(dev, session, 5, until=lambda: len(seqs(store, "dev-1")) >= 60)
    got = seqs(store, "dev-1")
    assert len(got) >= 60 and got == list(range(len(got)))
    assert store.device("dev-1")["dropped"] == 0
