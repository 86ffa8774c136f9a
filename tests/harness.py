"""One way for tests to run `edge` and `mpremote`, and one virtual bench.

Two runners, one for each purpose:

- :func:`edge` runs a command as a user runs it: the installed ``edge``
  executable in a subprocess, stdin closed, with a timeout (:func:`start`
  for one that runs in the background while the test acts); :func:`mpremote`
  likewise runs the real, unmodified mpremote;
- :func:`invoke` runs one in-process through click's ``CliRunner``, for quick
  checks of click-level behaviour (options, usage errors, exit codes).

Tests get a state folder and a bench through the fixtures of
``tests/conftest.py``:

- ``edge_home``: a :class:`Home`, a fresh state folder (``EDGE_HOME``; the
  registry, the bench's run folder and the OTA key live in it) and the
  environment every command of the test runs with;
- ``bench``: the same, plus :meth:`Home.up` to start virtual boards with
  ``edge sim up``; whatever runs in its folder is stopped after the test,
  whatever happened;
- ``module_bench``: a :class:`Home` shared by the tests of one module, for
  those that only read a bench another test of the module started (its
  boards are stopped after the module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

BIN = Path(sys.executable).parent
EDGE = str(BIN / "edge")
MPREMOTE = str(BIN / "mpremote")


def edge(*args: str, env: dict | None = None, timeout: float = 60, check: bool = True,
         input: str | None = None, text: bool = True) -> subprocess.CompletedProcess:
    """Run ``edge ARGS``; with ``check``, a non-zero exit fails the test showing both streams.

    ``text=False`` keeps the output as bytes (a CBOR export is not text).
    """
    proc = subprocess.run([EDGE, *args], capture_output=True, text=text, timeout=timeout,
                          env=env if env is not None else os.environ.copy(),
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, (f"edge {' '.join(args)} exited {proc.returncode}:\n"
                                      f"{proc.stdout}\n{proc.stderr}")
    return proc


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``edge ARGS`` in the background (stdout and stderr piped as text); the test ends it."""
    return subprocess.Popen([EDGE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            env=env if env is not None else os.environ.copy())


def mpremote(port: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the real mpremote against ``port`` (never with ``resume``)."""
    return subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def invoke(*args: str, env: dict | None = None, catch_exceptions: bool = False, **kw) -> Result:
    """``edge ARGS`` in this process through click's ``CliRunner``.

    ``env`` is laid over the process environment for the call (a value of
    None removes that variable). An exception other than the command's own
    exit is raised in the test, not folded into the result, unless
    ``catch_exceptions``.
    """
    from edge_agent.cli import main

    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200", **(env or {})},
                              catch_exceptions=catch_exceptions, **kw)


def wait_mode(control, name: str, mode: str, timeout: float = 10) -> None:
    """Wait until board ``name`` of the bench ``control`` is in ``mode``
    ("micropython", "download", "bootsel" or "off"); fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while control.mode(name) != mode:
        assert time.monotonic() < deadline, f"{name} is {control.mode(name)!r}, not {mode!r}"
        time.sleep(0.05)


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

    def edge(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return edge(*args, env=self.env, **kw)

    def start(self, *args: str) -> subprocess.Popen:
        return start(*args, env=self.env)

    def invoke(self, *args: str, **kw) -> Result:
        """:func:`invoke` with this home's variables."""
        names = ("EDGE_HOME", "EDGE_SIM_DIR", "EDGE_DB")
        return invoke(*args, env={**{n: self.env[n] for n in names}, **kw.pop("env", {})}, **kw)

    def json(self, *args: str, **kw) -> Any:
        """``edge ARGS --json``, its stdout parsed."""
        return json.loads(self.edge(*args, "--json", **kw).stdout)

    def up(self, *boards: str, blank: bool = False, timeout: float = 120, extra: tuple = ()) -> list[dict]:
        """``edge sim up`` of the given board types (``--blank``: no agent yet); their rows."""
        args = [a for b in boards for a in ("--board", b)] + (["--blank"] if blank else []) + list(extra)
        rows = self.json("sim", "up", *args, timeout=timeout)
        names = {b["name"] for b in rows}
        self.boards = [b for b in self.boards if b["name"] not in names] + rows
        return rows

    def board(self, name: str) -> dict:
        """The row ``edge sim up`` gave for board ``name``."""
        return next(b for b in self.boards if b["name"] == name)

    def port(self, name: str) -> str:
        return self.board(name)["port"]

    @property
    def control(self):
        """The bench's control API (``edge_hil.virtual.control.Bench``) on this home's folder."""
        from edge_hil.virtual.control import Bench

        return Bench(self.sim_dir)

    def wait_mode(self, name: str, mode: str, timeout: float = 10) -> None:
        wait_mode(self.control, name, mode, timeout)

    def down(self) -> None:
        """Stop whatever bench runs in this home's folder, however it was started."""
        from edge_hil.virtual import state

        if self.sim_dir.exists() and state.lock_is_held(self.sim_dir):
            self.edge("sim", "down", check=False)
