"""The rig file: what loads, and each way it can be wrong, with the line the error points at."""

from __future__ import annotations

import textwrap

import pytest

from edge_agent.errors import EXIT_BAD_INPUT, NotFound
from edge_hil.rig import CAPABILITIES, STATES, RigError, load_rig

GOOD = """\
rig: 1
name: bench-a
relays:
  relay-a:
    port: /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0
    protocol: lcus
    channels: 4
boards:
  - name: esp32-a
    board: esp32
    port: /dev/serial/by-id/usb-Silicon_Labs_CP2102_0001-if00-port0
    reset: dtr-rts
    power: {relay: relay-a, channel: 1}
    ble: {address: "c0:ff:ee:00:00:01"}
  - name: picow-a
    board: picow
    port: rfc2217://bench-pi.local:4000
    power: manual
  - name: sim-esp32
    board: esp32
    kind: virtual
  - name: emu-pico
    board: pico
    kind: emulated
  - name: pico-hub
    board: pico
    port: /dev/ttyACM0
    reset: {relay: relay-a, channel: 2}
    power: {uhubctl: {hub: "1-1", port: 2}}
"""


def write(tmp_path, text: str, name: str = "rig.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(RigError) as e:
        load_rig(path)
    assert e.value.exit_code == EXIT_BAD_INPUT
    assert e.value.hint, "every rig error carries a fix"
    return str(e.value).splitlines()


def one_problem(tmp_path, text: str) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def test_a_good_rig_loads_in_file_order_with_lines_and_resources(tmp_path):
    rig = load_rig(write(tmp_path, GOOD))
    assert rig.name == "bench-a"
    assert [b.name for b in rig.boards] == ["esp32-a", "picow-a", "sim-esp32", "emu-pico", "pico-hub"]
    assert [b.line for b in rig.boards] == [9, 15, 19, 22, 25]
    esp = rig.board("esp32-a")
    assert (esp.kind, esp.board, esp.power.method, esp.power.relay, esp.power.channel) == \
        ("usb", "esp32", "relay", "relay-a", 1)
    assert esp.reset.method == "dtr-rts" and esp.ble.address == "C0:FF:EE:00:00:01"
    assert (esp.ble.adapter, esp.ble.drop) == ("hci0", None), "BlueZ's Disconnect on hci0 unless told"
    assert rig.board("picow-a").reset.method == "repl", "repl is the default reset"
    hub = rig.board("pico-hub")
    assert (hub.power.method, hub.power.hub, hub.power.hub_port) == ("uhubctl", "1-1", 2)
    assert (hub.reset.method, hub.reset.channel) == ("relay", 2)
    assert rig.relays["relay-a"].channels == 4
    assert [b.name for b in rig.bench_boards] == ["sim-esp32", "emu-pico"]
    assert rig.board("sim-esp32").power.method == "bench"


def test_capabilities_follow_the_contract(tmp_path):
    rig = load_rig(write(tmp_path, GOOD))
    caps = {b.name: b.capabilities for b in rig.boards}
    assert all(c <= set(CAPABILITIES) for c in caps.values())
    assert caps["esp32-a"] == set(CAPABILITIES)
    # Manual power is no power switch when nobody is there to answer.
    assert "power" not in caps["picow-a"] and "ble" not in caps["picow-a"]
    assert "ble" in caps["sim-esp32"] and "power" in caps["sim-esp32"]
    # The emulated RP2040 has no radio.
    assert caps["emu-pico"] == {"console", "reset", "power", "ota", "firmware-image"}
    assert "ble" not in caps["pico-hub"] and "power" in caps["pico-hub"]
    with_person = load_rig(write(tmp_path, GOOD), person=True)
    assert "power" in with_person.board("picow-a").capabilities
    assert STATES[0] == "off" and STATES[-1] == "updated"


def test_a_board_with_reset_none_has_no_reset(tmp_path):
    rig = load_rig(write(tmp_path, "rig: 1\nboards:\n  - {name: a, board: esp32, port: /dev/x, reset: none}\n"))
    assert "reset" not in rig.board("a").capabilities
    assert rig.name == "rig", "an unnamed rig is named by its file"


def test_unknown_board_name_lists_the_boards(tmp_path):
    rig = load_rig(write(tmp_path, GOOD))
    with pytest.raises(Exception) as e:
        rig.board("nope")
    assert "esp32-a" in e.value.hint


def test_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        load_rig(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text, line, says", [
    ("", 1, "the file is empty"),
    ("rig: 1\nboards:\n  - name: a\n    board: [esp32\n", 5, "not valid YAML"),
    ("rig: 1\nboards:\n  - name: a\n   board: esp32\n", 4, "not valid YAML"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    board: picow\n    port: /dev/x\n", 5,
     "boards[0].board: duplicate key 'board' (first on line 4)"),
    ("- just\n- a list\n", 1, "is array, not object"),
    ("rig: 2\nboards:\n  - {name: a, board: esp32, port: /dev/x}\n", 1, "rig: 2 is not 1"),
    ("name: x\nboards:\n  - {name: a, board: esp32, port: /dev/x}\n", 1, "'rig' is missing"),
    ("rig: 1\nboards: []\n", 2, "boards: [] should be non-empty"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    colour: red\n", 6,
     "boards[0].colour: unknown key 'colour'"),
    ("rig: 1\nboards:\n  - name: a\n    port: /dev/x\n", 3, "boards[0]: 'board' is missing"),
    ("rig: 1\nboards:\n  - name: 7\n    board: esp32\n    port: /dev/x\n", 3, "boards[0].name: 7 is integer, not string"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: ttyUSB0\n", 5,
     "boards[0].port: 'ttyUSB0' does not have the right form"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    kind: real\n", 6, "boards[0].kind: 'real' is not one of"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    power: relay\n", 6,
     "boards[0].power: 'relay' is not one of the accepted forms"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    power:\n      relay: r\n"
     "      channel: one\n", 8, "boards[0].power.channel: 'one' is string, not integer"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    power: {uhubctl: {hub: '1-1'}}\n", 6,
     "boards[0].power.uhubctl: 'port' is missing"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    ble: {address: C0:FF}\n", 6,
     "boards[0].ble.address: 'C0:FF' does not have the right form"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    ble:\n      address: C0:FF:EE:00:00:01\n"
     "      adapter: usb0\n", 8, "boards[0].ble.adapter: 'usb0' does not have the right form"),
    ("rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n    ble:\n      address: C0:FF:EE:00:00:01\n"
     "      drop: ''\n", 8, "boards[0].ble.drop: '' should be non-empty"),
    ("rig: 1\nrelays:\n  r:\n    port: /dev/r\n    channels: 40\nboards:\n  - {name: a, board: esp32, port: /dev/x}\n",
     5, "relays.r.channels: 40 is greater than the maximum of 16"),
])
def test_malformed_files_name_the_line_and_key(tmp_path, text, line, says):
    first = problems(tmp_path, text)[0]
    assert first.startswith(f"{tmp_path / 'rig.yaml'}:{line}: "), first
    assert says in first


