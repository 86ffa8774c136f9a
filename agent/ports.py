"""Who owns a serial port: one edge command at a time, and the others are told who.

Every edge command that opens a port goes through :func:`claim` (or
:func:`open_serial`, which claims and opens). Ownership is three locks, each
covering what the others cannot:

- a lock file per port in :func:`run_dir` (``fcntl.flock``, released by the
  kernel when its process dies, so a stale file is simply taken over) that
  names the holder: program, pid, command line, start time. Only edge reads
  it; it is what lets a second edge command say who holds the port.
- pyserial's ``exclusive=True``: an flock on the device node itself. mpremote
  and esptool open ports with it too, so they and edge refuse each other at
  once, as root too.
- ``TIOCEXCL`` on an open serial tty: the kernel refuses any further open of
  it (EBUSY), also by programs that take no lock (``cat``, ``screen``),
  unless the opener is root (CAP_SYS_ADMIN bypasses it). The kernel forgets
  it when the port's last descriptor closes, so a holder killed with SIGKILL
  leaves nothing behind. Not on a pseudo-terminal: a virtual board's
  supervisor keeps its pty open for good, so a flag left by a killed holder
  would lock every other user out until the bench restarts. There, programs
  that take no lock are not refused.

A port is named by its resolved path (``/dev/serial/by-id/...`` and the
``/dev/ttyUSB0`` it points to are one port); pyserial URLs by their text.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import BadInput, Busy, NotFound


def run_dir() -> Path:
    """Where port lock files live: ``$EDGE_RUN_DIR``, ``$XDG_RUNTIME_DIR/edge``
    or ``/tmp/edge-<uid>``. Machine-wide on purpose (not under ``$EDGE_HOME``):
    two commands with different registries still share the ports."""
    env = os.environ.get("EDGE_RUN_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "edge" if xdg else Path(f"/tmp/edge-{os.getuid()}")


def is_url(port: str) -> bool:
    return "://" in port


def resolve(port: str) -> str:
    """The name a port is owned under: its real path, or the URL as given."""
    return port if is_url(port) else os.path.realpath(port)


def lock_path(port: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", resolve(port)).strip("-")
    return run_dir() / "ports" / f"{name}.lock"


@dataclass
class Holder:
    """Who holds a port, as read from its lock file or the kernel's lock table."""

    pid: int
    program: str
    command: str = ""
    started: float | None = None

    def describe(self) -> str:
        since = f", since {time.strftime('%H:%M:%S', time.localtime(self.started))}" if self.started else ""
        return f"{self.program} (pid {self.pid}{since})"


