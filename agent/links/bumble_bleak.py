"""A bleak backend on Bumble: host code stays plain bleak, the stack is Bumble.

:class:`BumbleScanner` and :class:`BumbleClient` implement bleak's
``BaseBleakScanner`` / ``BaseBleakClient`` on a Bumble host that talks HCI to
one controller through a Bumble transport (``EDGE_BLE_HCI``, or the ``hci=``
keyword of ``BleakScanner`` / ``BleakClient``). On the virtual air that
controller is an emulated one on a shared ``LocalLink``; any transport Bumble
opens works the same way (a USB dongle too).

Rules this module keeps:

- One Bumble host per controller and event loop: a controller answers one
  host, so the scanner and every client of a process share it
  (:class:`_Stack`). It opens on first use and closes when the last user lets
  go, so no Bumble object outlives the loop it was created on.
- Addresses are bleak's plain ``AA:BB:CC:DD:EE:FF`` strings. Bumble reads such
  a string as a random address, so the type seen in advertisements is kept
  beside it and a client given a bare string uses it (or scans for it).
- Pairing is not done by the link: the application pairs with its own PAKE
  over GATT, so ``pair``/``unpair`` say so instead of pretending.

Only bumble and bleak are imported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any, Callable

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt_client import CharacteristicProxy
from bumble.transport import open_transport

log = logging.getLogger("edge.ble.bumble")

TRANSPORT_ENV = "EDGE_BLE_HCI"
# The largest ATT MTU a central offers (BlueZ offers the same); the peripheral
# answers with its own limit and the smaller one applies. ``mtu=`` of
# ``BleakClient`` (or EDGE_BLE_MTU) offers another, from 23 (the default MTU:
# no larger one) to 517, to measure the link at a given MTU.
CENTRAL_MTU = 517
MTU_ENV = "EDGE_BLE_MTU"
# Reset and setup of the host take a few milliseconds on an emulated controller.
POWER_ON_TIMEOUT = 10.0

# AD types read into bleak's AdvertisementData, with the size of the UUIDs
# each carries (Core Supplement Part A 1.1 and 1.11).
_AD = core.AdvertisingData
_UUID_LISTS = {
    _AD.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2, _AD.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    _AD.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4, _AD.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    _AD.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16, _AD.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA = {_AD.SERVICE_DATA_16_BIT_UUID: 2, _AD.SERVICE_DATA_32_BIT_UUID: 4,
                 _AD.SERVICE_DATA_128_BIT_UUID: 16}
_NAMES = (_AD.COMPLETE_LOCAL_NAME, _AD.SHORTENED_LOCAL_NAME)

# Characteristic property bits, in bleak's names (Core spec Vol 3 Part G 3.3.1.1).
_PROPERTIES = (
    (0x01, "broadcast"), (0x02, "read"), (0x04, "write-without-response"), (0x08, "write"),
    (0x10, "notify"), (0x20, "indicate"), (0x40, "authenticated-signed-writes"),
    (0x80, "extended-properties"),
)

# The address type last seen for each address string, across stacks and loops
# (plain data: it binds to no loop).
_address_types: dict[str, hci.Address] = {}


def bleak_uuid(u: core.UUID) -> str:
    """A Bumble UUID in bleak's form: 128-bit, lower case, with dashes."""
    return str(uuid.UUID(bytes=bytes(reversed(u.to_bytes(force_128=True)))))


def advertisement_data(adv: Advertisement) -> AdvertisementData:
    """Bleak's view of one (merged) Bumble advertisement."""
    name = None
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    services: list[str] = []
    tx_power = None
    for ad_type, data in adv.data.ad_structures:
        if ad_type in _NAMES:
            # A complete name wins over a shortened one, whatever their order.
            if name is None or ad_type == _AD.COMPLETE_LOCAL_NAME:
                name = data.decode("utf-8", "replace")
        elif ad_type in _UUID_LISTS:
            size = _UUID_LISTS[ad_type]
            for at in range(0, len(data) - size + 1, size):
                if (s := bleak_uuid(core.UUID.from_bytes(data[at:at + size]))) not in services:
                    services.append(s)
        elif ad_type in _SERVICE_DATA and len(data) >= _SERVICE_DATA[ad_type]:
            size = _SERVICE_DATA[ad_type]
            service_data[bleak_uuid(core.UUID.from_bytes(data[:size]))] = bytes(data[size:])
        elif ad_type == _AD.MANUFACTURER_SPECIFIC_DATA and len(data) >= 2:
            manufacturer[int.from_bytes(data[:2], "little")] = bytes(data[2:])
        elif ad_type == _AD.TX_POWER_LEVEL and data:
            tx_power = int.from_bytes(data[:1], "little", signed=True)
    return AdvertisementData(local_name=name, manufacturer_data=manufacturer,
                             service_data=service_data, service_uuids=services,
                             tx_power=tx_power, rssi=adv.rssi, platform_data=(adv,))


