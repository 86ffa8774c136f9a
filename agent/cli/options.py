"""Option types shared by every ``edge`` command, so each value is checked once, the same way."""

from __future__ import annotations

import math
import re

import click

_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|min|m|h|d|)\s*$")


class Duration(click.ParamType):
    """A span of time in seconds: ``30``, ``2.5``, ``30s``, ``500ms``, ``10m``, ``1h``, ``90d``.

    Finite and >= 0 (``min`` can raise the floor): ``-5``, ``nan`` and ``inf``
    are refused with the accepted forms, instead of ending at once or never.
    """

    name = "duration"

    def __init__(self, min: float = 0.0):
        self.min = min

    def get_metavar(self, param, ctx=None) -> str:   # click 8.1 and 8.2 signatures
        return "DURATION"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        else:
            m = _DURATION.match(str(value))
            if not m:
                self.fail(f"{value!r} is not a duration: use seconds (30, 2.5) or a number with "
                          "a unit (500ms, 30s, 10m, 1h, 90d)", param, ctx)
            seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite duration", param, ctx)
        if seconds < self.min:
            self.fail(f"{value!r} is negative: a duration is 0 or more" if seconds < 0 else
                      f"{value!r} is shorter than {self.min:g} s", param, ctx)
        return seconds


DURATION = Duration()


def check_regular_file(path, what: str = "file") -> None:
    """Raise unless ``path`` is a regular file this process can read, naming
    what it is instead (a folder, a character device such as /dev/zero)."""
    import os
    import stat

    from edge_agent.errors import BadInput, NotFound

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{what} {path} does not exist", "check the path") from None
    except OSError as e:
        raise BadInput(f"cannot use {what} {path}: {e.strerror}", "check the path") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else
                "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else
                "a named pipe" if stat.S_ISFIFO(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise BadInput(f"{what} {path} is {kind}, not a regular file", "pass the path of a file")
    if not os.access(path, os.R_OK):
        raise BadInput(f"{what} {path} is not readable (permission denied)",
                       "fix its permissions, or run as a user who may read it")


SIM_DIR_HELP = "Run folder of the virtual bench [default: $EDGE_SIM_DIR or ~/.local/share/edge/sim]."


def sim_dir_option(*aliases: str, dest: str = "sim_dir"):
    """``--sim-dir``, the one spelling of the bench's run folder in every
    command (``aliases`` keep an older spelling working)."""
    return click.option("--sim-dir", *aliases, dest, type=click.Path(file_okay=False), default=None,
                        help=SIM_DIR_HELP)


def port_resolver(sim_dir, db):
    """A function from what the user typed (a port, a board name, a device
    id: :mod:`edge_agent.board_names`) to the port, for the bench in
    ``sim_dir`` and the registry ``db`` (their defaults when None)."""
    from edge_agent.board_names import resolve_port
    from edge_agent.paths import default_sim_dir

    return lambda text: resolve_port(text, sim_dir or default_sim_dir(), db)
