"""What the HIL suites share (run them with ``pytest --rig RIGFILE hil/suites``, docs/hil.md).

The rig's fixtures (``rig``, ``board``, ``console``, ``power``, ``host``,
``strategy``, ``faults``, ``retry``) come from the plugin
(:mod:`edge_hil.pytest_plugin`, loaded through its entry point); without
``--rig`` every test here is skipped with the reason. The helpers below read
the agent the way a host does: its frames on the console, its REPL through
the raw REPL (``edge_agent.board_link``, as ``edge`` and mpremote do).
"""

from __future__ import annotations

from typing import Any

import pytest

AGENT_TIMEOUT_S = 30.0
SOAK_SECONDS = 60.0


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 (--soak-seconds 600)")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edge-hil-soak", "Edge Agent HIL soak suite (hil/suites/test_soak.py)")
    group.addoption("--soak-seconds", type=_seconds, default=SOAK_SECONDS, metavar="SECONDS",
                    help=f"How long the soak streams telemetry through random faults, per board "
                         f"[default: {SOAK_SECONDS:.0f}].")
    group.addoption("--soak-seed", type=int, default=None, metavar="N",
                    help="Seed of the soak's random faults (default: a new one, printed); give a printed one "
                         "to replay a run.")


def agent_message(console: Any, timeout: float = AGENT_TIMEOUT_S) -> Any:
    """The first message the agent sends on ``console`` from now on (decoded from its frame)."""
    from edge_agent.frames import Frame, FrameDecoder
    from edge_agent.messages import MessageError, decode_message
    from edge_hil.rig.strategy import AGENT_FRAME

    match = console.expect(AGENT_FRAME, timeout)
    for event in FrameDecoder().feed(match.group(0)):
        if isinstance(event, Frame):
            try:
                return decode_message(event.payload)
            except MessageError as e:
                pytest.fail(f"the agent on {console.port} sent a frame that is no message: {e}")
    pytest.fail(f"the agent on {console.port} sent a frame whose CRC does not match: {match.group(0)!r}")


def repl(port: str, code: str, timeout: float = 10) -> str:
    """Run ``code`` on the board's MicroPython through the raw REPL; what it printed, stripped.

    The agent leaves the console to the REPL (its interrupt request) and
    stays stopped until the next reset."""
    from edge_agent.board_link import BoardLink

    with BoardLink(port) as link:
        return link.exec(code, timeout=timeout).strip()


@pytest.fixture
def agent(strategy: Any) -> Any:
    """The board with the agent running (``strategy.to("agent-up")``): flashed once per run, then
    only checked."""
    strategy.to("agent-up")
    return strategy
