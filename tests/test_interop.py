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
    assert max(r.t for r in first_boot) <= min(r.t for r in later) + 0.5
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
