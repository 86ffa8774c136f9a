"""One virtual board: the Unix-port interpreter behind a serial port of its own.

A board owns two pseudo-terminal pairs. The *port* pair's slave path is the
board's public serial port (what ``mpremote connect`` opens); the supervisor
holds both of its ends for the board's whole life, so the path stays valid
while clients come and go. The *interpreter* pair is made afresh for every
interpreter run: its slave is the interpreter's stdin, stdout, stderr and
controlling terminal (the interpreter is a session leader). The board copies
bytes between the two masters, appends everything the board prints to
``console.log``, and behaves like a board where the Unix port does not:

* Soft reset. The Unix port exits where a board soft-resets (Ctrl-D at the
  REPL, ``sys.exit()``, ``machine.soft_reset()``). Every interpreter exit that
  the board did not cause itself is a soft reset: the port shows
  ``MPY: soft reboot`` and a new interpreter starts; after a raw-REPL soft
  reset it goes straight back to the raw REPL without running main.py, as
  mpremote expects (see :mod:`edge_hil.virtual.console`).
* Ctrl-C. The interpreter's terminal does not raise signals itself: while
  the interpreter runs code (its terminal is not in the REPL's raw mode) and
  has a SIGINT handler, a Ctrl-C byte from the port becomes SIGINT, and the
  bytes after it wait until the REPL reads input again, so mpremote's
  ``\\r\\x03\\r\\x01`` never feeds Ctrl-A to a main.py that reads stdin. Between
  scripts the Unix port leaves SIGINT at its default (death); checking the
  handler first keeps a Ctrl-C there an ordinary byte.
* Power. ``reset`` kills the interpreter and boots again (boot.py, main.py);
  ``power_off`` kills it and keeps it off; ``power_on`` boots it.
* Crash loop. Interpreters that die within a second of starting, with no
  input from the port, five times in a row, pause restarts for a while.
* Bootloaders, behind the peripheral seam (:mod:`.peripherals`). An
  ESP-family board has a flash file and a USB-serial bridge
  (:mod:`.serial_link`, RFC 2217) whose DTR/RTS lines drive EN and IO0
  through the classic auto-reset circuit into the ROM download mode
  (:class:`~.peripherals.EspDownloadMode`); an rp2 board enters BOOTSEL
  (``machine.bootloader()`` or a request) and a folder drive takes a .uf2
  (:class:`~.peripherals.BootselDrive`). Either way the image lands in
  ``flash.bin`` and ``flash.json`` records it; the interpreter itself does
  not change (a virtual board cannot run it).
* OTA partitions (ESP family). ``import esp32`` gets a stand-in
  (``vesp32.py``): two OTA partitions and an otadata record in a file in the
  board's home, with ESP-IDF's rollback rule at each start that runs main.py;
  the interpreter never changes with the partition it "boots".
* Kinds. What runs behind the port is a :class:`Chip`: the Unix port
  (:class:`UnixPortChip`, everything above) or an emulated RP2040 running
  the real rp2 firmware (:class:`edge_hil.emulated.chip.EmulatedRp2040`:
  it soft-resets, handles Ctrl-C and keeps its files by itself);
  :func:`chip_for` is the one place that picks it.
* States. The chip's state (off, starting, running, backoff, held,
  download, bootsel, stopped) moves only as :mod:`.lifecycle`'s table allows.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import signal
import subprocess
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from edge_hil.virtual.console import ConsoleFilter
from edge_hil.virtual.esp_rom import CHIPS
from edge_hil.virtual.flash import FlashImage
from edge_hil.virtual.lifecycle import Lifecycle, State
from edge_hil.virtual.peripherals import BootselDrive, EspDownloadMode, Peripheral
from edge_hil.virtual.pty_port import PtyPort, nonblock, raw_termios
from edge_hil.virtual.radio import BoardRadio
from edge_hil.virtual.rom import ROM_HEAP_SLACK, build_rom, qstr_bytes

log = logging.getLogger("edge_hil.virtual.board")

CTRL_A = b"\x01"
CTRL_C = 0x03
INPUT_BACKLOG_MAX = 256 * 1024      # port input kept while the interpreter restarts
INTERRUPT_HOLD_S = 2.0              # longest wait for the REPL after a Ctrl-C
RAW_ENTRY_S = 5.0                   # longest wait for the raw REPL after a soft reset
QUICK_EXIT_S = 1.0
CRASH_LOOP_RUNS = 5
CRASH_LOOP_BACKOFF_S = 10.0
CONSOLE_LOG_MAX = 16 * 1024 * 1024  # console.log rolls over to console.log.1 past this
# Each OTA partition of an ESP-family board: MicroPython's
# ports/esp32/partitions-4MiB-ota.csv (ota_0 and ota_1, 0x180000 each), the
# table of its OTA builds for 4 MB of flash, the least our ESP boards have.
OTA_PARTITION_BYTES = 0x180000
CLOCK_FILE = "clock-offset"         # in a board's home: how far its clock was moved ahead (vtime.py)
CLOCK_WIDTH = 20                    # the offset's digits, rewritten in place (the board keeps it open)

# What a stand-in keeps in the heap once loaded, by a board's interpreter:
# a real port's esp32 and bluetooth modules are C in its firmware (and a Pico
# W's budget is what is left once Bluetooth took its share: boards/picow.json),
# so the heap is the budget plus this, as it is plus the ROM image. Measured
# once per interpreter: the esp32 one (vesp32.py) started, the bluetooth one
# (vbluetooth.py, compiled by radio.py) imported, the time one (vtime.py) started.
_STANDIN_COST = """
import gc, sys
sys.path.insert(0, sys.argv[1])
gc.collect()
before = gc.mem_free()
if sys.argv[2] == "esp32":
    import vesp32
    vesp32.start(sys.argv[3], 4096, True)
