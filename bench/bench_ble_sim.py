"""The bleak backend on Bumble over an emulated link: time to scan and connect,
and notifications per second through one connection.

The air is tests/ble_air.py: a Bumble GATT peripheral and the host's emulated
controller on one ``LocalLink``, the host's controller served on a unix socket
and reached by the backend as ``unix:PATH`` (one process, one event loop: the
peripheral's stack, both controllers and the host's stack share one CPU). The
host side is plain bleak (``BleakScanner.find_device_by_address``,
``BleakClient``, ``start_notify``) with ``EDGE_BLE=sim``.

The emulated link has no airtime (no connection interval, no loss), so these
figures are the CPU cost of two Python Bluetooth stacks and say nothing about
a radio; compare backends or versions with them, never a board's throughput.
For each server MTU the peripheral offers (the host asks for 517), it sends
``--count`` notifications of a full ATT payload (MTU - 3) as fast as its stack
takes them and the host counts them all arriving, in order.

Run: ``python bench/bench_ble_sim.py [--count N] [--connects N]`` (prints a table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bleak import BleakClient, BleakScanner  # noqa: E402

from edge_agent.links.ble_backend import client_kwargs, scanner_kwargs  # noqa: E402
from tests.ble_air import CHAR, PERIPHERAL_ADDRESS, Peripheral, virtual_air  # noqa: E402


async def scan_and_connect(peripheral: Peripheral) -> float:
    started = time.perf_counter()
    device = await BleakScanner.find_device_by_address(PERIPHERAL_ADDRESS, timeout=5, **scanner_kwargs())
    assert device is not None, "the peripheral was not seen advertising"
    async with BleakClient(device, **client_kwargs()):
        took = time.perf_counter() - started
    while peripheral.connection is not None or not peripheral.device.is_advertising:
        await asyncio.sleep(0.005)
    return took


async def notifications(peripheral: Peripheral, server_mtu: int, count: int) -> tuple[int, float]:
    peripheral.device.gatt_server.max_mtu = server_mtu
    async with BleakClient(PERIPHERAL_ADDRESS, **client_kwargs()) as client:
        payload = bytes(client.mtu_size - 3)
        received: list[int] = []
        done = asyncio.Event()

        def on_data(_char: object, data: bytearray) -> None:
            received.append(int.from_bytes(data[:4], "big"))
            if len(received) == count:
                done.set()
        await client.start_notify(CHAR, on_data)
        started = time.perf_counter()
        for i in range(count):
            await peripheral.device.notify_subscribers(peripheral.characteristic,
                                                       i.to_bytes(4, "big") + payload[4:])
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - started
        assert received == list(range(count)), "notifications lost or out of order"
        return client.mtu_size, elapsed


async def main(count: int, connects: int) -> None:
    async with virtual_air() as (peripheral, spec):
        os.environ["EDGE_BLE"], os.environ["EDGE_BLE_HCI"] = "sim", spec
        times = [await scan_and_connect(peripheral) for _ in range(connects)]
        print(f"scan+connect (find_device_by_address, connect, MTU exchange, service discovery), "
              f"{connects} runs: median {statistics.median(times) * 1000:.0f} ms, "
              f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        print(f"{'server MTU':>10} {'MTU':>5} {'payload B':>9} {'notif/s':>9} {'payload MB/s':>12}")
        for server_mtu in (23, 185, 247, 517):
            mtu, elapsed = await notifications(peripheral, server_mtu, count)
            rate = count / elapsed
            print(f"{server_mtu:>10} {mtu:>5} {mtu - 3:>9} {rate:>9.0f} {rate * (mtu - 3) / 1e6:>12.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="notifications per MTU (default 2000)")
    parser.add_argument("--connects", type=int, default=5, help="scan+connect runs (default 5)")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.connects))
