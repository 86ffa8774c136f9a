"""Links that carry agent messages: the serial console (BLE comes next)."""
