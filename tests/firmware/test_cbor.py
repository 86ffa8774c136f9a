"""The device CBOR codec (``firmware/edgefw/cbor.py``), on MicroPython and on CPython.

Every check runs the codec under the real MicroPython Unix port with the
ESP32's heap (through :func:`tests.mpy.run`), and again in this CPython
process, where the firmware also runs (Raspberry Pi). cbor2 is the oracle: the
RFC 8949 Appendix A vectors are checked against it, and the property tests
send values both ways between cbor2 and the device codec. Many examples go to
one MicroPython process (hex lines on stdin, one answer line each), so a
property test costs a few processes, not one per example.
"""

from __future__ import annotations

import functools
import json
import math
import struct

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mpy import REPO, firmware_on_path, run

VECTORS_FILE = REPO / "tests" / "vectors" / "cbor_appendix_a.json"
VECTORS = json.loads(VECTORS_FILE.read_text())["vectors"]
INTERPRETERS = ["micropython", "cpython"]

# Shared by both interpreters (so: the common subset of the two languages).
# build() turns a vector's JSON value into the expected object, same() compares
# values exactly (NaN equals NaN, -0.0 differs from 0.0, 1 differs from True),
# answer() runs one batch request and never raises.
CHECKER = r'''
import binascii, json, struct, sys
from edgefw.cbor import loads, dumps, Tag, Simple
try:
    from collections import OrderedDict as _Ordered
except ImportError:
    _Ordered = dict
MICROPYTHON = sys.implementation.name == "micropython"


def unhex(h):
    return binascii.unhexlify(h)


def tohex(b):
    return binascii.hexlify(b).decode()


def build(node, tag=Tag, simple=Simple, ordered=_Ordered):
    if isinstance(node, list):
        return [build(x, tag, simple, ordered) for x in node]
    if not isinstance(node, dict):
        return node
    if "float" in node:
        return struct.unpack(">d", unhex(node["float"]))[0]
    if "bytes" in node:
        return unhex(node["bytes"])
    if "tag" in node:
        return tag(node["tag"], build(node["value"], tag, simple, ordered))
    if "simple" in node:
        return simple(node["simple"])
    m = ordered()
    for k, v in node["map"]:
        m[build(k, tag, simple, ordered)] = build(v, tag, simple, ordered)
    return m


def multi_key_map(node):
    if isinstance(node, list):
        return any(multi_key_map(x) for x in node)
    if isinstance(node, dict):
        if "map" in node:
            return len(node["map"]) > 1 or any(multi_key_map(v) for k, v in node["map"])
        return "tag" in node and multi_key_map(node["value"])
    return False


def same(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        for k in a:
            if k not in b or not same(a[k], b[k]):
                return False
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (a != a and b != b) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "tag"):
        return same(a.tag, b.tag) and same(a.value, b.value)
    if hasattr(a, "value"):
        return same(a.value, b.value)
    return a == b


def check_vector(v):
    data = unhex(v["hex"])
    exp = build(v["value"])
    try:
        got = loads(data)
    except Exception as e:
        return "decoding raised %s: %s" % (type(e).__name__, e)
    if not same(got, exp):
        return "decoded %r, expected %r" % (got, exp)
    again = dumps(got)
    if v["encode"]:
        enc = dumps(exp)
        if enc != data:
            return "encoding the expected value gave %s" % tohex(enc)
        # A MicroPython dict has no insertion order: a decoded multi-key map
        # re-encodes as the same map, possibly with its pairs in another order.
        if again != data and not (MICROPYTHON and multi_key_map(v["value"])
                                  and len(again) == len(data) and same(loads(again), exp)):
            return "re-encoding the decoded value gave %s" % tohex(again)
    elif not same(loads(again), exp):
        return "re-encoding the decoded value gave %s, which decodes differently" % tohex(again)
    return "ok"


def F(h):
    return struct.unpack(">d", unhex(h))[0]


def S(h):
    return str(unhex(h), "utf-8")


def answer(mode, line):
    try:
        if mode == "roundtrip":
            out = dumps(loads(unhex(line)))
        else:
            out = dumps(eval(line))
        return "OK " + tohex(out)
    except ValueError as e:
        return "E " + str(e)
    except Exception as e:
        return "X %s: %s" % (type(e).__name__, e)


def main(mode):
    if mode == "vectors":
        for v in json.load(open(sys.argv[1]))["vectors"]:
            print(check_vector(v))
        return
    while True:
        line = sys.stdin.readline()  # "=" + request: an empty request is a line too
        if not line:
            break
        print(answer(mode, line.strip()[1:]))
'''


