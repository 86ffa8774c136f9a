"""One owner per serial port: the first edge command keeps it, every other
opener is refused at once and told who holds it."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edge_agent import ports
from edge_agent.board_link import BoardLink
from edge_agent.errors import BadInput, Busy, NotFound
from tests.harness import mpremote


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setenv("EDGE_RUN_DIR", str(d))
    return d


@pytest.fixture
def tty():
    master, slave = pty.openpty()
    yield os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_a_second_claim_is_busy_and_names_the_holder(run_dir, tty):
    with ports.claim(tty, program="edge telemetry ingest"):
        with pytest.raises(Busy) as e:
            ports.claim(tty)
        assert "edge telemetry ingest" in e.value.message and f"pid {os.getpid()}" in e.value.message
        assert f"kill {os.getpid()}" in e.value.hint
        record = json.loads(ports.lock_path(tty).read_text())
        assert record["pid"] == os.getpid() and record["port"] == os.path.realpath(tty)
        assert {"program", "command", "started"} <= set(record)
    with ports.claim(tty):       # released: free again, and the lock file is gone with it
        pass
    assert not ports.lock_path(tty).exists()


def test_a_port_is_owned_by_its_real_path_not_the_name_used(run_dir, tty, tmp_path):
    alias = tmp_path / "by-id-board"
    alias.symlink_to(tty)
    with ports.claim(tty):
        with pytest.raises(Busy):
            ports.claim(str(alias))


def test_the_lock_of_a_killed_holder_is_taken_over(run_dir, tty):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from edge_agent import ports; "
        f"c = ports.claim({tty!r}, program='edge monitor'); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "EDGE_RUN_DIR": str(run_dir)})
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Busy, match=f"edge monitor \\(pid {holder.pid}"):
        ports.claim(tty)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads(ports.lock_path(tty).read_text())["pid"] == holder.pid, "a stale file is left behind"
    with ports.claim(tty):
        assert json.loads(ports.lock_path(tty).read_text())["pid"] == os.getpid()


def test_an_open_port_refuses_pyserial_and_non_root_openers(run_dir, tty):
    import serial

    ser = ports.open_serial(tty, timeout=0.05)
    try:
        # mpremote and esptool open ports with pyserial's exclusive lock: refused, root or not.
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(tty, exclusive=True)
        if os.geteuid() == 0 and shutil.which("setpriv"):
            # Programs that take no lock meet TIOCEXCL: refused unless they run as root.
            os.chmod(tty, 0o666)
            cat = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  "cat", tty], capture_output=True, text=True, timeout=10)
            assert cat.returncode != 0 and "busy" in cat.stderr.lower(), cat.stderr
    finally:
        ser.close()
    serial.Serial(tty, exclusive=True).close()      # closed: TIOCEXCL and the lock are cleared


@pytest.mark.parametrize("path, error, words", [
    ("/dev/null", BadInput, "mem device, not a serial port"),
    ("/tmp", BadInput, "is a folder, not a serial port"),
    ("/dev/ttyUSB-none", NotFound, "does not exist"),
])
def test_only_serial_devices_are_claimed(run_dir, path, error, words):
    with pytest.raises(error, match=words):
        ports.claim(path)
    assert not run_dir.exists() or not any(run_dir.rglob("*.lock"))


@pytest.mark.slow
def test_two_edge_commands_and_mpremote_on_one_virtual_board(bench, tmp_path):
    """The ingest that came first keeps the port and streams on; monitor, a
    second ingest, flash and mpremote are each refused at once."""
    bench.env["EDGE_RUN_DIR"] = str(tmp_path / "run")
    [board] = bench.up("esp32")
    port = board["port"]
    first = bench.start("telemetry", "ingest", port, "--for", "16", "--json")
    deadline = time.monotonic() + 10
    while not list((tmp_path / "run").rglob("*.lock")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    for args in (["monitor", port, "--for", "5"],
                 ["telemetry", "ingest", port, "--for", "5"],
                 ["flash", "--port", port]):
        t0 = time.monotonic()
        second = bench.edge(*args, check=False)
        assert second.returncode == 4, (args, second.stdout, second.stderr)
        assert f"in use by edge telemetry ingest (pid {first.pid}" in second.stderr, second.stderr
        assert f"kill {first.pid}" in second.stderr
        assert time.monotonic() - t0 < 5, f"edge {args[0]} waited instead of failing at once"
    t0 = time.monotonic()
    mp = mpremote(port, "exec", "print(1)", timeout=60)
    assert mp.returncode != 0 and "failed to access" in mp.stdout + mp.stderr, (mp.stdout, mp.stderr)
    assert time.monotonic() - t0 < 5, "mpremote hung on the held port"
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    [row] = json.loads(out)["ports"]
    # Undisturbed: one connection, records all along, no bad frame, no quiet spell.
    assert row["connects"] == 1 and row["quiet"] == 0 and row["bad_frames"] == {}, row
    assert row["records"] > 30, row
    assert not list((tmp_path / "run").rglob("*.lock")), "the lock file outlived its holder"
    again = bench.edge("monitor", port, "--for", "2", check=False)
    assert again.returncode == 0 and "BATCH" in again.stdout, again.stderr


def test_a_port_another_program_holds_is_busy_naming_that_program(run_dir, tty):
    # mpremote and esptool hold ports with pyserial's exclusive lock; edge
    # comes second and names the holder from the kernel's lock table.
    term_master, term = pty.openpty()       # miniterm wants a terminal of its own
    other = subprocess.Popen([sys.executable, "-m", "serial.tools.miniterm", tty],
                             stdin=term, stdout=term, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while ports.holder(tty) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for opener in (lambda: ports.open_serial(tty), lambda: BoardLink(tty)):
            with pytest.raises(Busy) as e:
                opener()
            assert f"in use by serial.tools.miniterm (pid {other.pid})" in e.value.message
            assert not ports.lock_path(tty).exists(), "a refused opener leaves no lock behind"
    finally:
        other.kill()
        other.wait()
        os.close(term_master)
        os.close(term)
