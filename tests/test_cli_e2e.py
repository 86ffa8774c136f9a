"""End to end through the `edge` command: virtual boards on the real
MicroPython interpreter, their telemetry ingested, shown and exported."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_agent.store import Store
from tests.device import PipeDevice, install

EDGE = str(Path(sys.executable).parent / "edge")


def edge(*args: str, env: dict, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([EDGE, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, f"edge {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def bench(tmp_path):
    env = {**os.environ, "EDGE_HOME": str(tmp_path / "home"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = edge("sim", "up", "--board", "esp32", "--board", "esp32c3", "--board", "picow", "--json", env=env)
    boards = json.loads(out.stdout)
    yield env, boards
    edge("sim", "down", env=env, check=False)


def test_three_virtual_boards_stream_into_the_registry_and_survive_a_power_cut(bench, tmp_path):
    env, boards = bench
    assert [b["board"] for b in boards] == ["esp32", "esp32c3", "picow"]
    ingest = subprocess.Popen([EDGE, "telemetry", "ingest", "--sim", "--for", "14", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(4)
    edge("sim", "power", boards[0]["name"], "off", env=env)
    time.sleep(2)
    edge("sim", "power", boards[0]["name"], "on", env=env)
    out, err = ingest.communicate(timeout=60)
    assert ingest.returncode == 0, err
    summary = json.loads(out)
    assert sum(p["records"] for p in summary["ports"]) > 100
    assert all(not p["bad_frames"] for p in summary["ports"]), summary

    shown = json.loads(edge("telemetry", "show", "--json", env=env).stdout)
    devices = {d["device_id"]: d for d in (shown["devices"] if isinstance(shown, dict) else shown)}
    assert len(devices) == 3
    for d in devices.values():
        assert d["records"] > 20 and d["gaps"] == 0 and d["dropped"] == 0, d
    cut = boards[0]["device_id"]
    store = Store(Path(env["EDGE_HOME"]) / "registry.db")
    try:
        rows = list(store.query(device=cut))
        assert len({r.boot for r in rows}) == 2, "the power-cut board came back with a new boot"
        seqs = sorted(r.seq for r in rows)
        assert seqs == list(range(len(seqs)))
    finally:
        store.close()

    exported = edge("telemetry", "export", "--format", "csv", "--device", cut, env=env).stdout
    table = list(csv.DictReader(io.StringIO(exported)))
    assert len(table) == len(rows)
    assert {"temp", "humidity", "battery", "uptime", "heap_free"} <= {r["name"] for r in table}


def test_monitor_shows_the_console_with_frames_decoded(bench):
    env, boards = bench
    out = edge("monitor", boards[1]["port"], "--for", "4", env=env, timeout=30).stdout
    assert "BATCH " + boards[1]["device_id"] in out, out
    assert "#EA:" not in out, "frames are shown decoded, not raw"


def test_ingest_reconnects_when_the_port_goes_away_and_comes_back(tmp_path):
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
    env = {**os.environ, "EDGE_HOME": str(tmp_path / "home")}
    ingest = subprocess.Popen([EDGE, "telemetry", "ingest", f"socket://127.0.0.1:{port}", "--for", "9", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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
    store = Store(tmp_path / "home" / "registry.db")
    seqs = sorted(r.seq for r in store.query(device="dev-1"))
    store.close()
    assert len(seqs) > 50 and seqs == list(range(len(seqs)))


def test_monitor_passes_keys_through_so_a_person_gets_the_repl(bench):
    """Ctrl-C stops the agent and the REPL answers, as on a board's USB console."""
    import pty
    import select

    env, boards = bench
    pid, fd = pty.fork()
    if pid == 0:  # the child: edge monitor on a terminal, as a person runs it
        os.execve(EDGE, [EDGE, "monitor", boards[0]["port"]], env)
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