def _cpython_namespace() -> dict:
    firmware_on_path()
    ns: dict = {}
    exec(compile(CHECKER, "<cbor checker>", "exec"), ns)
    return ns


CPY = _cpython_namespace()


def batch(interp: str, mode: str, lines: list[str]) -> list[str]:
    """Answer each request line (hex for ``roundtrip``, an expression for ``literal``)."""
    if interp == "cpython":
        return [CPY["answer"](mode, line) for line in lines]
    requests = "".join("=%s\n" % line for line in lines).encode()
    proc = run(CHECKER + "main(%r)\n" % mode, stdin=requests, timeout=120)
    out = proc.stdout.decode().splitlines()
    assert len(out) == len(lines), proc.stdout.decode()[-2000:] + proc.stderr.decode()[-2000:]
    return out


def roundtrip(interp: str, blobs: list[bytes]) -> list[str]:
    return batch(interp, "roundtrip", [b.hex() for b in blobs])


# ---------------------------------------------------------------- vectors

def _vector_id(v: dict) -> str:
    return "%s=%s" % (v["diag"][:24], v["hex"][:24])


@functools.lru_cache(maxsize=None)
def vector_results(interp: str) -> tuple[str, ...]:
    if interp == "cpython":
        return tuple(CPY["check_vector"](v) for v in VECTORS)
    proc = run(CHECKER + "main('vectors')\n", args=[str(VECTORS_FILE)])
    out = proc.stdout.decode().splitlines()
    assert len(out) == len(VECTORS), proc.stdout.decode()
    return tuple(out)


def test_vector_file_holds_all_81_appendix_a_examples_once():
    assert len(VECTORS) == 81
    assert len({v["hex"] for v in VECTORS}) == 81
    assert sum(not v["encode"] for v in VECTORS) == 17  # 6 wide NaN/inf forms + 11 indefinite


def _cbor2_expected(v: dict):
    simple = lambda n: cbor2.undefined if n == 23 else cbor2.CBORSimpleValue(n)  # noqa: E731
    return CPY["build"](v["value"], cbor2.CBORTag, simple, dict)


# cbor2 decodes tags 0 and 1 to datetimes; the device codec keeps them as tags.
_RAW_TIME_TAGS = {0: lambda v, *_: cbor2.CBORTag(0, v), 1: lambda v, *_: cbor2.CBORTag(1, v)}


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
def test_vector_agrees_with_cbor2(vector):
    data = bytes.fromhex(vector["hex"])
    expected = _cbor2_expected(vector)
    assert CPY["same"](cbor2.loads(data, semantic_decoders=_RAW_TIME_TAGS), expected)
    if vector["encode"]:
        # Appendix A maps are already in canonical key order, so cbor2's
        # canonical mode must give the very bytes of the RFC.
        assert cbor2.dumps(expected, canonical=True) == data
    else:
        assert cbor2.dumps(expected, canonical=True) != data


@pytest.mark.parametrize("vector", VECTORS, ids=_vector_id)
@pytest.mark.parametrize("interp", INTERPRETERS)
def test_appendix_a_vector_decodes_and_canonical_ones_encode_to_the_same_bytes(interp, vector):
    assert vector_results(interp)[VECTORS.index(vector)] == "ok"


# ---------------------------------------------------------------- malformed input

