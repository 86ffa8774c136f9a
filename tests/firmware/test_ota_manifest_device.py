"""The device's manifest checks (edgefw.ota_manifest) give the verdicts of
tests/vectors/ota.json, the host library's: every case in one micropython
process with the ESP32's heap and the firmware compiled to .mpy, then under
CPython. Input lines are JSON; each answer is a line, "ok" or the check's
name."""

from __future__ import annotations

import json
from pathlib import Path

from tests.firmware.compiled import prelude
from tests.mpy import firmware_on_path, run

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "ota.json").read_text())

DEVICE = """
import sys, json, gc
from binascii import unhexlify as h
from edgefw import ota_manifest

def image(m, length, corrupt):
    chk = ota_manifest.ImageCheck(m)
    buf = bytearray(256)
    for i in range(0, length, 256):
        n = min(256, length - i)
        for j in range(n):
            buf[j] = (i + j) & 255
        if corrupt and i <= 5000 < i + n:
            buf[5000 - i] ^= 1
        chk.update(memoryview(buf)[:n])
    chk.finish()

def one(c, root):
    if c["kind"] == "m":
        kl = c["key_list"]
        counters = {k: tuple(v) for k, v in c["counters"].items()}
        return ota_manifest.check(h(c["manifest"]), root, kl and h(kl), c["board"], counters,
                                  c["now"], c["capacity"])
    if c["kind"] == "k":
        return ota_manifest.key_list(h(c["data"]), root, c["current"])
    if c["kind"] == "r":
        if ota_manifest.rotation(h(c["data"]), root, c["epoch"]) != (h(NEXT), c["epoch"] + 1):
            raise ValueError("wrong next root")
        return
    image(GOOD, c["length"], c["corrupt"])

root = None
GOOD = None
while True:
    line = sys.stdin.readline()
    if not line.strip():
        break
    c = json.loads(line)
    if c["kind"] == "root":
        root = h(c["root"])
        NEXT = c["next"]
        continue
    try:
        r = one(c, root)
        if c["kind"] == "m" and GOOD is None:
            GOOD = r
        print("ok")
    except ValueError as e:
        print(e.args[0])
    gc.collect()
"""


def cases() -> list[dict]:
    out = [{"kind": "root", "root": VECTORS["root"], "next": VECTORS["next_root"]}]
    out += [dict(c, kind="m") for c in VECTORS["manifests"]]
    out += [dict(c, kind="k") for c in VECTORS["key_lists"]]
    out += [dict(c, kind="r") for c in VECTORS["rotations"]]
    out += [dict(c, kind="i") for c in VECTORS["images"]]
    return out


def expected() -> list[str]:
    return [c["expect"] for c in cases()[1:]]


def test_every_vector_gives_the_hosts_verdict_on_the_device():
    lines = "".join(json.dumps(c) + "\n" for c in cases())
    out = run(prelude() + DEVICE, heap="esp32", stdin=lines.encode(), timeout=600).stdout.decode().split("\n")
    names = [c.get("name", c.get("length")) for c in cases()[1:]]
    assert list(zip(names, out)) == list(zip(names, expected()))


def test_every_vector_gives_the_hosts_verdict_under_cpython():
    firmware_on_path()
    from edgefw import ota_manifest

    root = bytes.fromhex(VECTORS["root"])
    good = None
    for c in VECTORS["manifests"]:
        kl = c["key_list"] and bytes.fromhex(c["key_list"])
        counters = {k: tuple(v) for k, v in c["counters"].items()}
        try:
            m = ota_manifest.check(bytes.fromhex(c["manifest"]), root, kl, c["board"], counters,
                                   c["now"], c["capacity"])
            good = good or m
            got = "ok"
        except ValueError as e:
            got = e.args[0]
        assert got == c["expect"], c["name"]
    for c in VECTORS["key_lists"]:
        try:
            ota_manifest.key_list(bytes.fromhex(c["data"]), root, c["current"])
            got = "ok"
        except ValueError as e:
            got = e.args[0]
        assert got == c["expect"], c["name"]
    for c in VECTORS["rotations"]:
        try:
            nxt = ota_manifest.rotation(bytes.fromhex(c["data"]), root, c["epoch"])
            got = "ok" if nxt == (bytes.fromhex(VECTORS["next_root"]), c["epoch"] + 1) else "wrong"
        except ValueError as e:
            got = e.args[0]
        assert got == c["expect"], c["name"]
    for c in VECTORS["images"]:
        data = bytearray(i & 0xFF for i in range(c["length"]))
        if c["corrupt"]:
            data[5000] ^= 1
        chk = ota_manifest.ImageCheck(good)
        try:
            for i in range(0, len(data), 1000):
                chk.update(data[i:i + 1000])
            chk.finish()
            got = "ok"
        except ValueError as e:
            got = e.args[0]
        assert got == c["expect"], c
