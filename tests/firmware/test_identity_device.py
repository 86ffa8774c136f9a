"""The device side of identity: X25519 (RFC 7748) and the identity files,
run on the real MicroPython with an ESP32's heap."""

from __future__ import annotations

import json
import struct
import zlib

from Crypto.Protocol.DH import import_x25519_public_key, key_agreement
from Crypto.PublicKey import ECC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mpy import firmware_on_path, run


def mpy_lines(code: str, **kw) -> list[str]:
    return run(code, **kw).stdout.decode().split()


X25519_BATCH = """
from binascii import hexlify, unhexlify
from edgefw.x25519 import x25519
for line in %r:
    k, u = line.split(":")
    print(hexlify(x25519(unhexlify(k), unhexlify(u))).decode())
"""


def x25519_on_device(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    """x25519(k, u) for each pair, all in one micropython process."""
    lines = [k.hex() + ":" + u.hex() for k, u in pairs]
    return [bytes.fromhex(h) for h in mpy_lines(X25519_BATCH % (lines,))]


# -- X25519 against RFC 7748

def test_x25519_matches_the_rfc7748_section_5_2_vectors():
    vectors = [
        ("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
         "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
         "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"),
        ("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
         "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
         "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"),
    ]
    got = x25519_on_device([(bytes.fromhex(k), bytes.fromhex(u)) for k, u, _ in vectors])
    assert [g.hex() for g in got] == [out for _, _, out in vectors]


def test_x25519_iterated_vector_after_1000_rounds():
    # RFC 7748 5.2: k = u = 9; repeat k, u = x25519(k, u), k.
    out = mpy_lines("""
from binascii import hexlify
from edgefw.x25519 import x25519
k = u = b"\\x09" + bytes(31)
for i in range(1000):
    k, u = x25519(k, u), k
    if i == 0:
        print(hexlify(k).decode())
print(hexlify(k).decode())
""", timeout=120)
    assert out == ["422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079",
                   "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"]


def test_x25519_alice_and_bob_of_rfc7748_section_6_1_agree():
    out = mpy_lines("""
from binascii import hexlify, unhexlify
from edgefw.x25519 import x25519, public_key
a = unhexlify("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
b = unhexlify("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
pa, pb = public_key(a), public_key(b)
for v in (pa, pb, x25519(a, pb), x25519(b, pa)):
    print(hexlify(v).decode())
""")
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert out == ["8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
                   "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
                   shared, shared]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
                min_size=1, max_size=12))
def test_x25519_agrees_with_pycryptodome_on_random_keys(pairs):
    # Per pair: the public key of a, and a's shared secret with b's public key.
    pubs_b = [ECC.construct(curve="curve25519", seed=b).public_key().export_key(format="raw")
              for _, b in pairs]
    got = x25519_on_device([(a, b"\x09" + bytes(31)) for a, _ in pairs]
                           + [(a, pb) for (a, _), pb in zip(pairs, pubs_b)])
    n = len(pairs)
    for i, (a, _) in enumerate(pairs):
        key_a = ECC.construct(curve="curve25519", seed=a)
        assert got[i] == key_a.public_key().export_key(format="raw")
        expected = key_agreement(static_priv=key_a,
                                 static_pub=import_x25519_public_key(pubs_b[i]),
                                 kdf=lambda x: x)
        assert got[n + i] == expected


def test_x25519_rejects_inputs_that_are_not_32_bytes():
    out = mpy_lines("""
from edgefw.x25519 import x25519
for k, u in ((bytes(31), bytes(32)), (bytes(32), bytes(33)), (b"", b"")):
    try:
        x25519(k, u)
        print("accepted")
    except ValueError:
        print("refused")
""")
    assert out == ["refused"] * 3


# -- identity files

IDENTITY_RUN = """
import os
from binascii import hexlify
from edgefw import identity
from edgefw.x25519 import public_key
pub = identity.generate("")
print(hexlify(pub).decode())
print(hexlify(identity.public_key("")).decode())
print(identity.status("")[0])
identity.write_setup("", "48213907")
print(identity.setup_code(""))
identity.write_anchors("", {"v": 1, "ota_root": "ab" * 32})
print(identity.anchors("")["ota_root"] == "ab" * 32)
for bad in ("1234567", "1234567a", 12345678, "123456789"):
    try:
        identity.write_setup("", bad)
        print("accepted")
    except ValueError:
        print("refused")
print(sorted(os.listdir("identity")))
"""


def crc_payload(raw: bytes) -> bytes:
    """The data of a file written by edgefw.atomic, after checking its CRC-32 tail."""
    data, tail = raw[:-4], raw[-4:]
    assert struct.unpack(">I", tail)[0] == zlib.crc32(data)
    return data


def test_generate_stores_a_clamped_urandom_key_and_returns_its_public_key(tmp_path):
    out = mpy_lines(IDENTITY_RUN, cwd=tmp_path)
    pub = bytes.fromhex(out[0])
    assert out[1] == out[0] and out[2] == "ok"
    assert out[3] == "48213907" and out[4] == "True"
    assert out[5:9] == ["refused"] * 4
    assert "".join(out[9:]) == "['anchors.json','key','pub','setup']"
    assert crc_payload((tmp_path / "identity" / "pub").read_bytes()) == pub   # kept for pairing
    key = crc_payload((tmp_path / "identity" / "key").read_bytes())
    assert len(key) == 32 and key[0] & 7 == 0 and key[31] & 0xC0 == 0x40   # clamped
    assert ECC.construct(curve="curve25519", seed=key).public_key().export_key(format="raw") == pub
    assert crc_payload((tmp_path / "identity" / "setup").read_bytes()) == b"48213907"
    assert json.loads(crc_payload((tmp_path / "identity" / "anchors.json").read_bytes())) == \
        {"v": 1, "ota_root": "ab" * 32}
    assert not list((tmp_path / "identity").glob("*.new"))   # written whole, then renamed