HUGE = "ff" * 8
MALFORMED = [  # (name, hex, words the error message must contain)
    ("empty input", "", "truncated: data item expected at offset 0"),
    ("uint8 head cut", "18", "truncated: 1 bytes needed, 0 left at offset 0"),
    ("uint16 head cut", "1901", "truncated: 2 bytes needed, 1 left at offset 0"),
    ("uint32 head cut", "1a000102", "truncated: 4 bytes needed"),
    ("uint64 head cut", "1b00000000000000", "truncated: 8 bytes needed"),
    ("byte string cut", "44010203", "truncated: 4 bytes needed, 3 left at offset 0"),
    ("text string cut in array", "826261", "truncated: 2 bytes needed, 1 left at offset 1"),
    ("array cut inside its last item", "8301021903", "truncated: 2 bytes needed, 1 left at offset 3"),
    ("array count beyond the input", "830102", "array of 3 items is longer than the 2 bytes left at offset 0"),
    ("map value missing", "bf01", "truncated: data item expected at offset 2"),
    ("half float cut", "f900", "truncated: 2 bytes needed"),
    ("double cut", "fb3ff0", "truncated: 8 bytes needed"),
    ("trailing byte", "0000", "1 trailing bytes after the data item at offset 1"),
    ("trailing break", "80ff", "trailing bytes after the data item at offset 1"),
    ("reserved info 28", "1c", "reserved additional information 28 at offset 0"),
    ("reserved info 29 negative", "3d", "reserved additional information 29 at offset 0"),
    ("reserved info 30 bytes", "5e", "reserved additional information 30 at offset 0"),
    ("reserved info 28 major 7", "fc", "reserved additional information 28 at offset 0"),
    ("reserved info 30 tag in array", "81de", "reserved additional information 30 at offset 1"),
    ("indefinite unsigned", "1f", "indefinite length is not allowed for major type 0 at offset 0"),
    ("indefinite negative", "3f", "indefinite length is not allowed for major type 1"),
    ("indefinite tag", "df", "indefinite length is not allowed for major type 6"),
    ("text chunk in byte string", "5f6161ff", "definite string of major type 2 at offset 1"),
    ("nested indefinite chunk", "5f5f4100ffff", "definite string of major type 2 at offset 1"),
    ("integer chunk in text", "7f01ff", "definite string of major type 3 at offset 1"),
    ("byte chunk in text", "7f6161420000ff", "definite string of major type 3 at offset 3"),
    ("indefinite string without break", "5f4100", "indefinite-length item has no break at offset 3"),
    ("indefinite array without break", "9f0102", "indefinite-length item has no break at offset 3"),
    ("indefinite map without break", "bf0102", "indefinite-length item has no break at offset 3"),
    ("lone break", "ff", "break (0xff) outside an indefinite-length item at offset 0"),
    ("break in definite array", "81ff", "break (0xff) outside an indefinite-length item at offset 1"),
    ("break in place of a map value", "bf01ff", "break (0xff) outside an indefinite-length item at offset 2"),
    ("invalid utf-8 byte", "61ff", "text string is not valid UTF-8 at offset 0"),
    ("lone continuation byte", "6180", "not valid UTF-8"),
    ("overlong utf-8", "62c080", "not valid UTF-8"),
    ("utf-8 surrogate", "63eda080", "not valid UTF-8"),
    ("code point past U+10FFFF", "64f4908080", "not valid UTF-8"),
    ("bad continuation", "62c328", "not valid UTF-8"),
    ("utf-8 cut at the end", "62c3", "truncated: 2 bytes needed, 1 left"),
    ("character split across chunks", "7f61c361bcff", "not valid UTF-8 at offset 1"),
    ("two-byte simple below 32", "f810", "simple value 16 must use the one-byte form at offset 0"),
    ("two-byte simple 31", "f81f", "simple value 31 must use the one-byte form"),
    ("33 nested arrays", "81" * 33 + "00", "nesting deeper than 32 levels at offset 32"),
    ("33 nested maps", "a100" * 33 + "00", "nesting deeper than 32 levels at offset 64"),
    ("33 nested tags", "c6" * 33 + "00", "nesting deeper than 32 levels at offset 32"),
    ("33 nested indefinite arrays", "9f" * 33, "nesting deeper than 32 levels at offset 32"),
    ("bignum tag on a text string", "c26161", "bignum tag 2 must hold a byte string at offset 0"),
    ("negative bignum tag on an int", "c301", "bignum tag 3 must hold a byte string"),
    ("array as map key", "a18000f6", "map key is not hashable (an array or map) at offset 1"),
    ("map as map key", "a1a0f6", "map key is not hashable"),
    ("duplicate map key", "a201020103", "duplicate map key at offset 3"),
    ("duplicate key in indefinite map", "bf616101616102ff", "duplicate map key at offset 4"),
    ("true and 1 collide as keys", "a2f5000100", "duplicate map key at offset 3"),
    ("byte string of 2**64-1 bytes", "5b" + HUGE, "truncated: 18446744073709551615 bytes needed, 0 left"),
    ("text of 4 GiB", "7affffffff61", "truncated: 4294967295 bytes needed, 1 left"),
    ("array of 2**64-1 items", "9b" + HUGE + "00", "array of 18446744073709551615 items is longer than the 1 bytes left"),
    ("array of 2**31-1 items", "9a7fffffff0000", "array of 2147483647 items is longer than the 2 bytes left"),
    ("map of 2**64-1 pairs", "bb" + HUGE + "0000", "map of 18446744073709551615 pairs is longer than the 2 bytes left"),
    ("map of 2 pairs in 3 bytes", "a2010203", "map of 2 pairs is longer than the 3 bytes left at offset 0"),
    ("huge byte chunk", "5f5b" + HUGE + "ff", "truncated: 18446744073709551615 bytes needed"),
]


