"""Host ingest benchmark: how close the full path gets to bare CBOR decoding.

Generates realistic BATCH frames (several boards, float32 sensor values,
integers, booleans, absolute SenML times) with the project's own encoder,
then measures in the same run:

  (a) baseline: ``cbor2.loads`` of the payloads alone (records/s);
  (b) the host path: frame decoding of the console byte stream, message
      decoding and checks, SenML resolution and ``Store.add_batch`` into a
      temporary SQLite registry, with ``synchronous=FULL`` (what ingest uses:
      one sync per batch) and, for comparison, ``NORMAL``;
  (b) again with the batches of one serial read in one transaction
  (``Store.transaction()``: one sync per read instead of per batch);
  and the wire cost per record: the CBOR payload, the frame line (base64 +
  prefix + CRC), and the same pack as SenML-JSON with string labels.

Absolute figures depend on the machine; the ratios are the result.

    python bench/bench_ingest.py [--frames 2000] [--records 20]
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cbor2

from edge_agent.frames import Frame, FrameDecoder, encode_frame
from edge_agent.messages import Batch, decode_message, encode_message
from edge_agent.senml import BN, BT, BU, BV, BVER, N, S, T, U, V, VB, VS, build_pack, resolve
from edge_agent.store import Store

JSON_LABELS = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", N: "n", U: "u", V: "v",
               VS: "vs", VB: "vb", S: "s", T: "t"}
T0 = 1_763_906_400


def f32(x: float) -> float:
    """``x`` as a board's single-precision float would hold it."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def make_batches(frames: int, per_batch: int, seed: int = 1) -> list[Batch]:
    """``frames`` batches of ``per_batch`` records, round-robin over four boards."""
    rng = random.Random(seed)
    devices = ["esp32-7c9e3a", "esp32s3-0b11f4", "esp32c3-55aa01", "picow-e6614c"]
    seqs = dict.fromkeys(devices, 0)
    clock = dict.fromkeys(devices, float(T0))
    batches = []
    for i in range(frames):
        dev = devices[i % len(devices)]
        samples: list[tuple[str, str | None, Any, float]] = []
        for _ in range(per_batch):
            clock[dev] += rng.choice((0.25, 0.5, 1.0, 2.5))
            kind = rng.random()
            if kind < 0.45:
                samples.append(("temp", "Cel", f32(rng.uniform(18, 30)), clock[dev]))
            elif kind < 0.75:
                samples.append(("humidity", "%RH", f32(rng.uniform(30, 70)), clock[dev]))
            elif kind < 0.85:
                samples.append(("vbat", "V", f32(rng.uniform(3.3, 4.2)), clock[dev]))
            elif kind < 0.95:
                samples.append(("rssi", "dBm", rng.randint(-95, -40), clock[dev]))
            else:
                samples.append(("door", None, rng.random() < 0.5, clock[dev]))
        batches.append(Batch(dev, seqs[dev], 7, 0, 0, build_pack(dev, samples)))
        seqs[dev] += per_batch
    return batches


def senml_json(pack: list[dict]) -> bytes:
    """The same pack as SenML-JSON (RFC 8428 section 5: string labels), compact."""
    return json.dumps([{JSON_LABELS[k]: v for k, v in rec.items()} for rec in pack],
                      separators=(",", ":")).encode()


def best_of(runs: int, fn) -> float:
    """The shortest of ``runs`` timings of ``fn()`` (noise only ever adds time)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def host_path(stream: bytes, db: Path | None, synchronous: str, group: bool = False) -> int:
    """Frames -> messages -> SenML -> registry, as ingest does; returns records stored.

    With ``group``, the batches of one serial read share one transaction.
    """
    store = Store(db, synchronous=synchronous) if db else None
    decoder = FrameDecoder()
    stored = 0
    received = T0 + 10_000.0
    try:
        for i in range(0, len(stream), 4096):      # a serial read returns at most a few KB
            events = decoder.feed(stream[i:i + 4096])
            if store is None:
                for event in events:
                    if isinstance(event, Frame):
                        stored += len(resolve(decode_message(event.payload), received, None))
                continue
            with store.transaction() if group else nullcontext():
                for event in events:
                    if isinstance(event, Frame):
                        msg = decode_message(event.payload)
                        stored += store.add_batch(msg.device_id, resolve(msg, received, None), received)
    finally:
        if store:
            store.close()
    return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--records", type=int, default=20, help="records per BATCH")
    args = parser.parse_args()

    batches = make_batches(args.frames, args.records)
    payloads = [encode_message(b) for b in batches]
    lines = [encode_frame(p) for p in payloads]
    stream = b"".join(lines)
    total = args.frames * args.records

    baseline = best_of(3, lambda: [cbor2.loads(p) for p in payloads])
    decode_only = best_of(3, lambda: host_path(stream, None, "FULL"))
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, group in (("FULL", False), ("NORMAL", False), ("FULL", True)):
            key = mode + (" grouped" if group else "")
            db = Path(tmp) / f"bench-{key}.db"
            start = time.perf_counter()
            stored = host_path(stream, db, mode, group)
            timings[key] = time.perf_counter() - start
            assert stored == total, (stored, total)
            if key == "FULL":                        # the same frames again: all duplicates
                start = time.perf_counter()
                assert host_path(stream, db, mode) == 0
                timings["replay"] = time.perf_counter() - start
            with Store(db) as check:
                assert check.count() == total

    print(f"host ingest: {args.frames} BATCH frames x {args.records} records = {total} records, "
          f"{len(stream) / 1e6:.2f} MB of console stream")
    print()
    print(f"{'path':58} {'records/s':>12} {'vs (a)':>8}")
    rows = [("(a) cbor2.loads of the payloads (baseline)", baseline),
            ("    frames + messages + SenML, no store", decode_only),
            ("(b) full path into SQLite, synchronous=FULL (ingest)", timings["FULL"]),
            ("    full path into SQLite, synchronous=NORMAL", timings["NORMAL"]),
            ("    full path, FULL, one transaction per 4 KB serial read", timings["FULL grouped"]),
            ("    full path, FULL, the same frames again (duplicates)", timings["replay"])]
    for label, seconds in rows:
        print(f"{label:58} {total / seconds:12,.0f} {baseline / seconds:8.3f}")
    print()
    cbor_bytes = sum(len(p) for p in payloads)
    line_bytes = sum(len(line) for line in lines)
    json_bytes = sum(len(senml_json(b.pack)) for b in batches)
    print(f"{'wire':58} {'bytes/rec':>12} {'vs CBOR':>8}")
    for label, size in (("BATCH payload (CBOR, SenML integer labels)", cbor_bytes),
                        ("frame line (base64 + #EA: + CRC + CRLF)", line_bytes),
                        ("same packs as SenML-JSON (string labels), compact", json_bytes)):
        print(f"{label:58} {size / total:12.1f} {size / cbor_bytes:8.2f}")
    print()
    print(f"(b)/(a) = {baseline / timings['FULL']:.3f}; "
          f"SenML-JSON / CBOR payload = {json_bytes / cbor_bytes:.2f}; "
          f"sync=FULL costs {timings['FULL'] / timings['NORMAL']:.2f}x NORMAL")


if __name__ == "__main__":
    main()
