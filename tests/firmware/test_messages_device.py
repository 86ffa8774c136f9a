"""The device's message layer (edgefw.messages) keeps docs/protocol.md
section 2.1 and 2.2, checked under micropython with a board's heap against
the shared vectors (tests/vectors/) that the host is tested against too."""

from __future__ import annotations

import ast
import json

import pytest

from tests.firmware.compiled import prelude
from tests.mpy import REPO, run

VECTORS = REPO / "tests" / "vectors"
MESSAGES = json.loads((VECTORS / "messages.json").read_text())
BAD = json.loads((VECTORS / "bad_messages.json").read_text())
NAMES = json.loads((VECTORS / "names.json").read_text())
TYPES = {"HELLO": 1, "TIME": 2, "ACK": 4, "STATUS": 5, "SENSORS": 6, "BATCH": 7, "REFUSE": 8,
         "OTA_QUERY": 9, "OTA_OFFER": 10, "OTA_WINDOW": 11, "OTA_CHUNK": 12, "OTA_STATE": 13}

_DECODE_EACH = r"""
import binascii
from edgefw import messages
for line in sys.stdin.buffer.read().split(b"\n"):
    if not line:
        continue
    payload = binascii.unhexlify(line.strip()) if line.strip() != b"-" else b""
    try:
        kind, fields = messages.decode(payload)
        again = binascii.hexlify(messages.encode(kind, fields)).decode()
        print(repr(["ok", kind, again]))
    except ValueError as e:
        print(repr(["err", str(e)]))
"""


def decode_all(hexes: list[str]) -> list:
    stdin = "\n".join(h or "-" for h in hexes).encode() + b"\n"
    out = run(prelude() + _DECODE_EACH, heap="esp32", stdin=stdin).stdout.decode()
    return [ast.literal_eval(line) for line in out.splitlines()]


def test_every_valid_shared_message_decodes_to_its_type_and_re_encodes_to_the_same_bytes():
    got = decode_all([v["hex"] for v in MESSAGES])
    for v, g in zip(MESSAGES, got, strict=True):
        assert g[:2] == ["ok", TYPES[v["type"]]], (v["name"], g)
        assert g[2] == v["hex"], f"{v['name']}: the device's deterministic encoding differs"


def test_every_shared_bad_message_is_rejected_and_every_odd_but_valid_one_accepted():
    got = decode_all([v["hex"] for v in BAD])
    for v, g in zip(BAD, got, strict=True):
        if v.get("accept"):
            assert g[:2] == ["ok", TYPES[v["type"]]], (v["name"], g)
        else:
            assert g[0] == "err", (v["name"], v["why"], g)


def _map(*pairs: bytes) -> str:
    return (bytes([0xA0 | len(pairs)]) + b"".join(pairs)).hex()


TIME_1 = bytes.fromhex("011b0000019ab10424ab")  # key 1: 2025-11-23T13:20:30.123Z
ACK_ID = bytes.fromhex("01") + b"\x69esp32-abc"


@pytest.mark.parametrize("case, payload", [
    ("type true", _map(b"\x00\xf5", TIME_1)),
    ("type 2.0 as a half float", _map(b"\x00\xf9\x40\x00", TIME_1)),
    ("ACK next as true", _map(b"\x00\x04", ACK_ID, b"\x02\xf5")),
    ("ACK next as 2.0", _map(b"\x00\x04", ACK_ID, b"\x02\xf9\x40\x00")),
    ("TIME as a 1000-byte bignum", _map(b"\x00\x02", b"\x01\xc2\x59\x03\xe8" + b"\x01" * 1000)),
    ("nested 21 deep under an unknown key", _map(b"\x00\x02", TIME_1, b"\x14" + b"\x81" * 20 + b"\x00")),
    ("nested 9 deep under an unknown key", _map(b"\x00\x02", TIME_1, b"\x14" + b"\x81" * 8 + b"\x00")),
])
def test_strict_receiver_rejects(case, payload):
    (g,) = decode_all([payload])
    assert g[0] == "err", (case, g)


@pytest.mark.parametrize("case, payload", [
    ("nested 8 deep under an unknown key (the limit)", _map(b"\x00\x02", TIME_1, b"\x14" + b"\x81" * 7 + b"\x00")),
    ("unknown key true", _map(b"\x00\x02", TIME_1, b"\xf5\x01")),
    ("unknown array key", _map(b"\x00\x02", TIME_1, b"\x81\x01\x01")),
    ("unknown map key holding repeated keys", _map(b"\x00\x02", TIME_1, b"\xa2\x01\x01\x01\x01\x02")),
])
def test_strict_receiver_skips_keys_that_are_not_unsigned_integers_whatever_they_hold(case, payload):
    (g,) = decode_all([payload])
    assert g[:2] == ["ok", 2], (case, g)


_NAMES = r"""
import json
from edgefw import messages
cases = json.loads(sys.stdin.read())
check = {"device_id": messages.valid_id, "sensor_name": messages.valid_name, "unit": messages.valid_unit}
for kind in check:
    for s in cases[kind]["valid"]:
        print(repr([kind, s, True, check[kind](s)]))
    for s in cases[kind]["invalid"]:
        print(repr([kind, s, False, check[kind](s)]))
"""


def test_ids_names_and_units_follow_the_one_shared_rule():
    out = run(prelude() + _NAMES, heap="esp32", stdin=json.dumps(NAMES).encode()).stdout.decode()
    rows = [ast.literal_eval(line) for line in out.splitlines()]
    assert len(rows) == sum(len(NAMES[k]["valid"]) + len(NAMES[k]["invalid"]) for k in NAMES if k != "_doc")
    wrong = [r for r in rows if r[2] != r[3]]
    assert not wrong