@functools.lru_cache(maxsize=None)
def malformed_results(interp: str) -> tuple[str, ...]:
    return tuple(roundtrip(interp, [bytes.fromhex(h) for _, h, _ in MALFORMED]))


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
@pytest.mark.parametrize("interp", INTERPRETERS)
def test_malformed_input_raises_value_error_naming_the_problem_and_offset(interp, case):
    name, _, words = case
    result = malformed_results(interp)[MALFORMED.index(case)]
    assert result.startswith("E CBOR: "), result
    assert words in result and " at offset " in result, result


def test_malformed_table_is_rejected_by_cbor2_too():
    # Cross-check of the table itself: each case is bad CBOR, not a codec quirk.
    # Left out: the device's own policies (depth cap; keys a Python dict cannot
    # hold, which cbor2 turns into tuples or lets the last one win) and trailing
    # bytes, which cbor2.loads ignores by design (it reads the first item).
    policies = {"array as map key", "map as map key", "duplicate map key",
                "duplicate key in indefinite map", "true and 1 collide as keys",
                "33 nested arrays", "33 nested maps", "33 nested tags", "33 nested indefinite arrays",
                "trailing byte", "trailing break"}
    assert policies <= {name for name, _, _ in MALFORMED}
    for name, h, _ in MALFORMED:
        if name in policies:
            continue
        with pytest.raises((cbor2.CBORDecodeError, ValueError)):
            cbor2.loads(bytes.fromhex(h))


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_every_truncation_of_every_vector_raises_value_error(interp):
    cuts = sorted({bytes.fromhex(v["hex"])[:k] for v in VECTORS for k in range(len(v["hex"]) // 2)})
    results = roundtrip(interp, cuts)
    wrong = [(c.hex(), r) for c, r in zip(cuts, results) if not r.startswith("E CBOR: ")]
    assert not wrong and len(cuts) > 350


def test_lying_lengths_fail_before_allocating_on_micropython():
    # With gc off, every byte allocated shows in mem_alloc: a codec that sized
    # a buffer or list from the declared length would show kilobytes or die.
    proc = run("""
import gc
from edgefw.cbor import loads
import edgefw.why  # the error texts: loaded once, at the first refusal
tail = b"x" * 16
gc.collect()
gc.disable()
# Declared sizes that would fit in the heap (32 KB), so a missing check shows
# as a big allocation rather than hiding behind a MemoryError.
for blob in (b"\\x5a\\x00\\x00\\x80\\x00" + tail, b"\\x9a\\x00\\x00\\x10\\x00" + tail,
             b"\\xba\\x00\\x00\\x10\\x00" + tail, b"\\x5b" + b"\\xff" * 8 + tail,
             b"\\x9b" + b"\\xff" * 8 + tail, b"\\x7a\\x00\\x00\\x80\\x00" + tail):
    before = gc.mem_alloc()
    try:
        loads(blob)
        print("accepted")
    except ValueError:
        print(gc.mem_alloc() - before)
""")
    used = [int(x) for x in proc.stdout.split()]
    assert len(used) == 6 and max(used) < 1024, proc.stdout


def test_well_formed_item_too_big_for_the_heap_raises_value_error_on_micropython():
    # 4000 empty maps are 4 KB of input but well over the ESP32's 110 KB heap
    # as dict objects; a quarter of them fits.
    proc = run("""
from edgefw.cbor import loads
try:
    loads(b"\\x99\\x0f\\xa0" + b"\\xa0" * 4000)
    print("accepted")
except ValueError as e:
    print(str(e).split(" at offset ")[0])
print(len(loads(b"\\x99\\x03\\xe8" + b"\\xa0" * 1000)))
""")
    assert proc.stdout.decode().splitlines() == ["CBOR: item of 4003 bytes does not fit in free memory", "1000"]


def test_depth_limit_is_32_levels_both_ways_on_micropython():
    proc = run("""
from edgefw.cbor import loads, dumps, Tag, MAX_DEPTH
def nest(n):
    x = 0
    for _ in range(n):
        x = [x]
    return x
def fails(f, arg):
    try:
        f(arg)
    except ValueError as e:
        return "deeper than 32" in str(e)
    return False
print(MAX_DEPTH, loads(b"\\x81" * 32 + b"\\x00") == nest(32), dumps(nest(32)) == b"\\x81" * 32 + b"\\x00")
print(fails(loads, b"\\x81" * 33 + b"\\x00"), fails(dumps, nest(33)))
cyclic = [1]
cyclic.append(cyclic)
print(fails(dumps, cyclic), fails(dumps, {1: nest(32)}), dumps(Tag(1, nest(31))) == b"\\xc1" + b"\\x81" * 31 + b"\\x00")
""")
    assert proc.stdout.decode().split() == ["32", "True", "True", "True", "True", "True", "True", "True"]


# ---------------------------------------------------------------- encoder API

def test_encoder_types_and_value_objects_on_micropython():
    proc = run("""
from collections import OrderedDict
from edgefw.cbor import dumps, loads, Tag, Simple, UNDEFINED
def h(x):
    return dumps(x).hex()
print(h((1, 2)), h(bytearray(b"ab")), h(memoryview(b"ab")), h(True), h(False), h(None))
print(h(UNDEFINED), h(Simple(16)), h(Simple(255)), h(Tag(32, "a")), h(Tag(2**64 - 1, 0)))
print(h(OrderedDict([("b", 1), ("a", 2), (3, 4)])), h(2**64), h(-2**64 - 1), h(2**64 - 1), h(-2**64))
print(Tag(1, 2) == Tag(1, 2), Tag(1, 2) != Tag(1, 3), Tag(1, 2) != Tag(2, 2), Tag(1, 2) == 2,
      {Tag(1, "x"): 5}[Tag(1, "x")], Tag(7, [1]).tag, Tag(7, [1]).value)
print(Simple(16) == Simple(16), Simple(16) != Simple(17), loads(b"\\xf7") is UNDEFINED, Simple(23) == UNDEFINED)
print(repr(loads(b"\\xd8\\x20\\x61\\x61")), repr(loads(b"\\xf0")), repr(UNDEFINED))
for bad in (Simple(24), Simple(31), Simple(256), Simple(-1), Tag(-1, 0), Tag(2**64, 0)):
    try:
        dumps(bad)
        print("accepted")
    except ValueError as e:
        print("ValueError")
for bad in ({1, 2}, object(), 1j):
    try:
        dumps([bad])
        print("accepted")
    except TypeError as e:
        print("TypeError" if "cannot encode" in str(e) else str(e))
""")
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == ["820102", "426162", "426162", "f5", "f4", "f6"]
    assert lines[1].split() == ["f7", "f0", "f8ff", "d8206161", "dbffffffffffffffff00"]
    assert lines[2].split() == ["a36162016161020304", "c249010000000000000000",
                                "c349010000000000000000", "1bffffffffffffffff", "3bffffffffffffffff"]
    assert lines[3].split() == ["True", "True", "True", "False", "5", "7", "[1]"]
    assert lines[4].split() == ["True", "True", "True", "True"]
    assert lines[5] == "Tag(32, 'a') Simple(16) undefined"
    assert lines[6:] == ["ValueError"] * 6 + ["TypeError"] * 3


FLOATS = [0.0, -0.0, 1.0, -2.5, 65504.0, 65505.0, 65520.0, -65536.0, 2.0 ** -14, 2.0 ** -24, 3 * 2.0 ** -24,
          2.0 ** -25, 2.0 ** -126, 2.0 ** -149, 2.0 ** -150, 1.0 / 3, 0.1, 100000.0, 3.4028234663852886e38,
          3.4028235677973366e38, 1e300, 5e-324, math.inf, -math.inf, math.nan, 16777217.0, 16777216.0,
          # subnormal edges: each loses significand bits below the smallest normal exponent
          (1 + 2.0 ** -10) * 2.0 ** -15, (1 + 2.0 ** -9) * 2.0 ** -15, -(1 + 2.0 ** -23) * 2.0 ** -127,
          (1 + 2.0 ** -22) * 2.0 ** -127, 3 * 2.0 ** -149, 2.0 ** -1022, 2.0 ** -1074]


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_float_encodes_as_the_shortest_exact_width_like_cbor2_canonical(interp):
    lines = ["F(%r)" % struct.pack(">d", x).hex() for x in FLOATS]
    got = [r.split()[-1] for r in batch(interp, "literal", lines)]
    assert got == [cbor2.dumps(x, canonical=True).hex() for x in FLOATS]
    assert {g[:2] for g in got} == {"f9", "fa", "fb"}


def test_non_shortest_heads_are_well_formed_and_decode():
    # RFC 8949 section 3: a longer head than needed is valid (just not canonical).
    blobs = ["1800", "190017", "1a00000001", "1b0000000000000002", "5800", "780161", "9800", "b800",
             "d8010a", "fa3fc00000", "fb3ff8000000000000"]
    for interp in INTERPRETERS:
        assert roundtrip(interp, [bytes.fromhex(b) for b in blobs]) == [
            "OK 00", "OK 17", "OK 01", "OK 02", "OK 40", "OK 6161", "OK 80", "OK a0", "OK c10a",
            "OK f93e00", "OK f93e00"]


# ---------------------------------------------------------------- properties

scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2 ** 200, 2 ** 200)
           | st.floats() | st.floats(width=32) | st.floats(width=16)
           | st.binary(max_size=40) | st.text(max_size=20))
keys = st.integers(-2 ** 70, 2 ** 70) | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                      | st.dictionaries(keys, inner, max_size=5), max_leaves=10)
# One example is a batch of values (one MicroPython process); a batch of
# recursive values sometimes overruns Hypothesis's buffer, which its health
# checks count as filtering: that is expected here.
BATCH = settings(max_examples=20, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def same(a, b) -> bool:
    return CPY["same"](a, b)


@BATCH
@given(st.lists(st.tuples(values, st.booleans()), min_size=20, max_size=40))
@pytest.mark.parametrize("interp", INTERPRETERS)
def test_cbor2_encoded_values_survive_a_device_decode_and_reencode(interp, cases):
    blobs = [cbor2.dumps(v, canonical=canon) for v, canon in cases]
    results = roundtrip(interp, blobs)
    for (value, _), blob, result in zip(cases, blobs, results):
        assert result.startswith("OK "), (value, blob.hex(), result)
        assert same(cbor2.loads(bytes.fromhex(result[3:])), value), (value, blob.hex(), result)


def literal(v) -> str:
    """A Python expression for ``v`` that both interpreters evaluate to the same value."""
    if isinstance(v, float):
        return "F(%r)" % struct.pack(">d", v).hex()
    if isinstance(v, str):
        return "S(%r)" % v.encode().hex()
    if isinstance(v, bytes):
        return "unhex(%r)" % v.hex()
    if isinstance(v, list):
        return "[%s]" % ", ".join(literal(x) for x in v)
    if isinstance(v, tuple):
        return "(%s)" % "".join(literal(x) + ", " for x in v)
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (literal(k), literal(x)) for k, x in v.items())
    return repr(v)


