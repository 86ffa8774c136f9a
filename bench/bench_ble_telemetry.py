"""Telemetry over BLE on the virtual air: records per second through one
connection, payload bytes / ATT bytes at MTU 23, 185 and 247, and round trips
per 100 records, against the same board's serial link over the same kind of
backlog, measured in the same run.

How: a virtual bench in a temporary EDGE_HOME (``edge sim up --board esp32``,
the board sampling every 100 ms); the board is paired over the air with
``edge pair`` (its setup code from ``edge label``, as tests/host/test_pair_cli.py
does). Then, for the serial link and for the BLE link at each MTU the host
offers (the Bumble backend's ``EDGE_BLE_MTU``), the board samples with no host
for ``--backlog`` seconds, so its journal holds a backlog, and the host
connects and drains it with the real host link: serial through
:class:`edge_agent.links.serial.SerialLink`, BLE through
:class:`edge_agent.links.ble.BleConnection` (RESUME with the registry's bond)
and :class:`~edge_agent.links.ble.TelemetryPump`, both into one
:class:`~edge_agent.telemetry.ingest.IngestCore` and
:class:`~edge_agent.telemetry.writer.RegistryWriter`. The drain ends when the
first BATCH shorter than the longest one so far is committed (the device has
caught up and sends what it has).

Counted on the host side of the link, from the session's first message to the
end of the drain:

- payload: the plain section 2 messages (TIME, HELLO, SENSORS, BATCH, ACK...),
  both directions;
- ATT: every ATT value written by the host or notified by the device, plus 3
  bytes of ATT header each (segment headers and the seal's overhead are in
  the value);
- serial wire bytes: every byte read from and written to the console port
  (frames and whatever console text the agent prints).

The emulated link has no airtime (no connection interval, no loss:
/work/shared/FACTS.md), so the measured records/s of BLE is the CPU cost of
two Python Bluetooth stacks, the bridge and the board's interpreter, not a
radio's. A modelled airtime figure is printed beside it: LE 1M PHY with data
length extension, a connection interval of ``--interval`` ms, at most
``--per-event`` packets per connection event; each run of notifications
between two host writes takes ceil(n / per_event) events, and each host write
(an ACK) one more event, since the device sends its next BATCH only once the
ACK has reached it. Serial is also modelled at the board file's console baud
(10 bits a byte).

On an esp32 (110 KiB budget) the agent currently stops with a MemoryError
sealing the first catch-up BATCH over BLE (edgefw/ccm.py allocates the
message's size); the bench says so and resets the board. Hence picow by
default.

Run:  .venv/bin/python bench/bench_ble_telemetry.py [--backlog 15] [--board picow] [--mtus 23,185,247]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.messages import Batch, decode_message  # noqa: E402
from tests.harness import Home, edge  # noqa: E402

PERIOD_MS = 100
MTUS = (23, 185, 247)
DRAIN_TIMEOUT = 60.0


@dataclass
class Meter:
    """What one drain carried, counted on the host side of the link."""

    t0: float = 0.0
    batches: list[tuple[float, int]] = field(default_factory=list)   # (received at, records)
    plain_in: int = 0
    plain_out: int = 0
    msgs_in: int = 0
    msgs_out: int = 0
    wire_in: int = 0          # serial bytes read / ATT bytes notified (value + 3)
    wire_out: int = 0         # serial bytes written / ATT bytes written (value + 3)
    pdus_in: int = 0          # notifications (BLE) / frames read (serial)
    pdus_out: int = 0         # writes (BLE) / frames written (serial)
    cycles: list[int] = field(default_factory=lambda: [0])   # notifications between host writes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, payload: bytes) -> None:
        with self.lock:
            self.plain_in += len(payload)
            self.msgs_in += 1
            try:
                msg = decode_message(payload)
            except Exception:
                return
            if isinstance(msg, Batch):
                self.batches.append((time.perf_counter(), msg.count))

    def sent(self, payload: bytes) -> None:
        with self.lock:
            self.plain_out += len(payload)
            self.msgs_out += 1

    def drained(self) -> int | None:
        """Records up to and including the first BATCH shorter than the longest before it, once seen."""
        counts = [n for _, n in self.batches]
        for i, n in enumerate(counts):
            if i and n < max(counts[:i]):
                return sum(counts[:i + 1])
        return None


def instrument_session(session, meter: Meter) -> None:
    inner_receive, inner_send = session.receive_message, session.send

    def receive(payload: bytes) -> None:
        meter.received(payload)
        inner_receive(payload)

    def send(payload: bytes) -> None:
        meter.sent(payload)
        inner_send(payload)
    session.receive_message, session.send = receive, send


def wait_drained(meter: Meter, stats, deadline: float) -> tuple[int, float] | None:
    """(records drained, time the last of them was committed), or None at the deadline."""
    while time.perf_counter() < deadline:
        target = meter.drained()
        if target is not None and stats.records >= target:
            return target, time.perf_counter()
        time.sleep(0.002)
    return None


# -- serial ----------------------------------------------------------------------

def drain_serial(port: str, baud: int, core) -> dict:
    import serial

    from edge_agent.links.serial import SerialLink

    meter = Meter()
    link = SerialLink(port, core, baud=baud)
    instrument_session(link.session, meter)
    ser = serial.serial_for_url(port, baudrate=baud, timeout=0.01, write_timeout=2)
    stop = threading.Event()

    def write(data: bytes) -> int | None:
        meter.wire_out += len(data)
        meter.pdus_out += 1
        return ser.write(data)

    def reader() -> None:
        while not stop.is_set():
            data = ser.read(4096)
            if data:
                meter.wire_in += len(data)
                link.feed(data)

    ser.reset_input_buffer()
    meter.t0 = time.perf_counter()
    link.opened(write)
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        done = wait_drained(meter, link.stats, meter.t0 + DRAIN_TIMEOUT)
    finally:
        stop.set()
        thread.join(5)
        link.closed()
        ser.close()
    meter.pdus_in = meter.msgs_in
    return summarise("serial", meter, done)


# -- BLE -------------------------------------------------------------------------

async def drain_ble(device_id: str, mtu: int, db: str, core) -> dict:
    from edge_agent.cli.pair import load_bond
    from edge_agent.links.ble import BleConnection, TelemetryPump, find

    os.environ["EDGE_BLE_MTU"] = str(mtu)
    with core.lock:
        bond = load_bond(core.registry, device_id)
    seen = await find(device_id, 20)
    meter = Meter()
    conn = BleConnection(seen.address, device_id)
    counting = {"on": False}
    inner_control, inner_telemetry = conn._control_notified, conn._telemetry_notified

    def count_in(data: bytearray) -> None:
        if counting["on"]:
            meter.wire_in += len(data) + 3
            meter.pdus_in += 1
            meter.cycles[-1] += 1

    def on_control(sender, data: bytearray) -> None:
        count_in(data)
        inner_control(sender, data)

    def on_telemetry(sender, data: bytearray) -> None:
        count_in(data)
        inner_telemetry(sender, data)
    conn._control_notified, conn._telemetry_notified = on_control, on_telemetry   # type: ignore[method-assign]
    connect_started = time.perf_counter()
    await conn.connect()
    inner_write = conn.client.write_gatt_char

    async def write(char, data, response: bool = False) -> None:
        if counting["on"]:
            meter.wire_out += len(data) + 3
            meter.pdus_out += 1
            meter.cycles.append(0)
        await inner_write(char, data, response=response)
    conn.client.write_gatt_char = write
    session = await conn.resume(bond)
    setup = time.perf_counter() - connect_started
    negotiated = conn.client.mtu_size
    pump = TelemetryPump(conn, session, core)
    instrument_session(pump.link, meter)
    counting["on"] = True
    meter.t0 = time.perf_counter()
    run = asyncio.ensure_future(pump.run())
    loop = asyncio.get_running_loop()
    try:
        done = await loop.run_in_executor(None, wait_drained, meter, pump.link.stats,
                                          meter.t0 + DRAIN_TIMEOUT)
    finally:
        counting["on"] = False
        await conn.close()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    out = summarise(f"BLE MTU {mtu}", meter, done)
    out.update(mtu=negotiated, setup_s=setup)
    return out


def summarise(name: str, meter: Meter, done: tuple[int, float] | None) -> dict:
    if done is None or not meter.batches:
        return {"link": name, "failed": True, "batches": len(meter.batches),
                "counts": [n for _, n in meter.batches][:20], "msgs_in": meter.msgs_in, "msgs_out": meter.msgs_out,
                "pdus_in": meter.pdus_in, "pdus_out": meter.pdus_out}
    records, t_end = done
    first = meter.batches[0][0]
    return {"link": name, "records": records, "batches": len(meter.batches),
            "seconds": t_end - first, "to_first_batch_s": first - meter.t0,
            "plain": meter.plain_in + meter.plain_out, "wire": meter.wire_in + meter.wire_out,
            "pdus_in": meter.pdus_in, "pdus_out": meter.pdus_out, "cycles": list(meter.cycles),
            "max_batch": max(n for _, n in meter.batches)}


def airtime_s(r: dict, interval_ms: float, per_event: int) -> float:
    """Modelled time for the drain's notifications and writes (see the docstring)."""
    events = sum(math.ceil(n / per_event) for n in r["cycles"]) + r["pdus_out"]
    return events * interval_ms / 1000


