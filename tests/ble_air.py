"""A small virtual air for the BLE backend's tests and bench, all Bumble.

One Bumble ``LocalLink`` carries three emulated controllers. One runs a Bumble
peripheral in this process (its host wired straight to its controller): a GATT
server with a 128-bit service whose characteristic reads, writes with and
without response and notifies, advertising its name and service data. A
beacon advertises the service UUID and manufacturer data (the emulated
controller answers a scan request with the advertising data again, never the
scan response data, so each advertiser carries its fields within one 31-byte
legacy advertisement). The host's controller is served on a unix socket
(Bumble's ``unix-server:`` transport), the way the virtual air serves
``air/host-<k>.hci``; a host reaches it with the spec ``unix:PATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

from bumble import hci
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from edge_hil.virtual.air import AirController

SERVICE = "6e1a0001-8f3c-4b7a-9d2e-5a0c3e7b1f00"
CHAR = "6e1a0002-8f3c-4b7a-9d2e-5a0c3e7b1f00"
CCCD = "00002902-0000-1000-8000-00805f9b34fb"
SETTING = "6e1a0003-8f3c-4b7a-9d2e-5a0c3e7b1f00"   # a descriptor of our own
NAME = "edge1"
SERVICE_DATA = b"\x01\x42\x00"
COMPANY, MANUFACTURER_DATA = 0xFFFF, b"edge"
PERIPHERAL_ADDRESS = "C0:11:22:33:44:55"   # random static (top bits 11)
BEACON_ADDRESS = "C0:11:22:33:44:66"
ADVERTISING_INTERVAL_MS = 20


def on_link(link: LocalLink, name: str, address: str) -> Device:
    """A Bumble device whose host is wired straight to an emulated controller."""
    controller = Controller(name, link=link)
    return Device(name=name, address=hci.Address(address), host=Host(controller, AsyncPipeSink(controller)))


class Peripheral:
    """A Bumble peripheral with one service; records what it receives."""

    def __init__(self, link: LocalLink):
        self.device = on_link(link, NAME, PERIPHERAL_ADDRESS)
        self.value = b"hello"
        self.writes: list[bytes] = []
        self.pdus: list[str] = []
        self.characteristic = Characteristic(
            CHAR,
            Characteristic.Properties.READ | Characteristic.Properties.WRITE
            | Characteristic.Properties.WRITE_WITHOUT_RESPONSE | Characteristic.Properties.NOTIFY,
            Characteristic.READABLE | Characteristic.WRITEABLE,
            CharacteristicValue(read=lambda _c: self.value, write=self._on_write),
            descriptors=[Descriptor(SETTING, Descriptor.READABLE | Descriptor.WRITEABLE, bytes(2))])
        self.device.add_service(Service(SERVICE, [self.characteristic]))
        server = self.device.gatt_server
        on_pdu = server.on_gatt_pdu

        def recording(bearer, pdu):
            self.pdus.append(pdu.name)
            on_pdu(bearer, pdu)
        server.on_gatt_pdu = recording
        self.device.advertising_data = bytes(AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, NAME.encode()),
            (AdvertisingData.SERVICE_DATA_128_BIT_UUID, UUID(SERVICE).to_bytes() + SERVICE_DATA),
        ]))
        self.connection: Connection | None = None
        self.device.on("connection", self._on_connection)

    def _on_write(self, _connection, value: bytes) -> None:
        self.writes.append(bytes(value))

    def _on_connection(self, connection: Connection) -> None:
        self.connection = connection
        connection.on("disconnection", lambda _reason: setattr(self, "connection", None))

    async def start(self) -> None:
        await self.device.power_on()
        await self.advertise()

    async def advertise(self) -> None:
        await self.device.start_advertising(auto_restart=True, advertising_interval_min=ADVERTISING_INTERVAL_MS,
                                            advertising_interval_max=ADVERTISING_INTERVAL_MS)


async def start_beacon(link: LocalLink) -> Device:
    """An advertiser of the service UUID and manufacturer data, not connected to."""
    beacon = on_link(link, "beacon", BEACON_ADDRESS)
    await beacon.power_on()
    await beacon.start_advertising(
        advertising_data=bytes(AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS, UUID(SERVICE).to_bytes()),
            (AdvertisingData.MANUFACTURER_SPECIFIC_DATA, COMPANY.to_bytes(2, "little") + MANUFACTURER_DATA),
        ])),
        advertising_interval_min=ADVERTISING_INTERVAL_MS, advertising_interval_max=ADVERTISING_INTERVAL_MS)
    return beacon


@contextlib.asynccontextmanager
async def virtual_air() -> AsyncIterator[tuple[Peripheral, str]]:
    """The peripheral (advertising), the beacon, and the transport spec of the
    host's controller."""
    folder = tempfile.mkdtemp(prefix="air-", dir="/tmp")   # a unix socket path is short
    link = LocalLink()
    socket = os.path.join(folder, "host-0.hci")
    served = await open_transport(f"unix-server:{socket}")
    try:
        AirController("host-0", link, host_source=served.source, host_sink=served.sink)
        peripheral = Peripheral(link)
        await peripheral.start()
        await start_beacon(link)
        yield peripheral, f"unix:{socket}"
    finally:
        await served.close()
        shutil.rmtree(folder, ignore_errors=True)
