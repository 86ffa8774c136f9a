# MicroPython freeze manifest: the Edge Agent compiled into a custom firmware
# image, its bytecode and constants executed from flash, not copied into the
# heap (docs/firmware-build.md). Build from a MicroPython checkout with
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=$PWD/firmware/manifest.py
#   make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST=$PWD/firmware/manifest.py
# Paths here are relative to this file (the build runs it from its folder).

# What the board freezes without us (asyncio, and on the Pico W the network
# and Bluetooth helpers): the board's own manifest where it has one, else the
# port's default.
try:
    include("$(BOARD_DIR)/manifest.py")
except Exception:
    include("$(PORT_DIR)/boards/manifest.py")

# Every module of the agent but the CPython adapter (a Linux computer runs
# the sources). Default optimisation: tracebacks keep their line numbers,
# which a crash report needs (they cost flash, not heap). tests/firmware/test_firmware_build.py keeps this list whole.
package(
    "edgefw",
    files=[
        "__init__.py",
        "agent.py",
        "agent_selftest.py",
        "atomic.py",
        "bonds.py",
        "boot.py",
        "boot_build.py",
        "cbor.py",
        "cbor_put.py",
        "cbor_read.py",
        "cbor_tree.py",
        "ccm.py",
        "clock.py",
        "clock_start.py",
        "config.py",
        "cpace.py",
        "ed25519.py",
        "frame.py",
        "hkdf.py",
        "identity.py",
        "journal.py",
        "journal_open.py",
        "link_ble.py",
        "link_serial.py",
        "messages.py",
        "messages_pair.py",
        "messages_ota.py",
        "messages_write.py",
        "ota_apply.py",
        "ota_client.py",
        "ota_files.py",
        "ota_manifest.py",
        "ota_offer.py",
        "ota_partition.py",
        "ota_query.py",
        "ota_transfer.py",
        "outgoing.py",
        "pairing.py",
        "pairing_exchange.py",
        "port.py",
        "port_esp32.py",
        "port_rp2.py",
        "segments.py",
        "sensors.py",
        "sensors_build.py",
        "sensors_sim.py",
        "session.py",
        "slots.py",
        "sha512.py",
        "ticks.py",
        "uplink.py",
        "uplink_estimate.py",
        "uplink_start.py",
        "uplink_v1.py",
        "why.py",
        "x25519.py",
    ],
)
# main.py and stage0.py stay on the board's filesystem (`edge flash` writes
# them, OTA never does): MicroPython runs main.py at boot, and stage 0 picks
# the agent's slot (docs/protocol.md 7.7) before anything of edgefw is
# imported, so it cannot be part of the package.
