"""Step 1 of ``edge flash``: a MicroPython image, checked and written.

ESP family: esptool, in this process, on the port a board's flasher names
(:mod:`edge_agent.drivers`), its output routed per thread so boards flashed
at once keep their own progress. Pico W: the UF2 copied to the BOOTSEL drive
the board's flasher found.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import BadInput, DeviceError, NotFound

if TYPE_CHECKING:
    from edge_agent.flash import Progress
ESP_IMAGE_MAGIC = 0xE9
UF2_MAGIC = b"UF2\n"
UF2_MAGIC2 = 0x9E5D5157


def check_image(board: dict, image: Path) -> bytes:
    """Read ``image`` and check it suits ``board`` (kind and size); return its bytes."""
    image = Path(image)
    try:
        data = image.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"firmware image {image} does not exist", "check the --firmware path") from None
    except OSError as e:
        raise BadInput(f"cannot read firmware image {image}: {e}", "check the file") from None
    method = board.get("flash_method")
    if method == "esptool":
        if not data or data[0] != ESP_IMAGE_MAGIC:
            raise BadInput(f"{image} is not an ESP firmware image (it does not start with 0xE9)",
                           f"use a MicroPython .bin built for {board['name']} "
                           "(micropython.org/download)")
    elif method == "uf2":
        if len(data) < 512 or len(data) % 512 or data[:4] != UF2_MAGIC or \
                int.from_bytes(data[4:8], "little") != UF2_MAGIC2:
            raise BadInput(f"{image} is not a UF2 file (512-byte blocks starting 'UF2\\n')",
                           f"use a MicroPython .uf2 built for {board['name']}")
    from edge_agent.boards import check_image_fits

    # What lands in flash: a UF2 block carries 256 bytes of its 512.
    check_image_fits(board, len(data) // 512 * 256 if method == "uf2" else len(data))
    return data


class _EsptoolSink:
    """Per-thread destination of esptool's output: its text and its progress."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.lines: list[str] = []


_esptool_local = threading.local()
_esptool_lock = threading.Lock()
_esptool_logger_installed = False


def _install_esptool_logger() -> None:
    """Route esptool's logger to the calling thread's sink (set per flash), so
    boards flashed at once each get their own progress and messages."""
    global _esptool_logger_installed
    with _esptool_lock:
        if _esptool_logger_installed:
            return
        from esp_pylib.logger import EspLogBase
        from esptool.logger import log

        class ThreadLogger(EspLogBase):
            def _sink(self):
                return getattr(_esptool_local, "sink", None)

            def print(self, *args, **kwargs):
                s = self._sink()
                if s is not None:
                    s.lines.append(" ".join(str(a) for a in args))

            def err(self, *args, suggestion=None):
                self.print(*args)

            warn = note = hint = err

            def debug(self, *args):
                pass

            def set_verbosity(self, mode):
                pass

            def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
                s = self._sink()
                if s is not None and total_iters:
                    s.progress("firmware", int(cur_iter), int(total_iters))

        log.set_logger(ThreadLogger())
        _esptool_logger_installed = True


def esptool_args(board: dict, port: str, image: Path, baud: int = 460800) -> list[str]:
    """esptool's arguments to write ``image`` to ``board`` on ``port`` (a device or a URL)."""
    fl = board.get("flash") or {}
    size = fl.get("size")
    args = ["--chip", board["chip"], "--port", port, "--baud", str(baud),
            "--before", "default-reset", "--after", "hard-reset", "write-flash"]
    if fl.get("mode"):
        args += ["--flash-mode", fl["mode"]]
    if fl.get("freq"):
        args += ["--flash-freq", fl["freq"]]
    if size:
        args += ["--flash-size", f"{int(size) // (1024 * 1024)}MB"]
    args += [hex(int(fl.get("firmware_offset", 0))), str(image)]
    return args


def write_esp_image(name: str, port: str, board: dict, image: Path, progress: Progress,
                    extra_args: list[str] | None = None) -> None:
    """Write ``image`` with esptool (in this process) to board ``name`` on ``port`` (a device or URL)."""
    import esptool
    import serial

    _install_esptool_logger()
    sink = _EsptoolSink(progress)
    _esptool_local.sink = sink
    args = list(extra_args or []) + esptool_args(board, port, image)
    try:
        esptool.main(args)
    except esptool.FatalError as e:
        raise DeviceError(f"esptool could not flash {name} on {port}: {e}",
                          "hold BOOT while plugging it in (or press BOOT+EN), check the cable, retry") from None
    except serial.SerialException as e:
        raise DeviceError(f"esptool could not open {port}: {e}",
                          "check the port name and that no other program uses it") from None
    except SystemExit as e:
        raise DeviceError(f"esptool stopped on {name} (exit {e.code}): "
                          + " | ".join(sink.lines[-3:]), "see esptool's message above") from None
    finally:
        _esptool_local.sink = None


def copy_uf2(dest: Path, data: bytes, progress: Progress) -> None:
    """Copy a UF2 image onto a BOOTSEL drive, synced before it returns."""
    with open(dest, "wb") as f:
        for i in range(0, len(data), 65536):
            f.write(data[i:i + 65536])
            progress("firmware", min(i + 65536, len(data)), len(data))
        f.flush()
        os.fsync(f.fileno())
