"""The serial console: reads, expectations with timeouts, the log, and a port that vanishes and returns."""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

from edge_agent.errors import DeviceError
from edge_hil.drivers.console import SerialConsole


@pytest.fixture
def pty():
    master, slave = os.openpty()
    import tty

    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def test_expect_finds_a_pattern_keeps_the_rest_and_logs_everything(pty):
    master, port = pty
    with SerialConsole(port, name="esp32-a") as console:
        os.write(master, b"boot: ok\r\n>>> ")
        m = console.expect(re.compile(rb"boot: (\w+)"), timeout=5)
        assert m.group(1) == b"ok"
        assert console.expect(b">>> ", timeout=5)
        console.write(b"print(1)\r")
        assert os.read(master, 64) == b"print(1)\r"
        os.write(master, b"1\r\n")
        assert console.read(timeout=5).startswith(b"1")
        assert console.log.startswith(b"boot: ok\r\n>>> 1")


def test_expect_times_out_naming_the_port_and_what_it_saw(pty):
    master, port = pty
    with SerialConsole(port, name="esp32-a") as console:
        os.write(master, b"Guru Meditation Error")
        with pytest.raises(DeviceError) as e:
            console.expect(b">>> ", timeout=0.3)
    assert "esp32-a" in e.value.message and port in e.value.message
    assert "Guru Meditation" in e.value.message


def test_read_returns_empty_when_nothing_comes(pty):
    _, port = pty
    with SerialConsole(port) as console:
        assert console.read(timeout=0.1) == b""


def test_opening_an_absent_port_names_it(tmp_path):
    with pytest.raises(DeviceError) as e:
        SerialConsole(str(tmp_path / "ttyACM7"), name="picow-a").open()
    assert "picow-a" in e.value.message and "ttyACM7" in e.value.message


def test_reopen_waits_for_a_port_path_that_vanished_and_came_back(pty, tmp_path):
    """A USB serial port disappears in a power cycle and comes back: here a by-id symlink does."""
    master, real = pty
    link = tmp_path / "usb-Silicon_Labs_CP2102_0001-if00-port0"
    link.symlink_to(real)
    console = SerialConsole(str(link), name="esp32-a")
    console.open()
    link.unlink()

    def replug():
        time.sleep(0.3)
        link.symlink_to(real)

    t = threading.Thread(target=replug)
    t.start()
    console.reopen(timeout=10)
    t.join()
    os.write(master, b">>> ")
    assert console.expect(b">>> ", timeout=5)
    console.close()


def test_reopen_gives_up_after_its_timeout_naming_the_port(tmp_path):
    gone = tmp_path / "usb-gone"
    with pytest.raises(DeviceError) as e:
        SerialConsole(str(gone), name="esp32-b").reopen(timeout=0.3)
    assert "esp32-b" in e.value.message and str(gone) in e.value.message
    assert "did not come back" in e.value.message


def test_the_boot_banner_is_read_whole_when_a_slow_uart_splits_its_number(pty):
    """A board's console arrives in pieces (an emulated or a real UART): the banner of boot 26 may
    come as "... boot 2" then "6\\n". The suites' banner pattern waits for the number's end."""
    from hil.suites.ota_releases import BOOT_BANNER

    master, port = pty
    with SerialConsole(port, name="emu-pico") as console:
        os.write(master, b"edge: agent 0.1.0 on pico (rp2), device pico-d290ce2b6c1b, boot 2")

        def rest():
            time.sleep(0.5)
            os.write(master, b"6\r\n")
        threading.Thread(target=rest, daemon=True).start()
        assert console.expect(BOOT_BANNER, timeout=5).group(1) == b"26"
        # The virtual Pico W's banner goes on with ", BLE".
        os.write(master, b"edge: agent 0.1.0 on picow (unix), device picow-1, boot 0, BLE\r\n")
        assert console.expect(BOOT_BANNER, timeout=5).group(1) == b"0"
