"""A host tool a driver runs (uhubctl, busctl, a rig's own command): found on PATH, bounded in
time, and its failure an error that names the board, the command and the tool's last words."""

from __future__ import annotations

import subprocess
from typing import Callable

from edge_agent.errors import DeviceError

Run = Callable[..., subprocess.CompletedProcess]
Which = Callable[[str], "str | None"]


def run_tool(who: str, argv: list[str], *, timeout: float, missing: tuple[str, str], stuck_fix: str,
             failed_fix: str, run: Run = subprocess.run, which: Which | None = None) -> None:
    """Run ``argv`` for board ``who``; :class:`DeviceError` when its tool is not on PATH
    (``missing``: message, fix), when it outlasts ``timeout`` s, or when it exits non-zero."""
    import shutil

    exe = (which or shutil.which)(argv[0])
    if exe is None:
        raise DeviceError(f"{who}: {missing[0]}", missing[1])
    shown = " ".join(argv)
    try:
        proc = run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{who}: `{shown}` did not finish within {timeout:g} s", stuck_fix) from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise DeviceError(f"{who}: `{shown}` failed ({proc.returncode}): {said[-1] if said else 'no output'}",
                          failed_fix)
