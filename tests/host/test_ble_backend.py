"""The bleak backend on Bumble, through plain bleak, against a real Bumble peripheral.

One Bumble ``LocalLink`` carries two emulated controllers. One runs a Bumble
peripheral in this process (its host wired straight to its controller): a GATT
server with a 128-bit service whose characteristic reads, writes with and
without response and notifies, advertising its name and service data. A
third controller advertises the service UUID and manufacturer data (the
emulated controller answers a scan request with the advertising data again,
never the scan response data, so each advertiser carries its fields within one
31-byte legacy advertisement). The host's controller is served on a unix socket
(Bumble's ``unix-server:`` transport), the way the virtual air serves
``air/host-<k>.hci``; the backend reaches it through ``EDGE_BLE_HCI=unix:PATH``.
Everything below goes through ``BleakScanner`` / ``BleakClient`` only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time

import pytest
from bleak import BleakClient, BleakScanner
from bumble import hci
from bumble.att import ATT_Error
from bumble.controller import Controller
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Descriptor, Service
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from edge_agent.links.ble_backend import client_kwargs, scanner_kwargs

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


@pytest.fixture
async def air(monkeypatch):
    """A peripheral and a host controller served on a unix socket; the
    environment selects the Bumble backend on that socket."""
    folder = tempfile.mkdtemp(prefix="air-", dir="/tmp")   # a unix socket path is short
    link = LocalLink()
    socket = os.path.join(folder, "host-0.hci")
    served = await open_transport(f"unix-server:{socket}")
    Controller("host-0", host_source=served.source, host_sink=served.sink, link=link)
    peripheral = Peripheral(link)
    await peripheral.start()
    await start_beacon(link)
    monkeypatch.setenv("EDGE_BLE", "sim")
    monkeypatch.setenv("EDGE_BLE_HCI", f"unix:{socket}")
    yield peripheral
    await served.close()
    shutil.rmtree(folder, ignore_errors=True)


async def discover(timeout: float = 0.3):
    return await BleakScanner.discover(timeout, return_adv=True, **scanner_kwargs())


def test_without_edge_ble_bleak_picks_its_platform_backend(monkeypatch):
    monkeypatch.delenv("EDGE_BLE", raising=False)
    assert scanner_kwargs() == {} and client_kwargs() == {}


def test_edge_ble_sim_selects_the_bumble_backend_and_an_unknown_value_names_the_fix(monkeypatch):
    from edge_agent.errors import BadInput
    from edge_agent.links.bumble_bleak import BumbleClient, BumbleScanner
    monkeypatch.setenv("EDGE_BLE", "sim")
    monkeypatch.setenv("EDGE_BLE_HCI", "unix:/nowhere")
    assert scanner_kwargs() == {"backend": BumbleScanner} and client_kwargs() == {"backend": BumbleClient}
    monkeypatch.delenv("EDGE_BLE_HCI")
    with pytest.raises(BadInput, match="EDGE_BLE_HCI"):
        client_kwargs()
    monkeypatch.setenv("EDGE_BLE", "bluetooth")
    with pytest.raises(BadInput) as e:
        scanner_kwargs()
    assert "unset EDGE_BLE" in e.value.hint


async def test_a_scan_returns_name_service_data_service_uuids_manufacturer_data_and_rssi(air):
    found = await discover()
    assert set(found) == {PERIPHERAL_ADDRESS, BEACON_ADDRESS}
    device, adv = found[PERIPHERAL_ADDRESS]
    assert device.address == PERIPHERAL_ADDRESS and device.name == NAME
    assert adv.local_name == NAME and adv.service_data == {SERVICE: SERVICE_DATA}
    assert adv.service_uuids == [] and adv.manufacturer_data == {} and adv.tx_power is None
    _, beacon = found[BEACON_ADDRESS]
    assert beacon.local_name is None and beacon.service_data == {}
    assert beacon.service_uuids == [SERVICE] and beacon.manufacturer_data == {COMPANY: MANUFACTURER_DATA}
    assert isinstance(adv.rssi, int) and -127 <= adv.rssi <= 20


async def test_a_scan_filtered_on_a_service_reports_only_its_advertisers(air):
    found = await BleakScanner.discover(0.3, return_adv=True, service_uuids=[SERVICE.upper()], **scanner_kwargs())
    assert set(found) == {BEACON_ADDRESS}
    found = await BleakScanner.discover(0.3, return_adv=True, service_uuids=[CCCD], **scanner_kwargs())
    assert found == {}


async def test_connect_gives_services_mtu_read_writes_and_ordered_notifications(air):
    device, _ = (await discover())[PERIPHERAL_ADDRESS]
    async with BleakClient(device, **client_kwargs()) as client:
        assert client.is_connected
        char = client.services.get_characteristic(CHAR)
        assert char is not None and char.service_uuid == SERVICE
        assert set(char.properties) == {"read", "write", "write-without-response", "notify"}
        assert sorted(d.uuid for d in char.descriptors) == sorted([CCCD, SETTING])
        assert client.mtu_size == air.connection.att_mtu > 23
        assert char.max_write_without_response_size == client.mtu_size - 3

        assert await client.read_gatt_char(CHAR) == b"hello"
        air.pdus.clear()
        await client.write_gatt_char(CHAR, b"with", response=True)
        await client.write_gatt_char(CHAR, b"without", response=False)
        await asyncio.sleep(0.05)
        assert air.writes == [b"with", b"without"]
        assert air.pdus == ["ATT_WRITE_REQUEST", "ATT_WRITE_COMMAND"]

        received: list[bytes] = []
        await client.start_notify(CHAR, lambda _c, data: received.append(bytes(data)))
        cccd = char.get_descriptor(CCCD)
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x01\x00"
        for i in range(50):
            await air.device.notify_subscribers(air.characteristic, i.to_bytes(2, "big"))
        for _ in range(100):
            if len(received) == 50:
                break
            await asyncio.sleep(0.01)
        assert received == [i.to_bytes(2, "big") for i in range(50)]
        await client.stop_notify(CHAR)
        assert await client.read_gatt_descriptor(cccd.handle) == b"\x00\x00"
    assert not client.is_connected


async def test_a_descriptor_reads_back_what_was_written(air):
    async with BleakClient(PERIPHERAL_ADDRESS, **client_kwargs()) as client:
        setting = client.services.get_characteristic(CHAR).get_descriptor(SETTING)
        assert await client.read_gatt_descriptor(setting.handle) == bytes(2)
        await client.write_gatt_descriptor(setting.handle, b"\x07\x00")
        assert await client.read_gatt_descriptor(setting.handle) == b"\x07\x00"


async def test_an_att_error_from_the_peripheral_is_bleaks_protocol_error(air):
    from bleak.exc import BleakGATTProtocolError, BleakGATTProtocolErrorCode

    def refuse(_connection):
        raise ATT_Error(BleakGATTProtocolErrorCode.READ_NOT_PERMITTED)
    air.characteristic.value = CharacteristicValue(read=refuse)
    async with BleakClient(PERIPHERAL_ADDRESS, **client_kwargs()) as client:
        with pytest.raises(BleakGATTProtocolError) as e:
            await client.read_gatt_char(CHAR)
        assert e.value.code == BleakGATTProtocolErrorCode.READ_NOT_PERMITTED


async def test_a_bare_address_string_connects_after_a_scan_finds_its_type(air):
    async with BleakClient(PERIPHERAL_ADDRESS, timeout=5, **client_kwargs()) as client:
        assert await client.read_gatt_char(CHAR) == b"hello"


async def test_the_disconnected_callback_runs_when_the_peripheral_disconnects_and_a_second_connect_works(air):
    gone = asyncio.Event()
    client = BleakClient(PERIPHERAL_ADDRESS, disconnected_callback=lambda _c: gone.set(), **client_kwargs())
    await client.connect()
    await air.connection.disconnect()
    await asyncio.wait_for(gone.wait(), 5)
    assert not client.is_connected
    for _ in range(100):          # advertising restarts after the disconnection
        if air.device.is_advertising:
            break
        await asyncio.sleep(0.01)
    await client.connect()
    try:
        assert client.is_connected and await client.read_gatt_char(CHAR) == b"hello"
    finally:
        await client.disconnect()


async def test_pairing_is_left_to_the_application_and_says_so(air):
    async with BleakClient(PERIPHERAL_ADDRESS, **client_kwargs()) as client:
        with pytest.raises(NotImplementedError, match="edge pair"):
            await client.pair()


async def test_connecting_to_an_address_nobody_advertises_fails_within_the_timeout(air):
    from bleak.exc import BleakDeviceNotFoundError
    client = BleakClient("C0:00:00:00:00:01", timeout=0.5, **client_kwargs())
    started = time.monotonic()
    with pytest.raises(BleakDeviceNotFoundError):
        await client.connect()
    assert time.monotonic() - started < 3


async def test_throughput_and_scan_to_connect_time_on_the_emulated_link(air, capsys):
    """Measured, not asserted: the emulated link has no airtime, so this is
    CPU cost of the two stacks and says nothing about a radio."""
    started = time.perf_counter()
    found = await BleakScanner.find_device_by_address(PERIPHERAL_ADDRESS, timeout=5, **scanner_kwargs())
    assert found is not None
    async with BleakClient(found, **client_kwargs()) as client:
        connected = time.perf_counter() - started
        count, payload = 2000, bytes(client.mtu_size - 3)
        done = asyncio.Event()
        seen = [0]

        def on_data(_c, _data):
            seen[0] += 1
            if seen[0] == count:
                done.set()
        await client.start_notify(CHAR, on_data)
        started = time.perf_counter()
        for _ in range(count):
            await air.device.notify_subscribers(air.characteristic, payload)
        await asyncio.wait_for(done.wait(), 30)
        elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nemulated link: scan+connect {connected * 1000:.0f} ms; {count} notifications of "
              f"{len(payload)} B in {elapsed:.2f} s = {count / elapsed:.0f}/s, "
              f"{count * len(payload) / elapsed / 1e6:.2f} MB/s payload")
