# RP2040 (Pico, Pico W): the on-chip temperature sensor (ADC 4) and the watchdog
# (arming, stopping it, and whether it reset the chip).
from edgefw.port import Port


class Rp2(Port):
    name = "rp2"

    def mcu_temp(self):
        # RP2040 datasheet 4.9.5: 0.706 V at 27 C, -1.721 mV per degree.
        # Outside the chip's rated junction range (-40..125 C) the figure is
        # not a temperature but a sensor that does not work (the emulated
        # RP2040 has no ADC and reads 0: 437 C; a pin near a rail reads
        # similar nonsense): None, no reading, rather than a wrong one.
        import machine
        v = machine.ADC(4).read_u16() * 3.3 / 65535
        t = 27 - (v - 0.706) / 0.001721
        return t if -40 <= t <= 125 else None

    def watchdog(self, timeout_ms):
        if not timeout_ms:
            return None
        import machine
        return machine.WDT(timeout=min(timeout_ms, 8300))

    def watchdog_reset(self):
        # Only a watchdog that expired (a hang) is a crash. machine.reset() on
        # rp2 is a watchdog trigger, and machine.reset_cause() says WDT_RESET
        # after it too: the OTA switch, a rollback and the reset after a crash
        # would each count one more crash. WATCHDOG.REASON (0x40058008; RP2040
        # datasheet 4.7) tells them apart: bit 0 TIMER, bit 1 FORCE; both zero
        # after a power-on or RUN-pin reset.
        import machine
        return bool(machine.mem32[0x40058008] & 1)

    def watchdog_stop(self):
        # machine.WDT cannot be stopped, the chip's watchdog can: clear
        # CTRL.ENABLE (bit 30) through the register's atomic-clear alias
        # (WATCHDOG_BASE 0x40058000 + 0x3000; RP2040 datasheet 4.7, 2.1.2).
        import machine
        machine.mem32[0x4005B000] = 1 << 30
