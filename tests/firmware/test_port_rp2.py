"""The RP2040 port's readings, under the real MicroPython with a stand-in ``machine``."""

from __future__ import annotations

import pytest

from tests.mpy import run

READ_TEMP = """
import sys
class machine:
    class ADC:
        def __init__(self, channel):
            assert channel == 4     # the on-chip temperature sensor
        def read_u16(self):
            return %d
sys.modules["machine"] = machine
from edgefw.port_rp2 import Rp2
print(Rp2().mcu_temp())
"""


def mcu_temp(raw: int) -> str:
    return run(READ_TEMP % raw, heap="pico").stdout.decode().strip()


@pytest.mark.parametrize(("raw", "celsius"), [(14020, 27.0), (14540, 11.8), (13000, 56.9)])
def test_the_temperature_follows_the_rp2040_sensor_formula(raw, celsius):
    # 27 - (V - 0.706) / 0.001721, V = raw * 3.3 / 65535 (RP2040 datasheet, 4.9.5)
    assert abs(float(mcu_temp(raw)) - celsius) < 0.1


@pytest.mark.parametrize("raw", [0, 1, 65535, 20000])
def test_a_reading_no_working_sensor_can_give_is_no_reading(raw):
    # The emulated RP2040 has no ADC and reads 0, which the formula turns into 437 C;
    # a broken or floating input reads near a rail. Outside the chip's rated range
    # (-40..125 C junction) it is not reported at all, rather than reported wrong.
    assert mcu_temp(raw) == "None"


def test_the_watchdog_is_stopped_by_clearing_its_enable_bit_through_the_clear_alias():
    # machine.WDT has no stop on rp2; the agent at the REPL must not leave it
    # armed (it would reset the board in the middle of `edge flash`).
    out = run("""
import sys
class Mem:
    def __init__(self):
        self.writes = []
    def __setitem__(self, addr, value):
        self.writes.append((addr, value))
class machine:
    mem32 = Mem()
sys.modules["machine"] = machine
from edgefw.port_rp2 import Rp2
Rp2().watchdog_stop()
print(machine.mem32.writes)
""", heap="pico").stdout.decode().strip()
    # WATCHDOG_BASE 0x40058000, CTRL at 0, atomic clear at +0x3000; ENABLE is bit 30.
    assert out == f"[({0x40058000 + 0x3000}, {1 << 30})]"


WATCHDOG_RESET = """
import sys
class Mem:
    def __getitem__(self, addr):
        assert addr == 0x40058008       # WATCHDOG.REASON (RP2040 datasheet 4.7)
        return %d
class machine:
    mem32 = Mem()
    WDT_RESET = 3
    def reset_cause():
        return machine.WDT_RESET
sys.modules["machine"] = machine
from edgefw.port_rp2 import Rp2
print(Rp2().watchdog_reset())
"""


@pytest.mark.parametrize(("reason", "hang"), [(1, True), (2, False), (0, False)])
def test_only_a_watchdog_that_expired_counts_as_a_hang_not_machine_reset(reason, hang):
    # machine.reset() on rp2 is a watchdog trigger, so machine.reset_cause() says
    # WDT_RESET after it too: an OTA switch or a rollback would count as a crash, and
    # with the agent's other resets take a Pico to safe mode. WATCHDOG.REASON tells
    # them apart: bit 0 TIMER (it expired: a hang), bit 1 FORCE (machine.reset()).
    assert run(WATCHDOG_RESET % reason, heap="pico").stdout.decode().strip() == str(hang)
