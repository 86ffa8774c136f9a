"""An OTA over BLE at MTU 247 on the virtual air: protocol efficiency (image
bytes / ATT payload bytes moved, goal >= 0.95), round trips per 64 KB (goal
<= 16), and the device's CPU cost per KB under ``micropython`` as a ratio of
a bare ``hashlib.sha256`` update plus a file write of that KB, all measured
in the same run.

How: a virtual bench in a temporary EDGE_HOME (``edge sim up --board picow``:
the real firmware, edgefw.link_ble + ota_client + ota_transfer, under
``micropython`` at the board's heap budget, its radio an emulated Bumble
controller on the bench's air); ``edge pair`` over the air; ``edge ota
keygen``, ``edge ota bundle --board picow`` and ``edge ota sign``. Then
``edge ota push DEVICE IMAGE MANIFEST --until installed`` runs in this
process (click's runner), so its BLE link, the real host path
(edge_agent.ota_push.push_ble, edge_ota.transfer.Sender,
BleConnection.write_bulk), can be counted. The host offers MTU 247
(``EDGE_BLE_MTU``) and the device accepts up to 247 (5.2). Two images:

- 64 KB: 65,536 bytes that are not a bundle, signed as an agent: the device
  takes all of it in windows, checks its digest (``verified``) and refuses it
  at unpacking (``bad-bundle``), so it stays on its agent. Every byte moves
  as a bundle's would.
- the bundle (~80 KB): installs (``installed`` ends the push).

Counted on the host's side of the link, from the connection's first ATT
value to the end of the push:

- image bytes: the data of every bulk value (7.4), the 4-byte offset not
  included; bytes sent twice count once here and twice in ATT;
- ATT payload bytes: every ATT value (the attribute value, what ``MTU - 3``
  bounds) that belongs to the OTA, both directions: bulk values, and the
  segments (5.3) of every sealed OTA message on the telemetry characteristic
  (OTA_QUERY, OTA_OFFER, OTA_WINDOW, OTA_STATE), segment headers and the
  seal's overhead included. The device's telemetry (BATCH, ACK, ...) that
  shares the connection and the RESUME on the control characteristic are
  not the OTA's and are counted apart. ``+hdr`` adds ATT's own 3 bytes
  (opcode, handle) per value, as bench_ble_telemetry.py counts wire bytes.
- round trip: a time the host must wait for a device message before it can
  send more image bytes. In the trace (ATT values in the order the host
  wrote or was notified of them): the host waits from its OTA_OFFER until
  its first bulk write, whenever a bulk write reaches the last
  OTA_WINDOW's ``limit`` with image bytes still to send, and after an
  OTA_WINDOW with rewind (the bytes it sends next, it sends because the
  device asked); each wait ends at the host's next bulk write, which a
  device message made possible: one round trip. A window that arrives
  before the host has used its credit costs no wait (the pipelining of
  7.5). The last waits, for ``verified`` and ``installed``, send no more
  image bytes and are not round trips. Per 64 KB: round trips x 65,536 / image size.

The emulated link has no airtime (FACTS.md): the seconds printed are CPU
(two Python Bluetooth stacks, the bridge, the board's interpreter), not a
radio's; efficiency and round trips do not depend on it.

Device CPU per KB: bench/bench_ota_device.py's chunk path (b), run here with
the 240-byte chunks of MTU 247 and with its own 960-byte OTA_CHUNK for
comparison, on the ESP32 budget (the tightest heap with a radio).

Run:  .venv/bin/python bench/bench_ota_transfer.py [--board picow] [--mtu 247]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KB64 = 65536
OTA_TYPES = {9: "query", 10: "offer", 11: "window", 13: "state"}
ATT_HEADER = 3              # ATT opcode and handle, per value


# -- the trace and what is counted from it (sans-I/O: tests/test_bench_ota_transfer.py) ----------

@dataclass
class Trace:
    """ATT values of one push, in the order the host wrote or was notified of them.

    Events: ``("bulk", offset, value_len)`` a bulk write (host to device);
    ``("msg", direction, type, att_len, fields)`` a whole sealed message on
    telemetry (direction ``"in"``: from the device), ``att_len`` the sum of
    its segments' values, ``fields`` the decoded OTA_WINDOW
    ``(ack, limit, rewind)`` or the OTA_STATE's state, else None;
    ``("other", direction, att_len)`` any other ATT value (control).
    """

    events: list[tuple] = field(default_factory=list)

    def bulk(self, value: bytes | bytearray) -> None:
        self.events.append(("bulk", int.from_bytes(value[:4], "big"), len(value)))

    def message(self, direction: str, plain: bytes, att_len: int) -> None:
        from edge_agent.links.ble import control_type
        from edge_agent.messages import OtaState, OtaWindow, decode_message

        kind = control_type(plain)
        fields: Any = None
        try:
            msg = decode_message(plain)
        except Exception:        # not a section 2 message: counted by its first byte's type, if any
            msg = None
        if isinstance(msg, OtaWindow):
            fields = (msg.ack, msg.limit, msg.rewind)
        elif isinstance(msg, OtaState):
            fields = msg.state
        self.events.append(("msg", direction, kind, att_len, fields))

    def other(self, direction: str, att_len: int) -> None:
        self.events.append(("other", direction, att_len))


@dataclass
class Figures:
    """What one push moved, counted from its :class:`Trace`."""

    size: int
    image_bytes: int = 0        # distinct image bytes carried in bulk values
    bulk_values: int = 0
    bulk_att: int = 0           # bulk values' bytes (offset + data)
    ota_msgs: dict = field(default_factory=dict)   # name -> [count, ATT bytes]
    other_att: int = 0          # telemetry and control values, not the OTA's
    round_trips: int = 0
    rewinds: int = 0
    resent: int = 0             # image bytes sent again

    @property
    def ota_values(self) -> int:
        return self.bulk_values + sum(n for n, _ in self.ota_msgs.values())

    @property
    def ota_att(self) -> int:
        """ATT payload bytes of the OTA, both directions."""
        return self.bulk_att + sum(b for _, b in self.ota_msgs.values())

    @property
    def efficiency(self) -> float:
        return self.image_bytes / self.ota_att if self.ota_att else 0.0

    @property
    def efficiency_with_headers(self) -> float:
        att = self.ota_att + ATT_HEADER * self.ota_values
        return self.image_bytes / att if att else 0.0

    @property
    def per_64k(self) -> float:
        return self.round_trips * KB64 / self.size


def count(trace: Trace, size: int) -> Figures:
    """Figures for a transfer of a ``size``-byte image (see the module docstring for each rule).

    A message's segments count toward the message; a value whose message
    never completed is lost to this count (none on the emulated link).
    """
    f = Figures(size)
    held = bytearray(0)
    covered = 0
    limit = 0
    waiting = False       # the host may send no image byte until the device speaks
    for ev in trace.events:
        if ev[0] == "msg":
            _, direction, kind, att_len, fields = ev
            name = OTA_TYPES.get(kind)
            if name is None:
                f.other_att += att_len
                continue
            slot = f.ota_msgs.setdefault(name, [0, 0])
            slot[0] += 1
            slot[1] += att_len
            if name == "offer":
                waiting, limit = True, 0
            elif name == "window" and fields is not None:
                limit = fields[1]
                if fields[2]:       # what it sends next, it sends because the device asked
                    f.rewinds += 1
                    waiting = True
        elif ev[0] == "bulk":
            _, offset, value_len = ev
            n = value_len - 4
            f.bulk_values += 1
            f.bulk_att += value_len
            if waiting:
                f.round_trips += 1
                waiting = False
            end = offset + n
            if len(held) < end:
                held.extend(bytes(end - len(held)))
            fresh = n - sum(held[offset:end])
            covered += fresh
            f.resent += n - fresh
            held[offset:end] = b"\x01" * n
            if limit <= end < size:
                waiting = True
        else:
            f.other_att += ev[2]
    f.image_bytes = covered
    return f


# -- the same exchange with its real bytes and an ideal link ---------------------------------------

def modelled(size: int, mtu: int, device_id: str, sequence: int, offer: tuple[bytes, bytes | None],
             *, pipelined: bool) -> Trace:
    """The trace of 7.3-7.5 for a ``size``-byte image on a link with no airtime and no loss.

    Every byte is real: the host's :class:`~edge_ota.transfer.Sender` cuts the
    chunks at ``mtu``; messages are encoded by edge_agent.messages (the device
    writes the same bytes: tests/vectors), sealed as 5.6 seals them and cut
    into segments of ``mtu - 3``. ``offer`` is (manifest, key list). The device
    is ideal: it sends ``downloading`` and its first window, one window per
    4096-byte block written (limit ``ack + 8192``), then ``verified`` and
    ``installed``. ``pipelined``: each window reaches the host right after the
    chunk that completed its block (the best case); else only once the host
    has sent all its credit (the worst: a host much faster than the device).
    """
    from collections import deque

    from edge_agent.messages import OtaOffer, OtaState, OtaWindow, encode_message
    from edge_agent.pairing import HostSession
    from edge_agent.segments import split
    from edge_ota.transfer import BLOCK, Sender, bulk_value, chunk_size_for_mtu

    trace = Trace()
    seal = HostSession(os.urandom(16), os.urandom(16)).seal    # a device's seal is as long (5.6)

    def message(direction: str, m: Any) -> None:
        plain = encode_message(m)
        trace.message(direction, plain, sum(len(v) for v in split(seal(plain), mtu - 3, 0)))

    def state(name: str, **more: Any) -> None:
        message("in", OtaState(device_id, "agent", sequence, name, **more))

    sender = Sender(bytes(size), sequence, chunk_size_for_mtu(mtu))
    message("out", OtaOffer(device_id, "agent", manifest=offer[0], key_list=offer[1]))
    state("downloading", held=0, size=size)
    ack = 0
    windows: deque[tuple[int, int]] = deque([(0, min(size, 2 * BLOCK))])
    queue: deque[tuple[int, memoryview]] = deque()
    while windows or queue:
        if windows and (pipelined or not queue):
            w_ack, w_limit = windows.popleft()
            message("in", OtaWindow(device_id, sequence, w_ack, w_limit))
            sender.on_window(w_ack, w_limit)
            queue.extend(sender.next_chunks())
            continue
        offset, data = queue.popleft()
        trace.bulk(bulk_value(offset, data))
        got = offset + len(data)
        while got - ack >= BLOCK or (got == size and ack < size):
            ack = min(size, ack + BLOCK)
            windows.append((ack, min(size, ack + 2 * BLOCK)))
    state("verified", held=size, size=size)
    state("installed")
    return trace


# -- counting on a live push: the host's BLE link, instrumented -----------------------------------

def instrument(trace: Trace) -> None:
    """Make push_ble's BleConnection and TelemetryPump record into ``trace`` (for this process)."""
    from edge_agent.links import ble

    class CountedConnection(ble.BleConnection):
        """Records every ATT value; a sealed message's values are summed until it completes."""

        in_att = 0
        out_att = 0
        sealing: bytes = b""

        async def connect(self) -> None:
            await super().connect()
            inner = self.client.write_gatt_char

            async def write(char: Any, data: bytes, response: bool = False) -> None:
                uuid = str(getattr(char, "uuid", char)).lower()
                if uuid == ble.BULK:
                    trace.bulk(data)
                elif uuid == ble.TELEMETRY:
                    self.out_att += len(data)
                else:
                    trace.other("out", len(data))
                await inner(char, data, response=response)
            self.client.write_gatt_char = write

        def _control_notified(self, sender: Any, data: bytearray) -> None:
            trace.other("in", len(data))
            super()._control_notified(sender, data)

        def _telemetry_notified(self, sender: Any, data: bytearray) -> None:
            if data and data[0] & 0x80:         # a first segment (5.3): a new message
                self.in_att = 0
            self.in_att += len(data)
            super()._telemetry_notified(sender, data)

        async def write_telemetry(self, sealed: bytes) -> None:
            self.out_att = 0
            plain = self.sealing
            await super().write_telemetry(sealed)
            trace.message("out", plain, self.out_att)

    class CountedPump(ble.TelemetryPump):
        """Hands each plain message, as it is sealed or opened, to the connection's count."""

        def __init__(self, conn: Any, session: Any, *args: Any, **kw: Any):
            super().__init__(conn, session, *args, **kw)
            seal, open_ = session.seal, session.open

            def sealed(plain: bytes) -> bytes:
                conn.sealing = plain
                return seal(plain)

            def opened(data: bytes) -> bytes | None:
                plain = open_(data)
                if plain is not None:
                    trace.message("in", plain, conn.in_att)
                return plain
            session.seal, session.open = sealed, opened

    ble.BleConnection = CountedConnection      # type: ignore[misc]
    ble.TelemetryPump = CountedPump            # type: ignore[misc]


