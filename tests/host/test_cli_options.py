"""Option values are checked before a command does anything; errors come
out as the user asked (text, JSON, no colour)."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import threading
import time

import click
import pytest
from click.testing import CliRunner

from edge_agent.board_link import BoardLink
from edge_agent.cli.options import DURATION
from edge_agent.errors import DeviceError

from .test_ingest_cli import board  # noqa: F401  (a scripted device on a pty)
from .test_port_ownership import tty  # noqa: F401  (a pty nobody writes to)
from tests.harness import EDGE, invoke

COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGE_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("EDGE_DB", raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize("text, seconds", [("30", 30), ("2.5", 2.5), ("30s", 30), ("500ms", 0.5),
                                           ("10m", 600), ("1h", 3600), ("0", 0)])
def test_a_duration_is_seconds_or_a_number_with_a_unit(text, seconds):
    assert DURATION.convert(text, None, None) == seconds


@pytest.mark.parametrize("option", [["telemetry", "ingest", "--for"], ["telemetry", "ingest", "--idle"],
                                    ["monitor", "--for"], ["telemetry", "live", "--duration"]])
@pytest.mark.parametrize("value, words", [("-5", "negative"), ("nan", "not a duration"),
                                          ("inf", "not a duration"), ("1e400", "not a finite"),
                                          ("5 parsecs", "not a duration")])
def test_every_duration_option_refuses_what_would_end_at_once_or_never(home, tty, option, value, words):
    args = [*option[:-1], *([tty] if option[0] == "monitor" or option[1] == "ingest" else []),
            option[-1], value]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert not home.exists(), "nothing is created before the options are checked"


def test_ingest_of_a_missing_port_exits_3_naming_it_and_the_fix(home):
    result = invoke("telemetry", "ingest", "/dev/ttyUSB-typo", "--for", "2")
    assert result.exit_code == 3, result.output
    assert "serial port /dev/ttyUSB-typo does not exist" in result.stderr
    assert "edge sim ls" in result.stderr and "/dev/serial/by-id" in result.stderr
    assert not home.exists(), "no registry made for a port that is not there"


def test_with_json_an_error_is_one_json_line_on_stderr_and_keeps_its_exit_code(home):
    result = invoke("telemetry", "ingest", "/dev/ttyUSB-typo", "--json")
    assert result.exit_code == 3
    assert result.stdout == ""
    error = json.loads(result.stderr.strip().splitlines()[-1])
    assert error == {"error": "serial port /dev/ttyUSB-typo does not exist", "fix": error["fix"], "exit_code": 3}
    assert "edge sim ls" in error["fix"]
    usage = invoke("telemetry", "ingest", "/dev/null", "--for", "nan", "--json")
    assert usage.exit_code == 2
    assert json.loads(usage.stderr.strip().splitlines()[-1])["exit_code"] == 2


def test_no_color_removes_colour_from_click_and_rich_output(home, board):  # noqa: F811
    port, _ = board
    coloured = invoke("telemetry", "ingest", "/dev/ttyUSB-typo", color=True)
    assert COLOUR.search(coloured.stderr), "the check below would prove nothing"
    plain = invoke("telemetry", "ingest", "/dev/ttyUSB-typo", env={"NO_COLOR": "1"}, color=True)
    assert plain.exit_code == 3 and "error: serial port" in plain.stderr
    assert not COLOUR.search(plain.stderr), repr(plain.stderr)
    shown = invoke("monitor", port, "--for", "1.5", env={"NO_COLOR": "1", "FORCE_COLOR": "1"},
                   color=True)
    assert shown.exit_code == 0 and "HELLO" in shown.stdout, shown.output
    assert not COLOUR.search(shown.output), repr(shown.output)


def test_idle_ends_a_run_whose_ports_never_send(home, tty):
    t0 = time.monotonic()
    result = invoke("telemetry", "ingest", tty, "--idle", "1", "--json")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - t0 < 5
    [row] = json.loads(result.stdout)["ports"]
    assert row["records"] == 0 and row["connects"] == 1


def test_ingest_warns_when_a_streaming_port_goes_quiet_and_counts_it(home, board):  # noqa: F811
    port, dev = board       # sends its 10 records, then nothing
    result = invoke("telemetry", "ingest", port, "--quiet-after", "1", "--for", "3", "--json")
    assert result.exit_code == 0, result.output
    assert f"warning: {port} ({dev.device_id}) sent no telemetry for 1 s after 10 record(s)" in result.stderr
    assert "edge monitor" in result.stderr
    [row] = json.loads(result.stdout)["ports"]
    assert row["quiet"] == 1 and row["records"] == 10


def test_monitor_raw_prints_the_wire_not_python_reprs(home, board):  # noqa: F811
    port, _ = board
    result = invoke("monitor", port, "--raw", "--for", "1.5")
    assert result.exit_code == 0, result.output
    assert "#EA:" in result.stdout
    assert "Frame(" not in result.stdout and "b'" not in result.stdout


def test_monitor_for_ends_in_a_terminal_too(home, board):  # noqa: F811
    port, _ = board
    master, slave = pty.openpty()      # stdin is a terminal, as when a person runs it
    try:
        t0 = time.monotonic()
        proc = subprocess.run([EDGE, "monitor", port, "--for", "2"], stdin=slave, capture_output=True,
                              text=True, timeout=30, env=os.environ)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 10
    assert "HELLO" in proc.stdout


def test_monitor_exits_6_when_the_port_goes_away(home):
    master, slave = pty.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    threading.Timer(0.7, os.close, [master]).start()
    result = invoke("monitor", port, "--listen-only", "--for", "10")
    assert result.exit_code == 6, result.output
    assert f"lost port {port}" in result.stderr and "fix:" in result.stderr


def test_sim_dir_that_cannot_be_made_is_an_error_naming_it(home):
    result = invoke("sim", "up", "--board", "esp32", "--dir", "/proc/x")
    assert result.exit_code == 3, result.output
    assert "cannot use /proc/x: No such file or directory" in result.stderr
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("args, words", [
    (["--port", "/dev/null", "--board", "esp32"], "/dev/null is a mem device, not a serial port"),
    (["--port", "/dev/ptmx", "--board", "esp32", "--firmware", "/dev/zero"],
     "firmware image /dev/zero is a character device, not a regular file"),
])
def test_flash_checks_its_inputs_before_making_the_registry_or_keys(home, args, words):
    result = invoke("flash", *args)
    assert result.exit_code == 5, result.output
    assert words in result.stderr
    assert not (home / "registry.db").exists() and not (home / "keys").exists()


class _Transport:
    """mpremote's transport as BoardLink.exec sees it when the code raised on the board."""

    def exec_raw(self, code, timeout):
        return b"", b'Traceback (most recent call last):\r\n  File "<stdin>", line 2, in <module>\r\n' \
                    b"OSError: [Errno 28] ENOSPC\r\n"


def test_an_exception_on_the_board_is_named_with_what_to_do():
    link = BoardLink.__new__(BoardLink)
    link.port, link._t, link._raw = "/dev/ttyUSB0", _Transport(), True
    with pytest.raises(DeviceError) as e:
        link.exec("open('x', 'w').write('y' * 10**6)")
    assert e.value.message == "the board on /dev/ttyUSB0 raised OSError: [Errno 28] ENOSPC"
    assert "traceback above" not in e.value.hint and "full" in e.value.hint
    assert "ENOSPC" in e.value.traceback and "line 2" in e.value.traceback


def test_duration_is_a_click_type_other_commands_can_use():
    @click.command()
    @click.option("--timeout", type=DURATION)
    def cmd(timeout):
        click.echo(repr(timeout))
    assert CliRunner().invoke(cmd, ["--timeout", "1m"]).output.strip() == "60.0"
