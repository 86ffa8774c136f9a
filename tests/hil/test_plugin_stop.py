"""A rig run that is stopped from outside leaves nothing running: SIGTERM (a CI job's timeout,
``kill``) tears it down as Ctrl-C does, the virtual bench included, and even SIGKILL, which runs no
teardown, takes down the ``edge`` commands its tests started (an ingest holding a board's port)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_hil.virtual.state import pid_alive

ROOT = Path(__file__).resolve().parents[2]

# A test that starts an ingest on its board, says what runs, and waits to be stopped.
HOLD = """
import json, os, time
from pathlib import Path
from edge_hil.virtual.state import read_state
from hil.suites.telemetry_steps import ingest

def test_holds_an_ingest(board, host):
    running = ingest(host, board)
    sim_dir = host.env["EDGE_SIM_DIR"]
    supervisor = read_state(Path(sim_dir))["supervisor_pid"]
    out = Path(os.environ["HOLD_OUT"])
    out.with_suffix(".tmp").write_text(json.dumps({"ingest": running.proc.pid, "supervisor": supervisor,
                                                   "sim_dir": sim_dir}))
    out.with_suffix(".tmp").rename(out)
    time.sleep(600)
"""


def start_holding(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, dict]:
    """A rig run of one virtual board whose test holds an ingest; the pids it reported."""
    (tmp_path / "test_hold.py").write_text(HOLD)
    out = tmp_path / "running.json"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rig",
                             "tests/hil/rigs/virtual3.yaml", "--rig-board", "sim-esp32", str(tmp_path / "test_hold.py"), *args],
                            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "HOLD_OUT": str(out), "EDGE_RUN_DIR": str(tmp_path / "run")})
    deadline = time.monotonic() + 120
    while not out.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the held test never started:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.2)
    return proc, json.loads(out.read_text())


def pids(running: dict) -> list[int]:
    return [running["ingest"], running["supervisor"]]


def gone(pid: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_run_stopped_with_sigterm_stops_its_bench_and_the_commands_its_tests_started(tmp_path, workers):
    proc, running = start_holding(tmp_path, *workers)
    try:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
        assert "stopped by signal SIGTERM" in out, out[-3000:]
        assert gone(running["ingest"]), "the test's ingest outlived the run"
        assert gone(running["supervisor"]), "the rig's virtual bench outlived the run"
        assert not Path(running["sim_dir"]).exists(), "the run left its bench's folder behind"
    finally:
        proc.kill()
        for pid in pids(running):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_run_killed_outright_takes_the_commands_its_tests_started_with_it(tmp_path):
    proc, running = start_holding(tmp_path)
    try:
        proc.kill()
        proc.communicate(timeout=30)
        assert gone(running["ingest"]), "the test's ingest outlived a killed run"
    finally:
        # No teardown runs on SIGKILL: the detached bench stays up, as `edge sim up`'s does, and
        # its folder stays; this test takes both down.
        for pid in pids(running):
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                assert gone(pid, 30)
        shutil.rmtree(running["sim_dir"], ignore_errors=True)