# -- the run --------------------------------------------------------------------------------------

def not_a_bundle(size: int) -> bytes:
    """``size`` deterministic bytes that are no agent bundle (no "EAB1" magic)."""
    out = bytearray()
    block = b"ota-bench"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    out[:4] = b"NOPE"
    return bytes(out[:size])


def push(home: Any, device_id: str, image: Path, manifest: Path, trace: Trace) -> tuple[dict, float]:
    trace.events.clear()
    started = time.perf_counter()
    r = home.invoke("ota", "push", device_id, str(image), str(manifest), "--until", "installed",
                    "--timeout", "60s", "--json", env={"EDGE_BLE": "sim"})
    took = time.perf_counter() - started
    try:
        out = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SystemExit(f"edge ota push gave no result (exit {r.exit_code}): {r.output[-2000:]}") from None
    return out, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", default="picow", help="board type (default picow)")
    parser.add_argument("--mtu", type=int, default=247, help="the ATT MTU the host offers (default 247)")
    args = parser.parse_args()

    from tests.harness import Home, edge

    root = Path(tempfile.mkdtemp(prefix="bench-ota-transfer-"))
    home = Home(root / "home")
    os.environ.update({k: home.env[k] for k in ("EDGE_HOME", "EDGE_SIM_DIR", "EDGE_DB")})
    os.environ.update(EDGE_BLE="sim", EDGE_BLE_MTU=str(args.mtu))
    os.environ.pop("EDGE_BLE_HCI", None)
    trace = Trace()
    instrument(trace)
    rows = []
    try:
        t0 = time.perf_counter()
        (board,) = home.up(args.board)
        device_id = board["device_id"]
        label = json.loads(home.edge("label", device_id, "--out", str(root / "labels"), "--json").stdout)
        edge("pair", device_id, "--code", label["setup_code"], "--account", "bench",
             env={**home.env, "EDGE_BLE": "sim"}, timeout=180)
        home.edge("ota", "keygen")
        bundle = root / "agent.bundle"
        home.edge("ota", "bundle", "--board", args.board, "--version", "9.1.0", "-o", str(bundle), timeout=180)
        plain = root / "64k.bin"
        plain.write_bytes(not_a_bundle(KB64))
        print(f"bench ready in {time.perf_counter() - t0:.1f} s: {device_id}, bundle {bundle.stat().st_size} B",
              file=sys.stderr)
        from edge_ota.keys import key_dir

        key_list = (key_dir() / "ota-keys.cose").read_bytes()
        for seq, (name, image) in enumerate((("64 KB", plain), ("bundle", bundle)), start=1):
            manifest = root / f"{seq}.manifest"
            home.edge("ota", "sign", str(image), "--board", args.board, "--component", "agent",
                      "--version", f"9.1.{seq}", "--sequence", str(seq), "-o", str(manifest))
            out, took = push(home, device_id, image, manifest, trace)
            size = image.stat().st_size
            rows.append((name, "air", out, took, count(trace, size)))
            print(f"  {name}: {out['state']} in {took:.1f} s", file=sys.stderr)
            for pipelined in (False, True):
                t = modelled(size, args.mtu, device_id, seq, (manifest.read_bytes(), key_list), pipelined=pipelined)
                rows.append((name, "model best" if pipelined else "model worst", None, None, count(t, size)))
    finally:
        home.down()
        shutil.rmtree(root, ignore_errors=True)
    report(args, rows)
    device_cpu()


