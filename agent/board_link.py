"""A board's console as a file and code channel: mpremote's serial transport
(raw REPL) with Edge Agent's error family, and files replaced whole.

Works alike on a real board's USB serial port and on a virtual board's
pseudo-terminal (or any pyserial URL).
"""

from __future__ import annotations

import hashlib
from typing import Callable

from edge_agent.errors import DeviceError

Progress = Callable[[int, int], None]


class BoardLink:
    """An open raw-REPL session with one board. Use as a context manager."""

    def __init__(self, port: str, baud: int = 115200, io_timeout: float = 1.0):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        from edge_agent import ports

        self.port = port
        # The port is this session's alone (see edge_agent.ports): a second
        # edge command, mpremote or esptool fails at once naming us, instead
        # of both reading half of the board's answers.
        self._claim = ports.claim(port)
        try:
            # A read timeout: mpremote reads a pty byte by byte and would wait
            # forever on a silent board (one powered off, or in its bootloader).
            # mpremote opens the port with pyserial's exclusive lock.
            self._t = SerialTransport(port, baudrate=baud, timeout=io_timeout)
        except (TransportError, OSError) as e:
            self._claim.release()
            # mpremote reports every failure as "failed to access": ask the
            # kernel's lock table, so a busy port is named as such.
            raise ports.open_error(port, e.__cause__ or e, claimed=True) from e
        except BaseException:
            self._claim.release()
            raise
        fd = getattr(self._t.serial, "fd", None)    # a socket:// or rfc2217:// URL has none
        if isinstance(fd, int):
            self._claim.exclusive(fd)
        self._raw = False
        self._entering = False

    def __enter__(self) -> "BoardLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            # Also after a failed entry: the board may have reached the raw
            # REPL after we gave up, and would stay there, its agent stopped.
            if self._raw or self._entering:
                self._t.exit_raw_repl()
        except Exception:  # the board may be gone; closing must not hide the real error
            pass
        try:
            self._claim.close_port(self._t)
        except Exception:
            pass
        self._claim.release()

    def _enter(self) -> None:
        from mpremote.transport import TransportError

        if self._raw:
            return
        import time

        last: Exception | None = None
        # Interrupts a running agent (Ctrl-C twice: the console rule of
        # docs/protocol.md 2.11) and enters the raw REPL with a soft reset,
        # which runs no main.py there: the session starts from a clean heap,
        # not one the stopped agent still holds. A Ctrl-C that arrives while
        # the board is still booting can be lost: try a few times.
        self._entering = True
        for _ in range(3):
            try:
                self._t.serial.write(b"\r\x03\x03")
                time.sleep(0.15)
                self._t.serial.reset_input_buffer()
                self._t.enter_raw_repl(soft_reset=True, timeout_overall=4)
                self._raw = True
                self._entering = False
                return
            except (TransportError, OSError) as e:
                last = e
        raise DeviceError(f"the board on {self.port} does not answer as MicroPython ({last})",
                          "check that it runs MicroPython (flash it with --firmware) "
                          "and is not in its bootloader (reset it)") from last

    def exec(self, code: str, timeout: float = 10) -> str:
        """Run ``code`` on the board; returns what it printed. A Python
        exception on the board raises :class:`DeviceError` with its traceback."""
        from mpremote.transport import TransportError

        self._enter()
        try:
            out = self._t.exec_raw(code, timeout=timeout)
        except (TransportError, OSError) as e:
            raise DeviceError(f"lost the board on {self.port} ({e})",
                              "check the cable, then run the command again") from e
        stdout, stderr = out
        if stderr:
            raise board_raised(self.port, stderr.decode(errors="replace"))
        return stdout.decode(errors="replace")

    def put(self, remote: str, data: bytes, progress: Progress | None = None) -> None:
        """Write ``remote`` whole: to ``remote.new`` first, then renamed over it,
        so an interrupted copy leaves the old file, never half of the new one."""
        from mpremote.transport import TransportError

        self._enter()
        tmp = remote + ".new"
        try:
            self._t.fs_writefile(tmp, data, chunk_size=512, progress_callback=progress)
        except (TransportError, OSError) as e:
            raise DeviceError(f"writing {remote} on {self.port} failed ({e})",
                              "check the board's free space and the cable, then retry") from e
        self.exec(f"import os\nos.rename({tmp!r}, {remote!r})")

    def sha256(self, remote: str) -> bytes | None:
        """The SHA-256 of a file on the board, or None if it does not exist."""
        from mpremote.transport import TransportError

        self._enter()
        try:
            if not self._t.fs_exists(remote):
                return None
            return self._t.fs_hashfile(remote, "sha256")
        except (TransportError, OSError) as e:
            raise DeviceError(f"reading {remote} on {self.port} failed ({e})", "retry") from e

    def get(self, remote: str) -> bytes | None:
        """The content of a file on the board, or None if it does not exist."""
        from mpremote.transport import TransportError

        self._enter()
        try:
            if not self._t.fs_exists(remote):
                return None
            return self._t.fs_readfile(remote)
        except (TransportError, OSError) as e:
            raise DeviceError(f"reading {remote} on {self.port} failed ({e})", "retry") from e

    def mkdir(self, remote: str) -> None:
        self.exec(f"import os\ntry:\n os.mkdir({remote!r})\nexcept OSError:\n pass")

    def soft_reset(self) -> None:
        """Leave the raw REPL and soft-reset: the board boots main.py again."""
        self._t.serial.write(b"\x02")  # Ctrl-B: friendly REPL
        self._raw = False
        self._t.serial.write(b"\x04")  # Ctrl-D: soft reset, main.py runs

    def read_available(self) -> bytes:
        """What the console holds now, without waiting: a board gone silent
        (unplugged, powered off) ends in the caller's timeout, not a hang."""
        ser = self._t.serial
        try:
            n = ser.in_waiting
            return ser.read(n) if n else b""
        except OSError as e:
            raise DeviceError(f"lost the board on {self.port} ({e})",
                              "check the cable, then run the command again") from None


def board_raised(port: str, traceback: str) -> DeviceError:
    """The error for code that raised on the board: what it said (the last
    line of its traceback, which names the exception) and what to do, the
    whole traceback kept on the error for logs."""
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    said = lines[-1] if lines else "an exception with no message"
    hint = "check the board's free space and files (`mpremote connect PORT fs ls`), then retry"
    if "MemoryError" in said:
        hint = "the board ran out of heap: reset it (a fresh heap) and retry"
    elif "ImportError" in said:
        hint = "a module is missing on the board: run `edge flash` again to deploy the agent"
    elif "ENOSPC" in said or "28]" in said:
        hint = "the board's filesystem is full: remove files (`mpremote connect PORT fs rm ...`), then retry"
    err = DeviceError(f"the board on {port} raised {said}", hint.replace("PORT", port))
    err.traceback = traceback
    return err


def file_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
