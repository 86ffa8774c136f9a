"""Build ``tests/vectors/ota.json`` with ``edge_ota`` and the published test
keys of docs/protocol.md section 6.6.

Run ``python tests/host/build_ota_vectors.py`` to rewrite it. Each manifest
case: the manifest and the signed key list the device holds (hex, or null),
the device's board, counters ``{component: [running version, sequence]}``,
time and capacity, and the verdict (``"ok"`` or the check's name). Each key
list case: the list, the current sequence and the verdict. Each image case:
the first ``length`` bytes of the pattern 00..ff repeated, one byte flipped
if ``corrupt``, checked against the good manifest. One manifest is made by
pycose (another COSE implementation) for the same payload and key.
"""

from __future__ import annotations

import json
from pathlib import Path

import cbor2

from edge_ota.cose import Ed25519Signer, dumps, sig_structure, sign1
from edge_ota.manifest import KeyList, Manifest, RootRotation

OUT = Path(__file__).parents[1] / "vectors" / "ota.json"
ROOT = Ed25519Signer.from_seed(bytes(range(32)))
SIGNER = Ed25519Signer.from_seed(bytes(range(32, 64)))
NEXT_ROOT = Ed25519Signer.from_seed(bytes(range(64, 96)))
BOARD = "esp32-devkitc"
IMAGE = bytes(i & 0xFF for i in range(10240))
NOW = 1790000000
CAPACITY = {"agent-slot": 65536, "ota-partition": 1572864}
COUNTERS = {"agent": ["1.2.0", 6], "firmware": ["1.22.0", 3]}


def manifest(**over) -> Manifest:
    fields = dict(board=BOARD, component="agent", version="1.3.0", sequence=7,
                  expires=1800086400, min_version="1.0.0")
    fields.update(over)
    return Manifest.for_image(IMAGE, **fields)


def pycose_sign1(payload: bytes, seed: bytes, kid: bytes) -> bytes:
    from pycose.headers import KID, Algorithm
    from pycose.keys import OKPKey
    from pycose.algorithms import EdDSA
    from pycose.messages import Sign1Message

    key = OKPKey(crv="Ed25519", d=seed)
    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: kid}, payload=payload, key=key)
    return msg.encode(tag=True)


def raw_sign1(protected: bytes, payload: bytes, signer: Ed25519Signer) -> bytes:
    """A COSE_Sign1 of exactly these protected and payload bytes, canonical or not."""
    sig = signer.sign(sig_structure(protected, payload))
    return dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def with_field(body: bytes, key: int, value: bytes) -> bytes:
    """The manifest payload with ``key``'s value replaced by the encoded ``value``
    (the other items kept in canonical order)."""
    items = cbor2.loads(body)
    items[key] = None
    out = bytearray([0xA0 | len(items)])
    for k in sorted(items):
        out += dumps(k) + (value if k == key else dumps(items[k]))
    return bytes(out)


