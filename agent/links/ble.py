"""The BLE link, host side (docs/protocol.md section 5), on plain bleak.

Every scanner and client is built with
:func:`edge_agent.links.ble_backend.scanner_kwargs` / ``client_kwargs``: the
platform's stack on a gateway, the virtual air's controller with
``EDGE_BLE=sim``. Nothing here knows which.

The parts:

- :func:`parse_advertisement` / :func:`scan`: Edge devices in range (5.1),
  recognised strictly by their manufacturer data; anything else is ignored.
- :class:`BleConnection`: one connected device. Control messages go out as
  segments (5.3) written with response and come back as notifications;
  :meth:`BleConnection.request` is one round trip with a timeout.
  :meth:`pair` and :meth:`resume` run the exchanges of 5.4 and 5.5 with the
  sans-I/O cores of :mod:`edge_agent.pairing`.
- :class:`TelemetryPump`: binds the opened session to an ingest
  :class:`~edge_agent.telemetry.ingest.LinkSession`, so BLE and serial share
  one ingest core and one registry writer (DESIGN decision 11). Outgoing
  messages are sealed (5.6) and segmented in the event loop's thread, in the
  order ``send`` was called from any thread; incoming ones are opened, and
  those that do not open are counted and dropped.

Rules it keeps: the link is bound to the device that proved itself on it
(pairing or RESUME); the ingest session is pre-bound to that id, so a HELLO
of any other id on it is refused. A disconnect drops half-received messages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

from edge_agent.errors import BadInput, Busy, DeviceError, EdgeError, NotFound

if TYPE_CHECKING:
    from edge_agent.telemetry.ingest import IngestCore, LinkSession

log = logging.getLogger("edge.ble")

SERVICE = "9ba40001-ec51-4948-832f-fdedb1cbf4a1"
CONTROL = "9ba40002-ec51-4948-832f-fdedb1cbf4a1"
TELEMETRY = "9ba40003-ec51-4948-832f-fdedb1cbf4a1"
BULK = "9ba40004-ec51-4948-832f-fdedb1cbf4a1"

COMPANY = 0xFFFF          # reserved for tests and unregistered use
MAGIC = 0xEA
ADV_VERSION = 1
PAIRED, PAUSED = 0x01, 0x02
MAX_NAME = 22             # a longer id goes as a Shortened Local Name of its first 22
_ID = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
DEFAULT_MTU = 23
MAX_ATT_VALUE = 512       # bytes in one attribute value, whatever the MTU

UNPAIR_DONE = 23          # control type carried sealed on telemetry (5.4 table)

CONNECT_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 2         # a failed connection attempt is made once more (a busy controller)
CONNECT_RETRY_S = 0.5        # after this pause
REQUEST_TIMEOUT = 10.0
PAIR_TIMEOUT = 30.0       # the device does three X25519 multiplications in MicroPython


@dataclass(frozen=True)
class Seen:
    """One Edge device heard advertising."""

    device_id: str
    board: str | None       # the id up to its last '-' (5.1); None for an id without one
    address: str
    rssi: int | None
    paired: bool
    paused: bool
    complete: bool = True   # False: the name was shortened, device_id is a prefix

    def as_dict(self) -> dict:
        return asdict(self)


def parse_advertisement(name: str | None, manufacturer: dict[int, bytes]) -> tuple[str, str | None, bool, bool] | None:
    """(device id, board, paired, paused) of an Edge advertisement, or None.

    Strict (5.1): company 0xFFFF carrying exactly the magic byte and a state
    byte of format version 1 with no unknown bit set, and a name of the
    device-id alphabet. Anything else is another device's and ignored.
    """
    data = manufacturer.get(COMPANY)
    if data is None or len(data) != 2 or data[0] != MAGIC:
        return None
    state = data[1]
    if state >> 4 != ADV_VERSION or state & 0x0C:
        return None
    if not name or not _ID.fullmatch(name) or len(name) > 64:
        return None
    board = name.rsplit("-", 1)[0] if "-" in name else None
    return name, board or None, bool(state & PAIRED), bool(state & PAUSED)


async def scan(timeout: float = 5.0, *, want: Callable[[Seen], bool] | None = None) -> list[Seen]:
    """Edge devices advertising within ``timeout`` seconds, by device id.

    With ``want``, the scan ends as soon as one device it accepts is seen.
    """
    from bleak import BleakScanner

    from edge_agent.links.ble_backend import scanner_kwargs

    found: dict[str, Seen] = {}
    hit = asyncio.Event()

    def detected(device: Any, adv: Any) -> None:
        parsed = parse_advertisement(adv.local_name or getattr(device, "name", None), adv.manufacturer_data)
        if parsed is None:
            return
        device_id, board, paired, paused = parsed
        seen = Seen(device_id, board, device.address, adv.rssi, paired, paused,
                    complete=len(device_id) < MAX_NAME)
        found[seen.address] = seen
        if want is not None and want(seen):
            hit.set()

    try:
        async with BleakScanner(detection_callback=detected, **scanner_kwargs()):
            try:
                await asyncio.wait_for(hit.wait(), timeout)
            except asyncio.TimeoutError:
                pass
    except EdgeError:
        raise
    except Exception as e:   # the stack itself: no adapter, no controller behind EDGE_BLE_HCI
        raise DeviceError(f"cannot scan for BLE devices: {e}",
                          "check the Bluetooth adapter (or `edge sim up` and EDGE_BLE=sim for the virtual air)"
                          ) from None
    return sorted(found.values(), key=lambda s: (s.device_id, s.address))


def looks_like_address(text: str) -> bool:
    """Whether ``text`` is a BLE address (``AA:BB:CC:DD:EE:FF``, optionally ``/P``) rather than a device id."""
    return re.fullmatch(r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}(?:/P)?", text) is not None


async def find(target: str, timeout: float) -> Seen:
    """The advertising device ``target`` names (an address or a device id); NotFound after ``timeout``."""
    by_address = looks_like_address(target)

    def match(s: Seen) -> bool:
        return s.address.upper() == target.upper() if by_address else s.device_id == target

    for seen in await scan(timeout, want=match):
        if match(seen):
            return seen
    raise NotFound(f"{target} is not in range (no advertisement heard in {timeout:g} s)",
                   "bring it closer or power it, and check with `edge scan`; a device connected to "
                   "another host does not advertise")


# -- one connection ------------------------------------------------------------

class BleConnection:
    """One connected Edge device: control round trips and the sealed telemetry stream.

    Use ``async with BleConnection(address, device_id) as conn``. ``on_disconnect``
    is called (in the loop) when the link drops by itself.
    """

    def __init__(self, address: str, device_id: str, *, connect_timeout: float = CONNECT_TIMEOUT,
                 on_disconnect: Callable[["BleConnection"], None] | None = None):
        from edge_agent.segments import Reassembler

        self.address = address
        self.device_id = device_id
        self.connect_timeout = connect_timeout
        self.on_disconnect = on_disconnect
        self.client: Any = None
        self.closed = asyncio.Event()
        self._control_in = Reassembler()
        self._telemetry_in = Reassembler()
        self._control: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)
        self._counters = {CONTROL: 0, TELEMETRY: 0}
        self._on_telemetry: Callable[[bytes], None] | None = None
        self._closing = False

    @property
    def segment_size(self) -> int:
        """Bytes of one ATT value: MTU - 3 (5.2)."""
        mtu = getattr(self.client, "mtu_size", None) or DEFAULT_MTU
        return max(mtu, DEFAULT_MTU) - 3

    @property
    def bad_segments(self) -> int:
        return self._control_in.bad_segments + self._telemetry_in.bad_segments

    async def __aenter__(self) -> "BleConnection":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect and subscribe to control and telemetry (before anything is written).

        An attempt that fails (a busy controller, the peripheral still ending
        its last link) is made again after :data:`CONNECT_RETRY_S`, up to
        :data:`CONNECT_ATTEMPTS` in all, as BLE hosts do."""
        from bleak import BleakClient

        from edge_agent.links.ble_backend import client_kwargs

        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            self._closing = False
            self.closed.clear()
            self.client = BleakClient(self.address, disconnected_callback=self._disconnected,
                                      timeout=self.connect_timeout, **client_kwargs())
            try:
                await asyncio.wait_for(self.client.connect(), self.connect_timeout + 2)
                await self.client.start_notify(CONTROL, self._control_notified)
                await self.client.start_notify(TELEMETRY, self._telemetry_notified)
                return
            except EdgeError:
                raise
            except Exception as e:
                await self._drop()
                if attempt < CONNECT_ATTEMPTS:
                    log.info("%s: connect attempt %d failed (%s): trying again", self.device_id, attempt,
                             str(e) or type(e).__name__)
                    await asyncio.sleep(CONNECT_RETRY_S)
                    continue
                raise DeviceError(f"could not connect to {self.device_id} at {self.address}: "
                                  f"{str(e) or type(e).__name__} ({CONNECT_ATTEMPTS} attempts)",
                                  "check that it is in range and advertising (`edge scan`); it serves one "
                                  "central at a time") from None

    def _disconnected(self, _client: Any) -> None:
        self._control_in.reset()
        self._telemetry_in.reset()
        self.closed.set()
        if not self._closing and self.on_disconnect is not None:
            self.on_disconnect(self)

    async def _drop(self) -> None:
        self._closing = True
        if self.client is not None:
            try:
                await asyncio.wait_for(self.client.disconnect(), 5)
            except Exception as e:  # already gone: nothing to release
                log.debug("%s: disconnect: %s", self.device_id, e)
        self.closed.set()

    async def close(self) -> None:
        """Disconnect (idempotent)."""
        await self._drop()

    # -- segments

    async def _write(self, uuid: str, message: bytes, response: bool) -> None:
        from edge_agent.segments import split

        counter = self._counters[uuid]
        self._counters[uuid] = (counter + 1) & 0x7F
        for segment in split(message, self.segment_size, counter):
            await self.client.write_gatt_char(uuid, segment, response=response)

    def _control_notified(self, _sender: Any, data: bytearray) -> None:
        message = self._control_in.feed(bytes(data))
        if message is None:
            return
        try:
            self._control.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("%s: control message dropped: nobody is waiting for %d queued", self.device_id,
                        self._control.qsize())

    def _telemetry_notified(self, _sender: Any, data: bytearray) -> None:
        message = self._telemetry_in.feed(bytes(data))
        if message is not None and self._on_telemetry is not None:
            try:
                self._on_telemetry(message)
            except Exception:   # a bug costs this message, never the link
                log.exception("%s: error handling a telemetry message", self.device_id)

    async def request(self, message: bytes, timeout: float = REQUEST_TIMEOUT) -> bytes:
        """Write ``message`` on control and wait for the device's answer."""
        while not self._control.empty():     # an answer nobody waited for belongs to no one
            self._control.get_nowait()
        try:
            await self._write(CONTROL, message, response=True)
            closed = asyncio.ensure_future(self.closed.wait())
            answer = asyncio.ensure_future(self._control.get())
            try:
                done, _ = await asyncio.wait({closed, answer}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                if not answer.done():
                    answer.cancel()
        except EdgeError:
            raise
        except Exception as e:
            raise DeviceError(f"{self.device_id} did not take a control message: {e or type(e).__name__}",
                              "retry; if it persists, reset the device") from None
        if answer in done and not answer.cancelled():
            return answer.result()
        if self.closed.is_set():
            raise DeviceError(f"{self.device_id} disconnected before it answered",
                              "retry when it advertises again (`edge scan`)")
        raise DeviceError(f"{self.device_id} did not answer within {timeout:g} s",
                          "retry; if it persists, reset the device (`edge sim reset` on the bench)")

    async def write_telemetry(self, sealed: bytes) -> None:
        """One sealed message to the device, written without response."""
        await self._write(TELEMETRY, sealed, response=False)

    @property
    def mtu(self) -> int:
        """The connection's ATT MTU."""
        return self.segment_size + 3

    async def write_bulk(self, value: bytes) -> None:
        """One OTA chunk value (``u32be offset | data``, 7.4) on the bulk characteristic,
        written without response: no segment header, no seal, one ATT value.
        Each write is awaited, so the stack's own flow control paces the next."""
        await self.client.write_gatt_char(BULK, value, response=False)

    def on_telemetry(self, handler: Callable[[bytes], None] | None) -> None:
        """Where sealed messages from the device go (None: dropped)."""
        self._on_telemetry = handler

    # -- pairing and bonds

    async def pair(self, code: str, account: str, host_id: bytes, *, device_key: bytes | None = None,
                   fingerprint: str | None = None, host_key: tuple[bytes, bytes] | None = None,
                   timeout: float = PAIR_TIMEOUT) -> tuple[Any, Any]:
        """Pair with the setup ``code`` for ``account`` (5.4): (Bond, HostSession).

        Raises :class:`edge_agent.pairing.PairingError` for what the device or
        the exchange refused (:func:`pairing_failure` words it).
        """
        from edge_agent.pairing import Initiator

        initiator = Initiator(self.device_id, code, account, host_id, device_key=device_key,
                              fingerprint=None if fingerprint is None else bytes.fromhex(fingerprint),
                              host_key=host_key)
        start = initiator.start()
        for wait in (1.0, 2.0, 0.0):
            reply = await self.request(start, timeout)
            if wait and _reason(reply) == "no_memory":
                # The device's own shortage (a busy heap just after boot):
                # the attempt was given back, so asking again costs nothing.
                log.info("%s: out of memory for the exchange; asking again in %.0f s", self.device_id, wait)
                await asyncio.sleep(wait)
                continue
            break
        done = await self.request(initiator.reply(reply), timeout)
        return initiator.done(done)

    async def resume(self, bond: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
        """Open a session with a bond (5.5): the HostSession. PairingError if refused."""
        from edge_agent.pairing import Resumer

        resumer = Resumer(bond)
        return resumer.reply(await self.request(resumer.start(), timeout))

    async def unpair(self, session: Any, timeout: float = REQUEST_TIMEOUT) -> bool:
        """Send UNPAIR sealed on telemetry; True once the device says UNPAIR_DONE (or drops the link after it)."""
        from edge_agent.pairing import unpair_payload

        done = asyncio.Event()

        def received(sealed: bytes) -> None:
            plain = session.open(sealed)
            if plain is not None and control_type(plain) == UNPAIR_DONE:
                done.set()

        self.on_telemetry(received)
        await self.write_telemetry(session.seal(unpair_payload()))
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def control_type(plain: bytes) -> int | None:
    """Key 0 of a CBOR map payload, or None if it is not one."""
    import cbor2

    try:
        msg = cbor2.loads(plain)
    except Exception:
        return None
    return msg.get(0) if isinstance(msg, dict) and isinstance(msg.get(0), int) else None


def _reason(payload: bytes) -> str | None:
    """A peek at a control reply: the reason of an ERROR (type 31), else None.

    The reply is decoded in full, by the rules of section 2.1, where it is used.
    """
    import cbor2

    try:
        msg = cbor2.loads(payload)
    except Exception:        # a malformed reply: the exchange's decoder names it
        return None
    reason = msg.get(1) if isinstance(msg, dict) and msg.get(0) == 31 else None
    return reason if isinstance(reason, str) else None


def pairing_failure(device_id: str, error: Any, account: str | None = None) -> EdgeError:
    """A :class:`PairingError` as the error a person acts on (exit codes per agent/errors.py)."""
    reason = getattr(error, "reason", "") or ""
    text = getattr(error, "text", "") or str(error)
    if reason == "wrong_code":
        return BadInput(f"{device_id} refused the setup code (wrong code)",
                        "check the 8 digits on its label and retry; after 2 wrong codes the device waits "
                        "2 s, then 4 s, 8 s ... before it hears the next attempt")
    if reason == "paused":
        wait = (getattr(error, "wait_ms", 0) or 0) / 1000
        return Busy(f"{device_id} is pausing pairing after wrong codes: next attempt in {wait:.0f} s",
                    f"wait {wait:.0f} s, then retry with the right code")
    if reason == "bound":
        return Busy(f"{device_id} is bound to another owner account",
                    f"its owner runs `edge devices unpair {device_id}`, or factory-reset it "
                    "(`edge devices factory-reset PORT` on a bench)")
    if reason == "bad_tag":
        return DeviceError(f"{device_id} did not prove it holds this host's bond (RESUME tag)",
                           "this may be another device using its name; if it is really yours, pair it again")
    if reason == "wrong_device":
        return DeviceError(f"{device_id} answered with a key that is not its registered one",
                           "do not pair: this may be another device using its name; check the label "
                           "belongs to this device, or re-provision it (`edge flash --reprovision`)")
    if reason == "unknown_bond":
        return NotFound(f"{device_id} no longer holds this host's bond (unpaired, factory reset or paired "
                        "elsewhere)", f"pair it again: `edge pair {device_id} --code CODE`")
    if reason == "no_identity":
        return DeviceError(f"{device_id} has no identity (no key or setup code)", "`edge flash` it")
    if reason == "busy":
        return Busy(f"{device_id} is already pairing on this connection", "retry in a few seconds")
    if reason == "no_memory":
        return Busy(f"{device_id} ran out of memory during the exchange (the attempt was not counted)",
                    "retry in a few seconds")
    return DeviceError(f"pairing with {device_id} failed: {reason or 'error'}" + (f" ({text})" if text else ""),
                       "retry; if it persists, reset the device")


# -- telemetry over a session --------------------------------------------------

class TelemetryPump:
    """Carries section 2 messages between an opened session and an ingest LinkSession.

    ``send`` (the LinkSession's) may be called from any thread (the registry
    writer sends ACKs): the payload is handed to the loop, which seals and
    writes messages in the order they came. Messages that do not open are
    counted in ``bad_sealed`` and in the ingest session's bad counts.
    """

    def __init__(self, conn: BleConnection, session: Any, core: "IngestCore",
                 loop: asyncio.AbstractEventLoop | None = None, *, serve_updates: bool = False,
                 ota_listener: Callable[[str, dict], None] | None = None):
        self.conn = conn
        self.session = session
        self.loop = loop or asyncio.get_running_loop()
        # Sealed messages (bytes) and bulk chunk values ((BULK, value)), in the order they were sent.
        self.outgoing: asyncio.Queue[bytes | tuple[str, bytes] | None] = asyncio.Queue(maxsize=256)
        self.bad_sealed = 0
        self.unpaired = asyncio.Event()
        self.received = 0
        self._lock = threading.Lock()
        self.link: "LinkSession" = core.link(f"ble:{conn.device_id}", self._send)
        # A link is bound to the device that proved itself on it (DESIGN 11).
        self.link.bound = conn.device_id
        self.link.stats.device = conn.device_id
        self.ota: Any = None
        if serve_updates:
            from edge_agent.ota_server import OtaServer
            from edge_ota.transfer import BULK_HEADER, chunk_size_for_mtu

            # Image bytes go as raw values on the bulk characteristic (7.4), sized to the MTU.
            # An ATT value holds at most 512 bytes (Core spec Vol 3 Part F 3.2.9), whatever the MTU.
            chunk = min(chunk_size_for_mtu(conn.mtu), MAX_ATT_VALUE - BULK_HEADER)
            self.ota = self.link.ota = OtaServer(self.link, chunk_size=chunk, sink=self._bulk,
                                                 listener=ota_listener)

    def _send(self, payload: bytes) -> None:
        self._put(payload)

    def _bulk(self, sequence: int, offset: int, data: memoryview) -> None:
        from edge_ota.transfer import bulk_value

        self._put((BULK, bulk_value(offset, data)))

    def _put(self, item: bytes | tuple[str, bytes]) -> None:
        if self.conn.closed.is_set():
            from edge_agent.telemetry.ingest import LinkClosed
            raise LinkClosed(f"the BLE link to {self.conn.device_id} is closed")

        def put() -> None:
            try:
                self.outgoing.put_nowait(item)
            except asyncio.QueueFull:
                log.warning("%s: outgoing queue full; a message or chunk dropped (the device asks again)",
                            self.conn.device_id)
        self.loop.call_soon_threadsafe(put)

    def _received(self, sealed: bytes) -> None:
        plain = self.session.open(sealed)
        if plain is None:
            self.bad_sealed += 1
            self.link.bad("bad_sealed", sealed)
            return
        self.received += 1
        if control_type(plain) == UNPAIR_DONE:
            self.unpaired.set()
            return
        self.link.receive_message(plain)

    async def run(self) -> None:
        """Pump until the link closes (or the task is cancelled)."""
        self.conn.on_telemetry(self._received)
        writer = asyncio.ensure_future(self._write_loop())
        try:
            self.link.opening()      # sealed TIME: the first sealed message proves this host (5.5)
            await self.conn.closed.wait()
        finally:
            writer.cancel()
            self.conn.on_telemetry(None)
            try:
                await writer
            except (asyncio.CancelledError, Exception):
                pass

    async def _write_loop(self) -> None:
        while True:
            payload = await self.outgoing.get()
            if payload is None:
                return
            try:
                if isinstance(payload, tuple):
                    await self.conn.write_bulk(payload[1])
                else:
                    await self.conn.write_telemetry(self.session.seal(payload))
            except Exception as e:   # a link gone away: the device asks again after RESUME
                log.warning("%s: could not write telemetry: %s", self.conn.device_id, e)
                return
