# RP2040 (Pico W): the on-chip temperature sensor (ADC 4) and the watchdog.
from edgefw.port import Port


class Rp2(Port):
    name = "rp2"

    def mcu_temp(self):
        import machine
        v = machine.ADC(4).read_u16() * 3.3 / 65535
        return 27 - (v - 0.706) / 0.001721

    def watchdog(self, timeout_ms):
        if not timeout_ms:
            return None
        import machine
        return machine.WDT(timeout=min(timeout_ms, 8300))
