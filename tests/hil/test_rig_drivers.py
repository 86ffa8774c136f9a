"""The rig's drivers against stand-ins that behave as the hardware does: the
relay board on a pty, the ESP auto-reset circuit, a person, uhubctl, BlueZ."""

from __future__ import annotations

import os
import subprocess

import pytest

from edge_agent.drivers import PowerProtocol, ResetProtocol
from edge_agent.errors import DeviceError
from edge_hil.drivers.ble import CommandDrop, LinkDrop
from edge_hil.drivers.power import AnswersFile, ManualPower, Power, RelayPower, UhubctlPower
from edge_hil.drivers.relay import LcusRelay, lcus_frame
from edge_hil.drivers.reset import DtrRtsReset, RelayReset, Reset
from edge_hil.drivers.virtual_relay import VirtualRelay


@pytest.fixture
def relay_board():
    with VirtualRelay(4) as board:
        yield board


def test_relay_power_sends_lcus_commands_and_switches_the_channel(relay_board):
    relay = LcusRelay("relay-a", relay_board.port, 4)
    power = RelayPower(relay, 2)
    assert isinstance(power, Power) and isinstance(power, PowerProtocol)
    power.on()
    assert relay_board.wait_for(2, True)
    power.off()
    assert relay_board.wait_for(2, False)
    assert relay_board.received == bytes.fromhex("A0 02 01 A3 A0 02 00 A2")
    assert relay_board.states == {1: False, 2: False, 3: False, 4: False}
    assert relay_board.rejected == 0


def test_a_relay_channel_wired_to_a_callback_sees_a_power_cycle(relay_board):
    seen: list[bool] = []
    relay_board.on_change(1, seen.append)
    RelayPower(LcusRelay("relay-a", relay_board.port, 4), 1).cycle(off_s=0)
    assert relay_board.wait_for(1, True)
    assert seen == [False, True]
    assert relay_board.commands == [(1, False), (1, True)]


def test_relay_reset_closes_the_channel_for_a_pulse_and_cannot_hold_a_strap(relay_board):
    reset = RelayReset("pico-a", LcusRelay("relay-a", relay_board.port, 4), 3, pulse_s=0)
    assert isinstance(reset, Reset) and isinstance(reset, ResetProtocol)
    reset.reset()
    # Both commands, in order (the channel is open before the pulse too: its state alone proves nothing).
    assert relay_board.wait_commands(2) == [(3, True), (3, False)]
    assert relay_board.states[3] is False
    with pytest.raises(DeviceError) as e:
        reset.reset_to_bootloader()
    assert "pico-a" in e.value.message and "dtr-rts" in e.value.hint


def test_the_virtual_relay_ignores_malformed_commands(relay_board):
    import serial

    with serial.serial_for_url(relay_board.port, baudrate=9600) as s:
        s.write(b"\x00" + bytes.fromhex("A0 01 01 00") + bytes.fromhex("A0 09 01 AA") + lcus_frame(4, True))
    assert relay_board.wait_for(4, True)
    assert relay_board.states[1] is False and relay_board.commands == [(4, True)]
    assert relay_board.rejected > 0


def test_lcus_frames_and_channels_out_of_range():
    assert lcus_frame(1, True) == bytes.fromhex("A0 01 01 A2")
    assert lcus_frame(16, False) == bytes.fromhex("A0 10 00 B0")
    with pytest.raises(DeviceError) as e:
        LcusRelay("relay-a", "/dev/null", 4).set(5, True)
    assert "4 channels" in e.value.message


def test_a_relay_whose_port_is_absent_names_it(tmp_path):
    with pytest.raises(DeviceError) as e:
        LcusRelay("relay-a", str(tmp_path / "ttyUSB9"), 4).set(1, True)
    assert "relay-a" in e.value.message and "ttyUSB9" in e.value.message