elif sys.argv[2] == "time":
    open(sys.argv[3], "w").close()
    import vtime
    vtime.start(sys.argv[3])
else:
    import vbluetooth
gc.collect()
print(before - gc.mem_free())
"""
_standin_cost: dict[tuple[str, str], int] = {}


def standin_bytes(micropython: str, which: str, folder: Path | str) -> int:
    """The heap stand-in ``which`` ("esp32" or "time" from the runner's ``folder``, or "bluetooth" from
    radio.py's compiled ``folder``) takes on a board (see :data:`_STANDIN_COST`); 0 if unknown."""
    if (micropython, which) not in _standin_cost:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="edge-standin-") as tmp:
            proc = subprocess.run([micropython, "-X", "heapsize=1M", "-c", _STANDIN_COST, str(folder), which,
                                   str(Path(tmp) / "ota.bin")], capture_output=True, text=True, timeout=60)
        cost = max(0, int(proc.stdout.split()[-1])) if proc.returncode == 0 and proc.stdout.split() else 0
        _standin_cost[(micropython, which)] = cost
    return _standin_cost[(micropython, which)]


def _take_controlling_tty() -> None:  # runs in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def sigint_caught(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGINT (from /proc)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except OSError:
        pass
    return False


class BoardSpec:
    """What the supervisor needs to run one board (one entry of ``bench.json``)."""

    def __init__(self, name: str, board: str, heap_bytes: int, fs: str, console_log: str, home: str,
                 chip: str | None = None, family: str | None = None, flash_size: int = 0,
                 machine: str = "", kind: str = "virtual"):
        self.name = name
        self.board = board
        self.heap_bytes = heap_bytes
        self.fs = fs
        self.console_log = console_log
        self.home = home
        self.chip = chip                # "esp32", "esp32s3", "rp2040", ...
        self.family = family            # the board file's micropython_port: "esp32", "rp2", "unix"
        self.flash_size = flash_size    # bytes; 0: no flash file
        self.machine = machine          # what the board says it is (its machine string)
        self.kind = kind                # "virtual" (the Unix port) | "emulated" (the real firmware)

    @property
    def bootloader(self) -> str | None:
        """"esp-rom" (ESP serial download mode), "uf2" (RP2040 BOOTSEL) or None."""
        if self.family == "esp32" and self.chip in CHIPS and self.flash_size:
            return "esp-rom"
        if self.family == "rp2" and self.flash_size:
            return "uf2"
        return None

    @property
    def flash_file(self) -> str | None:
        return str(Path(self.home) / "flash.bin") if self.flash_size else None

    @property
    def flash_record(self) -> str:
        return str(Path(self.home) / "flash.json")

    @property
    def uf2_drive(self) -> str:
        return str(Path(self.home) / "RPI-RP2")

    @classmethod
    def from_dict(cls, d: dict) -> "BoardSpec":
        return cls(d["name"], d["board"], int(d["heap_bytes"]), d["fs"], d["console_log"], d["home"],
                   d.get("chip"), d.get("family"), int(d.get("flash_size") or 0), d.get("machine") or "",
                   d.get("kind") or "virtual")

    @property
    def platform(self) -> str:
        """The ``sys.platform`` of the chip the board stands for."""
        from edge_agent.boards import PORT_PLATFORMS

        return PORT_PLATFORMS.get(self.family or "", "linux")


