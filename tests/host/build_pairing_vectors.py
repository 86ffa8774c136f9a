"""Build ``tests/vectors/pairing.json``: one pairing and one resume with fixed randoms.

Run ``python tests/host/build_pairing_vectors.py`` to rewrite it. The host's
``edge_agent.pairing`` plays the host with the randoms below (sid, ya, Nh);
the device's side is computed here from the formulas of docs/protocol.md
5.4.1 and 5.5 with ``edge_agent.crypto``'s primitives (yb, Nd), so the file
holds every message, the derived keys and sealed messages each way. Both
implementations are tested against it: the host in tests/host/test_pairing.py,
the device under micropython in tests/firmware/test_pairing_device.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2

from edge_agent import crypto
from edge_agent.pairing import Initiator, Resumer, session_keys

OUT = Path(__file__).parents[1] / "vectors" / "pairing.json"

DEVICE_ID = "esp32-3f9a0c12b7d4"
CODE = "48213907"
ACCOUNT = "acme-farm"
HOST_ID = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
DEVICE_KEY = bytes(range(1, 33))      # the device's private key as written (clamped on use)
SID = bytes.fromhex("7e4b4791d6a8ef019b936c79fb7f2c57")
YA = bytes.fromhex("21b4f4bd9e64ed355c3eb676a28ebedaf6d8f17bdc365995b319097153044080")
EA = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
YB = bytes.fromhex("848b0779ff415f0af4ea14df9dd1d3c29ac41d836c7808896c4eba19c51ac40a")
NH = bytes.fromhex("0f0e0d0c0b0a09080706050403020100")
ND = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
SEALED_COUNTERS = (0, 1, 7)


def queue(*values: bytes):
    items = list(values)

    def rand(n: int) -> bytes:
        v = items.pop(0)
        assert len(v) == n
        return v
    return rand


def responder(start: dict[int, Any], code: str, device_id: str, d: bytes, dpub: bytes,
              yb: bytes) -> tuple[bytes, dict[str, bytes]]:
    """A device's PAIR_REPLY and derived values by the formulas of 5.4.1, written
    here from the document and independent of ``edgefw`` (also a test's
    impostor device)."""
    lv = crypto.prepend_len
    sid, ya_pub, ea_pub = start[1], start[2], start[9]
    g = crypto.cpace_generator(code.encode(), lv(b"edge-ble-pair-1") + lv(device_id.encode()), sid)
    yb_pub = crypto.scalar_mult_vfy(yb, g)
    k = crypto.scalar_mult_vfy(yb, ya_pub)
    s = crypto.scalar_mult_vfy(d, ea_pub)
    isk = crypto.isk_ir(sid, k, ya_pub, lv(start[3].encode()) + lv(start[4]) + lv(ea_pub), yb_pub, lv(dpub))
    prk = crypto.hmac_sha256(sid, isk + s)

    def expand(info: bytes, n: int) -> bytes:  # HKDF-Expand, one block
        return crypto.hmac_sha256(prk, info + b"\x01")[:n]
    keys = {"g": g, "Yb": yb_pub, "K": k, "S": s, "ISK": isk, "PRK": prk,
            "k_dev": expand(b"edge pair confirm device", 32),
            "k_host": expand(b"edge pair confirm host", 32),
            "bond_id": expand(b"edge bond id", 8), "bond_key": expand(b"edge bond key", 32)}
    keys["tag_d"] = crypto.hmac_sha256(keys["k_dev"], ya_pub + yb_pub + dpub)[:16]
    keys["tag_h"] = crypto.hmac_sha256(keys["k_host"], yb_pub + ya_pub + dpub)[:16]
    reply = cbor2.dumps({0: 17, 2: yb_pub, 5: dpub, 6: keys["tag_d"]}, canonical=True)
    return reply, keys


def sealed_each_way(k_h2d: bytes, k_d2h: bytes) -> list[dict[str, Any]]:
    out = []
    for direction, key in ((1, k_h2d), (2, k_d2h)):
        for n in SEALED_COUNTERS:
            msg = cbor2.dumps({0: 2, 1: 1763906430123 + n}, canonical=True) if direction == 1 else \
                cbor2.dumps({0: 4 if n else 2, 1: DEVICE_ID, 2: n}, canonical=True)
            nonce = bytes([direction]) + bytes(8) + n.to_bytes(4, "big")
            out.append({"direction": "h2d" if direction == 1 else "d2h", "counter": n,
                        "message": msg.hex(),
                        "sealed": (n.to_bytes(4, "big") + crypto.CCM(key).seal(nonce, b"", msg, 8)).hex()})
    return out


def build() -> dict[str, Any]:
    d = bytearray(DEVICE_KEY)
    d[0] &= 248
    d[31] = (d[31] & 127) | 64
    d = bytes(d)
    dpub = crypto.scalar_mult_vfy(d, b"\x09" + bytes(31))
    host = Initiator(DEVICE_ID, CODE, ACCOUNT, HOST_ID, device_key=dpub, rand=queue(SID, YA, EA))
    start = host.start()
    reply, keys = responder(cbor2.loads(start), CODE, DEVICE_ID, d, dpub, YB)
    confirm = host.reply(reply)
    assert cbor2.loads(confirm)[6] == keys["tag_h"]
    done = cbor2.dumps({0: 19, 7: keys["bond_id"]}, canonical=True)
    bond, _ = host.done(done)
    k1 = session_keys(bond.bond_key, bond.bond_id, SID, keys["Yb"][:16])
    resumer = Resumer(bond, rand=queue(NH))
    resume = resumer.start()
    tag = crypto.hmac_sha256(bond.bond_key, b"edge resume" + bond.bond_id + NH + ND)[:16]
    resume_ok = cbor2.dumps({0: 21, 6: tag, 8: ND}, canonical=True)
    resumer.reply(resume_ok)
    k2 = session_keys(bond.bond_key, bond.bond_id, NH, ND)
    h = {k: v.hex() for k, v in keys.items()}
    return {
        "_about": "docs/protocol.md 5.4-5.6 with fixed randoms; built by tests/host/build_pairing_vectors.py",
        "device_id": DEVICE_ID, "code": CODE, "account": ACCOUNT, "host_id": HOST_ID.hex(),
        "device_private_key": DEVICE_KEY.hex(), "D": dpub.hex(),
        "fingerprint": hashlib.sha256(dpub).digest()[:8].hex(),
        "pairing": {
            "randoms": {"sid": SID.hex(), "ya": YA.hex(), "ea": EA.hex(), "yb": YB.hex()},
            "messages": {"PAIR_START": start.hex(), "PAIR_REPLY": reply.hex(),
                         "PAIR_CONFIRM": confirm.hex(), "PAIR_DONE": done.hex()},
            "derived": h,
            "session": {"Nh": SID.hex(), "Nd": keys["Yb"][:16].hex(), "k_h2d": k1[0].hex(), "k_d2h": k1[1].hex()},
            "sealed": sealed_each_way(*k1),
        },
        "resume": {
            "randoms": {"Nh": NH.hex(), "Nd": ND.hex()},
            "messages": {"RESUME": resume.hex(), "RESUME_OK": resume_ok.hex()},
            "tag_d": tag.hex(),
            "session": {"k_h2d": k2[0].hex(), "k_d2h": k2[1].hex()},
            "sealed": sealed_each_way(*k2),
        },
        "unpair": {"UNPAIR": cbor2.dumps({0: 22}).hex(),
                   "UNPAIR_DONE": cbor2.dumps({0: 23}).hex()},
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {OUT}")
