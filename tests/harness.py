"""One way for tests to run `edge` and `mpremote`, and one virtual bench.

Tests get these through the fixtures of ``tests/conftest.py``:

- ``edge_home``: a :class:`Home`, a fresh state folder (``EDGE_HOME``; the
  registry, the bench's run folder and the OTA key live in it) and the
  environment every command of the test runs with;
- ``bench``: the same, plus :meth:`Home.up` to start virtual boards with
  ``edge sim up``; they are stopped after the test, whatever happened.

Commands run as a user runs them: the installed ``edge`` and ``mpremote``
executables in a subprocess, stdin closed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
EDGE = str(BIN / "edge")
MPREMOTE = str(BIN / "mpremote")


def edge(*args: str, env: dict | None = None, timeout: float = 60, check: bool = True,
         input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``edge ARGS``; with ``check``, a non-zero exit fails the test showing both streams."""
    proc = subprocess.run([EDGE, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else os.environ.copy(),
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, (f"edge {' '.join(args)} exited {proc.returncode}:\n"
                                      f"{proc.stdout}\n{proc.stderr}")
    return proc


def mpremote(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the real mpremote against ``port`` (never with ``resume``)."""
    return subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class Home:
    """A user's state folder for one test: ``EDGE_HOME`` and what lives in it."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.sim_dir = self.root / "sim"
        self.db = self.root / "registry.db"
        self.env = {**os.environ, "EDGE_HOME": str(self.root), "EDGE_SIM_DIR": str(self.sim_dir),
                    "EDGE_DB": str(self.db), "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                    "COLUMNS": "200"}
        self.boards: list[dict] = []
        self._up = False

    def edge(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return edge(*args, env=self.env, **kw)

    def json(self, *args: str, **kw) -> Any:
        """``edge ARGS --json``, its stdout parsed."""
        return json.loads(self.edge(*args, "--json", **kw).stdout)

    def up(self, *boards: str, blank: bool = False) -> list[dict]:
        """``edge sim up`` of the given board types (``--blank``: no agent yet); their rows."""
        args = [a for b in boards for a in ("--board", b)] + (["--blank"] if blank else [])
        self._up = True
        rows = self.json("sim", "up", *args)
        self.boards += rows
        return rows

    def port(self, name: str) -> str:
        return next(b["port"] for b in self.boards if b["name"] == name)

    def down(self) -> None:
        if self._up:
            self.edge("sim", "down", check=False)
            self._up = False
