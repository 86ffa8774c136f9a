"""The device's pairing and session cryptography (edgefw.sha512, hkdf, ccm,
cpace) against the published vectors in tests/vectors/crypto.json and against
pycryptodome, run on the real MicroPython with a Pico W's heap (the smallest
budget among the boards that pair).

Every test sends its cases to one micropython process: each case is an
operation and its arguments, each answer a line "=<hex>", "=-" for None or
"!ValueError"."""

from __future__ import annotations

import json
from pathlib import Path

from Crypto.Cipher import AES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.firmware.compiled import prelude
from tests.mpy import BALLAST, firmware_on_path, run

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "crypto.json").read_text())

DEVICE = """
import json, sys
from binascii import hexlify, unhexlify as h
from edgefw.sha512 import sha512, SHA512
from edgefw.hkdf import hmac_sha256, hkdf_extract, hkdf_expand, hkdf


def sha512_parts(m, cut):
    s = SHA512()
    m = h(m)
    cut = int(cut)
    for i in range(0, len(m), cut):
        s.update(m[i:i + cut])
    d = s.digest()
    return d if d == s.digest() else b""


def cpace():
    from edgefw import cpace
    return cpace


def ccm(k):
    from edgefw.ccm import CCM
    return CCM(h(k))


OPS = {
    "sha512": lambda m: sha512(h(m)),
    "sha512_parts": sha512_parts,
    "hmac": lambda k, m: hmac_sha256(h(k), h(m)),
    "extract": lambda s, k: hkdf_extract(h(s), h(k)),
    "expand": lambda p, i, n: hkdf_expand(h(p), h(i), int(n)),
    "hkdf": lambda s, k, i, n: hkdf(h(s), h(k), h(i), int(n)),
    "seal": lambda k, n, a, p, t: ccm(k).seal(h(n), h(a), h(p), int(t)),
    "open": lambda k, n, a, d, t: ccm(k).open(h(n), h(a), h(d), int(t)),
    "prepend_len": lambda d: cpace().prepend_len(h(d)),
    "lv_cat": lambda *a: cpace().lv_cat(*[h(x) for x in a]),
    "transcript_ir": lambda *a: cpace().transcript_ir(*[h(x) for x in a]),
    "generator_string": lambda p, c, s: cpace().generator_string(cpace().DSI, h(p), h(c), h(s), 128),
    "generator": lambda p, c, s: cpace().generator(h(p), h(c), h(s)),
    "vfy": lambda y, x: cpace().scalar_mult_vfy(h(y), h(x)),
    "isk_ir": lambda *a: cpace().isk_ir(*[h(x) for x in a]),
}

# Cases come on stdin: a command line could not hold the long ones.
for case in json.loads(sys.stdin.read()):
    op, args = case[0], case[1:]
    try:
        r = OPS[op](*args)
        print("=-" if r is None else "=" + hexlify(r).decode())
    except ValueError:
        print("!ValueError")
"""


def on_device(cases: list[tuple], heap: int | str = "picow") -> list[str | None]:
    """Each case's answer: hex, None, or "ValueError"; all cases in one micropython run."""
    cases = [tuple(str(a) for a in c) for c in cases]
    out = run(DEVICE, heap=heap, stdin=json.dumps(cases).encode(), timeout=120).stdout.decode().splitlines()
    assert len(out) == len(cases), out
    return [None if line == "=-" else line[1:] if line[0] == "=" else "ValueError" for line in out]


# -- SHA-512, HMAC, HKDF

def test_sha512_gives_the_fips_180_4_example_digests_whole_and_in_pieces():
    vs = VECTORS["sha512"]
    cases = [("sha512", v["msg"]) for v in vs] + [("sha512_parts", v["msg"], cut) for v in vs for cut in (1, 7, 64)]
    got = on_device(cases)
    want = [v["digest"] for v in vs]
    assert got[:len(vs)] == want
    assert got[len(vs):] == [d for d in want for _ in (1, 7, 64)]


def test_hmac_sha256_gives_the_rfc4231_test_cases():
    vs = VECTORS["hmac_sha256"]
    got = on_device([("hmac", v["key"], v["data"]) for v in vs])
    for v, g in zip(vs, got):
        assert g is not None and g[:len(v["mac"])] == v["mac"], v["name"]


def test_hkdf_gives_the_rfc5869_test_cases_step_by_step_and_whole():
    vs = VECTORS["hkdf_sha256"]
    got = on_device([("extract", v["salt"], v["ikm"]) for v in vs]
                    + [("expand", v["prk"], v["info"], v["length"]) for v in vs]
                    + [("hkdf", v["salt"], v["ikm"], v["info"], v["length"]) for v in vs])
    assert got == [v["prk"] for v in vs] + [v["okm"] for v in vs] * 2


