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