def report(args: argparse.Namespace, rows: list) -> None:
    print(f"OTA over BLE at MTU {args.mtu}; ATT payload bytes of the OTA, both directions. air: `edge ota push` "
          f"on the virtual air to a {args.board} running the firmware under micropython at its budget; model: "
          "the same exchange's real bytes on an ideal link (modelled())")
    print(f"{'image':<7} {'source':<11} {'size B':>6} {'ends':>19} | {'bulk':>4} {'bulk B':>6} {'msgs':>4} "
          f"{'msgs B':>6} {'ATT B':>6} | {'eff.':>5} {'ratio':>5} {'+hdr':>5} | {'RT':>3} {'RT/64K':>6} "
          f"{'ratio':>5} | {'resent':>6} {'other B':>7}")
    for name, source, out, took, f in rows:
        ends = "" if out is None else (f"{out['state']} {took:.1f} s" if out["state"] != "refused"
                                      else f"refused ({out['states'][-1].get('check')})")
        msgs = sum(n for n, _ in f.ota_msgs.values())
        msgs_b = sum(b for _, b in f.ota_msgs.values())
        rt_ratio = 16 / f.per_64k if f.per_64k else float("inf")
        print(f"{name:<7} {source:<11} {f.size:>6} {ends:>19} | {f.bulk_values:>4} {f.bulk_att:>6} {msgs:>4} "
              f"{msgs_b:>6} {f.ota_att:>6} | {f.efficiency:>5.3f} {f.efficiency / 0.95:>5.2f} "
              f"{f.efficiency_with_headers:>5.3f} | {f.round_trips:>3} {f.per_64k:>6.1f} {rt_ratio:>5.2f} | "
              f"{f.resent:>6} {f.other_att:>7}")
    for name, source, out, _, f in rows:
        parts = ", ".join(f"{k} {n} x {b} B" for k, (n, b) in sorted(f.ota_msgs.items()))
        print(f"  {name} {source}: {parts}; bulk {f.bulk_values} values = {f.bulk_att - 4 * f.bulk_values} "
              f"image B + {4 * f.bulk_values} B offsets")
        if out is not None and f.image_bytes < f.size:
            last = out["states"][-1] if out["states"] else {}
            print(f"    NOT a whole transfer ({f.image_bytes} of {f.size} image bytes moved): the push ended "
                  f"{out['state']}" + (f"; the device said: {last['reason']}" if last.get("reason") else "")
                  + ". Its figures are not the OTA's.")
    print("Goals: eff. >= 0.95, RT per 64 KB <= 16; ratio: how far the figure is on the right side of its goal "
          "(>= 1 meets it). eff.: image bytes / ATT payload bytes (bulk values + the segments of the OTA's "
          "sealed messages); +hdr: with ATT's 3-byte header per value. RT: round trips as the docstring defines "
          "them. other B: telemetry and control on the same connection, not the OTA's. model worst: the host "
          "sends all its credit before each window comes (as on the emulated link, which has no airtime); "
          "best: each window comes as its block completes.")


def device_cpu(rounds: int = 3) -> None:
    """The device's chunk path per KB at MTU 247's chunk and at serial's, from bench_ota_device."""
    from bench.bench_ota_device import compiled, measure

    print("device CPU per KB (bench_ota_device's chunk path (b): OtaClient.chunk, block hash and write, one "
          "OTA_WINDOW per 4 KB) on the ESP32 budget, 64 KB image, best of "
          f"{rounds} runs; ratio against a bare sha256 update + file write of the same KB, same run")
    print(f"{'chunk B':>7} {'ms/KB':>7} {'bare ms/KB':>10} {'ratio':>6}")
    code = compiled()
    for chunk in (240, 960):
        runs = [measure(64, chunk, code) for _ in range(rounds)]
        t = min(r["chunks_ms_per_kb"] for r in runs)
        bare = min(r["bare_ms_per_kb"] for r in runs)
        print(f"{chunk:>7} {t:>7.3f} {bare:>10.3f} {t / bare:>6.2f}")
    print("240 B: a bulk value's data at MTU 247 (7.4); 960 B: an OTA_CHUNK's most (serial). The chunk path "
          "is called per chunk: its fixed cost per call is what grows with the smaller chunk.")


if __name__ == "__main__":
    main()
