"""The console view describes any payload without raising, and console text stays text."""

from __future__ import annotations

import json
import os
import pty
import threading
import time
from pathlib import Path

import pytest

from edge_agent.frames import Frame
from edge_agent.monitor import describe, render
from tests.harness import invoke

VECTORS = Path(__file__).parents[1] / "vectors"
ALL = json.loads((VECTORS / "messages.json").read_text()) + json.loads((VECTORS / "bad_messages.json").read_text())


@pytest.mark.parametrize("case", ALL, ids=[c["name"] for c in ALL])
def test_every_vector_gets_a_one_line_description(case):
    text = describe(bytes.fromhex(case["hex"]))
    assert text and "\n" not in text
    if "type" in case and not case.get("accept"):
        assert text.startswith(case["type"])


def test_a_version_1_batch_with_an_array_as_name_is_described_not_raised():
    import cbor2

    payload = cbor2.dumps({0: 3, 1: "esp32-1", 2: 0, 3: 1, 4: 0, 5: 0, 6: [{0: ["not", "a", "name"], 2: 1.0}]})
    style, text = render(Frame(payload))
    assert style == "frame" and "version 1" in text


def test_ingest_console_prints_board_text_as_text_not_markup(tmp_path):
    master, slave = pty.openpty()
    port = os.ttyname(slave)

    def board() -> None:
        time.sleep(0.3)
        os.write(master, b"boom [/] [link=file:///etc/passwd]click[/link] [bold]x\r\n")
    threading.Thread(target=board, daemon=True).start()
    try:
        result = invoke("telemetry", "ingest", port, "--console", "--for", "1.5",
                                           "--db", str(tmp_path / "r.db"))
    finally:
        os.close(master)
        os.close(slave)
    assert result.exit_code == 0, result.output
    assert "boom [/] [link=file:///etc/passwd]click[/link] [bold]x" in result.output
