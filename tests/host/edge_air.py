"""Edge devices on a virtual air, in Python, for the host BLE link's tests.

:class:`AirThread` runs a Bumble ``LocalLink`` in its own thread and event
loop: the host's emulated controller served on a unix socket (the spec goes
in ``EDGE_BLE_HCI``) and :class:`EdgePeripheral` devices. Each peripheral is
the GATT server of docs/protocol.md 5.1-5.3 (advertisement, service,
segments) around the scripted device of ``tests/host/fake_device.py``.

Pairing and sealing use :mod:`tests.host.pairing_standin`, which keeps the
message shapes of 5.4-5.6 without their cryptography: these tests are about
the link, the registry and the commands; the real exchange is tested with
the real cores once both sides exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable

import cbor2
from bumble import hci
from bumble.controller import Controller
from bumble.core import AdvertisingData
from bumble.device import Connection, Device
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport import open_transport
from bumble.transport.common import AsyncPipeSink

from edge_agent.links.ble import BULK, CONTROL, SERVICE, TELEMETRY
from edge_hil.virtual.air import AirController
from tests.host import pairing_standin as standin
from tests.host.fake_device import FakeDevice

from edge_agent.segments import Reassembler, split


class EdgePeripheral:
    """One Edge device: advertises, pairs (stand-in), resumes, carries sealed telemetry."""

    def __init__(self, link: LocalLink, device_id: str, address: str, code: str, key: bytes):
        self.device_id, self.code, self.key = device_id, code, key
        self.device = Device(name=device_id, address=hci.Address(address),
                             host=Host(c := Controller(device_id, link=link), AsyncPipeSink(c)))
        self.address = address
        self.owner: str | None = None
        self.bonds: dict[bytes, tuple[bytes, bytes]] = {}     # bond_id -> (host_id, bond_key)
        self.failed = 0
        self.paused_until = 0.0
        self.uptime: Callable[[], float] = time.monotonic   # the back-off's clock; a test may hold it
        self.fake = FakeDevice(device_id, board=device_id.rsplit("-", 1)[0])
        self.session: standin.DeviceSession | None = None
        self.pending: dict | None = None
        self.connection: Connection | None = None
        self.bad_sealed = 0
        self.telemetry_writes = 0
        self.out: asyncio.Queue = asyncio.Queue()
        self.ins = {CONTROL: Reassembler(), TELEMETRY: Reassembler()}
        self.counters = {CONTROL: 0, TELEMETRY: 0}
        props = Characteristic.Properties
        self.control = Characteristic(CONTROL, props.WRITE | props.NOTIFY, Characteristic.WRITEABLE,
                                      CharacteristicValue(write=lambda c, v: self._written(CONTROL, v)))
        self.telemetry = Characteristic(TELEMETRY, props.WRITE_WITHOUT_RESPONSE | props.NOTIFY,
                                        Characteristic.WRITEABLE,
                                        CharacteristicValue(write=lambda c, v: self._written(TELEMETRY, v)))
        bulk = Characteristic(BULK, props.WRITE_WITHOUT_RESPONSE | props.NOTIFY, Characteristic.WRITEABLE,
                              CharacteristicValue(write=lambda c, v: self._bulk(bytes(v))))
        self.device.add_service(Service(SERVICE, [self.control, self.telemetry, bulk]))
        self.device.on("connection", self._connected)

    # -- advertising

    def advertisement(self) -> bytes:
        state = 0x10 | (0x01 if self.bonds else 0) | (0x02 if self._paused_ms() else 0)
        return bytes(AdvertisingData([
            (AdvertisingData.FLAGS, bytes([0x06])),
            (AdvertisingData.MANUFACTURER_SPECIFIC_DATA, b"\xff\xff\xea" + bytes([state])),
            (AdvertisingData.COMPLETE_LOCAL_NAME, self.device_id.encode()),
        ]))

    async def start(self) -> None:
        await self.device.power_on()
        self.sender = asyncio.ensure_future(self._sender())
        await self.advertise()

    async def advertise(self) -> None:
        await self.device.start_advertising(advertising_data=self.advertisement(), auto_restart=True, advertising_interval_min=20,
                                            advertising_interval_max=20)

    def _paused_ms(self) -> int:
        return max(0, int((self.paused_until - self.uptime()) * 1000))

    def _connected(self, connection: Connection) -> None:
        self.connection = connection
        self.session = None
        self.pending = None
        for r in self.ins.values():
            r.reset()

        def gone(_reason: Any) -> None:
            self.connection = None
            self.session = None
            asyncio.ensure_future(self._readvertise())
        connection.on("disconnection", gone)

    async def _readvertise(self) -> None:
        """Advertise again with the state byte of now (paired, paused)."""
        await asyncio.sleep(0.05)
        if self.connection is None:
            await self.device.stop_advertising()
            await self.advertise()

    # -- the wire

    def _written(self, uuid: str, value: bytes) -> None:
        message = self.ins[uuid].feed(bytes(value))
        if message is None:
            return
        if uuid == CONTROL:
            self._control(message)
        else:
            self.telemetry_writes += 1
            self._telemetry(message)

    def _bulk(self, value: bytes) -> None:
        """A value written on the bulk characteristic (OTA chunks, 7.4): ignored unless a subclass serves OTA."""

    def _send(self, uuid: str, message: bytes) -> None:
        self.out.put_nowait((uuid, message))

    async def _sender(self) -> None:
        while True:
            uuid, message = await self.out.get()
            if uuid == "disconnect":
                if self.connection is not None:
                    await self.connection.disconnect()
                continue
            if self.connection is None:
                continue
            char = self.control if uuid == CONTROL else self.telemetry
            counter = self.counters[uuid]
            self.counters[uuid] = (counter + 1) & 0x7F
            for segment in split(message, self.connection.att_mtu - 3, counter):
                await self.device.notify_subscribers(char, segment)

    def _error(self, reason: str, wait_ms: int = 0) -> None:
        self._send(CONTROL, cbor2.dumps({0: 31, 1: reason, 2: wait_ms, 3: reason}))

    def _control(self, message: bytes) -> None:
        msg = cbor2.loads(message)
        kind = msg.get(0)
        if kind == 16:        # PAIR_START
            if self._paused_ms():
                return self._error("paused", self._paused_ms())
            if self.owner is not None and msg[3] != self.owner:
                return self._error("bound")
            self.failed += 1
            if self.failed > 2:
                self.paused_until = self.uptime() + 2 ** (self.failed - 2)
            self.device.advertising_data = self.advertisement()
            self.pending = msg
            tag = standin.tag(self.code, msg[1], "device")
            self._send(CONTROL, cbor2.dumps({0: 17, 2: b"Y" * 32, 5: self.key, 6: tag}))
        elif kind == 18 and self.pending is not None:     # PAIR_CONFIRM
            start, self.pending = self.pending, None
            if msg[6] != standin.tag(self.code, start[1], "host"):
                return self._error("wrong_code")
            self.failed, self.paused_until = 0, 0.0
            bond_id, bond_key = standin.bond(self.code, start[1])
            self.owner = start[3]
            self.bonds = {b: v for b, v in self.bonds.items() if v[0] != start[4]}
            self.bonds[bond_id] = (start[4], bond_key)
            self.device.advertising_data = self.advertisement()
            self.session = standin.DeviceSession(bond_key)
            self._send(CONTROL, cbor2.dumps({0: 19, 7: bond_id}))
        elif kind == 20:      # RESUME
            if msg[7] not in self.bonds:
                return self._error("unknown_bond")
            self.session = standin.DeviceSession(self.bonds[msg[7]][1])
            self._send(CONTROL, cbor2.dumps({0: 21, 8: os.urandom(16), 6: standin.resume_tag(self.bonds[msg[7]][1])}))
        else:
            self._error("bad_message")

    def _telemetry(self, sealed: bytes) -> None:
        plain = self.session.open(sealed) if self.session else None
        if plain is None:
            self.bad_sealed += 1
            return
        if cbor2.loads(plain).get(0) == 22:       # UNPAIR
            self.bonds.clear()
            self.owner = None
            self._send(TELEMETRY, self.session.seal(cbor2.dumps({0: 23})))
            self._send("disconnect", b"")
            return
        self.fake.receive(plain)
        for payload in self.fake.take():
            self._send(TELEMETRY, self.session.seal(payload))

    def sample(self, n: int) -> None:
        """``n`` new records in the journal (sent when the host asks or acknowledges)."""
        for i in range(n):
            self.fake.sample((0, 20.0 + i))

    def factory_reset(self) -> None:
        self.bonds.clear()
        self.owner = None
        self.failed, self.paused_until = 0, 0.0


class HeldClock:
    """An uptime clock that moves only when the test moves it: a back-off then lasts however long the host takes."""

    def __init__(self, at: float = 1000.0):
        self.at = at

    def __call__(self) -> float:
        return self.at


def key_of(device_id: str) -> bytes:
    return hashlib.sha256(device_id.encode()).digest()


class AirThread:
    """The virtual air in a thread of its own; ``spec`` is the host controller's transport."""

    def __init__(self, devices: list[tuple[str, str, str]]):
        self.specs = devices          # (device id, address, code)
        self.folder = tempfile.mkdtemp(prefix="air-", dir="/tmp")
        self.spec = f"unix:{os.path.join(self.folder, 'host-0.hci')}"
        self.peripherals: dict[str, EdgePeripheral] = {}
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge air", daemon=True)

    def __enter__(self) -> "AirThread":
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the air did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        link = LocalLink()
        served = await open_transport(f"unix-server:{self.spec[5:]}")
        try:
            AirController("host-0", link, host_source=served.source, host_sink=served.sink)
            for device_id, address, code in self.specs:
                p = EdgePeripheral(link, device_id, address, code, key_of(device_id))
                await p.start()
                self.peripherals[device_id] = p
            self._ready.set()
            await self._stop.wait()
        finally:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await served.close()

    def call(self, fn, *args) -> Any:
        """Run ``fn(*args)`` in the air's loop and return its result."""
        async def run():
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)