def untuple(v):
    if isinstance(v, (list, tuple)):
        return [untuple(x) for x in v]
    if isinstance(v, dict):
        return {k: untuple(x) for k, x in v.items()}
    return v


def map_order_free(v) -> bool:
    """True if ``v`` holds no map of two or more pairs (whose order cbor2 canonical would change)."""
    if isinstance(v, dict):
        return len(v) < 2 and all(map_order_free(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return all(map_order_free(x) for x in v)
    return True


values_with_tuples = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6)
                                  | st.lists(inner, max_size=4).map(tuple)
                                  | st.dictionaries(keys, inner, max_size=5), max_leaves=10)


@BATCH
@given(st.lists(values_with_tuples, min_size=20, max_size=40))
@pytest.mark.parametrize("interp", INTERPRETERS)
def test_device_encoded_values_decode_in_cbor2_and_match_its_canonical_bytes(interp, vals):
    results = batch(interp, "literal", [literal(v) for v in vals])
    for value, result in zip(vals, results):
        assert result.startswith("OK "), (value, result)
        out = bytes.fromhex(result[3:])
        assert same(cbor2.loads(out), untuple(value)), (value, result)
        if map_order_free(value):
            assert out == cbor2.dumps(value, canonical=True), (value, result)


def _mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, byte in edits:
        pos = pos % (len(b) + 1)
        if kind == 0 and pos < len(b):
            b[pos] = byte
        elif kind == 1 and pos < len(b):
            b[pos] ^= 1 << (byte % 8)
        elif kind == 2:
            b.insert(pos, byte)
        elif kind == 3 and pos < len(b):
            del b[pos]
        elif kind == 4:
            del b[pos:]
    return bytes(b)


