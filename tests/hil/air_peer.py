"""A Bumble host in its own OS process, attached to one controller of the virtual air (test helper).

    python air_peer.py peripheral SOCKET ADDRESS   # advertises a GATT service, says what happens
    python air_peer.py central SOCKET TARGET [--reset] [--hold]  # scans, connects, reads and writes

Each prints one line per event on stdout (``advertising``, ``connected``,
``seen <adv hex>``, ``read <hex>``, ...), flushed, so a test in another
process follows it. A central with ``--reset`` then sends HCI_Reset with its
link up; with ``--hold`` it stays attached until killed.
"""

from __future__ import annotations

import asyncio
import sys

from bumble import hci
from bumble.device import Device, Peer
from bumble.gatt import Characteristic, Service
from bumble.transport import open_transport

SERVICE = "9b3c0001-5d6e-4c1a-9a57-1f0e2d3c4b5a"
VALUE = "9b3c0002-5d6e-4c1a-9a57-1f0e2d3c4b5a"
# Flags (LE general discoverable, no BR/EDR), complete local name "edge-test",
# manufacturer data (company 0xFFFF, test) 0xED 0x6E.
ADV = bytes([2, 0x01, 0x06, 10, 0x09]) + b"edge-test" + bytes([5, 0xFF, 0xFF, 0xFF, 0xED, 0x6E])


def say(*words) -> None:
    print(*words, flush=True)


async def peripheral(spec: str, address: str) -> None:
    async with await open_transport(spec) as t:
        device = Device.with_hci("edge-test", hci.Address(address), t.source, t.sink)
        value = Characteristic(VALUE, Characteristic.Properties.READ | Characteristic.Properties.WRITE,
                               Characteristic.READABLE | Characteristic.WRITEABLE, b"hello")
        device.add_service(Service(SERVICE, [value]))

        def on_connection(connection) -> None:
            say("connected", connection.peer_address)
            connection.on("disconnection", lambda reason: say("disconnected", reason))

        device.on("connection", on_connection)
        await device.power_on()
        await device.start_advertising(advertising_data=ADV, auto_restart=True)
        say("advertising")
        await asyncio.Event().wait()


async def central(spec: str, target: str, hold: bool, reset: bool) -> None:
    async with await open_transport(spec) as t:
        device = Device.with_hci("edge-host", hci.Address.ANY_RANDOM, t.source, t.sink)
        await device.power_on()
        seen = asyncio.get_running_loop().create_future()

        def on_advertisement(adv) -> None:
            if str(adv.address) == target and not seen.done():
                seen.set_result(adv)

        device.on("advertisement", on_advertisement)
        await device.start_scanning()
        adv = await seen
        await device.stop_scanning()
        say("seen", adv.data_bytes.hex())
        connection = await device.connect(hci.Address(target), timeout=5)
        say("connected")
        peer = Peer(connection)
        await peer.discover_services()
        services = peer.get_services_by_uuid(SERVICE)
        say("services", len(services))
        await services[0].discover_characteristics()
        char = services[0].get_characteristics_by_uuid(VALUE)[0]
        say("read", (await char.read_value()).hex())
        await char.write_value(b"edge", with_response=True)
        say("read", (await char.read_value()).hex())
        if reset:       # as a host that restarts and resets its controller, link still up
            await device.host.send_sync_command(hci.HCI_Reset_Command())
            say("reset")
        if hold:
            say("holding")
            await asyncio.Event().wait()
        await connection.disconnect()
        say("done")


def main() -> None:
    role, spec, address = sys.argv[1], "unix:" + sys.argv[2], sys.argv[3]
    if role == "peripheral":
        asyncio.run(peripheral(spec, address))
    else:
        asyncio.run(central(spec, address, "--hold" in sys.argv, "--reset" in sys.argv))


if __name__ == "__main__":
    main()