def build() -> dict:
    good = manifest().sign(SIGNER)
    kl = KeyList.of(1, (SIGNER.public_key, 1830000000)).sign(ROOT)
    body = manifest().to_cbor()
    obj = cbor2.loads(good)
    untagged = dumps(obj.value)
    long_head = good[:2] + b"\x58\x0d" + good[3:]  # protected's length 13 as 58 0d
    bad_sig = good[:-1] + bytes([good[-1] ^ 1])
    # Keys 1 and 0 swapped: signed, but not in deterministic order.
    unordered = sign1(body[:1] + body[3:18] + body[1:3] + body[18:], SIGNER)
    no_target = sign1(dumps({k: v for k, v in cbor2.loads(body).items() if k != 7}), SIGNER)

    prot = good[3:16]
    extra = [
        ("alg ES256", raw_sign1(dumps({1: -7, 4: SIGNER.kid}), body, SIGNER), "malformed"),
        ("protected header with a trailing byte", raw_sign1(prot + b"\x00", body, SIGNER),
         "trailing-bytes"),
        ("protected header with a long head", raw_sign1(b"\xa2\x01\x27\x04\x58\x08" + SIGNER.kid,
                                                        body, SIGNER), "not-canonical"),
        ("indefinite payload map", sign1(b"\xbf" + body[1:] + b"\xff", SIGNER), "not-canonical"),
        ("sequence 7 as 18 07", sign1(with_field(body, 4, b"\x18\x07"), SIGNER), "not-canonical"),
        ("duplicate key", sign1(b"\xab" + body[1:3] + body[1:], SIGNER), "not-canonical"),
        ("version 01.3.0", sign1(with_field(body, 3, dumps("01.3.0")), SIGNER), "malformed"),
        ("sequence true", sign1(with_field(body, 4, b"\xf5"), SIGNER), "malformed"),
        ("expires a float", sign1(with_field(body, 9, b"\xf9\x3e\x00"), SIGNER), "malformed"),
        ("board not UTF-8", sign1(with_field(body, 1, b"\x62\xc3\x28"), SIGNER), "malformed"),
        ("digest of 31 bytes", sign1(with_field(body, 5, dumps(bytes(31))), SIGNER), "malformed"),
        ("size 0", sign1(with_field(body, 6, b"\x00"), SIGNER), "malformed"),
        ("target ota-partition", sign1(with_field(body, 7, dumps("ota-partition")), SIGNER),
         "malformed"),
        ("unknown payload key 10", sign1(b"\xab" + body[1:] + b"\x0a\x00", SIGNER), "malformed"),
        ("kind 2", sign1(with_field(body, 0, b"\x02"), SIGNER), "malformed"),
        ("tag 39 in the payload", sign1(with_field(body, 9, b"\xd8\x27\x1a\x6b\x4b\x23\x80"), SIGNER),
         "malformed"),
    ]

    def case(name, data, expect, key_list=kl, counters=COUNTERS, now=NOW, capacity=CAPACITY):
        return {"name": name, "manifest": data.hex(), "key_list": key_list and key_list.hex(),
                "board": BOARD, "counters": counters, "now": now, "capacity": capacity,
                "expect": expect}

    manifests = [
        case("good", good, "ok"),
        case("pycose", pycose_sign1(body, bytes(range(32, 64)), SIGNER.kid), "ok"),
        case("good without capacity", good, "ok", capacity=None),
        case("untagged", untagged, "malformed"),
        case("payload without target", no_target, "malformed"),
        case("truncated", good[:-1], "malformed"),
        case("trailing byte", good + b"\x00", "trailing-bytes"),
        case("long head", long_head, "not-canonical"),
        case("payload keys out of order", unordered, "not-canonical"),
        case("no key list", good, "unknown-key", key_list=None),
        case("signed by the root", manifest().sign(ROOT), "unknown-key"),
        case("key expired", good, "key-expired", now=1830000000),
        case("bad signature", bad_sig, "bad-signature"),
        case("wrong board", manifest(board="rp2-pico-w").sign(SIGNER), "wrong-board"),
        case("wrong component", good, "wrong-component", counters={"firmware": ["1.22.0", 3]}),
        case("rollback", good, "rollback", counters={"agent": ["1.2.0", 7]}),
        case("version too old", good, "version-too-old", counters={"agent": ["0.9.9", 6]}),
        case("expired", good, "expired", now=1800086400),
        case("too large", good, "too-large", capacity={"agent-slot": 10239}),
        case("revoked: not in key list 2", good, "unknown-key",
             key_list=KeyList.of(2, (ROOT.public_key, 1830000000)).sign(ROOT)),
        case("firmware component", manifest(component="firmware", version="1.23.0", sequence=4,
                                             min_version=None).sign(SIGNER), "ok"),
    ] + [case(name, data, expect) for name, data, expect in extra]
    bad_kid = sign1(dumps({0: 2, 1: 2, 2: {ROOT.kid: [SIGNER.public_key, 1830000000]}}), ROOT)
    key_lists = [
        {"name": "good", "data": kl.hex(), "current": 0, "expect": "ok"},
        {"name": "signed by the signing key", "data": KeyList.of(2).sign(SIGNER).hex(),
         "current": 0, "expect": "not-root"},
        {"name": "bad signature", "data": (kl[:-1] + bytes([kl[-1] ^ 0x80])).hex(),
         "current": 0, "expect": "bad-signature"},
        {"name": "kid not its key's", "data": bad_kid.hex(), "current": 0, "expect": "malformed"},
        {"name": "stale", "data": kl.hex(), "current": 1, "expect": "stale-key-list"},
    ]
    rot = RootRotation(1, NEXT_ROOT.public_key).sign(ROOT)
    rot_body = RootRotation(1, NEXT_ROOT.public_key).to_cbor()
    rotations = [
        {"name": "good", "data": rot.hex(), "epoch": 0, "expect": "ok"},
        {"name": "replayed at epoch 1", "data": rot.hex(), "epoch": 1, "expect": "stale-rotation"},
        {"name": "skips an epoch", "data": RootRotation(2, NEXT_ROOT.public_key).sign(ROOT).hex(),
         "epoch": 0, "expect": "stale-rotation"},
        {"name": "signed by the signing key", "data": RootRotation(1, NEXT_ROOT.public_key)
         .sign(SIGNER).hex(), "epoch": 0, "expect": "not-root"},
        {"name": "bad signature", "data": (rot[:-1] + bytes([rot[-1] ^ 1])).hex(), "epoch": 0,
         "expect": "bad-signature"},
        {"name": "next root of 31 bytes", "data": sign1(dumps({0: 3, 1: 1, 2: bytes(31)}), ROOT).hex(),
         "epoch": 0, "expect": "malformed"},
        {"name": "a key list's kind", "data": sign1(b"\xa3\x00\x02" + rot_body[3:], ROOT).hex(),
         "epoch": 0, "expect": "malformed"},
        {"name": "trailing byte", "data": (rot + b"\x00").hex(), "epoch": 0, "expect": "trailing-bytes"},
        {"name": "epoch as 18 01", "data": sign1(b"\xa3\x00\x03\x01\x18\x01" + rot_body[5:], ROOT).hex(),
         "epoch": 0, "expect": "not-canonical"},
    ]
    images = [
        {"length": 10240, "corrupt": False, "expect": "ok"},
        {"length": 10239, "corrupt": False, "expect": "size-mismatch"},
        {"length": 10241, "corrupt": False, "expect": "size-mismatch"},
        {"length": 10240, "corrupt": True, "expect": "digest-mismatch"},
    ]
    return {"root": ROOT.public_key.hex(), "manifests": manifests, "key_lists": key_lists,
            "rotations": rotations, "next_root": NEXT_ROOT.public_key.hex(), "images": images}


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