seeds = st.sampled_from([bytes.fromhex(v["hex"]) for v in VECTORS]) | values.map(cbor2.dumps)
edits = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=4)
fuzz_inputs = st.binary(min_size=1, max_size=48) | st.builds(_mutate, seeds, edits)


@BATCH
@given(st.lists(fuzz_inputs, min_size=40, max_size=100))
@pytest.mark.parametrize("interp", INTERPRETERS)
def test_random_and_mutated_bytes_raise_nothing_but_value_error(interp, blobs):
    for blob, result in zip(blobs, roundtrip(interp, blobs)):
        assert result.startswith(("OK ", "E CBOR: ")), (blob.hex(), result)
        if result.startswith("OK "):  # whatever it accepts, it re-encodes to something it accepts again
            assert roundtrip("cpython", [bytes.fromhex(result[3:])])[0].startswith("OK "), (blob.hex(), result)


# ---------------------------------------------------------------- Reader: skip, depth, tags

SKIPPER = r'''
import sys, binascii
from edgefw.cbor import Reader
def skip_all(h, depth=32, tags=True):
    r = Reader(binascii.unhexlify(h), depth, tags)
    try:
        r.skip(0)
    except ValueError as e:
        return "E " + str(e)
    return "ok %d" % r.i
for line in sys.stdin.read().split("\n"):
    if line:
        h, depth, tags = line.split(" ")
        print(skip_all(h, int(depth), tags == "1"))
'''


