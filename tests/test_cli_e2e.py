"""End to end through the `edge` command: virtual boards on the real
MicroPython interpreter, their telemetry ingested, shown and exported."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import threading
import time

import pytest

from edge_agent.store import Store
from tests.device import PipeDevice, install
from tests.harness import EDGE


@pytest.fixture
def boards(bench):
    return bench.up("esp32", "esp32c3", "picow")


def test_three_virtual_boards_stream_into_the_registry_and_survive_a_power_cut(bench, boards):
    assert [b["board"] for b in boards] == ["esp32", "esp32c3", "picow"]
    ingest = bench.start("telemetry", "ingest", "--sim", "--for", "14", "--json")
    time.sleep(4)
    bench.edge("sim", "power", boards[0]["name"], "off")
    time.sleep(2)
    bench.edge("sim", "power", boards[0]["name"], "on")
    out, err = ingest.communicate(timeout=60)
    assert ingest.returncode == 0, err
    summary = json.loads(out)
    assert sum(p["records"] for p in summary["ports"]) > 100
    assert all(not p["bad_frames"] for p in summary["ports"]), summary

    shown = bench.json("telemetry", "show")
    devices = {d["device_id"]: d for d in (shown["devices"] if isinstance(shown, dict) else shown)}
    assert len(devices) == 3
    for d in devices.values():
        assert d["records"] > 20 and d["gaps"] == 0 and d["dropped"] == 0, d
    cut = boards[0]["device_id"]
    store = Store(bench.db)
    try:
        rows = list(store.query(device=cut))
        assert len({r.boot for r in rows}) == 2, "the power-cut board came back with a new boot"
        seqs = sorted(r.seq for r in rows)
        assert seqs == list(range(len(seqs)))
    finally:
        store.close()

    exported = bench.edge("telemetry", "export", "--format", "csv", "--device", cut).stdout
    table = list(csv.DictReader(io.StringIO(exported)))
    assert len(table) == len(rows)
    assert {"temp", "humidity", "battery", "uptime", "heap_free"} <= {r["name"] for r in table}


def test_monitor_shows_the_console_with_frames_decoded(bench, boards):
    out = bench.edge("monitor", boards[1]["port"], "--for", "4", timeout=30).stdout
    assert "BATCH " + boards[1]["device_id"] in out, out
    assert "#EA:" not in out, "frames are shown decoded, not raw"


def test_ingest_reconnects_when_the_port_goes_away_and_comes_back(tmp_path, edge_home):
    """A board on a network serial port (socket://) that disappears for a while."""
    fs = install(tmp_path / "fs", sample_period_ms=100)
    dev = PipeDevice(fs)
    dev.start()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.listen(1)
    up = threading.Event()
    up.set()
    done = threading.Event()

    def serve():
        while not done.is_set():
            srv.settimeout(0.2)
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.settimeout(0.05)
            while up.is_set() and not done.is_set():
                data = dev.read(0.05)
                if data:
                    conn.sendall(data)
                try:
                    got = conn.recv(4096)
                    if not got:
                        break
                    dev.write(got)
                except socket.timeout:
                    pass
            conn.close()
            while not up.is_set() and not done.is_set():
                time.sleep(0.05)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ingest = edge_home.start("telemetry", "ingest", f"socket://127.0.0.1:{port}", "--for", "9", "--json")
    try:
        time.sleep(3)
        up.clear()          # the port goes away (connection closed, nothing accepted)
        time.sleep(2)
        up.set()            # and comes back
        out, err = ingest.communicate(timeout=60)
    finally:
        done.set()
        dev.stop()
        srv.close()
    summary = json.loads(out)
    assert summary["ports"][0]["connects"] >= 2, err
    store = Store(edge_home.db)
    seqs = sorted(r.seq for r in store.query(device="dev-1"))
    store.close()
    assert len(seqs) > 50 and seqs == list(range(len(seqs)))


def test_monitor_passes_keys_through_so_a_person_gets_the_repl(bench, boards):
    """Ctrl-C stops the agent and the REPL answers, as on a board's USB console."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: edge monitor on a terminal, as a person runs it
        os.execve(EDGE, [EDGE, "monitor", boards[0]["port"]], bench.env)
    seen = bytearray()

    def read_until(token: bytes, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen.extend(os.read(fd, 4096))
                except OSError:
                    return False
                if token in seen:
                    return True
        return False

    try:
        assert read_until(b"BATCH", 15), seen.decode(errors="replace")
        os.write(fd, b"\x03")
        assert read_until(b">>> ", 10), seen.decode(errors="replace")
        os.write(fd, b"print(6*7)\r")
        assert read_until(b"42", 10), seen.decode(errors="replace")
        os.write(fd, b"\x1d")  # Ctrl-] quits
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.close(fd)
