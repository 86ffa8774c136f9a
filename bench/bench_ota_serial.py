"""OTA over serial to a virtual board: image bytes per second, against the console's raw rate.

Two measures, in one run, so the ratios hold on a loaded machine:

1. **The device's serial link on a pty.** ``micropython`` at the picow's heap
   runs the firmware's real :class:`SerialLink` (``edgefw.link_serial``) on
   its stdin, a pseudo-terminal, with one task waiting on a ThreadSafeFlag as
   the BLE link's does and one sleeping as the sampler does (on the Unix port
   the two make every pass of the event loop that waits poll for 1 ms). This host writes frame lines of 512-byte payloads (an
   OTA_CHUNK's image bytes on serial) as fast as the pty takes them. Three
   readers, the same bytes:

   - ``raw``: ``readinto`` of 4 KB blocks, nothing decoded: the pty's byte
     rate into the interpreter (the baseline);
   - ``await-per-byte``: the reader before issue 9's fix, one
     ``await stream.readinto(one)`` per byte into the same ``feed``;
   - ``link``: ``SerialLink.run`` as the agent runs it.

2. **End to end.** ``edge sim up --board picow``, ``edge ota bundle`` of the
   agent, ``edge ota sign``, and ``edge ota push PORT --until installed``:
   image bytes over the push's seconds (HELLO, offer, transfer, verify and
   install included).

Run: ``python bench/bench_ota_serial.py [--frames N] [--no-push]``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hil"))

from edge_agent.frames import encode_frame  # noqa: E402
from edge_hil.virtual.pty_port import raw_termios  # noqa: E402
from tests.mpy import board_heap, micropython_exe  # noqa: E402

PAYLOAD = 512

# The device side: argv[1] is the reader, argv[2] the frames to expect.
_DEVICE = r"""
import asyncio, sys, time
sys.path.insert(0, FIRMWARE)
from edgefw.link_serial import SerialLink, LINE
from edgefw.port import Unix
import micropython
micropython.kbd_intr(-1)
mode = sys.argv[1]
want = int(sys.argv[2])

class Done(Exception):
    pass

class Count:
    def __init__(self):
        self.n = 0
        self.bytes = 0
        self.t0 = 0
    def receive(self, payload, now_ms):
        if not self.n:
            self.t0 = time.ticks_ms()
        self.n += 1
        self.bytes += len(payload)
        if self.n == want:
            raise Done()
    def poll(self, now_ms):
        return None, 30000

class Clock:
    def uptime_ms(self):
        return time.ticks_ms()

class Agent:
    clock = Clock()
    wake = asyncio.Event()
    no_memory = 0
    def fs_error(self, e):
        pass

up = Count()
link = SerialLink(Unix(), up)

async def await_per_byte():
    stream = link.port.reader()
    one = link._byte
    while True:
        await stream.readinto(one)
        if link.feed(one[0]) == LINE:
            link.receive_line(link.line(), 0)

async def raw():
    stream = link.port.reader()
    buf = bytearray(4096)
    n = 0
    t0 = 0
    while True:
        await stream.readinto(buf)
        if not n:
            t0 = time.ticks_ms()
        n += len(buf)
        if n >= want:
            up.t0 = t0
            up.bytes = n
            raise Done()

async def flag():
    await asyncio.ThreadSafeFlag().wait()

async def sampler():
    while True:
        await asyncio.sleep_ms(1000)

async def main():
    asyncio.create_task(flag())
    asyncio.create_task(sampler())
    if mode == "link":
        await link.run(Agent(), asyncio.sleep_ms)
    elif mode == "raw":
        await raw()
    else:
        await await_per_byte()

try:
    asyncio.run(main())
except Done:
    ms = time.ticks_diff(time.ticks_ms(), up.t0)
    sys.stdout.write("RESULT %d %d\n" % (up.bytes, ms))