class Lines:
    """A serial port's DTR/RTS as the ESP auto-reset circuit turns them into EN and IO0."""

    def __init__(self) -> None:
        self._dtr = self._rts = False
        self.pins: list[tuple[int, int]] = []     # (EN, IO0) after each line change
        self.closed = False

    def _note(self) -> None:
        en = int(not (self._rts and not self._dtr))
        io0 = int(not (self._dtr and not self._rts))
        self.pins.append((en, io0))

    dtr = property(lambda self: self._dtr, lambda self, v: (setattr(self, "_dtr", v), self._note()))
    rts = property(lambda self: self._rts, lambda self, v: (setattr(self, "_rts", v), self._note()))

    def close(self) -> None:
        self.closed = True


def boots(pins: list[tuple[int, int]]) -> list[str]:
    """What the chip does at each rising edge of EN: "flash" (IO0 high) or "download" (IO0 low)."""
    out, en = [], 1
    for new_en, io0 in pins:
        if en == 0 and new_en == 1:
            out.append("flash" if io0 else "download")
        en = new_en
    return out


def test_dtr_rts_reset_pulses_en_with_io0_high():
    lines = Lines()
    DtrRtsReset("esp32-a", "/dev/x", open_lines=lambda port: lines, sleep=lambda s: None).reset()
    assert boots(lines.pins) == ["flash"]
    assert lines.pins[-1] == (1, 1) and lines.closed


def test_dtr_rts_bootloader_holds_io0_low_while_en_rises():
    lines = Lines()
    DtrRtsReset("esp32-a", "/dev/x", open_lines=lambda port: lines, sleep=lambda s: None).reset_to_bootloader()
    # EN rises while DTR and RTS are both asserted only for the instant between two ioctls,
    # which the EN capacitor absorbs; the edge that counts comes with IO0 low.
    assert boots([p for p in lines.pins if p != (1, 1)] + [lines.pins[-1]]) == ["download"]
    assert (0, 1) in lines.pins and lines.pins[-1] == (1, 1)


def test_dtr_rts_uses_the_open_console_and_leaves_it_open():
    lines = Lines()
    DtrRtsReset("esp32-a", "/dev/x", console_serial=lambda: lines,
                open_lines=lambda port: pytest.fail("opened the port again"), sleep=lambda s: None).reset()
    assert boots(lines.pins) == ["flash"] and not lines.closed


def test_dtr_rts_on_a_port_without_modem_lines_says_so(tmp_path):
    class NoLines(Lines):
        dtr = property(lambda self: False, lambda self, v: (_ for _ in ()).throw(OSError(25, "ENOTTY")))

    with pytest.raises(DeviceError) as e:
        DtrRtsReset("esp32-a", "/dev/x", open_lines=lambda port: NoLines(), sleep=lambda s: None).reset()
    assert "esp32-a" in e.value.message and "reset: repl" in e.value.hint


def test_manual_power_asks_and_takes_a_scripted_answer(tmp_path):
    answers = tmp_path / "answers.txt"
    answers.write_text("done\n\n")
    ask = AnswersFile(answers)
    power = ManualPower("picow-a", ask)
    power.cycle(off_s=0)
    assert ask.log == ["switch picow-a off, then press Enter", "switch picow-a on, then press Enter"]


def test_manual_power_without_an_answer_names_the_board(tmp_path):
    answers = tmp_path / "answers.txt"
    answers.write_text("ok\n")
    power = ManualPower("picow-a", AnswersFile(answers))
    power.off()
    with pytest.raises(DeviceError) as e:
        power.on()
    assert "picow-a" in e.value.message and "--rig-answers" in e.value.hint
    with pytest.raises(DeviceError):
        ManualPower("esp32-b", lambda text: None).off()


def test_a_terminal_question_times_out_without_an_answer(tmp_path):
    import os

    from edge_hil.drivers.power import terminal_ask

    master, slave = os.openpty()
    try:
        ask = terminal_ask(timeout=0.2, tty=os.ttyname(slave))
        assert ask("switch picow-a on, then press Enter") is None
        os.write(master, b"yes\n")
        assert ask("switch picow-a off, then press Enter") == "yes"
        assert b"switch picow-a on" in os.read(master, 4096)
    finally:
        os.close(master)
        os.close(slave)