def test_hkdf_refuses_more_than_255_blocks():
    assert on_device([("expand", "00" * 32, "", 255 * 32 + 1), ("expand", "00" * 32, "", 0)]) == ["ValueError", ""]


# -- AES-CCM

def test_ccm_seals_and_opens_the_rfc3610_and_sp800_38c_vectors():
    vs = VECTORS["ccm"]
    seals = [("seal", v["key"], v["nonce"], v["aad"], v["plaintext"], len(v["tag"]) // 2) for v in vs]
    opens = [("open", v["key"], v["nonce"], v["aad"], v["ciphertext"] + v["tag"], len(v["tag"]) // 2) for v in vs]
    got = on_device(seals + opens)
    assert got[:len(vs)] == [v["ciphertext"] + v["tag"] for v in vs]
    assert got[len(vs):] == [v["plaintext"] for v in vs]


def _flip(hexstr: str, bit: int) -> str:
    b = bytearray.fromhex(hexstr)
    b[bit // 8] ^= 1 << (bit % 8)
    return b.hex()


def test_ccm_open_refuses_any_flipped_bit_and_a_truncated_input_without_raising():
    v = VECTORS["ccm"][3]          # RFC 3610 packet vector #1
    k, n, a, d = v["key"], v["nonce"], v["aad"], v["ciphertext"] + v["tag"]
    nbits = len(d) * 4
    cases = [("open", k, n, a, _flip(d, 0), 8),                    # first ciphertext bit
             ("open", k, n, a, _flip(d, nbits - 70), 8),           # last ciphertext byte
             ("open", k, n, a, _flip(d, nbits - 1), 8),            # last tag bit
             ("open", k, n, a, _flip(d, nbits - 64), 8),           # first tag bit
             ("open", k, _flip(n, 12 * 8), a, d, 8),               # nonce
             ("open", k, n, _flip(a, 3), d, 8),                    # aad
             ("open", k, n, "", d, 8),                             # aad dropped
             ("open", k, n, a, d[:-2], 8),                         # one byte short
             ("open", k, n, a, d[:14], 8),                         # shorter than the tag
             ("open", k, n, a, "", 8),
             ("open", k, n, a, d, 10),                             # other tag length
             ("open", k, n, a, d, 8)]                              # untouched: opens
    got = on_device(cases)
    assert got == [None] * 11 + [v["plaintext"]]


def test_ccm_refuses_nonces_and_tag_lengths_ccm_does_not_have():
    k = "00" * 16
    cases = [("seal", k, "00" * 6, "", "", 8), ("seal", k, "00" * 14, "", "", 8),
             ("open", k, "00" * 6, "", "00" * 8, 8), ("seal", k, "00" * 13, "", "", 5),
             ("seal", k, "00" * 13, "", "", 18), ("seal", k, "00" * 13, "", "", 2),
             ("seal", k, "00" * 13, "00" * 0xFF00, "", 8), ("open", k, "00" * 13, "00" * 0xFF00, "00" * 8, 8)]
    assert on_device(cases, heap=1024 * 1024) == ["ValueError"] * 7 + [None]


ONE_KEY_MANY_MESSAGES = """
import json, sys
from binascii import hexlify, unhexlify as h
from edgefw.ccm import CCM
vs = json.loads(sys.stdin.read())
c = CCM(h(vs[0]["key"]))
for v in vs:
    t = len(v["tag"]) // 2
    sealed = c.seal(h(v["nonce"]), h(v["aad"]), h(v["plaintext"]), t)
    print(hexlify(sealed).decode())
    print(c.open(h(v["nonce"]), h(v["aad"]), sealed[:-1] + bytes([sealed[-1] ^ 1]), t))
    print(hexlify(c.open(h(v["nonce"]), h(v["aad"]), sealed, t)).decode())
"""


def test_one_ccm_object_seals_and_opens_message_after_message():
    # A session keeps one CCM per key: every message must be as if alone,
    # a refused one included.
    vs = [v for v in VECTORS["ccm"] if v["key"] == "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf"]
    assert len(vs) == 12
    out = run(ONE_KEY_MANY_MESSAGES, heap="picow", stdin=json.dumps(vs).encode()).stdout.decode().split()
    assert out == [x for v in vs for x in (v["ciphertext"] + v["tag"], "None", v["plaintext"])]


def test_ccm_under_cpython_uses_pycryptodome_for_aes_and_gives_the_same_bytes():
    # A Linux computer runs the firmware sources on CPython, without cryptolib.
    firmware_on_path()
    from edgefw.ccm import CCM
    for v in VECTORS["ccm"]:
        c = CCM(bytes.fromhex(v["key"]))
        t = len(v["tag"]) // 2
        sealed = c.seal(bytes.fromhex(v["nonce"]), bytes.fromhex(v["aad"]), bytes.fromhex(v["plaintext"]), t)
        assert sealed.hex() == v["ciphertext"] + v["tag"], v["name"]
        assert c.open(bytes.fromhex(v["nonce"]), bytes.fromhex(v["aad"]), sealed, t) == bytes.fromhex(v["plaintext"])
        assert c.open(bytes.fromhex(v["nonce"]), bytes.fromhex(v["aad"]), sealed[:-1], t) is None


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(min_size=16, max_size=16), st.integers(7, 13), st.binary(max_size=300),
                          st.binary(max_size=1100), st.sampled_from([4, 6, 8, 10, 12, 14, 16]), st.randoms()),
                min_size=1, max_size=6))
def test_ccm_agrees_with_pycryptodome_on_random_messages(items):
    cases: list[tuple] = []
    want: list[str] = []
    for key, nlen, aad, msg, tag_len, rnd in items:
        nonce = rnd.randbytes(nlen)
        c = AES.new(key, AES.MODE_CCM, nonce=nonce, mac_len=tag_len)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(msg)
        cases += [("seal", key.hex(), nonce.hex(), aad.hex(), msg.hex(), tag_len),
                  ("open", key.hex(), nonce.hex(), aad.hex(), (ct + tag).hex(), tag_len)]
        want += [(ct + tag).hex(), msg.hex()]
    assert on_device(cases) == want


CHUNKED = """
import json, sys
from binascii import hexlify, unhexlify as h
from edgefw.ccm import CCM
cases = json.loads(sys.stdin.read())
c = CCM(h(cases[0][0]))
for key, nonce, aad, msg, t in cases:
    sealed = c.seal(h(nonce), h(aad), h(msg), t)
    print("=" + hexlify(sealed).decode())
    out = bytearray(len(msg) // 2)
    print("=" + hexlify(out).decode() if c.open_into(h(nonce), h(aad), sealed, out, t) else "refused")
"""


def test_one_ccm_object_agrees_with_pycryptodome_across_its_chunk_and_block_edges():
    # The device's CCM works through a message 128 bytes at a time and
    # through the AAD in the first chunk after B0: every length around a
    # block or a chunk edge, one object for all (its MAC chain runs on).
    key = bytes(range(16))
    cases, want = [], []
    lengths = [(0, m) for m in (0, 1, 15, 16, 17, 112, 127, 128, 129, 255, 256, 257, 300, 1024, 1100)]
    lengths += [(a, 40) for a in (1, 13, 14, 15, 110, 111, 112, 126, 127, 128, 129, 300)]
    for i, (la, lm) in enumerate(lengths):
        nonce, aad, msg = bytes([i]) * (7 + i % 7), bytes([i + 1]) * la, bytes((i * j) & 0xFF for j in range(lm))
        tag_len = 4 + 2 * (i % 7)
        c = AES.new(key, AES.MODE_CCM, nonce=nonce, mac_len=tag_len)
        c.update(aad)
        ct, tag = c.encrypt_and_digest(msg)
        cases.append((key.hex(), nonce.hex(), aad.hex(), msg.hex(), tag_len))
        want += ["=" + (ct + tag).hex(), "=" + msg.hex()]
    out = run(CHUNKED, heap="picow", stdin=json.dumps(cases).encode()).stdout.decode().split()
    assert out == want


# -- CPace (CPACE-X25519-SHA512, draft-irtf-cfrg-cpace-21)

def test_cpace_string_functions_give_the_drafts_vectors():
    s = VECTORS["cpace_strings"]
    c = VECTORS["cpace_x25519"]
    cases = ([("prepend_len", d) for d, _ in s["prepend_len"]] + [("lv_cat", *s["lv_cat"]["args"])]
             + [("transcript_ir", *args) for args, _ in s["transcript_ir"]]
             + [("generator_string", c["prs"], c["ci"], c["sid"])])
    assert on_device(cases) == ([out for _, out in s["prepend_len"]] + [s["lv_cat"]["out"]]
                                + [out for _, out in s["transcript_ir"]] + [c["generator_string"]])


def test_cpace_gives_the_drafts_x25519_vectors_from_generator_to_isk():
    c = VECTORS["cpace_x25519"]
    cases = [("generator", c["prs"], c["ci"], c["sid"]),
             ("vfy", c["ya"], c["g"]), ("vfy", c["yb"], c["g"]),
             ("vfy", c["ya"], c["Yb"]), ("vfy", c["yb"], c["Ya"]),
             ("transcript_ir", c["Ya"], c["ADa"], c["Yb"], c["ADb"]),
             ("isk_ir", c["sid"], c["K"], c["Ya"], c["ADa"], c["Yb"], c["ADb"])]
    assert on_device(cases) == [c["g"], c["Ya"], c["Yb"], c["K"], c["K"], c["transcript_ir"], c["ISK_IR"]]


def test_cpace_scalar_mult_vfy_refuses_the_low_order_points_and_masks_bit_255():
    lo = VECTORS["cpace_x25519_low_order"]
    got = on_device([("vfy", lo["s"], p["u"]) for p in lo["points"]])
    assert got == ["ValueError" if p["q"] == "00" * 32 else p["q"] for p in lo["points"]]
    # The draft: u0..u5 and u7 must abort.
    assert [p["name"] for p, g in zip(lo["points"], got) if g == "ValueError"] == \
        ["u0", "u1", "u2", "u3", "u4", "u5", "u7"]


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=150), st.binary(max_size=40),
                          st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32),
                          st.binary(max_size=20), st.binary(max_size=20)), min_size=1, max_size=3))
