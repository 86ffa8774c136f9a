"""A plain bleak central for the BLE link's bench tests, run as a separate
host process (``python tests/hil/ble_central.py MODE [ADDRESS]``) with
``EDGE_BLE=sim`` and no ``EDGE_BLE_HCI``, as ``edge`` commands run: the
backend takes a free host controller of the running bench by itself.

Modes print one JSON document on stdout:

- ``scan``: every Edge advertisement seen in 3 s;
- ``connect ADDRESS``: MTU, the service's characteristics and their
  properties, after subscribing to control and telemetry;
- ``hostile ADDRESS``: the writes of docs/protocol.md 5.2/5.3 a device must
  survive, then one well-formed control message; what came back on control;
- ``pair ADDRESS DEVICE_ID CODE [SECONDS]``: pairs with the setup code,
  sends a sealed TIME and acknowledges the sealed BATCHes for SECONDS;
- ``hold ADDRESS``: connects, prints, and waits for the link to drop (a
  power cut), printing how long it took;
- ``claim``: takes a host controller, prints it and sleeps 30 s.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bleak import BleakClient, BleakScanner

from edge_agent.errors import EdgeError
from edge_agent.links.ble_backend import claim_bench_host, client_kwargs, scanner_kwargs
from edge_agent.segments import Reassembler, split

SERVICE = "9ba40001-ec51-4948-832f-fdedb1cbf4a1"
CONTROL = "9ba40002-ec51-4948-832f-fdedb1cbf4a1"
TELEMETRY = "9ba40003-ec51-4948-832f-fdedb1cbf4a1"
BULK = "9ba40004-ec51-4948-832f-fdedb1cbf4a1"


async def scan() -> dict:
    found = await BleakScanner.discover(timeout=3, return_adv=True, **scanner_kwargs())
    out = {}
    for address, (_device, adv) in found.items():
        data = adv.manufacturer_data.get(0xFFFF)
        if data and data[:1] == b"\xea":
            out[address] = {"name": adv.local_name, "state": data[1]}
    return out


async def connect(address: str) -> dict:
    async with BleakClient(address, **client_kwargs()) as c:
        await c.start_notify(CONTROL, lambda _c, _d: None)
        await c.start_notify(TELEMETRY, lambda _c, _d: None)
        service = c.services.get_service(SERVICE)
        return {"mtu": c.mtu_size,
                "chars": {ch.uuid: sorted(ch.properties) for ch in service.characteristics}}


async def hostile(address: str) -> dict:
    got: list[bytes] = []
    r = Reassembler()

    def on_control(_c, data: bytearray) -> None:
        m = r.feed(bytes(data))
        if m is not None:
            got.append(m)

    async with BleakClient(address, **client_kwargs()) as c:
        await c.start_notify(CONTROL, on_control)
        await c.start_notify(TELEMETRY, lambda _c, _d: None)
        size = c.mtu_size - 3
        await c.write_gatt_char(BULK, b"\x80\x00\x01x", response=False)
        await asyncio.sleep(0.5)
        after_bulk = len(got)
        for value in (b"\xde\xad\xbe\xef garbage", b"\xff\xff\xff", b"\x80\x7f\xff" + b"x" * 40,
                      b"\x80\x00\x30abc", b"\x05wrong index", b"\x01nothing in progress"):
            await c.write_gatt_char(CONTROL, value, response=True)
        for value in (b"\x80\x00\x05plain", b"\x80\x00\x10a plain TIME...."):
            await c.write_gatt_char(TELEMETRY, value, response=False)
        try:
            await c.write_gatt_char(CONTROL, b"\x80\x02\x58" + b"x" * 597, response=True)
            long_write = "accepted"
        except Exception as e:     # a stack may refuse a long write outright
            long_write = type(e).__name__
        await asyncio.sleep(0.3)
        before = len(got)
        # A well-formed message after all that: CBOR {0: 99}, no such type.
        for seg in split(bytes.fromhex("a1001863"), size, 0):
            await c.write_gatt_char(CONTROL, seg, response=True)
        deadline = time.monotonic() + 5
        while len(got) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"after_bulk": [m.hex() for m in got[:after_bulk]], "replies": [m.hex() for m in got[before:]],
                "long_write": long_write, "connected": c.is_connected}


async def pair_and_stream(address: str, device_id: str, code: str, seconds: str = "6") -> dict:
    """Pair with the setup code, then act as a host of section 2 over sealed telemetry."""
    from edge_agent.messages import Ack, Batch, Sensors, Time, decode_message, encode_message
    from edge_agent.pairing import Initiator, new_host_id

    control: asyncio.Queue[bytes] = asyncio.Queue()
    telemetry: asyncio.Queue[bytes] = asyncio.Queue()
    rc, rt = Reassembler(), Reassembler()

    def into(r: Reassembler, q: asyncio.Queue):
        def on(_c, data: bytearray) -> None:
            m = r.feed(bytes(data))
            if m is not None:
                q.put_nowait(m)
        return on

    async with BleakClient(address, **client_kwargs()) as c:
        await c.start_notify(CONTROL, into(rc, control))
        await c.start_notify(TELEMETRY, into(rt, telemetry))
        size = c.mtu_size - 3
        counters = {CONTROL: 0, TELEMETRY: 0}

        async def send(char: str, msg: bytes) -> None:
            for seg in split(msg, size, counters[char]):
                await c.write_gatt_char(char, seg, response=(char == CONTROL))
            counters[char] += 1

        host = Initiator(device_id, code, "bench-test", new_host_id())
        await send(CONTROL, host.start())
        await send(CONTROL, host.reply(await asyncio.wait_for(control.get(), 30)))
        bond, session = host.done(await asyncio.wait_for(control.get(), 30))
        await send(TELEMETRY, session.seal(encode_message(Time(int(time.time() * 1000), True))))
        kinds: list[str] = []
        stored: set[int] = set()
        heap_index: int | None = None
        heap_free: list[int] = []     # the board's heap_free sensor, sampled while the link streams
        deadline = time.monotonic() + float(seconds)
        while time.monotonic() < deadline:
            try:
                sealed = await asyncio.wait_for(telemetry.get(), 1)
            except asyncio.TimeoutError:
                continue
            plain = session.open(sealed)
            if plain is None:
                kinds.append("unopened")
                continue
            msg = decode_message(plain)
            kinds.append(type(msg).__name__)
            if isinstance(msg, Sensors):
                names = [n for n, _unit in msg.sensors]
                heap_index = names.index("heap_free") if "heap_free" in names else None
            if isinstance(msg, Batch):
                stored.update(range(msg.first_seq, msg.first_seq + msg.count))
                for tick in msg.ticks:
                    pairs = tick[1:]
                    heap_free += [pairs[i + 1] for i in range(0, len(pairs), 2) if pairs[i] == heap_index]
                await send(TELEMETRY, session.seal(encode_message(Ack(device_id, msg.first_seq + msg.count))))
        return {"bond_id": bond.bond_id.hex(), "kinds": kinds, "records": len(stored),
                "heap_free_min": min(heap_free) if heap_free else None,
                "contiguous": sorted(stored) == list(range(min(stored), max(stored) + 1)) if stored else False}


async def hold(address: str) -> dict:
    gone = asyncio.Event()
    async with BleakClient(address, disconnected_callback=lambda _c: gone.set(), **client_kwargs()) as c:
        print(json.dumps({"connected": c.is_connected}), flush=True)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(gone.wait(), 30)
        except asyncio.TimeoutError:
            return {"dropped": False}
        return {"dropped": True, "after_s": round(time.monotonic() - t0, 2)}


def main() -> None:
    try:
        run(sys.argv[1])
    except EdgeError as e:
        # As `edge` reports it: the error, then what to do.
        print(f"error: {e.message}\nhint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)


def run(mode: str) -> None:
    if mode == "claim":
        print(json.dumps({"hci": str(claim_bench_host())}), flush=True)
        time.sleep(30)
        return
    fn = {"scan": scan, "connect": connect, "hostile": hostile, "hold": hold, "pair": pair_and_stream}[mode]
    out = asyncio.run(fn(*sys.argv[2:]))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
