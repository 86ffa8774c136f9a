"""The radio of a virtual board: a Bumble peripheral driven by the board's
``bluetooth`` stand-in (``vbluetooth.py``).

MicroPython cannot run Bumble, so the board's ``bluetooth`` module is a thin
stand-in that forwards each call over a unix socket to this process, which
owns a real Bumble host on the board's emulated controller::

    python -m edge_hil.virtual.ble_bridge --hci unix:RUNDIR/air/BOARD.hci \\
        --socket RUNDIR/BOARD.ble [--address C0:11:22:33:44:55] [--once]

``--hci`` is any Bumble transport spec (the virtual air serves each board's
controller as ``unix:PATH``). ``--socket`` is where the board connects; the
supervisor gives the board that path in ``EDGE_BLE_SOCKET``, and the runner
then installs the stand-in as ``bluetooth``. ``--address`` is the board's
static random address (default: one derived from ``--socket``, stable across
restarts).

Out of range: SIGUSR1 drops every connection of the board at once, each
ended with the reason a link supervision timeout gives (what both sides see
when a radio goes out of range); the board's stack then reports the central
gone, and the board decides whether to advertise again. The bench's
``ble_drop`` request sends it (``Bench.ble_drop``).

Lifetime: the bridge lives as long as the controller's transport. A board
that goes away (power cut, reset: its interpreter exits) is a chip reset for
the radio: its connections are dropped, advertising stops, its services are
forgotten, and the bridge waits for the board's next boot. With ``--once`` it
exits instead. It also exits on SIGTERM/SIGINT, dropping connections first so
that no central is left on a stale link.

What it keeps of the ports' documented behaviour (MicroPython's ``bluetooth``
docs; the ESP32 runs NimBLE, the Pico W BTstack; where they differ the common
documented behaviour is kept):

- values have a 20-byte buffer unless ``gatts_set_buffer`` or a longer local
  ``gatts_write`` grows it; a client's longer write is truncated to it; in
  append mode writes accumulate and ``gatts_read`` empties the buffer;
- Bumble does not enforce attribute permissions: writes to a value without a
  write flag are refused with ATT "Write Not Permitted", reads of one without
  ``FLAG_READ`` with "Read Not Permitted", as NimBLE and BTstack do;
- ``_IRQ_GATTS_READ_REQUEST`` is not raised (the docs: STM32 only);
- ``gatts_notify``/``gatts_indicate`` send whatever the subscription state;
  ``gatts_write(..., send_update=True)`` notifies or indicates subscribers;
- advertising stops when a central connects (no automatic restart);
- a write event carries the value that write left (not in append mode), and
  the stand-in's ``gatts_read`` in that event's handler returns it, as the
  ports' synchronous events do;
- ``config(mtu=)`` is the largest ATT MTU offered in an exchange the central
  starts; ``_IRQ_MTU_EXCHANGED`` reports the result.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("edge_hil.ble_bridge")

IRQ_CENTRAL_CONNECT = 1
IRQ_CENTRAL_DISCONNECT = 2
IRQ_GATTS_WRITE = 3
IRQ_GATTS_INDICATE_DONE = 20
IRQ_MTU_EXCHANGED = 21

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_AUTHENTICATED_SIGNED_WRITE = 0x0040
WRITE_FLAGS = FLAG_WRITE | FLAG_WRITE_NO_RESPONSE | FLAG_AUTHENTICATED_SIGNED_WRITE
DEFAULT_BUFFER = 20
DEFAULT_MTU = 256


class BridgeError(Exception):
    """A call the board made that its stack would refuse: carries the errno the board sees."""

    def __init__(self, code: int):
        super().__init__(errno.errorcode.get(code, str(code)))
        self.code = code


@dataclass
class Value:
    """A characteristic's or descriptor's local value, with the port's buffer rules."""

    flags: int
    data: bytearray = field(default_factory=bytearray)
    size: int = DEFAULT_BUFFER
    append: bool = False

    def local_write(self, data: bytes) -> None:
        self.data = bytearray(data)
        self.size = max(self.size, len(data))

    def remote_write(self, data: bytes) -> None:
        if self.append:
            self.data += data[: self.size - len(self.data)]
        else:
            self.data = bytearray(data[: self.size])

    def local_read(self) -> bytes:
        out = bytes(self.data)
        if self.append:
            self.data = bytearray()
        return out


