"""A pytester project for the HIL plugin's tests: a rig file, a suite, and the board locks in the test's folder."""

from __future__ import annotations

from pathlib import Path

# pytest-asyncio warns in every run without it.
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def rig_project(pytester, monkeypatch, run_dir: Path, rig: str, suite: str):
    """``pytester`` with ``rig.yaml`` and ``test_suite.py``; board locks under ``run_dir``."""
    monkeypatch.setenv("EDGE_RUN_DIR", str(run_dir))
    pytester.makeini(INI)
    pytester.makefile(".yaml", rig=rig)
    pytester.makepyfile(test_suite=suite)
    return pytester