def test_uhubctl_power_runs_uhubctl_and_reports_its_failure():
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if argv[-1] == "on" else 0, "", "No compatible devices detected!\n")

    power = UhubctlPower("pico-hub", "1-1", 2, run=run, which=lambda name: "/usr/sbin/uhubctl")
    power.off()
    assert calls == [["/usr/sbin/uhubctl", "-l", "1-1", "-p", "2", "-a", "off"]]
    with pytest.raises(DeviceError) as e:
        power.on()
    assert "No compatible devices" in e.value.message and "hub 1-1" in e.value.hint


def test_uhubctl_missing_names_the_package():
    with pytest.raises(DeviceError) as e:
        UhubctlPower("pico-hub", "1-1", 2, which=lambda name: None).on()
    assert "pico-hub" in e.value.message and "apt-get install uhubctl" in e.value.hint


BLE_RIG = """\
rig: 1
boards:
  - name: esp32-a
    board: esp32
    port: /dev/ttyUSB7
    ble: {address: "c0:ff:ee:00:00:01"}
  - name: esp32-b
    board: esp32
    port: /dev/ttyUSB8
    ble: {address: "C0:FF:EE:00:00:02", adapter: hci1, drop: "dropper --addr {address} --on {adapter}"}
  - name: pico-a
    board: pico
    port: /dev/ttyACM7
"""


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """`busctl` and `dropper` on PATH: each writes its arguments to calls.txt; a board address
    ending :02 makes `busctl` fail as BlueZ does for a device it is not connected to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    for tool in ("busctl", "dropper"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n'
                          'case "$*" in *dev_C0_FF_EE_00_00_09*) '
                          'echo "Call failed: Not Connected" >&2; exit 1;; esac\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def test_a_real_boards_ble_drop_asks_bluez_to_disconnect_it_by_default(tmp_path, fake_tools):
    from edge_hil.faults import Faults
    from edge_hil.rig import load_rig
    from edge_hil.rig.target import open_target

    rig_file = tmp_path / "rig.yaml"
    rig_file.write_text(BLE_RIG)
    rig = load_rig(rig_file)
    a = open_target(rig, "esp32-a")
    assert isinstance(a.ble, LinkDrop)
    for target in (a, open_target(rig, "esp32-b")):
        try:
            Faults(target).ble_drop()
        except pytest.skip.Exception as e:        # a skip here would hide the fault not being there
            pytest.fail(f"{target.name}: ble_drop skipped: {e}")
    assert fake_tools.read_text().splitlines() == [
        "busctl --system call org.bluez /org/bluez/hci0/dev_C0_FF_EE_00_00_01 org.bluez.Device1 Disconnect",
        "dropper --addr C0:FF:EE:00:00:02 --on hci1",
    ]
    # A board the rig gives no BLE identity cannot take the fault: its test is skipped, saying why.
    assert open_target(rig, "pico-a").ble is None
    with pytest.raises(pytest.skip.Exception, match="pico-a cannot take a BLE link drop"):
        Faults(open_target(rig, "pico-a")).ble_drop()


def test_a_ble_drop_that_fails_names_the_board_the_command_and_what_it_said(fake_tools):
    drop = CommandDrop("esp32-z", "C0:FF:EE:00:00:09")
    with pytest.raises(DeviceError) as e:
        drop.drop()
    assert e.value.message.startswith("esp32-z: `busctl --system call org.bluez /org/bluez/hci0/dev_C0_FF_EE_00_00_09")
    assert e.value.message.endswith("failed (1): Call failed: Not Connected")
    assert "bluetoothctl info C0:FF:EE:00:00:09" in e.value.hint and "ble: drop:" in e.value.hint
    with pytest.raises(DeviceError) as e:
        CommandDrop("esp32-z", "C0:FF:EE:00:00:09", which=lambda name: None).drop()
    assert "`busctl`, which is not on PATH" in e.value.message and "drop: command" in e.value.hint