def _this_program() -> str:
    """The running command as a person typed it: ``edge telemetry ingest``."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:
        ctx = None
    if ctx is not None:
        words = ctx.command_path.split()
        return " ".join(["edge", *words[1:]]) if words else "edge"
    return Path(sys.argv[0]).name or "python"


def _read_holder(path: Path) -> Holder | None:
    # The holder writes its record just after taking the lock: a reader that
    # arrives in between sees an empty file for a moment.
    for _ in range(20):
        try:
            data = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("pid"), int):
            return Holder(data["pid"], str(data.get("program") or "?"), str(data.get("command") or ""),
                          data.get("started"))
        time.sleep(0.01)
    return None


def _kernel_holder(port: str) -> Holder | None:
    """The process holding an flock on the device node (pyserial's exclusive
    lock, as mpremote and esptool take it), from ``/proc/locks``."""
    try:
        st = os.stat(port)
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()
        if "->" in parts:   # a waiter, not the holder
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
            pid = int(parts[4])
            if pid == os.getpid():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                command = " ".join(a.decode(errors="replace") for a in argv if a)
            except OSError:
                command = ""
            program = _program_of(command) or "another program"
            return Holder(pid, program, command)
    return None


def _program_of(command: str) -> str:
    """``mpremote`` for ``/usr/bin/python3 /x/bin/mpremote connect ...``."""
    words = command.split()
    if not words:
        return ""
    if os.path.basename(words[0]).startswith("python") and len(words) > 1:
        if words[1] == "-m" and len(words) > 2:
            return words[2]
        if not words[1].startswith("-"):
            return os.path.basename(words[1])
    return os.path.basename(words[0])


def busy_error(port: str, holder: Holder | None) -> Busy:
    """The error for a port someone else holds, naming them when we can tell."""
    if holder is None:
        return Busy(f"port {port} is in use by another program",
                    f"close it (a serial monitor, mpremote, another edge command) and retry; "
                    f"`fuser -v {port}` names it")
    edge = holder.program.startswith("edge")
    return Busy(f"port {port} is in use by {holder.describe()}",
                f"wait for it to finish, or stop it (kill {holder.pid}), then retry"
                + ("; one edge command owns a port at a time" if edge else ""))


class Claim:
    """This process's ownership of one port; :meth:`release` gives it back."""

    def __init__(self, port: str, fd: int, path: Path):
        self.port = port
        self.path = path
        self._fd: int | None = fd
        self._tty: int | None = None

    def open(self, **kwargs) -> Any:
        """Open the claimed port with pyserial (``exclusive=True``) and make the
        tty refuse further opens (TIOCEXCL); close it with :meth:`close_port`.

        Raises :class:`Busy` naming the holder if a program that ignores our
        lock file (mpremote, esptool) has it, or :class:`NotFound`.
        """
        import serial

        try:
            ser = serial.serial_for_url(self.port, exclusive=True, **kwargs)
        except (serial.SerialException, OSError, ValueError) as e:
            raise open_error(self.port, e, claimed=True) from None
        fd = getattr(ser, "fd", None)
        if isinstance(fd, int):
            self.exclusive(fd)
        return ser

    def exclusive(self, tty_fd: int) -> None:
        """Make the open serial tty refuse further opens (TIOCEXCL) until it is
        closed here; a pseudo-terminal is left alone (see the module's text)."""
        if is_pty(tty_fd):
            return
        try:
            fcntl.ioctl(tty_fd, termios.TIOCEXCL)
            self._tty = tty_fd
        except OSError:   # not a tty (a URL's socket): the locks still hold
            pass

    def close_port(self, ser: Any) -> None:
        """Close a port opened by :meth:`open`, clearing TIOCEXCL first: a
        virtual board's supervisor keeps its pty open, and the flag would
        outlive us."""
        self._clear_exclusive()
        ser.close()

    def _clear_exclusive(self) -> None:
        if self._tty is not None:
            try:
                fcntl.ioctl(self._tty, termios.TIOCNXCL)
            except OSError:
                pass
            self._tty = None

    def release(self) -> None:
        """Give the port back (the lock file goes)."""
        if self._fd is not None:
            try:
                os.unlink(self.path)     # unlinked while still locked: see claim()
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self._clear_exclusive()
        self.release()


def claim(port: str, program: str | None = None) -> Claim:
    """Take ``port`` for this process, or raise :class:`Busy` naming who has it.

    A port that does not exist raises :class:`NotFound`, a path that is no
    serial port :class:`BadInput` (see :func:`check_port`). The lock file of a
    holder that died is taken over (the kernel dropped its lock with it).
    """
    check_port(port)
    path = lock_path(port)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Busy(f"cannot make the port lock folder {path.parent}: {e.strerror}",
                   "set $EDGE_RUN_DIR to a writable folder") from None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise busy_error(port, _read_holder(path)) from None
        # The file we locked may have been unlinked by its last holder between
        # our open and our lock: then it guards nothing, so start again.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"program": program or _this_program(), "pid": os.getpid(),
              "command": " ".join(sys.argv), "started": time.time(), "port": resolve(port)}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(record).encode() + b"\n")
    return Claim(port, fd, path)


def holder(port: str) -> Holder | None:
    """Who holds ``port`` now, if anyone (an edge command or a pyserial program)."""
    path = lock_path(port)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None if is_url(port) else _kernel_holder(port)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_holder(path)
    finally:
        os.close(fd)
    return None if is_url(port) else _kernel_holder(port)