RELAYED = """\
rig: 1
relays:
  relay-a: {port: /dev/relay, channels: 4}
boards:
  - name: esp32-a
    board: esp32
    port: /dev/ttyUSB0
    power: {relay: relay-a, channel: 1}
"""


@pytest.mark.parametrize("extra, line, says, fix", [
    ("  - name: esp32-a\n    board: esp32\n    port: /dev/ttyUSB1\n", 9,
     "boards[1].name: 'esp32-a' is already the name of boards[0] (line 5)", "its own name"),
    ("  - name: b\n    board: esp64\n    port: /dev/ttyUSB1\n", 10,
     "boards[1].board: unknown board type 'esp64'", "use one of: esp32,"),
    ("  - name: b\n    board: esp32\n    reset: dtr-rts\n", 9, "boards[1]: 'port' is missing", "/dev/serial/by-id"),
    ("  - name: b\n    board: esp32\n    port: /dev/ttyUSB1\n    power:\n      relay: relay-b\n      channel: 1\n",
     13, "boards[1].power.relay: there is no relay named 'relay-b'", "relay-a"),
    ("  - name: b\n    board: esp32\n    port: /dev/ttyUSB1\n    power: {relay: relay-a, channel: 9}\n", 12,
     "boards[1].power.channel: 9 is above relay-a's 4 channels", "from 1 to 4"),
    ("  - name: b\n    board: esp32\n    port: /dev/ttyUSB1\n    reset: {relay: relay-a, channel: 1}\n", 12,
     "boards[1].reset.channel: channel 1 of relay-a is already used by boards[0].power.channel (line 8)",
     "drives one thing"),
    ("  - name: b\n    board: esp32\n    port: /dev/ttyUSB0\n", 11,
     "boards[1].port: port /dev/ttyUSB0 is already used by boards[0].port (line 7)", "drives one thing"),
    ("  - name: b\n    board: esp32\n    port: /dev/relay\n", 11,
     "boards[1].port: port /dev/relay is already used by relays.relay-a.port", "drives one thing"),
    ("  - name: b\n    board: esp32\n    kind: virtual\n    port: /dev/ttyUSB1\n", 12,
     "boards[1].port: a virtual board's port comes from the virtual bench", "remove port:"),
    ("  - name: b\n    board: pico\n    kind: emulated\n    power: manual\n", 12,
     "boards[1].power: a emulated board's power comes from the virtual bench", "remove power:"),
    ("  - name: b\n    board: esp32\n    kind: emulated\n", 10,
     "boards[1].board: board 'esp32' cannot be emulated", "board: pico"),
    ("  - name: b\n    board: picow\n    kind: emulated\n", 10, "board 'picow' cannot be emulated", "kind: virtual"),
    ("  - name: b\n    board: rpi\n    kind: virtual\n", 10, "runs the agent under CPython", "kind: usb"),
    ("  - name: b\n    board: picow\n    port: /dev/ttyACM0\n    reset: dtr-rts\n", 12,
     "boards[1].reset: dtr-rts is the ESP auto-reset circuit; board 'picow' has none", "reset: repl"),
    ("  - name: b\n    board: pico\n    port: /dev/ttyACM0\n    ble: {address: 'C0:FF:EE:00:00:02'}\n", 12,
     "boards[1].ble: board 'pico' has no BLE radio", "remove ble:"),
    ("  - name: b\n    board: esp32\n    port: /dev/ttyUSB1\n    ble:\n      address: 'C0:FF:EE:00:00:02'\n"
     "      drop: 'hcitool ledc {handle}'\n", 14, "boards[1].ble.drop: not a command this rig can run: KeyError('handle')",
     "{address} and {adapter}"),
    ("  - name: b\n    board: esp32\n    port: /dev/ttyUSB1\n    ble:\n      address: 'C0:FF:EE:00:00:02'\n"
     "      drop: \"sh -c 'bluetoothctl disconnect {address}\"\n", 14,
     "boards[1].ble.drop: not a command this rig can run: ValueError('No closing quotation')", "quotes balanced"),
    ("  - name: b\n    board: pico\n    port: /dev/ttyACM0\n    power: {uhubctl: {hub: '1-1', port: 2}}\n"
     "  - name: c\n    board: pico\n    port: /dev/ttyACM1\n    power: {uhubctl: {hub: '1-1', port: 2}}\n", 16,
     "boards[2].power.uhubctl: port 2 of hub 1-1 is already used by boards[1].power.uhubctl (line 12)",
     "drives one thing"),
])
def test_rules_beyond_the_schema_name_the_line_and_the_fix(tmp_path, extra, line, says, fix):
    found = one_problem(tmp_path, RELAYED + extra)
    assert found.startswith(f"{tmp_path / 'rig.yaml'}:{line}: boards[") and says in found, found
    path = write(tmp_path, RELAYED + extra)
    with pytest.raises(RigError) as e:
        load_rig(path)
    assert fix in e.value.hint


def test_every_problem_is_listed_in_line_order(tmp_path):
    text = RELAYED + ("  - name: b\n    board: esp64\n    port: /dev/ttyUSB1\n"
                      "  - name: esp32-a\n    board: esp32\n    port: /dev/ttyUSB2\n")
    found = problems(tmp_path, text)
    assert [f.split(":")[1] for f in found] == ["10", "12"]


def test_the_example_rig_for_a_real_bench_loads():
    from edge_agent.paths import REPO

    rig = load_rig(REPO / "examples" / "rig-bench.yaml")
    kinds = [(b.board, b.kind) for b in rig.boards]
    assert kinds.count(("esp32", "usb")) == 2 and ("picow", "usb") in kinds
    assert all(b.power.method == "relay" for b in rig.boards)


def test_a_half_written_relay_channel_says_what_is_missing(tmp_path):
    found = one_problem(tmp_path, "rig: 1\nboards:\n  - name: a\n    board: esp32\n    port: /dev/x\n"
                                  "    reset: {relay: r}\n")
    assert found.endswith(":6: boards[0].reset: 'channel' is missing"), found