def test_cpace_device_and_host_agree_on_random_inputs(runs):
    # The host plays the responder of each run; the device computes the
    # initiator's generator, share, K and ISK.
    from edge_agent import crypto
    cases: list[tuple] = []
    want: list[str] = []
    for prs, ci, sid, ya, yb, ada, adb in runs:
        g = crypto.cpace_generator(prs, ci, sid)
        Ya = crypto.scalar_mult_vfy(ya, g)
        Yb = crypto.scalar_mult_vfy(yb, g)
        K = crypto.scalar_mult_vfy(yb, Ya)
        cases += [("generator", prs.hex(), ci.hex(), sid.hex()), ("vfy", ya.hex(), g.hex()),
                  ("vfy", ya.hex(), Yb.hex()),
                  ("isk_ir", sid.hex(), K.hex(), Ya.hex(), ada.hex(), Yb.hex(), adb.hex())]
        want += [g.hex(), Ya.hex(), K.hex(), crypto.isk_ir(sid, K, Ya, ada, Yb, adb).hex()]
    assert on_device(cases) == want


# -- heap

# One CPace side (generator, share, K, ISK) or one 1 KB CCM seal and open,
# run after a ballast has taken all the heap but `free` bytes: it either
# fits in that much free heap (collections included) or fails with
# MemoryError. bench/bench_crypto_device.py searches the least that fits.
IN_FREE_HEAP = """
import gc
from edgefw import cpace
from edgefw.ccm import CCM


def cpace_side():
    sid = b"0123456789abcdef"
    g = cpace.generator(b"48213907", b"\\x0bA_initiator\\x0bB_responder", sid)
    y = cpace.sample_scalar()
    Y = cpace.scalar_mult_vfy(y, g)
    K = cpace.scalar_mult_vfy(y, Y)
    cpace.isk_ir(sid, K, Y, b"a", Y, b"b")


def ccm_1k():
    c = CCM(bytes(16))
    c.open(bytes(13), b"hdr", c.seal(bytes(13), b"hdr", bytes(1024)))


FREE = %d
""" + BALLAST + """try:
    %s()
    print("fits")
except MemoryError:
    print("MemoryError")
"""


