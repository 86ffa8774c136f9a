"""The virtual air: emulated BLE controllers on one link, each an HCI transport
on a unix socket, used by Bumble hosts in separate OS processes (tests/hil/air_peer.py),
as the boards' radios and the host's central will use them."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_hil.virtual import state as st
from tests.harness import Home

PEER = str(Path(__file__).with_name("air_peer.py"))
AD = "0201060a09656467652d7465737405ffffffed6e"     # what air_peer.py advertises


class Lines:
    """A process whose stdout lines a test waits for."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.seen: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait(self, prefix: str, timeout: float = 10) -> str:
        """The next line starting with ``prefix``; fails after ``timeout`` s or at EOF."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} within {timeout} s; saw:\n" + "\n".join(self.seen)) from None
            if line is None:
                raise AssertionError(f"exited before {prefix!r}; saw:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def run():
    started: list[Lines] = []

    def start(*argv: str) -> Lines:
        p = Lines([sys.executable, *argv])
        started.append(p)
        return p

    yield start
    for p in reversed(started):
        p.stop()


@pytest.fixture
def air(tmp_path, run):
    """An air with board ``b1`` and two host controllers in ``tmp_path``."""
    proc = run("-m", st.AIR_MODULE, "--rundir", str(tmp_path), "--board", "b1", "--hosts", "2")
    proc.wait("ready")
    return tmp_path


def peripheral(run, rundir: Path, name: str = "b1") -> Lines:
    p = run(PEER, "peripheral", str(st.board_hci_socket(rundir, name)), st.board_ble_address(name))
    p.wait("advertising")
    return p


def central(run, rundir: Path, k: int, *extra: str, name: str = "b1") -> Lines:
    return run(PEER, "central", str(st.host_hci_socket(rundir, k)), st.board_ble_address(name), *extra)


def test_a_host_process_scans_a_board_process_connects_and_reads_and_writes_its_gatt_characteristic(air, run):
    board = peripheral(run, air)
    host = central(run, air, 0)
    assert host.wait("seen") == f"seen {AD}"
    host.wait("connected")
    assert host.wait("services") == "services 1"
    assert host.wait("read") == "read " + b"hello".hex()
    assert host.wait("read") == "read " + b"edge".hex()      # the write reached the board's GATT server
    host.wait("done")
    board.wait("connected")
    assert board.wait("disconnected") == "disconnected 19"    # the host's own disconnect


def test_a_host_killed_while_connected_leaves_no_stale_link(air, run):
    board = peripheral(run, air)
    first = central(run, air, 0, "--hold")
    first.wait("holding")
    board.wait("connected")
    t0 = time.monotonic()
    os.kill(first.proc.pid, signal.SIGKILL)
    # The board hears a link timeout (as from a peer gone silent) and advertises again...
    assert board.wait("disconnected", timeout=5) == "disconnected 8"
    # ... so a new host process on the same controller connects within seconds.
    second = central(run, air, 0)
    second.wait("connected", timeout=8)
    assert second.wait("read") == "read " + b"edge".hex()      # the same board, its value as written
    second.wait("done")
    board.wait("connected")
    print(f"killed host to second host connected: {time.monotonic() - t0:.2f} s")


def test_hci_reset_drops_the_links_of_the_controller_that_is_reset(air, run):
    board = peripheral(run, air)
    host = central(run, air, 0, "--reset", "--hold")
    board.wait("connected")
    host.wait("reset")
    assert board.wait("disconnected", timeout=5) == "disconnected 8"
    again = central(run, air, 1)        # the board advertises again: another host connects
    again.wait("done")


def test_a_controller_serves_one_host_at_a_time_and_takes_the_next_when_it_leaves(air, run):
    import socket

    path = str(st.host_hci_socket(air, 1))
    first = socket.socket(socket.AF_UNIX)
    first.connect(path)
    second = socket.socket(socket.AF_UNIX)
    second.connect(path)
    second.settimeout(5)
    assert second.recv(1) == b""        # closed at once: the controller has a host
    first.close()
    board = peripheral(run, air)
    host = central(run, air, 1)
    host.wait("done")
    board.wait("connected")


def test_a_board_controller_refuses_an_address_other_than_the_boards(air, run):
    p = run(PEER, "peripheral", str(st.board_hci_socket(air, "b1")), "C0:11:22:33:44:55")
    with pytest.raises(AssertionError, match="exited before"):
        p.wait("advertising")
    assert "INVALID_COMMAND_PARAMETERS" in "\n".join(p.seen)


def test_board_addresses_are_static_random_and_stable_per_name():
    a = st.board_ble_address("esp32-1")
    assert a == st.board_ble_address("esp32-1") != st.board_ble_address("esp32-2")
    assert int(a[:2], 16) >> 6 == 0b11 and len(bytes.fromhex(a.replace(":", ""))) == 6


def test_sigterm_stops_the_air_and_removes_its_sockets(tmp_path, run):
    proc = run("-m", st.AIR_MODULE, "--rundir", str(tmp_path), "--board", "b1", "--hosts", "1")
    proc.wait("ready")
    assert sorted(p.name for p in (tmp_path / "air").iterdir()) == ["b1.hci", "host-0.hci"]
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(5) == 0
    assert list((tmp_path / "air").iterdir()) == []


@pytest.mark.slow
def test_sim_up_starts_the_air_with_the_boards_ls_shows_addresses_and_down_stops_it(bench):
    rows = bench.up("esp32", "picow", extra=("--unprovisioned",))
    listed = bench.json("sim", "ls")
    assert {b["name"]: b["ble_address"] for b in listed} == {
        b["name"]: st.board_ble_address(b["name"]) for b in rows}
    assert all(b["ble_address"] for b in rows)
    air = bench.control.air()
    assert st.pid_alive(air["pid"]) and st.AIR_MODULE in st.pid_cmdline(air["pid"])
    sockets = [st.board_hci_socket(bench.sim_dir, b["name"]) for b in rows] + [Path(p) for p in air["hosts"]]
    assert len(air["hosts"]) == 2 and all(p.is_socket() for p in sockets)
    bench.edge("sim", "down")
    assert not st.pid_alive(air["pid"])
    assert not any(p.exists() for p in sockets)


@pytest.mark.slow
def test_a_killed_supervisor_takes_the_air_with_it(bench):
    bench.up("virtual", extra=("--unprovisioned",))
    s = st.read_state(bench.sim_dir)
    os.kill(s["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while st.pid_alive(s["air"]["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not st.pid_alive(s["air"]["pid"])
    bench.edge("sim", "down")
    assert list((bench.sim_dir / st.AIR_DIR).glob("*.hci")) == []


@pytest.mark.slow
def test_a_run_folder_too_deep_for_unix_sockets_gives_a_bench_without_ble_and_says_so(tmp_path):
    home = Home(tmp_path / ("d" * 90))
    try:
        up = home.edge("sim", "up", "--board", "virtual", "--unprovisioned", "--json")
        assert "the virtual air did not start" in up.stderr and "without BLE" in up.stderr
        assert [b["ble_address"] for b in home.json("sim", "ls")] == [None]
        assert "socket path too long" in (home.sim_dir / st.AIR_LOG).read_text()
        assert home.edge("sim", "down").returncode == 0
    finally:
        home.down()