"""


def link_rate(mode: str, frames: int, heap: int) -> tuple[float, float]:
    """(line bytes/s, payload bytes/s) of ``mode`` reading ``frames`` frame lines from a pty."""
    lines = b"".join(encode_frame(bytes([i % 251]) * PAYLOAD) for i in range(frames))
    want = frames if mode != "raw" else len(lines) - len(lines) % 4096
    m, s = os.openpty()
    raw_termios(s, termios.NOFLSH)
    code = f"FIRMWARE = {str(REPO / 'firmware')!r}\n" + _DEVICE
    proc = subprocess.Popen([micropython_exe(), "-X", f"heapsize={heap}", "-c", code, mode, str(want)],
                            stdin=s, stdout=s, stderr=s, env={**os.environ, "MICROPYPATH": ".frozen"})
    os.close(s)
    os.set_blocking(m, False)
    time.sleep(0.3)         # the interpreter starts; a pty holds what comes before
    out = b""
    todo = memoryview(lines)
    while proc.poll() is None or select.select([m], [], [], 0)[0]:
        r, w, _ = select.select([m], [m] if todo else [], [], 0.2)
        if w:
            try:
                todo = todo[os.write(m, todo[:4096]):]
            except BlockingIOError:
                pass
        if r:
            try:
                chunk = os.read(m, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    os.close(m)
    fields = out.decode(errors="replace").split("RESULT")[-1].split()
    if len(fields) < 2:
        raise SystemExit(f"{mode}: the device printed no result:\n{out.decode(errors='replace')[-2000:]}")
    got, ms = int(fields[0]), max(int(fields[1]), 1)
    line_bytes = len(lines) if mode != "raw" else got
    return line_bytes / ms * 1000, (got if mode == "raw" else frames * PAYLOAD) / ms * 1000


def edge(*args: str, env: dict) -> str:
    exe = Path(sys.executable).with_name("edge")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"edge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def push_rate() -> tuple[int, float, str]:
    """(image bytes, seconds, final state) of a real bundle pushed to a virtual picow over serial."""
    with tempfile.TemporaryDirectory(prefix="bench-ota-serial-") as tmp:
        env = {**os.environ, "EDGE_HOME": str(Path(tmp) / "home"), "EDGE_DB": str(Path(tmp) / "registry.db")}
        port = json.loads(edge("sim", "up", "--board", "picow", "--json", env=env))[0]["port"]
        try:
            edge("ota", "keygen", env=env)
            bundle, manifest = str(Path(tmp) / "a.bundle"), str(Path(tmp) / "a.manifest")
            edge("ota", "bundle", "--board", "picow", "--version", "9.1.0", "-o", bundle, env=env)
            edge("ota", "sign", bundle, "--board", "picow", "--component", "agent", "--version", "9.1.0",
                 "--sequence", "1", "-o", manifest, env=env)
            out = json.loads(edge("ota", "push", port, bundle, manifest, "--until", "installed", "--json",
                                  "--timeout", "300s", env=env).splitlines()[-1])
        finally:
            edge("sim", "down", env=env)
    return out["size"], out["seconds"], out["state"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="frame lines per reader (default 200)")
    ap.add_argument("--no-push", action="store_true", help="skip the end-to-end push")
    a = ap.parse_args()
    heap = board_heap("picow")
    print(f"serial link under micropython at the picow's heap ({heap} bytes), {a.frames} frames of "
          f"{PAYLOAD}-byte payloads, a task on a ThreadSafeFlag and a sleeping one")
    rates = {}
    for mode in ("raw", "await-per-byte", "link"):
        n = a.frames if mode != "await-per-byte" else max(a.frames // 40, 5)
        rates[mode] = link_rate(mode, n, heap)
        line_bps, payload_bps = rates[mode]
        print(f"  {mode:15s} {line_bps:12,.0f} console B/s {payload_bps:12,.0f} payload B/s")
    raw_payload = rates["raw"][1] * PAYLOAD / len(encode_frame(bytes(PAYLOAD)))
    print(f"  link / raw pty rate (payload terms): {rates['link'][1] / raw_payload:.2f}")
    print(f"  link / await-per-byte: {rates['link'][1] / rates['await-per-byte'][1]:.1f}x")
    if a.no_push:
        return
    size, seconds, state = push_rate()
    bps = size / max(seconds, 0.001)
    print(f"edge ota push to a virtual picow over serial: {size} image bytes, {state} in {seconds:.1f} s: "
          f"{bps:,.0f} image B/s")
    print(f"  push / raw pty rate (payload terms): {bps / raw_payload:.3f}; "
          f"push / await-per-byte link: {bps / rates['await-per-byte'][1]:.1f}x")


if __name__ == "__main__":
    main()
