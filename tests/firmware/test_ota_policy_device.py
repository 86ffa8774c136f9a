"""When a device applies a downloaded update (docs/protocol.md 7.10), through the agent's own
path: the board file's sensors built for the port (sensors_build), the readings the OTA client
takes from them (ota_client.start) and the board's policy (ota_apply.try_apply), under the real
MicroPython with the Pico's heap.

A condition names a sensor. The Pico's battery is simulated on the bench only (the board
file's ``virtual_sensors``): a real Pico, and the emulated one, which runs the rp2 port, has
no battery sensor, so ``battery_min_v`` binds virtual boards alone; a battery sensor that
exists but fails to read holds the switch and says so."""

from __future__ import annotations

import json

import pytest

from tests.mpy import BOARDS, run

APPLY = """
import json, sys
KIND = {kind!r}
BOARD = json.loads({board!r})

class machine:
    class ADC:
        # The RP2040's temperature sensor at 27 C (port_rp2.mcu_temp).
        def __init__(self, channel):
            pass
        def read_u16(self):
            return 14020
sys.modules["machine"] = machine

class Clock:
    boot = 1
    def uptime_ms(self):
        return 60000
    def epoch(self, boot):
        return None

class Agent:
    pass

from edgefw import sensors_build
if KIND == "rp2":
    from edgefw.port_rp2 import Rp2 as P
else:
    from edgefw.port import Unix as P
a = Agent()
a.port = P()
a.clock = Clock()
a.device_id = "pico-1"
a.links = []
a.sensors = sensors_build.build(BOARD, a.port, a.clock, a.device_id)
a.ota_setup = (BOARD["name"], sensors_build.ota(BOARD, a.port))  # as boot_build.py does
if KIND == "broken":
    def flat():
        raise OSError(5)
    for s in a.sensors:
        if s.name == "battery":
            s._read = flat

from edgefw import ota_client
ota_client.start(a)
c = a.ota
said = []
c.state = lambda comp, seq, state, **more: said.append((state, more.get("reason")))
c.applied = lambda now_ms: said.append(("reset", None))

class Target:
    def apply(self, seq, digest, version):
        said.append(("switch", seq))

c.waiting = ("agent", 7, "00", "1.3.0", Target(), None)
c.run("ota_apply", "try_apply", 0)
print(json.dumps(said))
"""


def apply(kind: str, board: dict | None = None) -> list:
    """What the OTA client did with a downloaded agent waiting to be applied."""
    board = board or json.loads((BOARDS / "pico.json").read_text())
    out = run(APPLY.format(kind=kind, board=json.dumps(board)), heap="pico").stdout.decode()
    return [tuple(x) for x in json.loads(out.strip().splitlines()[-1])]


def test_a_pico_with_no_battery_sensor_applies_an_update():
    # The rp2 port (a real or an emulated Pico): the Pico has no battery gauge, and the
    # board file's battery is a virtual sensor; before, the policy read "battery None V".
    assert apply("rp2") == [("switch", 7), ("applying", None), ("reset", None)]


def test_a_virtual_pico_applies_when_its_simulated_battery_is_above_the_minimum():
    # The Unix port: the simulated battery (3.9-4.15 V fresh) is above 3.6 V.
    assert apply("unix") == [("switch", 7), ("applying", None), ("reset", None)]


def test_a_battery_sensor_that_fails_to_read_holds_the_switch_and_says_why():
    # A virtual Pico whose battery read raises: no "battery None V", the error itself.
    said = apply("broken")
    assert said == [("installed", "battery unreadable: OSError: [Errno 5] EIO")], said


def test_a_condition_on_a_sensor_a_real_board_has_binds_it():
    # `parked` among the board's real sensors (a vehicle unit): it must read true.
    board = json.loads((BOARDS / "pico.json").read_text())
    board["ota"]["apply"]["parked"] = True
    board["sensors"].append({"name": "parked", "kind": "uptime", "unit": ""})
    said = apply("rp2", board)
    assert said == [("installed", "not parked")], said


def test_a_condition_on_a_sensor_the_board_file_lists_nowhere_holds_the_switch():
    # A board file's mistake (agent/boards.py refuses it on the host): the device waits and names it.
    board = json.loads((BOARDS / "pico.json").read_text())
    board["virtual_sensors"] = [s for s in board["virtual_sensors"] if s["name"] != "battery"]
    assert apply("rp2", board) == [("installed", "no battery sensor on this board")]