def _plain(address: hci.Address) -> str:
    return address.to_string(False)


def _central_mtu(kwargs: dict[str, Any]) -> int:
    value = kwargs.get("mtu") or os.environ.get(MTU_ENV, "").strip() or CENTRAL_MTU
    try:
        mtu = int(value)
    except ValueError:
        mtu = 0
    if not att.ATT_DEFAULT_MTU <= mtu <= CENTRAL_MTU:
        raise BleakError(f"the ATT MTU to offer must be {att.ATT_DEFAULT_MTU} to {CENTRAL_MTU}, not {value!r} "
                         f"(mtu= or {MTU_ENV})")
    return mtu


def _transport_spec(kwargs: dict[str, Any]) -> str:
    spec = kwargs.get("hci") or os.environ.get(TRANSPORT_ENV, "").strip()
    if not spec:
        raise BleakError(f"the Bumble backend needs an HCI transport: set {TRANSPORT_ENV} "
                         "(e.g. unix:<rundir>/air/host-0.hci) or pass hci=<spec>")
    return spec


class _Stack:
    """One Bumble host on one controller, shared within one event loop.

    Reference-counted: :meth:`acquire` opens the transport and powers the host
    on for the first user; :meth:`release` by the last user closes it.
    """

    _open: dict[tuple[asyncio.AbstractEventLoop, str], _Stack] = {}

    def __init__(self, spec: str, loop: asyncio.AbstractEventLoop):
        self.spec = spec
        self.loop = loop
        self.users = 0
        self.device: Device | None = None
        self._transport: Any = None
        self._ready: asyncio.Task[None] = loop.create_task(self._start())

    @classmethod
    async def acquire(cls, spec: str) -> _Stack:
        loop = asyncio.get_running_loop()
        stack = cls._open.get((loop, spec))
        if stack is None:
            stack = cls._open[(loop, spec)] = cls(spec, loop)
        stack.users += 1
        try:
            await asyncio.shield(stack._ready)
        except BaseException:
            await stack.release()
            raise
        return stack

    async def _start(self) -> None:
        try:
            self._transport = await open_transport(self.spec)
        except Exception as e:
            raise BleakError(f"cannot open the HCI transport {self.spec!r}: {e}") from e
        # A random static address per host process; the controller's public
        # address (if any) is not used as our own.
        device = Device.with_hci("edge-host", hci.Address.generate_static_address(),
                                 self._transport.source, self._transport.sink)
        try:
            await asyncio.wait_for(device.power_on(), POWER_ON_TIMEOUT)
        except (asyncio.TimeoutError, core.BaseBumbleError) as e:
            await self._transport.close()
            self._transport = None
            raise BleakError(f"the controller behind {self.spec!r} did not answer the host's reset "
                             f"({e or 'no reply'}): is the virtual air up (edge sim up)?") from e
        self.device = device

    async def release(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        if self._open.get((self.loop, self.spec)) is self:
            del self._open[(self.loop, self.spec)]
        if not self._ready.done():
            self._ready.cancel()
        if self._transport is not None:
            await self._transport.close()
            self._transport = None
        self.device = None


class BumbleScanner(BaseBleakScanner):
    """Scans through the shared Bumble host and reports every advertisement
    to bleak (Bumble's host merges a scan response into its advertisement)."""

    def __init__(self, detection_callback: AdvertisementDataCallback | None,
                 service_uuids: list[str] | None, scanning_mode: str = "active", **kwargs: Any):
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode != "passive"
        self._spec = _transport_spec(kwargs)
        self._stack: _Stack | None = None

    async def start(self) -> None:
        if self._stack is not None:
            raise BleakError("this scanner is already scanning")
        self.seen_devices = {}
        stack = await _Stack.acquire(self._spec)
        assert stack.device is not None
        stack.device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        try:
            await stack.device.start_scanning(active=self._active, filter_duplicates=False)
        except BaseException:
            stack.device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
            await stack.release()
            raise
        self._stack = stack

    async def stop(self) -> None:
        stack, self._stack = self._stack, None
        if stack is None or stack.device is None:
            return
        stack.device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        try:
            await stack.device.stop_scanning()
        finally:
            await stack.release()

    def _on_advertisement(self, adv: Advertisement) -> None:
        _address_types[_plain(adv.address)] = adv.address
        data = advertisement_data(adv)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        key = str(adv.address)
        previous = self.seen_devices.get(key)
        if previous is not None and data.local_name is None:
            # A later advertisement without the name keeps the one seen before.
            data = data._replace(local_name=previous[1].local_name)
        device = self.create_or_update_device(key, _plain(adv.address), data.local_name, adv.address, data)
        self.call_detection_callbacks(device, data)


class BumbleClient(BaseBleakClient):
    """A GATT client on a Bumble connection, behind bleak's client interface."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None = None,
                 timeout: float = 10.0, **kwargs: Any):
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback,
                         timeout=timeout, **kwargs)
        self._spec = _transport_spec(kwargs)
        self._mtu = _central_mtu(kwargs)
        self._target: hci.Address | None = None
        self._name: str | None = None
        if isinstance(address_or_ble_device, BLEDevice):
            details = address_or_ble_device.details
            if isinstance(details, hci.Address):
                self._target = details
            self._name = address_or_ble_device.name
        self._stack: _Stack | None = None
        self._connection: Connection | None = None
        self._peer: Peer | None = None
        self._subscriptions: dict[int, Callable[[bytes], None]] = {}
        self._releasing: asyncio.Future[None] | None = None

    # -- connection -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        if self._connection is None:
            raise BleakError("not connected")
        return self._connection.att_mtu

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        if pair:
            log.info("pair=True ignored: the Bumble backend does not pair at the link layer")
        if self._connection is not None:
            return
        stack = self._stack = await _Stack.acquire(self._spec)
        try:
            target = self._target or await self._resolve(stack)
            assert stack.device is not None
            # Bumble's own timeout cancels the pending connection in the
            # controller; ours, a little later, guards against Device.connect
            # waiting forever on a stale emulated link (FACTS).
            connection = await asyncio.wait_for(
                stack.device.connect(target, timeout=self._timeout), self._timeout + 2)
            connection.on(Connection.EVENT_DISCONNECTION, self._on_disconnection)
            self._connection, self._peer = connection, Peer(connection)
            await self._peer.request_mtu(self._mtu)
            self.services = await self._discover(self._peer)
        except (asyncio.TimeoutError, core.TimeoutError):
            await self._abandon()
            # bleak's platform backends raise TimeoutError for a connect timeout.
            raise TimeoutError(f"{self.address}: no connection within {self._timeout:g} s "
                               "(out of range, or the peripheral stopped advertising)") from None
        except core.BaseBumbleError as e:
            await self._abandon()
            raise BleakError(f"{self.address}: connection failed: {e}") from e
        except BaseException:
            await self._abandon()
            raise

    async def _resolve(self, stack: _Stack) -> hci.Address:
        """The address with its type: given with a /P suffix, seen in an
        advertisement, or found by a scan of at most the connect timeout."""
        if self.address.upper().endswith("/P"):
            return hci.Address(self.address)
        key = self.address.upper()
        if key in _address_types:
            return _address_types[key]
        found = asyncio.get_running_loop().create_future()

        def on_advertisement(adv: Advertisement) -> None:
            _address_types[_plain(adv.address)] = adv.address
            if _plain(adv.address) == key and not found.done():
                found.set_result(adv.address)

        assert stack.device is not None
        stack.device.on(Device.EVENT_ADVERTISEMENT, on_advertisement)
        scanning = not stack.device.is_scanning
        try:
            if scanning:
                await stack.device.start_scanning()
            return await asyncio.wait_for(found, self._timeout)
        except asyncio.TimeoutError:
            raise BleakDeviceNotFoundError(self.address, f"{self.address}: not advertising "
                                           f"(no advertisement within {self._timeout:g} s)") from None
        finally:
            stack.device.remove_listener(Device.EVENT_ADVERTISEMENT, on_advertisement)
            if scanning and stack.device.is_scanning:
                await stack.device.stop_scanning()

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        connection = peer.connection

        def max_write_without_response() -> int:
            return connection.att_mtu - 3

        for service in await peer.discover_services():
            bleak_service = BleakGATTService(service, service.handle, bleak_uuid(service.uuid))
            collection.add_service(bleak_service)
            for characteristic in await peer.discover_characteristics(service=service):
                properties = [name for bit, name in _PROPERTIES if characteristic.properties & bit]
                bleak_char = BleakGATTCharacteristic(
                    characteristic, characteristic.handle, bleak_uuid(characteristic.uuid),
                    properties, max_write_without_response, bleak_service)  # type: ignore[arg-type]
                collection.add_characteristic(bleak_char)
                for descriptor in await peer.discover_descriptors(characteristic=characteristic):
                    collection.add_descriptor(BleakGATTDescriptor(
                        descriptor, descriptor.handle, bleak_uuid(descriptor.type), bleak_char))
        return collection

    def _on_disconnection(self, reason: int) -> None:
        self._connection = self._peer = None
        self._subscriptions.clear()
        self._releasing = asyncio.ensure_future(self._release_stack())
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def _release_stack(self) -> None:
        """Let go of the shared stack, once per connect."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.release()

    async def _abandon(self) -> None:
        """Undo a connect that failed part way."""
        connection, self._connection, self._peer = self._connection, None, None
        if connection is not None:
            connection.remove_listener(Connection.EVENT_DISCONNECTION, self._on_disconnection)
            try:
                await connection.disconnect()
            except core.BaseBumbleError as e:
                log.debug("disconnect of %s after a failed connect: %s", self.address, e)
        await self._release_stack()

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_disconnection(_reason: int) -> None:
            if not disconnected.done():
                disconnected.set_result(None)
        connection.once(Connection.EVENT_DISCONNECTION, on_disconnection)
        try:
            await connection.disconnect()
        except core.BaseBumbleError as e:
            # Already going away (the peer disconnected first).
            log.debug("disconnect of %s: %s", self.address, e)
        await asyncio.wait_for(disconnected, self._timeout)
        if self._releasing is not None:
            await self._releasing

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "the Bumble backend does not pair at the link layer: Edge Agent pairs over GATT "
            "with the setup code (PAKE), so use the application's pairing (edge pair)")

    async def unpair(self) -> None:
        raise NotImplementedError(
            "the Bumble backend keeps no link-layer bond: unpair through the application (edge devices unpair)")

    # -- attribute I/O ----------------------------------------------------

    def _connected_peer(self) -> Peer:
        if self._peer is None:
            raise BleakError(f"{self.address}: not connected")
        return self._peer

    async def _att(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except att.ATT_Error as e:
            # The peer answered with an ATT error: bleak's own exception, so
            # host code reads the code the same way on every backend.
            raise BleakGATTProtocolError(e.error_code) from e
        except core.BaseBumbleError as e:
            raise BleakError(f"{self.address}: {what} failed: {e}") from e

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *,
                             use_cached: bool = False, **kwargs: Any) -> bytearray:
        peer = self._connected_peer()
        return bytearray(await self._att(f"read of {characteristic.uuid}", peer.read_value(characteristic.handle)))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *,
                                   use_cached: bool = False, **kwargs: Any) -> bytearray:
        peer = self._connected_peer()
        return bytearray(await self._att(f"read of descriptor {descriptor.handle}",
                                         peer.read_value(descriptor.handle)))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any,
                              response: bool) -> None:
        peer = self._connected_peer()
        await self._att(f"write to {characteristic.uuid}",
                        peer.write_value(characteristic.handle, bytes(data), with_response=response))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        peer = self._connected_peer()
        await self._att(f"write to descriptor {descriptor.handle}",
                        peer.write_value(descriptor.handle, bytes(data), with_response=True))

    async def start_notify(self, characteristic: BleakGATTCharacteristic,
                           callback: NotifyCallback, **kwargs: Any) -> None:
        peer = self._connected_peer()
        proxy: CharacteristicProxy = characteristic.obj

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        self._subscriptions[characteristic.handle] = on_value
        await self._att(f"subscribe to {characteristic.uuid}",
                        peer.subscribe(proxy, on_value, prefer_notify=not kwargs.get("force_indicate", False)))

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        peer = self._connected_peer()
        on_value = self._subscriptions.pop(characteristic.handle, None)
        await self._att(f"unsubscribe from {characteristic.uuid}",
                        peer.unsubscribe(characteristic.obj, on_value))
