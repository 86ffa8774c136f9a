"""Hostile and interrupted hosts for tests/test_ble_e2e.py, each a host
process of its own (``python tests/ble_e2e_central.py MODE ...``) with
``EDGE_BLE=sim``, as ``edge`` commands run. Each mode prints one JSON
document as its last stdout line.

- ``cut STAGE EDGE-ARGS...``: runs ``edge EDGE-ARGS`` (``edge pair ...``)
  in this process with the host's real code, but the link drops in the
  middle of the pairing: ``start`` after the first segment of a
  multi-segment PAIR_START, ``reply`` after PAIR_REPLY (no PAIR_CONFIRM
  sent), ``confirm`` after PAIR_CONFIRM is written (PAIR_DONE never read);
- ``hostile ADDRESS DEVICE_ID``: before any pairing, writes on control what
  a device must refuse (bad CBOR, wrong types, oversized, fragments out of
  order) and garbage that looks sealed on telemetry; the replies;
- ``tamper DEVICE_ID SECONDS``: resumes the registry's bond and streams into
  the registry through the host's real ingest (as the gateway does), while
  it records the sealed writes and re-injects them: a replayed ACK, an ACK
  with a bit flipped, two ACKs out of order, and a replayed notification
  to itself. Prints ``{"injected": ...}`` once done (the test then makes
  the board send a STATUS), and at the end the STATUS counters it got.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import cbor2
from bleak import BleakClient

from edge_agent.links.ble import CONTROL, TELEMETRY, BleConnection, find
from edge_agent.links.ble_backend import client_kwargs
from edge_agent.pairing import Initiator, new_host_id
from edge_agent.segments import Reassembler, split


def cut(stage: str, args: list[str]) -> dict:
    """``edge ARGS`` with BleConnection.request cut at ``stage``."""
    from edge_agent.cli import main

    calls = {"n": 0}
    real_request = BleConnection.request

    async def request(self: BleConnection, message: bytes, timeout: float = 10.0) -> bytes:
        calls["n"] += 1
        if stage == "start" and calls["n"] == 1:
            # The first 20-byte segment of PAIR_START, then the link drops.
            first = next(iter(split(message, 20, 0)))
            await self.client.write_gatt_char(CONTROL, first, response=True)
            await asyncio.sleep(0.3)
            await self.close()
        elif stage == "reply" and calls["n"] == 2:
            await self.close()       # PAIR_REPLY read; PAIR_CONFIRM never sent
        elif stage == "confirm" and calls["n"] == 2:
            await self._write(CONTROL, message, response=True)
            # The device has time to verify it (PAIR_DONE lands in the
            # queue, never read); then the link drops.
            await asyncio.sleep(2.0)
            await self.close()
        else:
            return await real_request(self, message, timeout)
        return await real_request(self, message, 0.5)   # the link is gone: fails as a drop does

    BleConnection.request = request  # type: ignore[method-assign]
    try:
        main.main(args, standalone_mode=False)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except Exception as e:
        code = getattr(e, "exit_code", 1)
        print(f"error: {e}", file=sys.stderr)
    return {"exit": code, "requests": calls["n"]}


async def hostile(address: str, device_id: str) -> dict:
    got: list[bytes] = []
    r = Reassembler()

    def on_control(_c, data: bytearray) -> None:
        m = r.feed(bytes(data))
        if m is not None:
            got.append(m)

    async def wait_reply(before: int) -> None:
        deadline = time.monotonic() + 5
        while len(got) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    replies: dict[str, list] = {}
    start = Initiator(device_id, "00000000", "mallory", new_host_id()).start()
    fields = cbor2.loads(start)
    async with BleakClient(address, **client_kwargs()) as c:
        await c.start_notify(CONTROL, on_control)
        await c.start_notify(TELEMETRY, lambda _c, _d: None)
        n = 0

        async def send(name: str, message: bytes, size: int = 244) -> None:
            nonlocal n
            before = len(got)
            for seg in split(message, size, n):
                await c.write_gatt_char(CONTROL, seg, response=True)
            n += 1
            await wait_reply(before)
            replies[name] = [cbor2.loads(m) for m in got[before:]]

        await send("bad_cbor", b"\xff\xfe\x00garbage")
        await send("not_a_map", cbor2.dumps([16, 1, 2]))
        await send("sid_wrong_type", cbor2.dumps({**fields, 1: 12345}))
        await send("ya_too_short", cbor2.dumps({**fields, 2: b"\x01" * 5}))
        await send("account_too_long", cbor2.dumps({**fields, 3: "a" * 65}))
        # Longer than any message (1036 bytes, 5.3): cut by hand, since split() refuses it.
        big = cbor2.dumps({**fields, 3: "b" * 1000})
        before = len(got)
        segs = [bytes([0x80 | n]) + len(big).to_bytes(2, "big") + big[:197]]
        segs += [bytes([i]) + big[197 + (i - 1) * 199:197 + i * 199] for i in range(1, 6)]
        for seg in segs:
            await c.write_gatt_char(CONTROL, seg, response=True)
        n += 1
        await asyncio.sleep(1.0)
        replies["oversized_pair_start"] = [cbor2.loads(m) for m in got[before:]]
        # Out of order: a PAIR_START's segments 0, 2, 1 (dropped at 2, then 1 has nothing in progress).
        segs = list(split(start, 20, n))
        before = len(got)
        for seg in (segs[0], segs[2], segs[1], *segs[3:]):
            await c.write_gatt_char(CONTROL, seg, response=True)
        n += 1
        await asyncio.sleep(1.0)
        replies["out_of_order"] = [cbor2.loads(m) for m in got[before:]]
        # Garbage that looks sealed (a counter, then bytes) on telemetry: no session.
        for k in range(3):
            sealed = k.to_bytes(4, "big") + bytes(range(k, k + 30))
            for seg in split(sealed, 244, k):
                await c.write_gatt_char(TELEMETRY, seg, response=False)
        before = len(got)
        await asyncio.sleep(0.5)
        replies["after_telemetry"] = [cbor2.loads(m) for m in got[before:]]
        # Still answering: one more bad message gets its ERROR.
        await send("still_answering", cbor2.dumps({0: 99}))
        connected = c.is_connected
    return {"replies": {k: [dict(m) for m in v] for k, v in replies.items()}, "connected": connected}


async def tamper(device_id: str, seconds: str) -> dict:
    from edge_agent.cli.pair import load_bond
    from edge_agent.links.ble import TelemetryPump
    from edge_agent.messages import Status, decode_message
    from edge_agent.paths import default_db
    from edge_agent.store import Store
    from edge_agent.telemetry.ingest import IngestCore
    from edge_agent.telemetry.writer import RegistryWriter

    db = str(default_db())
    writer = RegistryWriter(db)
    registry = Store(db, shared=True)
    core = IngestCore(writer, registry)
    bond = load_bond(registry, device_id)
    seen = await find(device_id, 20)
    conn = BleConnection(seen.address, device_id)
    await conn.connect()
    session = await conn.resume(bond)
    pump = TelemetryPump(conn, session, core)

    writes: list[bytes] = []           # the sealed messages this host wrote
    notified: list[bytes] = []         # and those the device notified
    statuses: list[dict] = []
    injected: dict = {}
    inject = asyncio.Event()
    real_write = conn.write_telemetry

    async def write(sealed: bytes) -> None:
        if inject.is_set() and not injected and len(writes) >= 2:
            # A genuine message m (counter c) is about to go out: first the
            # replay of an earlier write, then m with a bit flipped, then an
            # ACK sealed after m (counter c+1) before m itself: m is then out
            # of order. Three rejected; the device sends m's batch again.
            replay = writes[-2]
            flipped = bytearray(sealed)
            flipped[-3] ^= 0x10
            later = session.seal(cbor2.dumps({0: 3, 1: device_id, 2: 0}))
            for m in (replay, bytes(flipped), later, sealed):
                await real_write(m)
            injected.update(replayed_counter=int.from_bytes(replay[:4], "big"),
                            late_counter=int.from_bytes(sealed[:4], "big"),
                            records=pump.link.stats.records)
            # A replayed notification, to this host: refused as well.
            pump._received(notified[0])
            print(json.dumps({"injected": injected}), flush=True)
            return
        writes.append(sealed)
        await real_write(sealed)

    conn.write_telemetry = write  # type: ignore[method-assign]
    real_received = pump._received

    def received(sealed: bytes) -> None:
        notified.append(sealed)
        real_received(sealed)

    pump._received = received  # type: ignore[method-assign]
    real_receive = pump.link.receive_message

    def receive_message(plain: bytes) -> None:
        try:
            msg = decode_message(plain)
        except Exception:
            msg = None
        if isinstance(msg, Status):
            statuses.append({"reason": msg.reason, "counters": msg.counters})
        real_receive(plain)

    pump.link.receive_message = receive_message  # type: ignore[method-assign]
    run = asyncio.ensure_future(pump.run())
    deadline = time.monotonic() + float(seconds)
    await asyncio.sleep(6)
    inject.set()
    while time.monotonic() < deadline and not run.done():
        await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, writer.flush, 5.0)
    await asyncio.sleep(1.0)           # the last ACKs go out
    await conn.close()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
    await loop.run_in_executor(None, writer.close)
    registry.close()
    return {"injected": injected, "statuses": statuses, "records": pump.link.stats.records,
            "host_bad_sealed": pump.bad_sealed}


def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "cut":
        out = cut(args[0], args[1:])
    else:
        out = asyncio.run({"hostile": hostile, "tamper": tamper}[mode](*args))
    print(json.dumps(out, default=lambda b: b.hex() if isinstance(b, bytes) else str(b)), flush=True)


if __name__ == "__main__":
    main()
