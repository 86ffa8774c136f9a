"""The virtual bench's supervisor: one detached process that owns every board.

``edge sim up`` writes ``RUNDIR/bench.json`` and starts
``python -m edge_hil.virtual.supervisor --detach --lock-fd N RUNDIR``. The
supervisor holds the run folder's lock for its whole life, starts every
board, serves ``RUNDIR/control.sock``, writes ``RUNDIR/state.json`` once all
boards run (and again whenever an interpreter pid changes), and on SIGTERM,
SIGINT, SIGHUP or a ``stop`` request kills every interpreter, closes every
port and removes its state file and socket.

The bench's virtual air (:mod:`.air`: one BLE controller per board and
``ble_hosts`` for host processes) is the supervisor's child: started with
the boards (before any powers on, so a board's radio finds its controller at
boot) and stopped after them. It also asks Linux to be sent SIGTERM if the
supervisor dies, so it never outlives the bench.

Control protocol: one JSON object per line each way. Requests:
``{"cmd": "status"}``, ``{"cmd": "reset"|"power_off"|"power_on", "board": NAME}``,
``{"cmd": "download"|"bootsel", "board": NAME}`` (reset into the ESP ROM
download mode / the RP2040 BOOTSEL drive), ``{"cmd": "ble_drop", "board": NAME}``
(its BLE connections end as out of range), ``{"cmd": "clock_jump", "board": NAME,
"ms": N}`` (its clock moves N ms ahead), ``{"cmd": "stop"}``. Replies: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from edge_agent import device_fs
from edge_hil.virtual import state as st
from edge_hil.virtual.board import BoardSpec, VirtualBoard
from edge_hil.virtual.fs import device_id_of
from edge_hil.virtual.radio import BoardRadio

log = logging.getLogger("edge_hil.virtual.supervisor")

BOOT_TIMEOUT_S = 20.0
AIR_START_TIMEOUT_S = 15.0
AIR_STOP_TIMEOUT_S = 5.0
DEFAULT_BLE_HOSTS = 2
RUNNER = str(Path(__file__).with_name("runner.py"))


class AirProcess:
    """The virtual air of a bench, run as ``python -m edge_hil.virtual.air`` (its log: ``RUNDIR/air.log``)."""

    def __init__(self, rundir: Path, boards: list[str], hosts: int):
        self.rundir = rundir
        self.boards = boards
        self.hosts = hosts
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None

    def spawn(self) -> None:
        argv = [sys.executable, "-m", st.AIR_MODULE, "--rundir", str(self.rundir), "--hosts", str(self.hosts),
                "--parent", str(os.getpid())]
        for name in self.boards:
            argv += ["--board", name]
        with open(self.rundir / st.AIR_LOG, "ab") as logf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logf,
                                         cwd=str(self.rundir))

    async def ready(self, timeout: float = AIR_START_TIMEOUT_S) -> bool:
        """Wait for the air to say every socket listens; on failure, record why and stop it."""
        assert self.proc is not None and self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), timeout)
        except asyncio.TimeoutError:
            line = b""
        if line.strip() == b"ready":
            return True
        self.error = f"the virtual air did not start; see {self.rundir / st.AIR_LOG}"
        await self.stop()
        return False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def addresses(self) -> dict[str, str]:
        """Each board's BLE address, while the air runs."""
        return {n: st.board_ble_address(n) for n in self.boards} if self.pid else {}

    def status(self) -> dict:
        return {"pid": self.pid, "error": self.error,
                "hosts": [str(st.host_hci_socket(self.rundir, k)) for k in range(self.hosts)] if self.pid else []}

    async def stop(self) -> None:
        """SIGTERM (the air removes its sockets), SIGKILL if it does not go."""
        proc = self.proc
        if proc is None:
            return
        await st.terminate(proc, AIR_STOP_TIMEOUT_S)
        for path in (self.rundir / st.AIR_DIR).glob("*.hci"):   # a killed air leaves its sockets
            path.unlink(missing_ok=True)


