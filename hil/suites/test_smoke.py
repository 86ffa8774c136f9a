"""Smoke: every board of the rig boots, its console answers, its self-test passes, its versions are known.

The first suite to run on a new bench (``pytest --rig RIGFILE hil/suites/test_smoke.py``):
each test runs once per board, through the product's own commands and the rig's drivers.
Versions come first: what they record is reported with every later test of the board.
"""

from __future__ import annotations

import json
import re

import pytest

from edge_agent.messages import Hello, Status
from hil.suites.conftest import agent_message, repl

pytestmark = pytest.mark.needs("console")


def test_versions_of_micropython_and_of_the_agent_are_recorded(board, agent, record_property):
    said = repl(board.port, "import sys, edgefw\nprint(sys.implementation.version)\nprint(edgefw.VERSION)")
    micropython, agent_version = said.splitlines()
    firmware = ".".join(str(int(n)) for n in re.findall(r"\d+", micropython)[:3])
    assert re.fullmatch(r"1\.\d+\.\d+", firmware), micropython
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", agent_version), agent_version
    record_property("firmware", firmware)
    record_property("agent_version", agent_version)


def test_boot_a_power_cycle_or_a_reset_brings_the_agent_back(board, agent, console):
    """Power cycle where the rig can switch the board (else its reset); the agent speaks again."""
    console.open()
    try:
        if board.power is not None:
            board.power.cycle(0.5)
            console.reopen()        # a USB serial port vanishes while the board is off
        else:
            board.reset.reset()
        message = agent_message(console)
    finally:
        console.close()
    assert isinstance(message, (Hello, Status)), f"{board.name} booted into {message!r}"


def test_console_micropython_answers_over_the_raw_repl(board, agent, retry):
    said = retry(lambda: repl(board.port, "import sys\nprint(sys.implementation.name, 6 * 7)"), 2,
                 "the raw REPL")
    assert said == "micropython 42"


def test_self_test_edge_flash_reads_back_an_ok_status(board, agent, host):
    rows = json.loads(host.edge("flash", *board.flash_args, "--json").stdout)
    assert [r["ok"] for r in rows] == [True], rows
    selftest = rows[0]["selftest"]           # STATUS key 4: the agent's boot self-test
    assert selftest is not None, rows[0]
    assert selftest["sensor_errors"] == []
    assert selftest["heap_free"] > 0
    assert selftest["version"]
    assert rows[0]["steps"][-2:] == ["selftest", "register"]