def fits_in_free_heap(what: str, free: int, heap: int | str = "picow") -> bool:
    """Whether ``what`` ("cpace_side" or "ccm_1k") runs with only ``free`` bytes of heap left to it."""
    out = run(IN_FREE_HEAP % (free, what), heap=heap, timeout=120).stdout.decode().split()
    return out == ["fits"]


def test_one_cpace_side_and_a_1k_ccm_round_run_in_a_small_part_of_a_pico_w_heap():
    assert fits_in_free_heap("cpace_side", 16 * 1024)
    assert fits_in_free_heap("ccm_1k", 24 * 1024)
    assert not fits_in_free_heap("cpace_side", 256)    # the ballast does hold the rest


# A warm session's seal and open of a 1 KB message (a BATCH over BLE, every
# few seconds): the result (~1 KB) and a few small views, nothing per byte
# besides. Measured with the collector off, as test_uplink_device does.
WARM_SESSION = """
import gc
from edgefw.session import Session
dev = Session(bytes(16), bytes(range(16)))
host = Session(bytes(16), bytes(range(16)), 1)
msg = bytes(range(256)) * 4
for _ in range(2):
    host.open(dev.seal(msg))
    dev.open(host.seal(msg))
gc.collect()
gc.disable()
a = gc.mem_alloc()
s = dev.seal(msg)
b = gc.mem_alloc()
m = host.open(s)
c = gc.mem_alloc()
gc.enable()
print(b - a, c - b, m == msg)
"""


def test_a_warm_session_seals_and_opens_1k_allocating_little_more_than_the_result():
    seal, open_, ok = run(prelude() + WARM_SESSION).stdout.decode().split()
    assert ok == "True"
    assert int(seal) <= 1536 and int(open_) <= 1536, (seal, open_)
