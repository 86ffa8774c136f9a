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


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """Run ``argv`` as user nobody (the tests run as root, whom TIOCEXCL lets in)."""
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=10)


def serial_tty() -> str | None:
    """A real serial tty this machine lets us open (its UART's driver answers), or None."""
    for path in ("/dev/ttyS0", "/dev/ttyS1"):
        try:
            os.close(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
            return path
        except OSError:
            pass
    return None


def test_an_open_port_refuses_pyserial_openers(run_dir, tty):
    import serial

    ser = ports.open_serial(tty, timeout=0.05)
    try:
        # mpremote and esptool open ports with pyserial's exclusive lock: refused, root or not.
        with pytest.raises(serial.SerialException, match="exclusively lock"):
            serial.Serial(tty, exclusive=True)
    finally:
        ser.close()
    serial.Serial(tty, exclusive=True).close()      # closed: the lock is cleared


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to act as nobody")
def test_a_serial_tty_refuses_non_root_openers_and_a_pty_is_not_left_locked_by_a_killed_holder(run_dir, tty):
    # A real serial port (a board's USB UART; here the machine's own UART):
    # TIOCEXCL refuses programs that take no lock, and the kernel forgets it
    # when the holder is gone.
    dev = serial_tty()
    assert dev is not None, "this machine has no serial tty to test TIOCEXCL on"
    mode = os.stat(dev).st_mode
    os.chmod(dev, 0o666)
    try:
        with ports.open_serial(dev, timeout=0.05):
            cat = as_nobody(sys.executable, "-c", f"import os; os.open({dev!r}, os.O_RDWR | os.O_NONBLOCK)")
            assert cat.returncode != 0 and "busy" in cat.stderr.lower(), cat.stderr
        assert as_nobody(sys.executable, "-c", f"import os; os.open({dev!r}, os.O_RDWR | os.O_NONBLOCK)"
                         ).returncode == 0
    finally:
        os.chmod(dev, mode)
    # A virtual board's pty stays open in its supervisor (here: this test's
    # fixture holds both ends): a holder killed with SIGKILL must not leave
    # it refusing every other user until the bench restarts.
    os.chmod(tty, 0o666)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from edge_agent import ports; "
        f"s = ports.open_serial({tty!r}, timeout=0.05); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "EDGE_RUN_DIR": str(run_dir)})
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    opened = as_nobody(sys.executable, "-c", f"import os; os.open({tty!r}, os.O_RDWR | os.O_NONBLOCK)")
    assert opened.returncode == 0, opened.stderr


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
