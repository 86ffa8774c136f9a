"""platformio.ini and the `edge_frames` monitor filter, checked with PlatformIO itself:
its project-config parser validates the file, the environments agree with the
board files, and the filter, loaded the way `pio device monitor` loads it,
turns frame lines into summaries however the console text is chunked."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from platformio.device.monitor.filters.base import DeviceMonitorFilterBase, load_monitor_filter
from platformio.project.config import ProjectConfig
from serial.tools import miniterm

from edge_agent.boards import known_boards, load_board
from edge_agent.frames import encode_frame
from edge_agent.monitor import describe
from edge_agent.paths import REPO

INI = REPO / "platformio.ini"
FILTER = REPO / "monitor" / "filter_edge_frames.py"
VECTORS = json.loads((REPO / "tests" / "vectors" / "frames.json").read_text())
MESSAGES = json.loads((REPO / "tests" / "vectors" / "messages.json").read_text())
HELLO = next(v for v in VECTORS if v["name"] == "a HELLO message (protocol 2)")
# The PlatformIO board id each MicroPython board file maps to.
PIO_BOARDS = {"esp32": ("espressif32", "esp32dev"), "esp32s3": ("espressif32", "esp32-s3-devkitc-1"),
              "esp32c3": ("espressif32", "esp32-c3-devkitm-1"), "pico": ("raspberrypi", "pico"),
              "picow": (None, "rpipicow")}


@pytest.fixture
def config(monkeypatch):
    monkeypatch.chdir(REPO)          # PlatformIO resolves folders from the project folder
    return ProjectConfig(str(INI))


def micropython_boards() -> list[str]:
    return [b for b in known_boards() if load_board(b)["flash_method"] in ("esptool", "uf2")]


# --- platformio.ini ---------------------------------------------------------

def test_platformio_ini_passes_platformio_own_validation(config):
    assert config.validate(silent=True)
    assert config.warnings == []             # e.g. a misspelt option is only a warning
    config.as_tuple()                        # every value parses as its option's type


def test_each_micropython_board_file_has_one_environment_and_no_other(config):
    assert micropython_boards() == sorted(["esp32", "esp32s3", "esp32c3", "pico", "picow"])
    assert sorted(config.envs()) == micropython_boards()


@pytest.mark.parametrize("board", ["esp32", "esp32s3", "esp32c3", "pico", "picow"])
def test_environment_agrees_with_its_board_file(config, board):
    env = config.items(env=board, as_dict=True)
    data = load_board(board)
    platform, pio_board = PIO_BOARDS[board]
    assert env["board"] == pio_board
    if platform:
        assert env["platform"] == platform
    else:
        assert "platform-raspberrypi" in env["platform"]
    assert env["monitor_speed"] == data["console"]["baud"]
    assert env["upload_protocol"] == "custom"
    assert env["upload_command"].split() == ["edge", "flash", "--board", board, "--port", "$UPLOAD_PORT"]
    assert env["monitor_filters"][-1] == "edge_frames"


def test_project_folders_keep_platformio_off_the_board_files(config):
    assert Path(config.get("platformio", "monitor_dir")) == FILTER.parent
    assert Path(config.get("platformio", "src_dir")) == REPO / "firmware"
    # PlatformIO reads custom board manifests from boards_dir: not ours.
    assert Path(config.get("platformio", "boards_dir")) != REPO / "boards"


def test_a_misspelt_option_would_be_caught(tmp_path, monkeypatch):
    """The checks above can fail: the same parser flags a typo and a bad value."""
    bad = tmp_path / "platformio.ini"
    bad.write_text(INI.read_text().replace("monitor_speed = 115200", "monitor_sped = 115200", 1))
    monkeypatch.chdir(tmp_path)
    cfg = ProjectConfig(str(bad))
    cfg.validate(silent=True)
    assert any("monitor_sped" in w for w in cfg.warnings)
    bad.write_text(INI.read_text().replace("monitor_speed = 115200", "monitor_speed = fast", 1))
    with pytest.raises(Exception, match="monitor_speed"):
        ProjectConfig(str(bad)).as_tuple()


# --- the monitor filter ------------------------------------------------------

def load_filter(monkeypatch, *, without_edge_agent=False) -> DeviceMonitorFilterBase:
    """The filter as `pio device monitor` makes it: load_monitor_filter(path, options)."""
    monkeypatch.chdir(REPO)
    if without_edge_agent:
        # PlatformIO's own Python: importing edge_agent fails.
        for name in [m for m in sys.modules if m == "edge_agent" or m.startswith("edge_agent.")]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, "edge_agent", None)
    monkeypatch.delitem(miniterm.TRANSFORMATIONS, "edge_frames", raising=False)
    options = {"project_dir": str(REPO), "environment": "esp32", "port": None, "baud": 115200,
               "filters": ["direct", "edge_frames"], "eol": "CRLF", "echo": False}
    assert load_monitor_filter(str(FILTER), options)
    filt = miniterm.TRANSFORMATIONS.pop("edge_frames")
    assert isinstance(filt, DeviceMonitorFilterBase)
    assert filt() is filt                      # miniterm calls the registered object
    assert filt.environment == "esp32" and filt.project_dir == str(REPO)
    return filt


def feed(filt, text: str, rng: random.Random | None = None) -> str:
    """rx() over chunks cut at random places (or the whole text at once)."""
    if rng is None:
        return filt.rx(text)
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(0, min(12, len(text) - 1))))
    out, start = [], 0
    for cut in cuts + [len(text)]:
        out.append(filt.rx(text[start:cut]))
        start = cut
    return "".join(out)


def console_with_frames() -> tuple[str, list[bytes]]:
    """A console session: boot text, a HELLO frame, REPL text, a BATCH, a bad frame, a prompt."""
    batch = bytes.fromhex(next(m for m in MESSAGES if m["type"] == "BATCH")["hex"])
    text = ("MicroPython v1.24.1 on 2024-11-29; Generic ESP32 module with ESP32\r\n"
            + HELLO["line"]
            + ">>> print('#EA is console text here')\r\n#EA is console text here\r\n"
            + encode_frame(batch).decode()
            + "#EA:AA==:d202ef8e\r\n"          # CRC off by one
            + "#E\r\n"
            + ">>> ")
    return text, [bytes.fromhex(HELLO["payload_hex"]), batch]


def test_filter_decodes_a_hello_frame_line_into_its_summary(monkeypatch):
    filt = load_filter(monkeypatch)
    out = feed(filt, HELLO["line"])
    summary = describe(bytes.fromhex(HELLO["payload_hex"]))
    assert out == "⟨" + summary + "⟩\r\n"
    assert summary.startswith("HELLO esp32-7c9e3a0b1d2f board esp32")


def test_filter_output_does_not_depend_on_how_the_text_is_chunked(monkeypatch):
    filt = load_filter(monkeypatch)
    text, (hello, batch) = console_with_frames()
    expected = ("MicroPython v1.24.1 on 2024-11-29; Generic ESP32 module with ESP32\r\n"
                f"⟨{describe(hello)}⟩\r\n"
                ">>> print('#EA is console text here')\r\n#EA is console text here\r\n"
                f"⟨{describe(batch)}⟩\r\n"
                "⟨bad frame: bad_crc⟩\r\n"
                "#E\r\n"
                ">>> ")
    assert "BATCH" in expected and "#EA:" not in expected.replace("#EA is", "")
    rng = random.Random(3)
    for _ in range(300):
        assert feed(filt, text, rng) == expected


def test_console_text_is_passed_on_before_its_line_ends(monkeypatch):
    filt = load_filter(monkeypatch)
    assert filt.rx(">>> ") == ">>> "           # a prompt has no line ending
    assert filt.rx("x = 1") == "x = 1"
    assert filt.rx("\r\n#") == "\r\n"          # '#' may start a frame: held
    assert filt.rx("EA:AA") == ""
    assert filt.rx("==:d202ef8d\r\n") == "⟨" + describe(bytes(1)) + "⟩\r\n"
    assert filt.rx("#x") == "#x"               # not the prefix after all


def test_a_frame_line_too_long_is_reported_once_and_dropped_to_its_end(monkeypatch):
    filt = load_filter(monkeypatch)
    out = feed(filt, "#EA:" + "A" * 5000 + ":00000000\r\n>>> ", random.Random(1))
    assert out == "⟨bad frame: too_long⟩\r\n>>> "


@pytest.mark.parametrize("with_edge_agent", [True, False], ids=["edge_agent", "builtin"])
def test_filter_checks_every_frame_vector_as_the_protocol_says(monkeypatch, with_edge_agent):
    filt = load_filter(monkeypatch, without_edge_agent=not with_edge_agent)
    for case in VECTORS:
        out = filt.rx(case["line"])
        ending = "\r\n" if case["line"].endswith("\r\n") else "\n"
        if "reason" in case:
            assert out.startswith(f"⟨bad frame: {case['reason']}⟩"), case["name"]
        else:
            assert out.startswith("⟨") and "bad frame" not in out, case["name"]
        assert out.endswith(ending)


def test_without_edge_agent_the_filter_names_the_message_type_and_says_how_to_decode(monkeypatch):
    filt = load_filter(monkeypatch, without_edge_agent=True)
    text, (hello, batch) = console_with_frames()
    out = feed(filt, text, random.Random(7))
    assert f"⟨HELLO frame, {len(hello)} bytes⟩  (edge_frames: edge_agent is not importable" in out
    assert f"⟨BATCH frame, {len(batch)} bytes⟩\r\n" in out      # the note is shown once
    assert out.count("not importable") == 1
    assert "⟨bad frame: bad_crc⟩\r\n#E\r\n>>> " in out
    assert out.startswith("MicroPython v1.24.1")


def test_pio_device_monitor_shows_the_summaries(tmp_path):
    """End to end: the real `pio device monitor` on a console served over a
    socket:// URL, with the filter from the project's monitor folder. The
    environment has no platform, since installing one needs the internet."""
    import os
    import pty
    import shutil
    import socket
    import subprocess
    import threading
    import time

    pio = shutil.which("pio", path=str(Path(sys.executable).parent))
    assert pio, "PlatformIO's `pio` command is installed with the test extra"
    project = tmp_path / "project"
    project.mkdir()
    (project / "monitor").symlink_to(FILTER.parent)
    (project / "platformio.ini").write_text(
        "[env:bare]\nmonitor_speed = 115200\nmonitor_filters = direct, edge_frames\n")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            for part in ("boot\r\n", HELLO["line"][:17], HELLO["line"][17:],
                         "#EA:AA==:d202ef8e\r\n", ">>> "):
                conn.sendall(part.encode())
                time.sleep(0.05)
            time.sleep(1.0)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    master, slave = pty.openpty()      # the monitor refuses to run without a terminal
    env = dict(os.environ, PLATFORMIO_CORE_DIR=str(tmp_path / "core"), PLATFORMIO_NO_ANSI="true")
    proc = subprocess.Popen([pio, "device", "monitor", "--port", f"socket://127.0.0.1:{port}",
                             "--no-reconnect"], cwd=project, stdin=slave, stdout=slave,
                            stderr=slave, env=env)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while b">>> " not in out and time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        server.close()
    text = out.decode("utf-8", "replace")
    assert "⟨" + describe(bytes.fromhex(HELLO["payload_hex"])) + "⟩" in text, text
    assert "⟨bad frame: bad_crc⟩" in text and "#EA:" not in text
