"""Links that carry agent messages: the serial console, and BLE through bleak
(ble_backend chooses the stack bleak drives; bumble_bleak is the one on the
virtual air)."""