class Supervisor:
    """Runs the boards of one run folder until told to stop."""

    def __init__(self, rundir: Path, bench: dict):
        self.rundir = rundir
        self.bench = bench
        self.boards: dict[str, VirtualBoard] = {}
        self.air = AirProcess(rundir, [spec["name"] for spec in bench["boards"]],
                              int(bench.get("ble_hosts", DEFAULT_BLE_HOSTS)))
        self._stop = asyncio.Event()
        self._ready = False
        self._write_pending = False

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        server = None
        try:
            self.air.spawn()        # its start overlaps the boards' opening
            for spec in self.bench["boards"]:
                b = VirtualBoard(BoardSpec.from_dict(spec), self.bench["micropython"],
                                 self.bench.get("runner", RUNNER), on_change=self._schedule_state)
                self.boards[b.spec.name] = b
                b.open()
                await b.start_link()
                log.info("%s (%s): port %s, fs %s%s", b.spec.name, b.spec.board, b.port, b.spec.fs,
                         f", flash_url {b.flash_url}" if b.flash_url else "")
            with st.control_socket_path(self.rundir) as sock:
                try:
                    os.unlink(sock)
                except FileNotFoundError:
                    pass
                server = await asyncio.start_unix_server(self._serve, path=sock)
            if await self.air.ready():
                log.info("air: %s", ", ".join(f"{n} {a}" for n, a in self.air.addresses().items()))
                for b in self.boards.values():
                    if b.chip.has_radio:
                        b.radio = BoardRadio.for_board(self.rundir, b.spec.name)
            else:
                log.error("%s: the boards run without BLE", self.air.error)
            self._write_state()         # not ready yet, but `sim down` can find us
            await asyncio.wait_for(asyncio.gather(*(b.power_on() for b in self.boards.values())),
                                   BOOT_TIMEOUT_S)
            self._ready = True
            self._write_state()
            log.info("bench ready: %d board(s)", len(self.boards))
            await self._stop.wait()
            log.info("stopping")
        finally:
            if server is not None:
                server.close()
            await asyncio.gather(*(b.stop() for b in self.boards.values()), return_exceptions=True)
            await self.air.stop()
            for name in (st.STATE, st.SOCK):
                try:
                    (self.rundir / name).unlink()
                except FileNotFoundError:
                    pass
            log.info("stopped")
        return 0

    def _on_sigchld(self) -> None:
        for b in self.boards.values():
            b.child_exited()

    # ---- state file -------------------------------------------------------

    def _schedule_state(self) -> None:
        if not self._write_pending and not self._stop.is_set():
            self._write_pending = True
            asyncio.get_running_loop().call_soon(self._write_state)

    def _write_state(self) -> None:
        self._write_pending = False
        if self._stop.is_set():
            return
        boards = []
        addresses = self.air.addresses()
        for b in self.boards.values():
            s = b.status()
            boards.append({
                "name": b.spec.name, "board": b.spec.board, "kind": b.chip.kind, "port": b.port, "fs": b.spec.fs,
                "console_log": b.spec.console_log, "pid": s["pid"],
                "ble_address": addresses.get(b.spec.name) if b.chip.has_radio else None,
                "ble": s["ble"]["up"] if s["ble"] else False,
                "device_id": device_id_of(b.spec.fs), "power": s["power"],
                "mode": s["mode"], "flash_url": s["flash_url"], "flash_file": s["flash_file"],
                "flash_record": b.spec.flash_record if b.spec.flash_size else None,
                "uf2_drive": s["uf2_drive"],
            })
        st.write_json_atomic(self.rundir / st.STATE, {
            "version": 1, "ready": self._ready, "supervisor_pid": os.getpid(), "rundir": str(self.rundir),
            "air": self.air.status(), "boards": boards,
        })

    # ---- control socket ---------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                req: dict = {}
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        req = {}
                        raise ValueError("a request is a JSON object")
                    reply = await self._handle(req)
                except Exception as e:  # one bad request must not stop the bench
                    reply = {"ok": False, "error": str(e) or type(e).__name__}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
                if req.get("cmd") == "stop" and reply.get("ok"):
                    self._stop.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _handle(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "supervisor_pid": os.getpid(), "ready": self._ready,
                    "boards": [b.status() for b in self.boards.values()]}
        if cmd == "stop":
            return {"ok": True}
        if cmd not in ("reset", "power_off", "power_on", "download", "bootsel", "ble_drop", "clock_jump"):
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        name = str(req.get("board"))
        board = self.boards.get(name)
        if board is None:
            return {"ok": False, "error": f"no board named {name!r} on this bench",
                    "hint": f"boards: {', '.join(self.boards)}"}
        if cmd == "ble_drop":
            if board.radio is None or not board.radio.drop_links():
                return {"ok": False, "error": f"board {name} has no BLE radio running, so it has no link to drop",
                        "hint": "only a powered virtual board on a bench whose air runs has one (edge sim ls)"}
            return {"ok": True, "board": board.status()}
        if cmd == "clock_jump":
            if board.chip.kind != "virtual":
                return {"ok": False, "error": f"board {name} is {board.chip.kind}: only a virtual board's clock "
                                              "can be moved"}
            try:
                offset = board.clock_jump(req.get("ms"))
            except ValueError as e:
                return {"ok": False, "error": str(e)}
            return {"ok": True, "board": board.status(), "offset_ms": offset}
        if cmd in ("download", "bootsel"):
            try:
                (board.enter_download if cmd == "download" else board.enter_bootsel)()
                self._write_state()     # readers of state.json see the new mode at once
            except RuntimeError as e:
                return {"ok": False, "error": str(e),
                        "hint": "ESP boards have a download mode, rp2 boards BOOTSEL; a board that is off "
                                f"needs `edge sim power {name} on`"}
            return {"ok": True, "board": board.status()}
        try:
            await asyncio.wait_for(getattr(board, cmd)(), BOOT_TIMEOUT_S)
        except RuntimeError as e:
            return {"ok": False, "error": str(e), "hint": f"power it on: edge sim power {name} on"}
        return {"ok": True, "board": board.status()}


def _detach() -> None:
    """Double fork: the supervisor outlives `sim up` and is nobody's child but init's."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m " + st.SUPERVISOR_MODULE, description=__doc__.split("\n")[0])
    p.add_argument("rundir", type=Path)
    p.add_argument("--lock-fd", type=int, help="an open, already flock()ed descriptor of RUNDIR/lock")
    p.add_argument("--detach", action="store_true", help="fork into the background")
    args = p.parse_args(argv)
    rundir = args.rundir.resolve()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if args.lock_fd is not None:
        lock = os.fdopen(args.lock_fd, "a")
    else:
        lock = open(rundir / st.LOCK, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.error("a virtual bench already runs in %s", rundir)
            return 4
    if args.detach:
        _detach()
    bench = json.loads((rundir / st.BENCH).read_text())
    try:
        return asyncio.run(Supervisor(rundir, bench).run())
    except Exception:
        log.exception("the supervisor failed")
        return 1
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