def test_two_boards_get_different_keys(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = mpy_lines("""
from binascii import hexlify
from edgefw import identity
print(hexlify(identity.generate("a")).decode())
print(hexlify(identity.generate("b")).decode())
print(hexlify(identity.generate("a")).decode())
""", cwd=tmp_path)
    assert len(set(out)) == 3     # a regenerated key replaces the old one


STUCK_RNG = """
import os
from edgefw import identity
_draws = iter(%r)
class StuckOs:  # the identity module's os, but with a bad generator (a builtin module is read-only)
    def urandom(self, n):
        return next(_draws)[:n]
    def __getattr__(self, name):
        return getattr(os, name)
identity.os = StuckOs()
print(identity.rng_ok())
try:
    identity.generate("")
    print("made")
except OSError as e:
    print("refused", "urandom" in str(e))
print(identity.status("")[0])
"""


def test_a_generator_that_repeats_itself_is_refused_and_no_key_is_made(tmp_path):
    # The emulated RP2040 returns b'*' for every byte of os.urandom: every board
    # would get the same key (and so the same device id). Stuck or repeating
    # output is caught before a key is drawn from it.
    for draws in ([b"*" * 32] * 4,                                   # constant
                  [bytes(range(32)), bytes(range(32))] * 2,          # repeats its last draw
                  [bytes([i % 4 for i in range(32)]), bytes([7] * 32)] * 2):   # 4 values only
        out = mpy_lines(STUCK_RNG % (draws,), cwd=tmp_path)
        assert out == ["False", "refused", "True", "missing"], draws


def test_a_healthy_generator_passes_the_check(tmp_path):
    assert mpy_lines("from edgefw import identity\nprint(identity.rng_ok())", cwd=tmp_path) == ["True"]


def test_a_corrupt_key_file_reads_as_corrupt_never_as_a_key(tmp_path):
    code = """
from edgefw import identity
identity.generate("")
f = open("identity/key", "r+b"); f.seek(5); b = f.read(1); f.seek(5); f.write(bytes([b[0] ^ 1])); f.close()
print(identity.status("")[0], identity.public_key(""))
f = open("identity/key", "wb"); f.write(b"\\x00" * 3); f.close()
print(identity.status("")[0])
import os
os.remove("identity/key")
print(identity.status("")[0])
"""
    assert mpy_lines(code, cwd=tmp_path) == ["corrupt", "None", "corrupt", "missing"]


def test_a_key_cut_short_before_its_rename_is_recovered_whole(tmp_path):
    # A power cut between writing "key.new" and renaming it: the next read
    # takes the complete new file.
    out = mpy_lines("""
import os
from binascii import hexlify
from edgefw import identity
pub = identity.generate("")
os.rename("identity/key", "identity/key.new")
print(hexlify(pub).decode(), hexlify(identity.public_key("")).decode())
""", cwd=tmp_path)
    assert out[0] == out[1]


def test_factory_reset_erases_the_identity(tmp_path):
    out = mpy_lines("""
import os
from edgefw import identity
identity.generate("")
identity.write_setup("", "48213907")
identity.write_anchors("", {"v": 1})
identity.factory_reset("")
print(identity.status("")[0], identity.setup_code(""), identity.anchors(""))
print("identity" in os.listdir())
""", cwd=tmp_path)
    assert out == ["missing", "None", "None", "False"]


def test_identity_module_runs_under_cpython_too(tmp_path, monkeypatch):
    # The firmware also runs as the agent of a Raspberry Pi (CPython).
    firmware_on_path()
    from edgefw import identity

    root = str(tmp_path)
    pub = identity.generate(root)
    assert identity.status(root) == ("ok", pub)
    key = identity.private_key(root)
    assert ECC.construct(curve="curve25519", seed=key).public_key().export_key(format="raw") == pub


def test_the_kept_public_key_is_used_only_when_it_matches_the_device_id(tmp_path):
    # Pairing reads identity/pub instead of spending a scalar multiplication
    # on its own key; a kept key that disagrees with the id (changed by an
    # older agent) is not used, and a torn one reads as none.
    out = mpy_lines("""
import hashlib
from binascii import hexlify
from edgefw import identity, atomic
pub = identity.generate("")
dev = "esp32-" + hexlify(hashlib.sha256(pub).digest()[:6]).decode()
print(identity.cached_public_key("", dev) == pub)
print(identity.cached_public_key("", "esp32-000000000000"))
print(identity.cached_public_key("", "custom-id") == pub)
with open("identity/pub", "r+b") as f:
    f.seek(3)
    f.write(b"X")
print(identity.cached_public_key("", dev))
identity.factory_reset("")
print(identity.cached_public_key("", dev))
""", cwd=tmp_path)
    assert out == ["True", "None", "True", "None", "None"]
