"""One error family for the host side.

Every error names the thing that is wrong and how to fix it; the CLI prints
``error: <message>`` and, on the next line, ``  fix: <hint>``, and exits with
the code of the error's kind so scripts can tell failures apart.
"""

from __future__ import annotations

# Exit codes, one per kind of failure. 0 is success, 1 is an unexpected crash,
# 2 is click's own usage error.
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3      # a port, board, device, file or run folder is absent
EXIT_BUSY = 4           # a port or run folder is in use
EXIT_BAD_INPUT = 5      # a file or message is malformed
EXIT_DEVICE = 6         # a board did not answer as expected
EXIT_PARTIAL = 7        # a command over many targets had some failures


class EdgeError(Exception):
    """An error the user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class NotFound(EdgeError):
    exit_code = EXIT_NOT_FOUND


class Busy(EdgeError):
    exit_code = EXIT_BUSY


class BadInput(EdgeError):
    exit_code = EXIT_BAD_INPUT


class DeviceError(EdgeError):
    exit_code = EXIT_DEVICE


class Partial(EdgeError):
    """Some of several targets (ports, boards, batches) failed; the rest succeeded."""

    exit_code = EXIT_PARTIAL


def from_os_error(e: OSError) -> EdgeError:
    """An OS error about a path that no command turned into its own error
    (a run folder under /proc, a file where a folder should be), as an
    EdgeError naming the path and the cause."""
    import errno

    what = e.filename if e.filename is not None else "a file"
    cause = e.strerror or str(e)
    if e.filename2 is not None:
        what = f"{what} -> {e.filename2}"
    if e.errno == errno.ENOENT:
        return NotFound(f"cannot use {what}: {cause}", "check the path: its parent folder must exist")
    if e.errno in (errno.EBUSY, errno.EAGAIN):
        return Busy(f"cannot use {what}: {cause}", "close the program holding it, then retry")
    return BadInput(f"cannot use {what}: {cause}",
                    "pick a folder or file you can write (not under /proc or /sys, not read-only)")