# -- the run ---------------------------------------------------------------------

def set_period(home: Home, board: dict) -> None:
    cfg_path = Path(board["fs"]) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["sample_period_ms"] = PERIOD_MS
    cfg_path.write_text(json.dumps(cfg))
    home.edge("sim", "reset", board["name"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="picow",
                        help="board type (default picow: an esp32's agent runs out of heap sealing a catch-up BATCH)")
    parser.add_argument("--backlog", type=float, default=15.0,
                        help="seconds the board samples with no host before each drain (default 15)")
    parser.add_argument("--interval", type=float, default=30.0, help="modelled connection interval, ms")
    parser.add_argument("--mtus", default=",".join(map(str, MTUS)), help="MTUs the host offers (default 23,185,247)")
    parser.add_argument("--per-event", type=int, default=4, help="modelled packets per connection event")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-ble-telemetry-"))
    home = Home(root / "home")
    os.environ.update({k: home.env[k] for k in ("EDGE_HOME", "EDGE_SIM_DIR", "EDGE_DB")})
    os.environ["EDGE_BLE"] = "sim"
    os.environ.pop("EDGE_BLE_HCI", None)
    try:
        (board,) = home.up(args.board)
        set_period(home, board)
        device_id = board["device_id"]
        label = json.loads(home.edge("label", device_id, "--out", str(root / "labels"), "--json").stdout)
        started = time.perf_counter()
        edge("pair", device_id, "--code", label["setup_code"], "--account", "bench",
             env={**home.env, "EDGE_BLE": "sim"}, timeout=180)
        pair_s = time.perf_counter() - started
        baud = json.loads((REPO / "boards" / f"{args.board}.json").read_text())["console"]["baud"]
        results = run_links(home, board, args.backlog, baud, [int(m) for m in args.mtus.split(',')])
        report(args, board, pair_s, baud, results)
    finally:
        home.down()
        shutil.rmtree(root, ignore_errors=True)


def run_links(home: Home, board: dict, backlog: float, baud: int, mtus: list[int]) -> list[dict]:
    from edge_agent.store import Store
    from edge_agent.telemetry.ingest import IngestCore
    from edge_agent.telemetry.writer import RegistryWriter

    writer = RegistryWriter(str(home.db))
    registry = Store(str(home.db), shared=True)
    core = IngestCore(writer, registry)
    results = []
    async def links() -> None:
        # One event loop for every BLE connection: the backend's Bumble host is bound to it.
        loop = asyncio.get_running_loop()
        await asyncio.sleep(backlog)
        results.append(await loop.run_in_executor(None, drain_serial, board["port"], baud, core))
        print(f"  serial: {results[-1].get('records')} records drained", file=sys.stderr)
        for mtu in mtus:
            await asyncio.sleep(backlog)
            results.append(await drain_ble(board["device_id"], mtu, str(home.db), core))
            print(f"  {results[-1]['link']}: {results[-1].get('records')} records drained", file=sys.stderr)
            if results[-1].get("failed"):
                crash = [line for line in Path(board["console_log"]).read_text(errors="replace").splitlines()
                         if "agent crashed" in line]
                results[-1]["crash"] = crash[-1] if crash else None
                if crash:     # the agent stopped: boot it again for the next MTU
                    home.edge("sim", "reset", board["name"])

    try:
        asyncio.run(links())
    finally:
        writer.flush(5)
        writer.close()
        with core.lock:
            registry.close()
    return results


def report(args, board: dict, pair_s: float, baud: int, results: list[dict]) -> None:
    print(f"board {board['name']} ({board['device_id']}), sampling every {PERIOD_MS} ms; "
          f"backlog {args.backlog:g} s of samples before each drain; `edge pair` took {pair_s:.1f} s")
    print("The emulated link has no airtime (FACTS.md): BLE records/s below is CPU-bound (two Python "
          "Bluetooth stacks, the bridge, the board's interpreter), not a radio's.")
    base = results[0]
    if base.get("failed"):
        print("serial baseline: the drain did not finish; no ratios")
    head = (f"{'link':<12} {'records':>7} {'batches':>7} {'rec/batch':>9} {'rec/s':>7} {'x serial':>8} "
            f"{'payload B':>9} {'wire B':>8} {'pay/wire':>8} {'wire B/rec':>10} "
            f"{'writes/100':>10} {'notif/100':>9} {'model s':>7} {'model rec/s':>11}")
    print(head)
    for r in results:
        if r.get("failed"):
            print(f"{r['link']:<12} drain did not finish within {DRAIN_TIMEOUT:g} s ({r['batches']} batches)"
                  + (f"; the board's console: {r['crash']}" if r.get("crash") else ""))
            continue
        rate = r["records"] / r["seconds"]
        x = rate / (base["records"] / base["seconds"]) if not base.get("failed") else float("nan")
        per100 = 100 / r["records"]
        if r["link"] == "serial":
            model = r["wire"] * 10 / baud
            writes, notifs = r["pdus_out"] * per100, r["pdus_in"] * per100
        else:
            model = airtime_s(r, args.interval, args.per_event)
            writes, notifs = r["pdus_out"] * per100, r["pdus_in"] * per100
        print(f"{r['link']:<12} {r['records']:>7} {r['batches']:>7} {r['records'] / r['batches']:>9.1f} "
              f"{rate:>7.0f} {x:>8.2f} {r['plain']:>9} {r['wire']:>8} {r['plain'] / r['wire']:>8.3f} "
              f"{r['wire'] / r['records']:>10.1f} {writes:>10.1f} {notifs:>9.1f} {model:>7.2f} "
              f"{r['records'] / model:>11.0f}")
    print("payload B: plain section 2 messages, both directions; wire B: serial bytes read and written, or "
          "ATT values + 3 B ATT header each, both directions; writes/100 and notif/100: host writes and "
          "device notifications (serial: frames written and read) per 100 records stored.")
    print(f"model s (BLE): LE 1M PHY with data length extension, connection interval {args.interval:g} ms, at "
          f"most {args.per_event} packets per event; each run of notifications between two host writes takes "
          f"ceil(n/{args.per_event}) events and each host write (the ACK the next BATCH waits for) one event. "
          f"model s (serial): wire bytes at the console's {baud} baud, 10 bits a byte.")
    for r in results[1:]:
        if not r.get("failed"):
            print(f"{r['link']}: negotiated MTU {r['mtu']}, connect + RESUME {r['setup_s'] * 1000:.0f} ms, "
                  f"first BATCH {r['to_first_batch_s'] * 1000:.0f} ms after the session opened, "
                  f"largest BATCH {r['max_batch']} records")


if __name__ == "__main__":
    main()