@dataclass
class Launch:
    """One start of a chip's process: its command, environment, folder and where its stderr goes."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    stderr_file: str | None = None      # None: the console pty, as a board's own stderr


class Chip(Protocol):
    """What runs behind a board's port, one process per boot: the seam between the kinds of board.

    The board (power, reset, console, bootloaders, crash loops) is the same
    for every kind; a chip says how its process starts and how it behaves.
    """

    kind: str                   # "virtual" | "emulated": what `sim ls` and the drivers report
    exit_is_soft_reset: bool    # an exit on its own is a soft reset (else: the chip failed)
    interrupts_by_signal: bool  # a Ctrl-C from the port becomes SIGINT while code runs
    native_console: bool        # its output is a real firmware's, passed byte for byte
    has_radio: bool             # it gets a BLE controller on the bench's air

    async def launch(self, mode: str) -> Launch:
        """The process for one boot; ``mode``: "boot" | "raw" | "repl" (see runner.py)."""
        ...

    def entered_bootloader(self, rc: int | None) -> bool:
        """Whether the process ended because the chip entered its ROM bootloader by itself."""
        ...


class UnixPortChip:
    """A virtual board's chip: the MicroPython Unix port running ``runner.py`` on the board's folder.

    The other kind is :class:`edge_hil.emulated.chip.EmulatedRp2040`;
    :func:`chip_for` picks one per board, and the board asks nothing else.
    """

    kind = "virtual"
    exit_is_soft_reset = True           # the Unix port exits where a board soft-resets
    interrupts_by_signal = True         # Ctrl-C becomes SIGINT while code runs
    native_console = False              # LF to CRLF, in-band markers (see console.py)
    has_radio = True                    # a stand-in bridged to the virtual air

    def __init__(self, board: "VirtualBoard"):
        self.board = board

    async def launch(self, mode: str) -> "Launch":
        b = self.board
        env = dict(os.environ)
        env["HOME"] = b.spec.home        # the REPL keeps its history there
        env.pop("MICROPYINSPECT", None)
        # The identity the board states (vmachine.py): the chip it stands for.
        env["EDGE_BOARD_PLATFORM"] = b.spec.platform
        env["EDGE_BOARD_MACHINE"] = b.spec.machine
        env.pop("EDGE_BLE_SOCKET", None)
        env.pop("EDGE_ESP32_OTA", None)
        if b.spec.family == "esp32":
            # The esp32 module's OTA partitions (vesp32.py), in the home: not
            # part of the board's filesystem.
            env["EDGE_ESP32_OTA"] = str(Path(b.spec.home) / "ota-partitions.bin")
            env["EDGE_ESP32_OTA_SIZE"] = str(OTA_PARTITION_BYTES)
        # The board's clock (vtime.py): moved ahead by the bench's clock_jump.
        env["EDGE_CLOCK"] = str(b.clock_file())
        env.pop("EDGE_BLE_MPY", None)
        if b.radio is not None and mode == "boot" and await b.radio.start():
            b.on_change()
        if b.radio is not None and b.radio.up:
            # The board's `bluetooth` (the runner installs the stand-in).
            env["EDGE_BLE_SOCKET"] = str(b.radio.socket)
            if b.radio.standin is not None:
                env["EDGE_BLE_MPY"] = str(b.radio.standin)
        # The agent frozen into the board's "flash" (rom.py) when it boots to
        # run main.py: the heap holds the board's budget plus the image and
        # its names, which stand for the flash. A raw-REPL session (mpremote,
        # edge flash) sees the folder's files, which it may be replacing.
        rom = Path(b.spec.fs).parent / "agent.romfs"
        rom_size = build_rom(Path(b.spec.fs), rom) if mode == "boot" else 0
        heap = b.spec.heap_bytes
        esp32 = ble = names = clock = 0
        if b.spec.family == "esp32" and mode == "boot":
            # As the ROM image: what a board keeps in flash, for the agent.
            esp32 = standin_bytes(b.micropython, "esp32", Path(b.runner).parent)
        if mode == "boot":
            clock = standin_bytes(b.micropython, "time", Path(b.runner).parent)
        if "EDGE_BLE_MPY" in env and mode == "boot":
            ble = standin_bytes(b.micropython, "bluetooth", env["EDGE_BLE_MPY"])
        if rom_size:
            names = qstr_bytes(b.micropython, rom)
            heap += rom_size + ROM_HEAP_SLACK + names
        heap += esp32 + ble + clock
        log.info("%s: heap %d = budget %d + image %d + its names %d + stand-ins (esp32 %d, bluetooth %d, time %d)",
                 b.spec.name, heap, b.spec.heap_bytes, rom_size, names, esp32, ble, clock)
        argv = [b.micropython, "-X", f"heapsize={heap}", "-i", b.runner, b.spec.fs, mode]
        if rom_size:
            argv.append(str(rom))
        return Launch(argv=argv, env=env, cwd=b.spec.fs)

    def entered_bootloader(self, rc: int | None) -> bool:
        return False        # machine.bootloader() is a console marker here (vmachine.py)


def chip_for(board: "VirtualBoard") -> Chip:
    """The chip a board runs: the one place that knows the kinds of board."""
    spec = board.spec
    if spec.kind == "emulated":
        from edge_hil.emulated.chip import EmulatedRp2040

        return EmulatedRp2040(spec.name, spec.home, str(spec.flash_file), spec.flash_size)
    return UnixPortChip(board)


class VirtualBoard:
    """A running virtual board; all methods run on the supervisor's event loop."""

    def __init__(self, spec: BoardSpec, micropython: str, runner: str, on_change=None):
        self.spec = spec
        self.micropython = micropython
        self.runner = runner
        self.on_change = on_change or (lambda: None)
        self.port = ""
        self.proc: subprocess.Popen | None = None
        self.life = Lifecycle()
        self.restarts = 0
        self.chip = chip_for(self)
        self.console = ConsoleFilter(native=self.chip.native_console)
        self._loop = asyncio.get_running_loop()
        self.pty = PtyPort(spec.name, self._loop, lambda data: self._serial_input(data, "pty"))
        self._im = -1                   # interpreter master (current run)
        self._log: BinaryIO | None = None
        self._to_interp = bytearray()
        self._interp_writer = False
        self._held = bytearray()        # port input waiting for the interpreter
        self._holding = False           # True: port input waits (restart, Ctrl-C, raw entry)
        self._hold_deadline = 0.0
        self._hold_gen = 0
        self._last_sigint = 0.0
        self._input_seen = False
        self._action: str | None = None  # reset | off | stop | soft: why we end this run
        self._wake = asyncio.Event()
        self._ended: asyncio.Future | None = None
        self._started = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._next_mode = "boot"
        self._boot_line = b""
        self._await_raw = False         # port input waits for the raw REPL after a soft reset
        self.flash: FlashImage | None = None
        self.link = None                # SerialLink (ESP boards): a second UART path, with DTR/RTS
        self.peripherals: list[Peripheral] = []
        self.radio: BoardRadio | None = None   # the BLE bridge (see :mod:`.radio`), when the air runs

    @property
    def state(self) -> State:
        return self.life.state

    @property
    def powered(self) -> bool:
        return self.life.powered

    @property
    def mode(self) -> str:
        """"micropython" | "download" | "bootsel" | "held" (EN low)."""
        return self.life.mode

    # ---- life cycle -------------------------------------------------------

    def open(self) -> None:
        """Create the serial port and the console log; the board stays off."""
        Path(self.spec.console_log).parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.spec.console_log, "ab", buffering=0)
        self.pty.open()
        self.port = self.pty.path
        if self.spec.flash_size:
            self.flash = FlashImage(self.spec.flash_file, self.spec.flash_size)
        if self.spec.bootloader == "esp-rom":
            self.peripherals.append(EspDownloadMode(self, self._loop))
        elif self.spec.bootloader == "uf2":
            self.peripherals.append(BootselDrive(self, self._loop))
        self._task = self._loop.create_task(self._lifecycle())

    async def start_link(self) -> None:
        """ESP boards: open the RFC 2217 bridge that carries DTR/RTS (see :mod:`.serial_link`)."""
        if self.spec.bootloader != "esp-rom":
            return
        from edge_hil.virtual.serial_link import SerialLink

        link = SerialLink(self.spec.name, lambda data: self._serial_input(data, "link"), self.set_lines)
        self.link = link
        await link.start()

    @property
    def flash_url(self) -> str | None:
        return self.link.url if self.link is not None else None

    async def power_on(self) -> None:
        """Boot the board (boot.py, main.py) if it is off; returns once it runs."""
        if self.powered:
            return
        self._started.clear()
        self.life.go(State.STARTING)
        self._leave_bootloader()
        self._next_mode = "boot"
        self._boot_line = b"\r\nrst: power-on reset (%s %s)\r\n" % (self.chip.kind.encode(), self.spec.board.encode())
        self._wake.set()
        await self._started.wait()

    async def power_off(self) -> None:
        """Cut the power: SIGKILL the interpreter; the board stays off."""
        if not self.powered:
            return
        self.life.go(State.OFF)
        self._leave_bootloader()
        await self._end_run("off")
        await self._radio_off()

    async def reset(self) -> None:
        """Hard reset: kill the interpreter, boot again with main.py; returns once it runs."""
        if not self.powered:
            raise RuntimeError(f"board {self.spec.name} is powered off, so it cannot be reset")
        self._started.clear()
        self._leave_bootloader()
        self.life.go(State.STARTING)
        self._next_mode = "boot"
        self._boot_line = b"\r\nrst: hard reset (%s %s)\r\n" % (self.chip.kind.encode(), self.spec.board.encode())
        await self._radio_off()     # the chip's radio resets with it; back on at the next boot
        await self._end_run("reset")
        await self._started.wait()

    async def stop(self) -> None:
        """Stop for good: kill the interpreter, close the port."""
        self.life.go(State.STOPPED)
        self._leave_bootloader()
        for p in self.peripherals:
            p.close()
        if self.link is not None:
            self.link.close()
        await self._end_run("stop")
        await self._radio_off()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.pty.close()
        if self._log:
            self._log.close()
        if self.flash is not None:
            self.flash.close()

    def clock_file(self) -> Path:
        """The file vtime.py reads the board's clock offset from (made at 0 the first time)."""
        path = Path(self.spec.home) / CLOCK_FILE
        if not path.exists():
            path.write_bytes(b"0".rjust(CLOCK_WIDTH))
        return path

    def clock_jump(self, ms: int) -> int:
        """Move the board's clock ``ms`` ahead, now (the running interpreter reads it within 0.1 s);
        returns the offset since the bench started. In place: the board holds the file open."""
        if not isinstance(ms, int) or isinstance(ms, bool) or ms <= 0:
            raise ValueError(f"a clock jump is a positive number of ms, not {ms!r}: a board's clock never runs back")
        path = self.clock_file()
        total = int(path.read_bytes() or b"0") + ms
        with open(path, "r+b") as f:
            f.write(str(total).encode().rjust(CLOCK_WIDTH))
        return total

    async def _radio_off(self) -> None:
        if self.radio is not None:
            await self.radio.stop()
            self.on_change()

    @property
    def public_mode(self) -> str:
        """"micropython" | "download" | "bootsel" | "off" (held in reset counts as off)."""
        if not self.powered or self.mode == "held":
            return "off"
        return self.mode

    def status(self) -> dict:
        """Live facts for ``sim ls``."""
        pid = self.proc.pid if self.proc is not None and self.proc.poll() is None else None
        return {"name": self.spec.name, "state": self.state.value, "power": "on" if self.powered else "off",
                "pid": pid, "alive": pid is not None,
                "repl": "raw" if self.console.raw else "friendly", "restarts": self.restarts,
                "mode": self.public_mode, "flash_url": self.flash_url, "flash_file": self.spec.flash_file,
                "uf2_drive": self.spec.uf2_drive if self.mode == "bootsel" and self.powered else None,
                "ble": self.radio.status() if self.radio is not None else None}

    # ---- peripherals (see :mod:`.peripherals`) -------------------------------

    def set_lines(self, dtr: bool, rts: bool) -> None:
        """DTR/RTS from the USB-serial bridge, to the peripherals wired to them."""
        for p in self.peripherals:
            p.on_lines(dtr, rts)

    def _peripheral(self, kind: type, what: str):
        found = next((p for p in self.peripherals if isinstance(p, kind)), None)
        if found is None:
            raise RuntimeError(f"board {self.spec.name} ({self.spec.board}) has no {what}")
        if not self.powered:
            raise RuntimeError(f"board {self.spec.name} is powered off")
        return found

    def enter_download(self) -> None:
        """ESP boards: reset into the ROM serial download mode (as with IO0 held low)."""
        self._peripheral(EspDownloadMode, "ESP ROM download mode").enter()

    def enter_bootsel(self) -> None:
        """rp2 boards: reset into BOOTSEL; the RPI-RP2 drive folder appears."""
        self._peripheral(BootselDrive, "BOOTSEL mode (only RP2040 boards do)").enter()

    def _leave_bootloader(self) -> None:
        """Whatever bootloader ran stops (reset, power); a write in progress ends where it is."""
        for p in self.peripherals:
            p.on_leave()

    # The surface the peripherals act through (peripherals.BoardSurface).

    def stop_chip(self, state: State) -> None:
        """The chip stops running code (reset held, a bootloader): kill the
        interpreter, keep the power, enter ``state``."""
        self._leave_bootloader()
        self.life.go(state)
        if self.proc is not None and self.proc.poll() is None:
            self._action = "hold"
            self._kill(self.proc)
        self._held.clear()
        self._wake.set()
        self.on_change()

    def boot_micropython(self, line: bytes) -> None:
        self._leave_bootloader()
        self.life.go(State.STARTING)
        self._next_mode = "boot"
        self._boot_line = line
        self._wake.set()
        self.on_change()

    def uart_out(self, data: bytes, to: str | None = None, log_it: bool = False) -> None:
        """What the chip's UART sends outside MicroPython: to the pty and the
        bridge, or only ``to`` (a reply goes where its request came from)."""
        if log_it and self._log:
            self._log.write(data)
        if to in (None, "pty"):
            self.pty.write(data, keep_all=to == "pty")
        if to in (None, "link") and self.link is not None:
            self.link.send(data)

    def changed(self) -> None:
        self.on_change()

    def log_note(self, note: bytes) -> None:
        self._log_note(note)

    def _log_note(self, note: bytes) -> None:
        """A line in console.log only (the board's serial port is gone in BOOTSEL)."""
        if self._log:
            self._log.write(note)

    async def _end_run(self, why: str) -> None:
        """Kill the current interpreter (if any) and wait until its run is over."""
        self._action = why
        ended = self._ended
        if self.proc is not None and self.proc.poll() is None:
            self._kill(self.proc)
        self._wake.set()
        if ended is not None and not ended.done():
            await asyncio.wait_for(asyncio.shield(ended), 10)
        # let the life cycle see the end and go back to waiting
        await asyncio.sleep(0)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """SIGKILL the interpreter's whole process group (it is a session leader)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def _lifecycle(self) -> None:
        quick = 0
        while True:
            if self.life.idle:
                self._held.clear()
                self.on_change()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._boot_line:
                self._emit(self._boot_line)
                self._boot_line = b""
                quick = 0
            self._action = None
            self._input_seen = False
            t0 = time.monotonic()
            rc = await self._run(self._next_mode)
            lived = time.monotonic() - t0
            why, self._action = self._action, None
            if why in ("off", "stop", "reset", "hold") or not self.powered:
                continue                # power_off / stop / reset / a bootloader chose what follows
            if self.chip.entered_bootloader(rc) and any(p.on_bootloader() for p in self.peripherals):
                continue                # machine.bootloader(): the ROM's drive is up
            if not self.chip.exit_is_soft_reset:
                # The chip's process failed (an emulator error): boot it again,
                # as a power-on, pausing if it keeps failing.
                self.restarts += 1
                quick = quick + 1 if lived < QUICK_EXIT_S else 0
                log.warning("%s: the %s chip stopped on its own (code %s)", self.spec.name, self.chip.kind, rc)
                self._emit(b"\r\n[edge sim] the %s chip stopped (exit code %s); booting it again\r\n"
                           % (self.chip.kind.encode(), str(rc).encode()))
                self._next_mode = "boot"
                if quick >= CRASH_LOOP_RUNS:
                    quick = 0
                    await self._backoff(rc)
                continue
            if time.monotonic() - self._last_sigint < 1.0 and rc in (-signal.SIGINT, 1):
                # Died of a Ctrl-C between scripts: come back at the REPL.
                self._next_mode = "raw" if self.console.raw else "repl"
                continue
            # Soft reset (exit, Ctrl-D, sys.exit, machine.soft_reset).
            self.restarts += 1
            quick = quick + 1 if lived < QUICK_EXIT_S and not self._input_seen else 0
            self._emit(b"MPY: soft reboot\r\n")
            self._next_mode = "raw" if self.console.raw else "boot"
            if quick >= CRASH_LOOP_RUNS:
                quick = 0
                await self._backoff(rc)
                self._next_mode = "boot"

    async def _backoff(self, rc: int | None) -> None:
        """Pause restarts after a crash loop (until the pause ends or a request wakes the board)."""
        log.warning("%s: the chip's process exited %d times within %.0f s of starting (last code %s); "
                    "pausing %.0f s", self.spec.name, CRASH_LOOP_RUNS, QUICK_EXIT_S, rc, CRASH_LOOP_BACKOFF_S)
        self._emit(b"\r\n[edge sim] the interpreter exited %d times right after starting "
                   b"(last exit code %s); next start in %d s\r\n"
                   % (CRASH_LOOP_RUNS, str(rc).encode(), CRASH_LOOP_BACKOFF_S))
        self.life.go(State.BACKOFF)
        self.on_change()
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), CRASH_LOOP_BACKOFF_S)
        except asyncio.TimeoutError:
            pass

    async def _run(self, mode: str) -> int | None:
        """Run one interpreter until it ends; return its exit code."""
        m, s = os.openpty()
        # NOFLSH marks "running code": the REPL's raw mode clears every lflag bit.
        raw_termios(s, termios.NOFLSH)
        nonblock(m)
        launch = await self.chip.launch(mode)
        self.life.go(State.STARTING)
        try:
            # umask 077: what the board writes (identity/key, identity/setup)
            # is its owner's alone, as a real board's flash is nobody else's.
            with open(launch.stderr_file, "ab") if launch.stderr_file else os.fdopen(os.dup(s), "wb") as err:
                proc = subprocess.Popen(launch.argv, stdin=s, stdout=s, stderr=err, cwd=launch.cwd,
                                        env=launch.env, start_new_session=True,
                                        preexec_fn=_take_controlling_tty, umask=0o077)
        except OSError as e:
            os.close(m)
            os.close(s)
            log.error("%s: cannot start %s: %s", self.spec.name, launch.argv[0], e)
            self._emit(b"\r\n[edge sim] cannot start the interpreter: %s\r\n" % str(e).encode())
            await asyncio.sleep(1)
            return None
        os.close(s)
        self.proc = proc
        self._im = m
        self.console.begin()
        self._to_interp.clear()
        self._ended = self._loop.create_future()
        self._loop.add_reader(m, self._on_interp_readable)
        self.life.go(State.RUNNING)
        if mode == "raw":
            # Port input waits until Ctrl-A is on its way to the friendly REPL.
            self._await_raw = True
            self._hold(RAW_ENTRY_S)
        else:
            self._await_raw = False
            self._release_held()
        log.info("%s: interpreter pid %d started (%s)", self.spec.name, proc.pid, mode)
        self._started.set()
        self.on_change()
        try:
            await self._ended
        finally:
            self._finish_run()
        return proc.returncode

    def _finish_run(self) -> None:
        proc, m = self.proc, self._im
        assert proc is not None
        try:
            self._loop.remove_reader(m)
        except (ValueError, OSError):
            pass
        if self._interp_writer:
            self._loop.remove_writer(m)
            self._interp_writer = False
        if proc.poll() is None:
            self._kill(proc)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                log.error("%s: interpreter pid %d does not die", self.spec.name, proc.pid)
        # Anything its children still hold goes with the process group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        os.close(m)
        self._im = -1
        self._holding = True            # input waits for the next interpreter
        log.info("%s: interpreter pid %d ended (code %s)", self.spec.name, proc.pid, proc.returncode)

    def child_exited(self) -> None:
        """SIGCHLD: an interpreter may have exited without closing its terminal."""
        if self.proc is not None and self._ended is not None and not self._ended.done():
            if self.proc.poll() is not None:
                self._drain_interp()
                if not self._ended.done():
                    self._ended.set_result(None)

    # ---- interpreter -> port ----------------------------------------------

    def _on_interp_readable(self) -> None:
        try:
            data = os.read(self._im, 65536)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.EIO:
                log.warning("%s: reading the interpreter: %s", self.spec.name, e)
            data = b""
        if not data:
            if self._ended is not None and not self._ended.done():
                self._ended.set_result(None)
            return
        self._from_interp(data)

    def _drain_interp(self) -> None:
        while True:
            try:
                data = os.read(self._im, 65536)
            except OSError:
                return
            if not data:
                return
            self._from_interp(data)

    def _from_interp(self, data: bytes) -> None:
        out, events = self.console.feed(data)
        if out:
            self._emit(out)
        for ev in events:
            if ev == "enter_raw":
                # The REPL reads its input in order, so what the port sent
                # meanwhile can follow the Ctrl-A at once.
                self._await_raw = False
                self._write_interp(CTRL_A)
                self._release_held()
            elif ev == "soft_reset" and self.proc is not None:
                self._action = "soft"
                self._kill(self.proc)
            elif ev == "bootloader":
                # machine.bootloader(): a peripheral takes the chip (ESP download
                # mode, RP2040 BOOTSEL); a board with none soft-resets.
                if not any(p.on_bootloader() for p in self.peripherals) and self.proc is not None:
                    self._action = "soft"
                    self._kill(self.proc)

    def _emit(self, data: bytes) -> None:
        """Show ``data`` on the port and in console.log."""
        if self._log:
            if self._log.tell() + len(data) > CONSOLE_LOG_MAX:
                self._log.close()
                os.replace(self.spec.console_log, self.spec.console_log + ".1")
                self._log = open(self.spec.console_log, "ab", buffering=0)
            self._log.write(data)
        if self.link is not None:
            self.link.send(data)
        self.pty.write(data)

    # ---- port -> interpreter ----------------------------------------------

    def _serial_input(self, data: bytes, src: str) -> None:
        """Bytes into the board's UART, from the pty or the bridge."""
        if not data or not self.powered:
            return                      # a board that is off hears nothing
        if self.mode != "micropython":
            # Held in reset / a bootloader: MicroPython's UART is not running.
            any(p.on_uart(data, src) for p in self.peripherals)
            return
        self._input_seen = True
        self._held += data
        if len(self._held) > INPUT_BACKLOG_MAX:
            del self._held[:len(self._held) - INPUT_BACKLOG_MAX]
        if not self._holding:
            self._release_held()

    def _release_held(self) -> None:
        """Pass held port input to the interpreter, stopping at a Ctrl-C that interrupts code."""
        proc = self.proc
        if self._im < 0 or proc is None:
            return
        self._holding = False
        while self._held:
            k = self._held.find(CTRL_C)
            if k < 0:
                self._write_interp(bytes(self._held))
                self._held.clear()
                return
            self._write_interp(bytes(self._held[:k]))
            del self._held[:k + 1]
            if self._interrupt(proc.pid):
                self._hold(INTERRUPT_HOLD_S)
                return
            self._write_interp(b"\x03")

    def _interrupt(self, pid: int) -> bool:
        """Raise KeyboardInterrupt in running code; False when the REPL should read the byte."""
        if not self.chip.interrupts_by_signal or self._in_repl() or not sigint_caught(pid):
            return False
        now = time.monotonic()
        if now - self._last_sigint < 0.2:
            # A second SIGINT before the first is handled kills the Unix port.
            return True
        self._last_sigint = now
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def _in_repl(self) -> bool:
        """The interpreter's terminal is in the REPL's raw mode (reading REPL input)."""
        try:
            return termios.tcgetattr(self._im)[3] == 0
        except termios.error:
            return False

    def _hold(self, seconds: float) -> None:
        """Keep port input back until the REPL reads (or ``seconds`` pass)."""
        self._holding = True
        self._hold_deadline = time.monotonic() + seconds
        self._hold_gen += 1
        self._loop.call_later(0.01, self._check_hold, self._hold_gen)

    def _check_hold(self, gen: int) -> None:
        if gen != self._hold_gen or not self._holding or self._im < 0:
            return
        late = time.monotonic() >= self._hold_deadline
        if late and self._await_raw:
            # No prompt seen (boot.py still running, or a changed sys.ps1):
            # stop swallowing and ask for the raw REPL anyway.
            log.warning("%s: no REPL prompt after a raw-REPL soft reset; sending Ctrl-A", self.spec.name)
            self.console.begin()
            self._write_interp(CTRL_A)
        if late or (not self._await_raw and self._in_repl()):
            self._await_raw = False
            self._release_held()
        else:
            self._loop.call_later(0.01, self._check_hold, gen)

    def _write_interp(self, data: bytes) -> None:
        if not data or self._im < 0:
            return
        self._to_interp += data
        self._flush_interp()

    def _flush_interp(self) -> None:
        while self._to_interp and self._im >= 0:
            try:
                n = os.write(self._im, self._to_interp[:4096])
            except BlockingIOError:
                n = 0
            except OSError:
                self._to_interp.clear()
                break
            if n <= 0:
                if not self._interp_writer:
                    self._loop.add_writer(self._im, self._flush_interp)
                    self._interp_writer = True
                return
            del self._to_interp[:n]
        if self._interp_writer and self._im >= 0:
            self._loop.remove_writer(self._im)
            self._interp_writer = False
