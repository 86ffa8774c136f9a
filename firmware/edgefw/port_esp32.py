# ESP32 family (ESP32, -S3, -C3): MCU temperature and the task watchdog.
from edgefw.port import Port


class Esp32(Port):
    name = "esp32"

    def mcu_temp(self):
        import esp32
        if hasattr(esp32, "mcu_temperature"):
            return esp32.mcu_temperature()
        return (esp32.raw_temperature() - 32) / 1.8

    def watchdog(self, timeout_ms):
        if not timeout_ms:
            return None
        import machine
        return machine.WDT(timeout=timeout_ms)