def skip_results(interp: str, cases: list[tuple[str, int, bool]]) -> list[str]:
    lines = "".join(f"{h} {d} {int(t)}\n" for h, d, t in cases)
    if interp == "cpython":
        firmware_on_path()
        from edgefw.cbor import Reader

        out = []
        for h, d, t in cases:
            r = Reader(bytes.fromhex(h), d, t)
            try:
                r.skip(0)
                out.append("ok %d" % r.i)
            except ValueError as e:
                out.append("E " + str(e))
        return out
    return run(SKIPPER, stdin=lines.encode()).stdout.decode().splitlines()


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_skip_moves_past_exactly_one_item_of_every_appendix_a_vector(interp):
    got = skip_results(interp, [(v["hex"], 32, True) for v in VECTORS])
    assert got == ["ok %d" % (len(v["hex"]) // 2) for v in VECTORS]


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_skip_refuses_every_malformed_item_that_loads_refuses_except_dict_policies(interp):
    # Keys a Python dict cannot hold are well-formed CBOR: skip passes them
    # (a message receiver skips such a key with its value).
    dict_policies = {"array as map key", "map as map key", "duplicate map key",
                     "duplicate key in indefinite map", "true and 1 collide as keys", "trailing byte",
                     "trailing break"}
    cases = [(h, 32, True) for name, h, _ in MALFORMED if name not in dict_policies]
    got = skip_results(interp, cases)
    assert all(g.startswith("E CBOR: ") for g in got), list(zip(cases, got))
    ok = skip_results(interp, [(h, 32, True) for name, h, _ in MALFORMED
                               if name in dict_policies - {"trailing byte", "trailing break"}])
    assert all(g.startswith("ok ") for g in ok)


@pytest.mark.parametrize("interp", INTERPRETERS)
def test_reader_without_tags_refuses_any_tag_bignums_included_and_keeps_its_depth_limit(interp):
    got = skip_results(interp, [
        ("c249010000000000000000", 32, False),  # bignum 2**64
        ("c249010000000000000000", 32, True),
        ("a1018181818101", 8, False),  # map, then 4 arrays: 5 deep
        ("a101818181818101", 5, False),  # 6 deep
        ("9f9f9f01ffffff", 3, False),  # indefinite arrays, 3 deep
        ("9f9f9f9f01ffffffff", 3, False),
    ])
    assert got[0].startswith("E CBOR: tag 2") and got[1] == "ok 11"
    assert got[2] == "ok 7" and "nesting deeper than 5" in got[3]
    assert got[4] == "ok 7" and "nesting deeper than 3" in got[5]