def test_a_device_decoding_what_it_receives_never_loads_the_checks_of_what_it_sends():
    code = prelude() + f"""
from edgefw import messages
for h in {[v["hex"] for v in MESSAGES if v["type"] in ("TIME", "ACK", "REFUSE")]!r}:
    messages.decode(bytes.fromhex(h))
print("edgefw.outgoing" in sys.modules)
messages.decode(bytes.fromhex({next(v["hex"] for v in MESSAGES if v["type"] == "BATCH")!r}))
print("edgefw.outgoing" in sys.modules)
"""
    assert run(code, heap="esp32").stdout.decode().split() == ["False", "True"]


# -- OTA messages (section 7.2): device-only vectors, the shared ones come
# with the host's types (tests/vectors/messages.json) --------------------

_OTA = r"""
import binascii
from edgefw import messages
from edgefw.ota_transfer import Transfer
def hx(b): return binascii.hexlify(b).decode()
out = []
out.append(hx(messages.ota_query("esp32-3f9a0c12b7d4", "agent", "0.1.0", 6, 1, 0, "resume", 7, 8192)))
out.append(hx(messages.ota_query("esp32-3f9a0c12b7d4", "agent", "0.1.0", 0, 0, 0, "boot")))
out.append(hx(messages.ota_window("esp32-3f9a0c12b7d4", 7, 4096, 12288)))
out.append(hx(messages.ota_window("esp32-3f9a0c12b7d4", 7, 4096, 12288, True)))
out.append(hx(messages.ota_state("esp32-3f9a0c12b7d4", "agent", 7, "downloading", version="1.3.0",
                                 held=0, size=50000)))
out.append(hx(messages.ota_state("esp32-3f9a0c12b7d4", "agent", 7, "refused", check="rollback",
                                 reason="x" * 300)))
class C:
    device_id = "esp32-3f9a0c12b7d4"
class W:
    # Transfer.message on a stand-in holding what it reads.
    message = Transfer.message
t = W()
t.c = C(); t.seq = 7; t.ack = 4096; t.limit = 12288; t.wbuf = bytearray(128)
for rewind in (False, True):
    t.rewind = rewind
    out.append(hx(t.message()))
for h in sys.stdin.read().split():
    try:
        k, f = messages.decode(binascii.unhexlify(h))
        out.append([k, sorted((key, hx(v) if not isinstance(v, (int, str)) else v) for key, v in f.items())])
    except ValueError as e:
        out.append(["err", str(e)])
print(repr(out))
"""


def test_ota_messages_are_built_in_deterministic_encoding_and_decoded_by_the_rules_of_2_1():
    import cbor2
    dev = "esp32-3f9a0c12b7d4"
    offer = {0: 10, 1: dev, 2: "agent", 3: b"\xd2" * 200, 4: b"k" * 100, 6: 3600}
    chunk = {0: 12, 1: dev, 2: 7, 3: 4096, 4: bytes(range(256)) * 3}
    bad = [
        {0: 12, 1: dev, 2: 7, 3: 0, 4: b""},                 # empty chunk
        {0: 12, 1: dev, 2: 7, 3: 0, 4: b"x" * 961},          # past 960 bytes
        {0: 12, 1: dev, 2: 7, 3: 0, 4: "text"},              # a text, not bytes
        {0: 10, 1: dev, 2: "agent", 3: b"m" * 513},           # a manifest past 512 bytes
        {0: 10, 1: dev, 2: "agent", 6: 59},                   # ask again sooner than 60 s
        {0: 12, 1: dev, 2: 7, 4: b"x"},                       # no offset
    ]
    hexes = [cbor2.dumps(m).hex() for m in [offer, chunk] + bad]
    got = ast.literal_eval(run(prelude() + _OTA, heap="esp32", stdin=" ".join(hexes).encode()).stdout.decode())
    canon = [
        {0: 9, 1: dev, 2: "agent", 3: "0.1.0", 4: 6, 5: 1, 6: 0, 7: 7, 8: 8192, 9: "resume"},
        {0: 9, 1: dev, 2: "agent", 3: "0.1.0", 4: 0, 5: 0, 6: 0, 9: "boot"},
        {0: 11, 1: dev, 2: 7, 3: 4096, 4: 12288},
        {0: 11, 1: dev, 2: 7, 3: 4096, 4: 12288, 5: True},
        {0: 13, 1: dev, 2: "agent", 3: 7, 4: "downloading", 5: "1.3.0", 6: 0, 7: 50000},
        {0: 13, 1: dev, 2: "agent", 3: 7, 4: "refused", 8: "rollback", 9: "x" * 200},
        {0: 11, 1: dev, 2: 7, 3: 4096, 4: 12288},
        {0: 11, 1: dev, 2: 7, 3: 4096, 4: 12288, 5: True},
    ]
    assert got[:8] == [cbor2.dumps(m, canonical=True).hex() for m in canon]
    assert got[8] == [10, [(1, dev), (2, "agent"), (3, (b"\xd2" * 200).hex()), (4, (b"k" * 100).hex()),
                           (6, 3600)]]
    assert got[9] == [12, [(1, dev), (2, 7), (3, 4096), (4, (bytes(range(256)) * 3).hex())]]
    assert all(g[0] == "err" for g in got[10:]), got[10:]