def ensure_free(port: str) -> None:
    """Raise now, before any work, if ``port`` is no serial port or someone holds it.

    For commands that claim the port later (``edge flash`` claims it per
    board, in its worker): their input checks come before they create
    anything. The claim itself still decides; this only fails early.
    """
    check_port(port)
    who = holder(port)
    if who is not None:
        raise busy_error(port, who)


def open_error(port: str, e: BaseException, claimed: bool = False) -> Busy | NotFound:
    """The error for a port that would not open: Busy if someone holds it, else NotFound.

    ``claimed``: we hold the port's lock file ourselves, so only the kernel's
    lock table can name the other program.
    """
    text = str(e).lower()
    who = _kernel_holder(port) if claimed and not is_url(port) else holder(port)
    if who is not None or getattr(e, "errno", None) == errno.EBUSY or "lock" in text or "busy" in text:
        return busy_error(port, who)
    return NotFound(f"cannot open port {port}: {e}",
                    "check the cable and the name (`edge sim ls` lists virtual boards, "
                    "`ls /dev/serial/by-id` attached ones)")


class OwnedSerial:
    """A pyserial port opened by :func:`open_serial`: closing it releases the claim."""

    def __init__(self, ser: Any, owner: Claim):
        self._ser = ser
        self._claim = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ser, name)

    def close(self) -> None:
        try:
            self._claim.close_port(self._ser)
        finally:
            self._claim.release()

    def __enter__(self) -> "OwnedSerial":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_serial(port: str, program: str | None = None, **kwargs) -> OwnedSerial:
    """Claim ``port`` and open it (see :meth:`Claim.open`); closing releases both."""
    owner = claim(port, program)
    try:
        return OwnedSerial(owner.open(**kwargs), owner)
    except BaseException:
        owner.release()
        raise


def check_port(port: str) -> None:
    """Raise unless ``port`` names a serial device (or is a pyserial URL):
    :class:`NotFound` if absent, :class:`BadInput` naming what it is instead."""
    if is_url(port):
        return
    try:
        st = os.stat(port)
    except FileNotFoundError:
        raise NotFound(f"serial port {port} does not exist",
                       "check the name: `edge sim ls` lists virtual boards, "
                       "`ls /dev/serial/by-id` attached ones") from None
    except OSError as e:
        raise BadInput(f"cannot use {port} as a serial port: {e.strerror}", "check the name") from None
    import stat

    if not stat.S_ISCHR(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else \
            "a regular file" if stat.S_ISREG(st.st_mode) else "not a device"
        raise BadInput(f"{port} is {what}, not a serial port",
                       "pass the board's port (`ls /dev/serial/by-id`, or `edge sim ls`)")
    driver = _char_driver(os.major(st.st_rdev), os.minor(st.st_rdev))
    if driver is not None and not driver.startswith(("tty", "pts")):
        raise BadInput(f"{port} is a {driver} device, not a serial port",
                       "pass the board's port (`ls /dev/serial/by-id`, or `edge sim ls`)")


def is_pty(fd: int) -> bool:
    """Whether ``fd`` is a pseudo-terminal (a virtual board's port, not a serial device)."""
    try:
        rdev = os.fstat(fd).st_rdev
    except OSError:
        return False
    return _char_driver(os.major(rdev), os.minor(rdev)) == "pts"


def _char_driver(major: int, minor: int) -> str | None:
    """The kernel's class (sysfs) or driver (/proc/devices) of a character
    device: ``tty`` for serial ports, ``pts`` for pseudo-terminals, ``mem``
    for /dev/null. None when the kernel does not say."""
    try:
        return os.path.basename(os.readlink(f"/sys/dev/char/{major}:{minor}/subsystem"))
    except OSError:
        pass
    try:
        lines = Path("/proc/devices").read_text().split("Block devices:")[0].splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] == str(major):
            return parts[1]
    return None