def static_address_for(seed: str) -> str:
    """A static random address (two top bits set) stable for ``seed``."""
    raw = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    raw[0] |= 0xC0
    return ":".join("%02X" % b for b in raw)


class Peripheral:
    """One Bumble device serving one board's GATT server and advertising.

    Commands come from the board as ``[op, args...]``; events for the board
    are handed to ``emit(code, data)``.
    """

    def __init__(self, device: Any, emit: Callable[[int, list], None]) -> None:
        self.device = device
        self.emit = emit
        self.values: dict[int, Value] = {}
        self.adv_data = b""
        self.resp_data = b""
        self.mtu = DEFAULT_MTU
        self._tasks: set[asyncio.Task] = set()
        device.on("connection", self._on_connection)

    # -- events --------------------------------------------------------------

    def _on_connection(self, connection) -> None:
        from bumble.hci import Role

        if connection.role != Role.PERIPHERAL:
            return
        handle = connection.handle
        peer = connection.peer_address
        addr = (0 if peer.is_public else 1, bytes(reversed(bytes(peer))).hex())
        self.emit(IRQ_CENTRAL_CONNECT, [handle, *addr])
        connection.on("disconnection", lambda reason: self.emit(IRQ_CENTRAL_DISCONNECT, [handle, *addr]))
        connection.on("connection_att_mtu_update",
                      lambda: self.emit(IRQ_MTU_EXCHANGED, [handle, connection.att_mtu]))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- commands ------------------------------------------------------------

    async def handle(self, op: str, args: list):
        method = getattr(self, "op_" + op, None)
        if method is None:
            raise BridgeError(errno.EOPNOTSUPP)
        return await method(*args)

    async def op_hello(self):
        address = self.device.random_address
        return [1, bytes(reversed(bytes(address))).hex()]

    async def op_off(self):
        await self.reset()

    async def op_name(self, name_hex: str | None = None):
        gap_name = self._gap_name_attribute()
        if name_hex is None:
            return self.device.name.encode().hex()
        name = bytes.fromhex(name_hex).decode("utf-8", "replace")
        self.device.name = name
        if gap_name is not None:
            gap_name.value = name.encode()
        return None

    async def op_mtu(self, mtu: int):
        self.mtu = mtu
        self.device.gatt_server.max_mtu = mtu

    async def op_adv(self, interval_us, adv_hex, resp_hex, connectable):
        from bumble.device import AdvertisingType

        if adv_hex is not None:
            self.adv_data = bytes.fromhex(adv_hex)
        if resp_hex is not None:
            self.resp_data = bytes.fromhex(resp_hex)
        if self.device.is_advertising:
            await self.device.stop_advertising()
        if interval_us is None:
            return None
        if connectable:
            kind = AdvertisingType.UNDIRECTED_CONNECTABLE_SCANNABLE
        elif self.resp_data:
            kind = AdvertisingType.UNDIRECTED_SCANNABLE
        else:
            kind = AdvertisingType.UNDIRECTED
        # The ports round the interval down to 625 us units; the controller's
        # legal range is 20 ms .. 10.24 s.
        interval_ms = max(20.0, (interval_us // 625) * 0.625)
        try:
            await self.device.start_advertising(
                advertising_type=kind, auto_restart=False,
                advertising_data=self.adv_data, scan_response_data=self.resp_data,
                advertising_interval_min=interval_ms, advertising_interval_max=interval_ms)
        except Exception as e:  # an HCI error: the stack's EINVAL
            log.warning("advertising refused: %s", e)
            raise BridgeError(errno.EINVAL) from e
        return None

    async def op_reg(self, spec: list):
        from bumble import gatt
        from bumble.core import UUID as BumbleUUID

        if self.device.is_advertising:
            await self.device.stop_advertising()
        server = self.device.gatt_server
        server.services.clear()
        server.attributes.clear()
        server.attributes_by_handle.clear()
        self.values.clear()
        self.device.add_default_services()
        services: list = []
        pending: list[tuple[Any, int]] = []  # (attribute, flags): handles exist once added
        for service_uuid, chars in spec:
            characteristics = []
            for char_uuid, flags, descs in chars:
                descriptors = []
                for desc_uuid, desc_flags in descs:
                    d = gatt.Descriptor(BumbleUUID(desc_uuid), gatt.Descriptor.READABLE | gatt.Descriptor.WRITEABLE, b"")
                    d.value = self._attribute_value(d, desc_flags)
                    descriptors.append(d)
                    pending.append((d, desc_flags))
                c = gatt.Characteristic(BumbleUUID(char_uuid), flags & 0xFF,
                                        gatt.Characteristic.READABLE | gatt.Characteristic.WRITEABLE,
                                        b"", descriptors)
                c.value = self._attribute_value(c, flags)
                characteristics.append(c)
                pending.append((c, flags))
            services.append(gatt.Service(BumbleUUID(service_uuid), characteristics))
        self.device.add_services(services)
        for attribute, flags in pending:
            self.values[attribute.handle] = Value(flags)
        handles = []
        for service in services:
            hs = []
            for c in service.characteristics:
                hs.append(c.handle)
                hs.extend(d.handle for d in c.descriptors)
            handles.append(hs)
        return handles

    def _attribute_value(self, attribute, flags: int):
        from bumble import att, gatt

        def read(connection):
            if not flags & FLAG_READ:
                raise att.ATT_Error(att.ErrorCode.READ_NOT_PERMITTED, attribute.handle)
            return bytes(self.values[attribute.handle].data)

        def write(connection, value):
            if not flags & WRITE_FLAGS:
                raise att.ATT_Error(att.ErrorCode.WRITE_NOT_PERMITTED, attribute.handle)
            stored = self.values[attribute.handle]
            stored.remote_write(bytes(value))
            # The value as this write left it rides with the event: the ports
            # run the handler synchronously (MICROPY_PY_BLUETOOTH_USE_SYNC_EVENTS
            # on the ESP32 and the Pico W), so a gatts_read in the handler sees
            # this write even when the central has written again since.
            self.emit(IRQ_GATTS_WRITE, [connection.handle, attribute.handle,
                                        None if stored.append else bytes(stored.data).hex()])

        return gatt.CharacteristicValue(read=read, write=write)

    def _value(self, handle: int) -> Value:
        value = self.values.get(handle)
        if value is None:
            raise BridgeError(errno.EINVAL)
        return value

    def _connection(self, conn_handle: int):
        connection = self.device.connections.get(conn_handle)
        if connection is None:
            raise BridgeError(errno.ENOTCONN)
        return connection

    async def op_r(self, handle: int):
        return self._value(handle).local_read().hex()

    async def op_w(self, handle: int, data_hex: str, send_update: bool):
        value = self._value(handle)
        value.local_write(bytes.fromhex(data_hex))
        if send_update:
            attribute = self.device.gatt_server.get_attribute(handle)
            data = bytes(value.data)
            await self.device.notify_subscribers(attribute, data)
            self._spawn(self.device.indicate_subscribers(attribute, data))

    async def op_buf(self, handle: int, size: int, append: bool):
        value = self._value(handle)
        value.size, value.append = size, append
        del value.data[size:]

    async def op_ntf(self, conn_handle: int, handle: int, data_hex: str | None):
        connection = self._connection(conn_handle)
        value = self._value(handle)
        data = bytes(value.data) if data_hex is None else bytes.fromhex(data_hex)
        attribute = self.device.gatt_server.get_attribute(handle)
        await self.device.notify_subscriber(connection, attribute, data, force=True)

    async def op_ind(self, conn_handle: int, handle: int, data_hex: str | None):
        connection = self._connection(conn_handle)
        value = self._value(handle)
        data = bytes(value.data) if data_hex is None else bytes.fromhex(data_hex)
        attribute = self.device.gatt_server.get_attribute(handle)

        async def indicate():
            status = 0
            try:
                await self.device.indicate_subscriber(connection, attribute, data, force=True)
            except Exception as e:  # timeout or link gone: the stack reports a status
                log.info("indication not confirmed: %s", e)
                status = 1
            self.emit(IRQ_GATTS_INDICATE_DONE, [conn_handle, handle, status])

        self._spawn(indicate())

    async def op_disc(self, conn_handle: int):
        connection = self.device.connections.get(conn_handle)
        if connection is None:
            return False
        self._spawn(connection.disconnect())
        return True

    def _gap_name_attribute(self):
        from bumble.gatt import GATT_DEVICE_NAME_CHARACTERISTIC

        for attribute in self.device.gatt_server.attributes:
            if getattr(attribute, "type", None) == GATT_DEVICE_NAME_CHARACTERISTIC:
                return attribute
        return None

    async def drop_links(self) -> None:
        """Every connection ends as a link out of range ends: a supervision timeout on both sides."""
        from bumble.hci import HCI_CONNECTION_TIMEOUT_ERROR

        for connection in list(self.device.connections.values()):
            try:
                await asyncio.wait_for(connection.disconnect(HCI_CONNECTION_TIMEOUT_ERROR), 2)
            except Exception as e:
                log.info("drop: %s", e)

    async def reset(self) -> None:
        """What a chip reset does to the radio: links dropped, advertising off, no services."""
        if self.device.is_advertising:
            await self.device.stop_advertising()
        for connection in list(self.device.connections.values()):
            try:
                await asyncio.wait_for(connection.disconnect(), 2)
            except Exception as e:
                log.info("disconnect at reset: %s", e)
        for task in list(self._tasks):
            task.cancel()
        await self.op_reg([])
        self.adv_data = self.resp_data = b""
        self.device.gatt_server.max_mtu = self.mtu = DEFAULT_MTU


async def serve_board(peripheral: Peripheral, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    """Carry one board session: its commands in order, events as they come."""

    def send(msg) -> None:
        if not writer.is_closing():
            writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")

    peripheral.emit = lambda code, data: send(["ev", code, data])
    try:
        while line := await reader.readline():
            try:
                op, *args = json.loads(line)
                result = await peripheral.handle(op, args)
                send(["ok", result])
                if op == "off":
                    # The radio is off (active(False)): the session ends here,
                    # so the board's reader thread sees the end and exits.
                    await writer.drain()
                    break
            except BridgeError as e:
                send(["err", e.code])
            except (ValueError, TypeError) as e:
                log.warning("bad command %r: %s", line[:80], e)
                send(["err", errno.EINVAL])
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        peripheral.emit = lambda code, data: None
        writer.close()
        await peripheral.reset()


async def run(hci: str, socket_path: str, address: str | None, once: bool) -> int:
    from bumble.device import Device
    from bumble.hci import Address
    from bumble.transport import open_transport

    address = address or static_address_for(os.path.abspath(socket_path))
    transport = await open_transport(hci)
    device = Device.with_hci("edge", Address(address), transport.source, transport.sink)
    await device.power_on()
    peripheral = Peripheral(device, lambda code, data: None)
    stop = asyncio.get_running_loop().create_future()
    busy = asyncio.Lock()

    def finish(why: str) -> None:
        if not stop.done():
            stop.set_result(why)

    async def on_board(reader, writer):
        # One board per radio: a rebooted board's session waits until the
        # last one's reset is done.
        async with busy:
            await serve_board(peripheral, reader, writer)
        if once:
            finish("board gone")

    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server = await asyncio.start_unix_server(on_board, socket_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish, "signal")
    loop.add_signal_handler(signal.SIGUSR1, lambda: peripheral._spawn(peripheral.drop_links()))
    transport.source.terminated.add_done_callback(lambda _: finish("controller gone"))
    print(f"ble-bridge {address} on {socket_path}", flush=True)
    why = await stop
    log.info("stopping: %s", why)
    server.close()
    if why != "controller gone":
        await peripheral.reset()
    try:
        os.unlink(socket_path)
    except OSError:
        pass
    await transport.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_hil.virtual.ble_bridge",
                                     description="Bridge a virtual board's bluetooth stand-in to a Bumble controller.")
    parser.add_argument("--hci", required=True, help="Bumble transport spec of the board's controller (unix:PATH)")
    parser.add_argument("--socket", required=True, help="unix socket the board's stand-in connects to")
    parser.add_argument("--address", help="static random address (default: derived from --socket)")
    parser.add_argument("--once", action="store_true", help="exit when the board's session ends")
    parser.add_argument("--parent", type=int, help="exit when this process (the bench's supervisor) dies")
    args = parser.parse_args(argv)
    from edge_hil.virtual.state import die_with_parent
    die_with_parent(args.parent)
    logging.basicConfig(level=os.environ.get("EDGE_BLE_LOG", "WARNING"), stream=sys.stderr)
    return asyncio.run(run(args.hci, args.socket, args.address, args.once))


if __name__ == "__main__":
    sys.exit(main())
