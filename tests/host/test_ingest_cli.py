"""`edge telemetry ingest` end to end: a scripted v2 device on a pseudo-terminal, the real command."""

from __future__ import annotations

import json
import os
import pty
import select
import sqlite3
import threading

import pytest

from edge_agent.errors import EXIT_PARTIAL
from edge_agent.frames import Frame, FrameDecoder, encode_frame
from edge_agent.store import Store

from .fake_device import FakeDevice
from tests.harness import invoke


@pytest.fixture
def board():
    """A scripted device behind a pty: yields (port, device); the device answers until the test ends."""
    master, slave = pty.openpty()
    dev = FakeDevice(per_batch=4)
    for i in range(10):
        dev.sample((1, 1000 * i))
    stop = threading.Event()

    def run() -> None:
        decoder = FrameDecoder()
        dev.start()
        while not stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.02)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    return
                for ev in decoder.feed(data):
                    if isinstance(ev, Frame):
                        try:
                            dev.receive(ev.payload)
                        except ValueError:      # our own frames echoed back by the pty
                            pass
            for payload in dev.take():
                os.write(master, encode_frame(payload))
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield os.ttyname(slave), dev
    stop.set()
    thread.join(2)
    os.close(master)
    os.close(slave)


def test_ingest_stores_a_v2_device_and_reports_it(board, tmp_path):
    port, dev = board
    result = invoke("telemetry", "ingest", port, "--idle", "0.5", "--for", "10", "--json",
                                       "--db", str(tmp_path / "r.db"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    [row] = summary["ports"]
    assert (row["devices"], row["records"], row["failed"]) == ([dev.device_id], 10, 0)
    assert dev.acked == 10
    with Store(tmp_path / "r.db", create=False) as s:
        assert [r.value for r in s.query()] == [1000 * i for i in range(10)]


def test_ingest_reports_registry_failures_and_exits_7(board, tmp_path, monkeypatch):
    from edge_agent.telemetry import writer

    monkeypatch.setattr(writer, "RETRY_FOR", 0.0)

    def disk_full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(Store, "insert_samples", disk_full)
    port, dev = board
    result = invoke("telemetry", "ingest", port, "--for", "1.5",
                                       "--db", str(tmp_path / "r.db"))
    assert result.exit_code == EXIT_PARTIAL, result.output
    assert "database or disk is full" in result.output and "send them again" in result.output
    assert dev.acked == 0
