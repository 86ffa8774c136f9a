"""The per-board lock of the HIL rig (edge_hil.locks): one holder per board, across processes,
and a holder that dies (SIGKILL: a crashed xdist worker) never leaves the board locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from edge_agent.errors import Busy
from edge_hil.locks import BoardLock, lock_path

HOLD = """
import sys, time
from edge_hil.locks import BoardLock
lock = BoardLock(sys.argv[1], sys.argv[2])
lock.acquire(timeout=30)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RUN_DIR", str(tmp_path / "run"))
    return tmp_path / "run"


@pytest.fixture
def holder(run_dir):
    """A process holding board esp32-a of rig bench-a, as a pytest-xdist worker would."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, "bench-a", "esp32-a"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "EDGE_RUN_DIR": str(run_dir)})
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_lives_in_the_run_dir_named_by_rig_and_board(run_dir):
    assert lock_path("bench-a", "esp32-a") == run_dir / "hil" / "bench-a--esp32-a.lock"
    # Names that are no file names cannot escape the folder.
    assert lock_path("../x", "a/b").parent == run_dir / "hil"


def test_a_second_holder_waits_then_fails_naming_the_holder_pid(holder):
    lock = BoardLock("bench-a", "esp32-a")
    with pytest.raises(Busy) as e:
        lock.acquire(timeout=0.3)
    assert f"pid {holder.pid}" in e.value.message
    assert "esp32-a" in e.value.message and "bench-a" in e.value.message
    assert not lock.held


def test_another_board_of_the_rig_is_free_while_one_is_held(holder):
    with BoardLock("bench-a", "esp32-b") as lock:
        assert lock.held
    with BoardLock("bench-b", "esp32-a") as lock:
        assert lock.held


def test_a_killed_holder_leaves_the_board_to_the_next(holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = BoardLock("bench-a", "esp32-a")
    lock.acquire(timeout=30)
    try:
        assert lock.held
        assert f'"pid": {os.getpid()}' in lock.path.read_text()
    finally:
        lock.release()


def test_released_the_board_is_taken_at_once_and_the_record_is_gone(run_dir):
    first = BoardLock("bench-a", "esp32-a")
    first.acquire(timeout=1)
    first.release()
    assert first.path.read_text() == ""
    second = BoardLock("bench-a", "esp32-a")
    second.acquire(timeout=0)
    second.release()
    second.release()        # twice is harmless


def test_an_unusable_lock_folder_is_named_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("EDGE_RUN_DIR", str(tmp_path / "file"))
    with pytest.raises(Busy) as e:
        BoardLock("bench-a", "esp32-a").acquire(timeout=0)
    assert str(tmp_path / "file") in e.value.message
    assert "EDGE_RUN_DIR" in (e.value.hint or "")
