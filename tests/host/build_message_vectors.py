"""Build ``tests/vectors/messages.json`` and ``tests/vectors/bad_messages.json`` from the spec.

Run ``python tests/host/build_message_vectors.py`` to rewrite both files. The
messages are written here as CBOR maps, straight from docs/protocol.md
section 2, and encoded with cbor2's deterministic encoding (RFC 8949 section
4.2.1); odd encodings that no encoder produces are written as hex by hand.
Nothing here imports ``edge_agent``: the vectors test the host's codec, so
they must not come from it.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import cbor2

OUT = Path(__file__).parents[1] / "vectors"

DEVICE = "esp32-7c9e3a0b1d2f"
BOARD = "esp32"
NOW = 1763906430123        # 2025-11-23T13:20:30.123Z
EPOCH = 1763906000000      # epoch of boot 7
MAX_UINT = 2**63 - 1


def enc(item: Any) -> bytes:
    return cbor2.dumps(item, canonical=True)


def f32(x: float) -> float:
    """A float as a board (single precision) writes it."""
    return struct.unpack(">f", struct.pack(">f", x))[0]


TABLE = [["temp", "Cel"], ["humidity", "%RH"], ["vbat", "V"], ["heap_free", "B"],
         ["door", ""], ["mode", ""], ["lat", "lat"]]
TABLE_ID = zlib.crc32(enc(TABLE))
TABLE2 = [["temp", "Cel"], ["rssi", "dBm"]]
TABLE2_ID = zlib.crc32(enc(TABLE2))

HELLO = {0: 1, 1: DEVICE, 2: BOARD, 3: "0.2.0", 4: 7, 5: 5230, 6: 1200, 7: 1180, 8: 0, 9: 2, 10: 3}
TIME = {0: 2, 1: NOW}
SENSORS = {0: 6, 1: DEVICE, 2: TABLE_ID, 3: TABLE}
SENSORS2 = {0: 6, 1: DEVICE, 2: TABLE2_ID, 3: TABLE2}
BATCH_TICKS = [
    [0, 0, f32(23.7), 1, 41.25, 2, f32(3.91), 3, 61234],
    [1000, 0, f32(23.8), 4, True, 5, "heating"],
    [2000, 0, -4, 6, 47.376887],
    [2000, 3, 9007199254740993],
    [2500, 4, False, 3, MAX_UINT, 0, -(2**63) + 1],
]
BATCH = {0: 7, 1: DEVICE, 2: 1200, 3: 7, 4: 0, 5: 0, 6: TABLE_ID, 7: EPOCH, 8: 5230, 9: BATCH_TICKS}
# An earlier boot that never learned the time: estimated epoch (basis 1), records dropped.
BATCH_EST = {0: 7, 1: DEVICE, 2: 40, 3: 5, 4: 1, 5: 12, 6: TABLE2_ID, 7: 1763905000000,
             8: 0, 9: [[0, 0, 21, 1, -67], [60000, 0, f32(21.5)]]}
ACK = {0: 4, 1: DEVICE, 2: 1213}
REFUSE = {0: 8, 1: DEVICE, 2: 1213, 3: 1220, 4: "time_range"}
SELFTEST = {"sensors": 6, "sensor_errors": ["humidity"], "heap_free": 48112, "fs_free": None,
            "version": "0.2.0"}
STATUS_SELFTEST = {0: 5, 1: DEVICE, 2: "error", 3: "sensor humidity did not answer", 4: SELFTEST}
COUNTERS = {"refused": 7, "dropped": 12, "bad_messages": 1, "bad_frames": 2, "fs_full": 0,
            "interrupts_ignored": 3}
STATUS_COUNTERS = {0: 5, 1: DEVICE, 2: "error", 3: "host refused records 1213..1219: time_range",
                   5: COUNTERS}
STATUS_SAFE = {0: 5, 1: "", 2: "safe", 3: "config.json: id 'Esp32' breaks the id rule"}

# Section 7.2: OTA messages. The documents an OFFER carries are opaque bytes to this layer.
MANIFEST = bytes(range(256)) + bytes(range(255, -1, -1))         # 512 bytes, the most key 3 holds
KEY_LIST = b"\xd2\x84" + b"\x5a" * 318                          # 320 bytes
ROTATION = b"\xd2\x84" + b"\x3c" * 198                          # 200 bytes, the most key 5 holds
CHUNK_DATA = bytes((i * 7 + 3) & 0xFF for i in range(960))         # the most key 4 holds
OTA_QUERY = {0: 9, 1: DEVICE, 2: "agent", 3: "0.2.0", 4: 6, 5: 3, 6: 0, 9: "schedule"}
OTA_QUERY_RESUME = {0: 9, 1: DEVICE, 2: "firmware", 3: "1.24.1", 4: 0, 5: 0, 6: 1, 7: 7, 8: 65536,
                    9: "resume"}
OTA_OFFER = {0: 10, 1: DEVICE, 2: "agent", 3: MANIFEST, 4: KEY_LIST, 6: 86400}
OTA_OFFER_ROTATION = {0: 10, 1: DEVICE, 2: "agent", 5: ROTATION}
OTA_OFFER_NONE = {0: 10, 1: DEVICE, 2: "firmware", 6: 604800}
OTA_WINDOW = {0: 11, 1: DEVICE, 2: 7, 3: 4096, 4: 12288}
OTA_WINDOW_REWIND = {0: 11, 1: DEVICE, 2: 7, 3: 65536, 4: 73728, 5: True}
OTA_CHUNK = {0: 12, 1: DEVICE, 2: 7, 3: 8192, 4: CHUNK_DATA}
OTA_CHUNK_LAST = {0: 12, 1: DEVICE, 2: 7, 3: 130000, 4: b"\x00"}
OTA_STATE_DOWNLOADING = {0: 13, 1: DEVICE, 2: "agent", 3: 7, 4: "downloading", 5: "0.3.0", 6: 0,
                         7: 130001}
OTA_STATE_REFUSED = {0: 13, 1: DEVICE, 2: "agent", 3: 7, 4: "refused", 8: "bad-signature",
                     9: "the manifest's signature does not verify with key 3f9a0c12b7d4e5f6"}
OTA_STATE_ROLLED_BACK = {0: 13, 1: DEVICE, 2: "firmware", 3: 4, 4: "rolled-back", 8: "rolled-back",
                         9: ""}
OTA_STATE_CONFIRMED = {0: 13, 1: DEVICE, 2: "agent", 3: 7, 4: "confirmed", 5: "0.3.0"}

TYPES = {1: "HELLO", 2: "TIME", 4: "ACK", 5: "STATUS", 6: "SENSORS", 7: "BATCH", 8: "REFUSE",
         9: "OTA_QUERY", 10: "OTA_OFFER", 11: "OTA_WINDOW", 12: "OTA_CHUNK", 13: "OTA_STATE"}


def hello_fields(m: dict) -> dict:
    return {"device_id": m[1], "board": m[2], "version": m[3], "boot": m[4], "uptime_ms": m[5],
            "next_seq": m[6], "acked": m[7], "dropped": m[8], "protocol": m[9], "refused": m[10]}


def records(batch: dict, table: list) -> list[dict]:
    """What a host resolves from a BATCH (section 2.7)."""
    out, seq = [], batch[2]
    for tick in batch[9]:
        t_ms = batch[7] + batch[8] + tick[0]
        for k, v in zip(tick[1::2], tick[2::2]):
            name, unit = table[k]
            out.append({"seq": seq, "name": name, "unit": unit, "value": v, "t_ms": t_ms,
                        "estimated": batch[4] == 1})
            seq += 1
    return out


def batch_fields(m: dict) -> dict:
    return {"device_id": m[1], "first_seq": m[2], "boot": m[3], "time_basis": m[4],
            "dropped": m[5], "table_id": m[6], "epoch_ms": m[7], "base_uptime_ms": m[8],
            "ticks": m[9]}


def status_fields(m: dict) -> dict:
    return {"device_id": m[1], "state": m[2], "reason": m[3], "selftest": m.get(4),
            "counters": m.get(5)}


def query_fields(m: dict) -> dict:
    return {"device_id": m[1], "component": m[2], "version": m[3], "counter": m[4],
            "keys_sequence": m[5], "root_epoch": m[6], "resume_sequence": m.get(7),
            "resume_held": m.get(8), "why": m[9]}


def offer_fields(m: dict) -> dict:
    return {"device_id": m[1], "component": m[2], "manifest": m.get(3), "key_list": m.get(4),
            "rotation": m.get(5), "retry_s": m.get(6)}


def window_fields(m: dict) -> dict:
    return {"device_id": m[1], "sequence": m[2], "ack": m[3], "limit": m[4], "rewind": m.get(5, False)}


def chunk_fields(m: dict) -> dict:
    return {"device_id": m[1], "sequence": m[2], "offset": m[3], "data": m[4]}


def state_fields(m: dict) -> dict:
    return {"device_id": m[1], "component": m[2], "sequence": m[3], "state": m[4],
            "version": m.get(5), "held": m.get(6), "size": m.get(7), "check": m.get(8),
            "reason": m.get(9)}


def json_ready(fields: dict) -> dict:
    """Byte strings as hex in the JSON (the tests turn ``*`` fields of OTA types back into bytes)."""
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in fields.items()}


def good() -> list[dict]:
    cases = [
        ("HELLO (version 2: key 9 protocol, key 10 refused total)", HELLO, hello_fields(HELLO)),
        ("TIME, in reply to a HELLO (no key 2)", TIME, {"unix_ms": NOW, "hello": None}),
        ("TIME on opening a link (key 2 true: announce yourself)", {**TIME, 2: True},
         {"unix_ms": NOW, "hello": True}),
        ("SENSORS, the table of boot 7", SENSORS,
         {"device_id": DEVICE, "table_id": TABLE_ID, "sensors": TABLE}),
        ("SENSORS, an older table still referred to by pending records", SENSORS2,
         {"device_id": DEVICE, "table_id": TABLE2_ID, "sensors": TABLE2}),
        ("BATCH, five ticks: floats of every width, ints past 2**53, bool, text, two ticks at one time",
         BATCH, batch_fields(BATCH)),
        ("BATCH of an earlier boot with an estimated epoch (key 4 = 1) and drops", BATCH_EST,
         batch_fields(BATCH_EST)),
        ("ACK", ACK, {"device_id": DEVICE, "next_seq": 1213}),
        ("REFUSE", REFUSE, {"device_id": DEVICE, "first_seq": 1213, "end_seq": 1220,
                            "reason": "time_range"}),
        ("STATUS with the boot self-test (key 4)", STATUS_SELFTEST, status_fields(STATUS_SELFTEST)),
        ("STATUS with counters (key 5)", STATUS_COUNTERS, status_fields(STATUS_COUNTERS)),
        ("STATUS in safe mode, no valid id", STATUS_SAFE, status_fields(STATUS_SAFE)),
        ("OTA_QUERY on schedule, no download held", OTA_QUERY, query_fields(OTA_QUERY)),
        ("OTA_QUERY for firmware resuming sequence 7 (64 KB held), root epoch 1", OTA_QUERY_RESUME,
         query_fields(OTA_QUERY_RESUME)),
        ("OTA_OFFER with a 512-byte manifest, a key list and when to ask again", OTA_OFFER,
         offer_fields(OTA_OFFER)),
        ("OTA_OFFER with a root rotation alone (200 bytes)", OTA_OFFER_ROTATION,
         offer_fields(OTA_OFFER_ROTATION)),
        ("OTA_OFFER with nothing for the device, ask again in 7 days", OTA_OFFER_NONE,
         offer_fields(OTA_OFFER_NONE)),
        ("OTA_WINDOW, one block held, two granted", OTA_WINDOW, window_fields(OTA_WINDOW)),
        ("OTA_WINDOW with rewind (key 5 true)", OTA_WINDOW_REWIND, window_fields(OTA_WINDOW_REWIND)),
        ("OTA_CHUNK of 960 bytes", OTA_CHUNK, chunk_fields(OTA_CHUNK)),
        ("OTA_CHUNK of 1 byte, the image's last", OTA_CHUNK_LAST, chunk_fields(OTA_CHUNK_LAST)),
        ("OTA_STATE downloading (held and size)", OTA_STATE_DOWNLOADING,
         state_fields(OTA_STATE_DOWNLOADING)),
        ("OTA_STATE refused with the check and a reason", OTA_STATE_REFUSED,
         state_fields(OTA_STATE_REFUSED)),
        ("OTA_STATE rolled-back with an empty reason", OTA_STATE_ROLLED_BACK,
         state_fields(OTA_STATE_ROLLED_BACK)),
        ("OTA_STATE confirmed", OTA_STATE_CONFIRMED, state_fields(OTA_STATE_CONFIRMED)),
    ]
    out = []
    for name, item, fields in cases:
        case: dict[str, Any] = {"name": name, "type": TYPES[item[0]], "hex": enc(item).hex(),
                                "fields": json_ready(fields)}
        if item is BATCH:
            case["table"] = "SENSORS, the table of boot 7"
            case["records"] = records(BATCH, TABLE)
        if item is BATCH_EST:
            case["table"] = "SENSORS, an older table still referred to by pending records"
            case["records"] = records(BATCH_EST, TABLE2)
        out.append(case)
    return out


def with_(item: dict, **changes: Any) -> dict:
    """``item`` with integer keys changed (``k1=...``) or removed (``k1=DROP``)."""
    out = dict(item)
    for key, value in changes.items():
        k = int(key[1:])
        if value is DROP:
            out.pop(k, None)
        else:
            out[k] = value
    return out


DROP = object()


def nested(depth: int) -> Any:
    """An array nested ``depth`` levels deep (depth 1 is ``[0]``)."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def raw_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A CBOR map written pair by pair, in the order given (keys may repeat or be of any type)."""
    assert len(pairs) < 24
    return bytes([0xA0 + len(pairs)]) + b"".join(k + v for k, v in pairs)


def pairs_of(item: dict) -> list[tuple[bytes, bytes]]:
    return [(enc(k), enc(v)) for k, v in sorted(item.items())]


def bad() -> list[dict]:
    time_pairs = pairs_of(TIME)
    big = 2**200
    bignum = b"\xc2" + enc(big.to_bytes(26, "big"))
    cases: list[tuple[str, bytes, str]] = [
        # rule 1: one well-formed item, no tags, depth <= 8, size
        ("empty payload", b"", "not one CBOR data item"),
        ("truncated map", enc(TIME)[:-3], "not well-formed CBOR"),
        ("trailing bytes after the map", enc(TIME) + b"\x00", "more than one data item"),
        ("two maps", enc(TIME) + enc(TIME), "more than one data item"),
        ("over 1024 bytes", enc({**TIME, 20: b"\x00" * 1010}), "longer than MAX_MESSAGE (1024)"),
        ("TIME as a bignum (tag 2)", raw_map([time_pairs[0], (enc(1), b"\xc2" + enc(NOW.to_bytes(6, "big")))]),
         "a CBOR tag"),
        ("TIME 2**200 (a bignum, tag 2)", raw_map([time_pairs[0], (enc(1), bignum)]), "a CBOR tag"),
        ("TIME as an epoch date (tag 1)", raw_map([time_pairs[0], (enc(1), b"\xc1" + enc(NOW // 1000))]),
         "a CBOR tag"),
        ("a tag inside an unknown key", raw_map(time_pairs + [(enc(20), b"\xd8\x20" + enc("http://x"))]),
         "a CBOR tag anywhere rejects the message"),
        ("the message map wrapped in a self-describe tag", b"\xd9\xd9\xf7" + enc(TIME), "a CBOR tag"),
        ("nesting 9 deep under an unknown key", enc({**TIME, 20: nested(8)}), "containers nested 9 deep"),
        ("reserved additional info 28", raw_map(time_pairs[:1] + [(enc(1), b"\x1c")]), "not well-formed"),
        ("a lone break byte as a value", raw_map(time_pairs[:1] + [(enc(1), b"\xff")]), "not well-formed"),
        ("text that is not UTF-8", raw_map([(enc(0), enc(1)), (enc(1), b"\x62\xc3\x28")] + pairs_of(HELLO)[2:]),
         "invalid UTF-8"),
        # rule 2: a map; duplicate keys
        ("not a map: an array", enc([2, NOW]), "a message is a map"),
        ("not a map: an integer", enc(2), "a message is a map"),
        ("duplicate key 1", raw_map(time_pairs + [(enc(1), enc(NOW))]), "two equal unsigned-integer keys"),
        ("duplicate key 1, once in a non-shortest encoding", raw_map(time_pairs + [(b"\x18\x01", enc(NOW))]),
         "two equal unsigned-integer keys"),
        ("duplicate key 0", raw_map([(enc(0), enc(2))] + time_pairs), "two equal unsigned-integer keys"),
        # rule 3: key 0
        ("no key 0", enc({1: NOW}), "key 0 is required"),
        ("type true", raw_map([(enc(0), b"\xf5"), time_pairs[1]]), "true is not an integer"),
        ("type 2.0 (half float)", raw_map([(enc(0), b"\xf9\x40\x00"), time_pairs[1]]),
         "2.0 is not an integer"),
        ("type 2.0 (double)", raw_map([(enc(0), b"\xfb" + struct.pack(">d", 2.0)), time_pairs[1]]),
         "2.0 is not an integer"),
        ("type -1", enc({0: -1, 1: NOW}), "not a known type"),
        ("type 0", enc({0: 0}), "not a known type"),
        ("type 14 (unknown)", enc({0: 14, 1: DEVICE}), "not a known type"),
        ("BATCH of version 1 (type 3)", enc({0: 3, 1: DEVICE, 2: 1200, 3: 7, 4: 0, 5: 0,
                                            6: [{0: "temp", 2: 21.5}]}),
         "version 1 BATCH: the device needs a version 2 agent (edge flash)"),
        # rule 4: known keys, their types; rule 5: ranges
        ("TIME key 1 under a true key (true is not key 1)", raw_map([time_pairs[0], (b"\xf5", enc(NOW))]),
         "key 1 is required; a true key is skipped"),
        ("HELLO key 2 under a 2.0 key", raw_map(
            [(enc(k), enc(v)) if k != 2 else (b"\xf9\x40\x00", enc(v)) for k, v in sorted(HELLO.items())]),
         "key 2 is required; a float key is skipped"),
        ("TIME 0", enc({0: 2, 1: 0}), "TIME before 2020-01-01"),
        ("TIME 2019-12-31T23:59:59.999Z", enc({0: 2, 1: 1577836799999}), "TIME before 2020-01-01"),
        ("TIME 2100-01-01T00:00:00.000Z", enc({0: 2, 1: 4102444800000}), "TIME from 2100-01-01 on"),
        ("TIME 2**63-1", enc({0: 2, 1: MAX_UINT}), "TIME out of range"),
        ("TIME 2**64-1", enc({0: 2, 1: 2**64 - 1}), "uint above 2**63-1"),
        ("TIME negative", enc({0: 2, 1: -NOW}), "not an unsigned integer"),
        ("TIME as a float", enc({0: 2, 1: float(NOW)}), "not an unsigned integer"),
        ("TIME 1e300", enc({0: 2, 1: 1e300}), "not an unsigned integer"),
        ("TIME key 2 is 1, not a bool", enc({**TIME, 2: 1}), "key 2 is a bool"),
        ("ACK next 2**63", enc({**ACK, 2: 2**63}), "uint above 2**63-1"),
        ("ACK without key 2", enc(with_(ACK, k2=DROP)), "key 2 is required"),
        ("REFUSE end not after start", enc({**REFUSE, 3: 1213}), "key 3 must be above key 2"),
        ("REFUSE empty reason", enc({**REFUSE, 4: ""}), "reason is 1-64 characters"),
        ("REFUSE reason with a newline", enc({**REFUSE, 4: "time\nrange"}), "control character"),
        ("HELLO without key 9 (a version 1 agent)", enc(with_(HELLO, k9=DROP, k10=DROP)),
         "version 1 HELLO: the device needs a version 2 agent (edge flash)"),
        ("HELLO with key 9 = 1", enc({**HELLO, 9: 1}), "protocol 1: needs a version 2 agent"),
        ("HELLO id ../../etc/x", enc({**HELLO, 1: "../../etc/x"}), "id breaks section 2.2"),
        ("HELLO id with U+202E (bidi override)", enc({**HELLO, 1: "esp32\u202e1"}), "id breaks section 2.2"),
        ("HELLO id with U+200B (zero width space)", enc({**HELLO, 1: "esp32\u200b1"}),
         "id breaks section 2.2"),
        ("HELLO id in upper case", enc({**HELLO, 1: "ESP32-7C9E3A"}), "id breaks section 2.2"),
        ("HELLO id of 65 characters", enc({**HELLO, 1: "a" * 65}), "id breaks section 2.2"),
        ("HELLO id empty", enc({**HELLO, 1: ""}), "id breaks section 2.2"),
        ("HELLO id is bytes", enc({**HELLO, 1: DEVICE.encode()}), "id is text"),
        ("HELLO board with a control character", enc({**HELLO, 2: "esp\x1b[2J32"}), "control character"),
        ("HELLO board with a C1 control (U+009B)", enc({**HELLO, 2: "esp\x9b32"}), "control character"),
        ("HELLO version of 65 characters", enc({**HELLO, 3: "1" * 65}), "version is 1-64 characters"),
        ("HELLO boot counter true", enc({**HELLO, 4: True}), "true is not an integer"),
        ("HELLO uptime 2**64-1", enc({**HELLO, 5: 2**64 - 1}), "uint above 2**63-1"),
        ("STATUS id that breaks the rule", enc({**STATUS_SAFE, 1: "a/b"}), "id breaks section 2.2"),
        ("STATUS state empty", enc({**STATUS_SAFE, 2: ""}), "state is 1-64 characters"),
        ("STATUS reason of 513 characters", enc({**STATUS_SAFE, 3: "x" * 513}), "reason is 0-512 characters"),
        ("STATUS self-test is an array", enc({**STATUS_SELFTEST, 4: [1]}), "key 4 is a map"),
        ("STATUS counter negative", enc({**STATUS_COUNTERS, 5: {**COUNTERS, "dropped": -1}}),
         "counters are uints"),
        ("STATUS counter a float", enc({**STATUS_COUNTERS, 5: {**COUNTERS, "dropped": 1.5}}),
         "counters are uints"),
        ("STATUS counters with an integer key", enc({**STATUS_COUNTERS, 5: {1: 2}}), "counter names are text"),
        # SENSORS
        ("SENSORS table id is not the CRC of key 3", enc({**SENSORS, 2: TABLE_ID ^ 1}),
         "key 2 is the CRC-32 of key 3 as sent"),
        ("SENSORS empty table", enc({**SENSORS, 2: zlib.crc32(enc([])), 3: []}), "1 to 64 entries"),
        ("SENSORS table of 65 entries", enc({**SENSORS, 2: zlib.crc32(enc([[f"s{i}", ""] for i in range(65)])),
                                            3: [[f"s{i}", ""] for i in range(65)]}), "1 to 64 entries"),
        ("SENSORS name with a space", enc({**SENSORS, 2: zlib.crc32(enc([["te mp", "Cel"]])), 3: [["te mp", "Cel"]]}),
         "name breaks section 2.2"),
        ("SENSORS name with U+200B", enc({**SENSORS, 2: zlib.crc32(enc([["temp\u200b", "Cel"]])),
                                         3: [["temp\u200b", "Cel"]]}), "name breaks section 2.2"),
        ("SENSORS name with a slash", enc({**SENSORS, 2: zlib.crc32(enc([["a/b", ""]])), 3: [["a/b", ""]]}),
         "name breaks section 2.2"),
        ("SENSORS unit with a space", enc({**SENSORS, 2: zlib.crc32(enc([["temp", "Cel "]])), 3: [["temp", "Cel "]]}),
         "unit breaks section 2.2"),
        ("SENSORS entry of three items", enc({**SENSORS, 2: zlib.crc32(enc([["temp", "Cel", 1]])),
                                             3: [["temp", "Cel", 1]]}), "an entry is [name, unit]"),
        ("SENSORS duplicate names", enc({**SENSORS, 2: zlib.crc32(enc([["t", ""], ["t", ""]])),
                                         3: [["t", ""], ["t", ""]]}), "names are unique in a table"),
        ("SENSORS without a device id", enc(with_(SENSORS, k1=DROP)), "key 1 is required"),
        # BATCH
        ("BATCH with no ticks", enc({**BATCH, 9: []}), "1 to 128 ticks"),
        ("BATCH with 129 ticks", enc({**BATCH, 9: [[i, 0, 1] for i in range(129)]}), "1 to 128 ticks"),
        ("BATCH of 257 records", enc({**BATCH, 9: [[i] + [0, 1] * 64 for i in range(4)] + [[9, 0, 1]]}),
         "at most 256 records"),
        ("BATCH tick with no pairs", enc({**BATCH, 9: [[0]]}), "1 to 64 pairs"),
        ("BATCH tick with 65 pairs", enc({**BATCH, 9: [[0] + [0, 1] * 65]}), "1 to 64 pairs"),
        ("BATCH tick with a dangling index", enc({**BATCH, 9: [[0, 0, 1, 1]]}), "pairs of index and value"),
        ("BATCH tick that is not an array", enc({**BATCH, 9: [5]}), "a tick is an array"),
        ("BATCH ticks going back in time", enc({**BATCH, 9: [[10, 0, 1], [9, 0, 2]]}), "dt_ms never decreases"),
        ("BATCH dt_ms negative", enc({**BATCH, 9: [[-1, 0, 1]]}), "dt_ms is a uint"),
        ("BATCH sensor index negative", enc({**BATCH, 9: [[0, -1, 1]]}), "index is a uint"),
        ("BATCH sensor index true", enc({**BATCH, 9: [[0, True, 1]]}), "index is a uint"),
        ("BATCH value null", enc({**BATCH, 9: [[0, 0, None]]}), "value kinds"),
        ("BATCH value bytes", enc({**BATCH, 9: [[0, 0, b"\x01"]]}), "value kinds"),
        ("BATCH value an array", enc({**BATCH, 9: [[0, 0, [1]]]}), "value kinds"),
        ("BATCH value NaN", enc({**BATCH, 9: [[0, 0, float("nan")]]}), "floats are finite"),
        ("BATCH value infinity", enc({**BATCH, 9: [[0, 0, float("inf")]]}), "floats are finite"),
        ("BATCH value -2**63", enc({**BATCH, 9: [[0, 0, -(2**63)]]}), "integer magnitude below 2**63"),
        ("BATCH value 2**63", enc({**BATCH, 9: [[0, 0, 2**63]]}), "integer magnitude below 2**63"),
        ("BATCH value text of 65 characters", enc({**BATCH, 9: [[0, 0, "x" * 65]]}), "text of at most 64"),
        ("BATCH value text with an escape", enc({**BATCH, 9: [[0, 0, "\x1b]8;;file:///etc/passwd\x1b\\"]]}),
         "control character"),
        ("BATCH time basis 2", enc({**BATCH, 4: 2}), "key 4 is 0 or 1"),
        ("BATCH whose last record is 2**63-1 (its ACK, 2**63, would not fit a uint)",
         enc({**BATCH, 2: MAX_UINT - 12}), "the end (key 2 + records) is at most 2**63-1"),
        ("BATCH id breaks section 2.2", enc({**BATCH, 1: "esp32/../x"}), "id breaks section 2.2"),
        ("BATCH without key 6 (table id)", enc(with_(BATCH, k6=DROP)), "key 6 is required"),
        ("BATCH epoch 2**64-1", enc({**BATCH, 7: 2**64 - 1}), "uint above 2**63-1"),
        ("BATCH ticks is a map", enc({**BATCH, 9: {0: [0, 0, 1]}}), "key 9 is an array"),
        # OTA (section 7.2)
        ("OTA_QUERY component \"bootloader\"", enc({**OTA_QUERY, 2: "bootloader"}),
         "component is agent or firmware"),
        ("OTA_QUERY component empty", enc({**OTA_QUERY, 2: ""}), "component is 1-16 characters"),
        ("OTA_QUERY version of 33 characters", enc({**OTA_QUERY, 3: "1" * 33}), "version is 1-32 characters"),
        ("OTA_QUERY version empty", enc({**OTA_QUERY, 3: ""}), "version is 1-32 characters"),
        ("OTA_QUERY why \"because\"", enc({**OTA_QUERY, 9: "because"}),
         "why is boot, schedule, command or resume"),
        ("OTA_QUERY without key 9 (why)", enc(with_(OTA_QUERY, k9=DROP)), "key 9 is required"),
        ("OTA_QUERY without key 4 (counter)", enc(with_(OTA_QUERY, k4=DROP)), "key 4 is required"),
        ("OTA_QUERY counter negative", enc({**OTA_QUERY, 4: -1}), "not an unsigned integer"),
        ("OTA_QUERY key list sequence as text", enc({**OTA_QUERY, 5: "3"}), "key 5 is a uint"),
        ("OTA_QUERY root epoch 2**64-1", enc({**OTA_QUERY, 6: 2**64 - 1}), "uint above 2**63-1"),
        ("OTA_QUERY bytes held (key 8) without the download's sequence (key 7)",
         enc({**OTA_QUERY, 8: 4096}), "key 8 comes only with key 7"),
        ("OTA_QUERY component as bytes", enc({**OTA_QUERY, 2: b"agent"}), "component is text"),
        ("OTA_OFFER manifest of 513 bytes", enc({**OTA_OFFER, 3: MANIFEST + b"\x00"}), "key 3 is 1-512 bytes"),
        ("OTA_OFFER manifest empty", enc({**OTA_OFFER, 3: b""}), "key 3 is 1-512 bytes"),
        ("OTA_OFFER manifest as text", enc({**OTA_OFFER, 3: "d284"}), "key 3 is a byte string"),
        ("OTA_OFFER key list of 641 bytes", enc({**OTA_OFFER, 4: b"\x01" * 641}), "key 4 is 1-640 bytes"),
        ("OTA_OFFER rotation of 201 bytes", enc({**OTA_OFFER_ROTATION, 5: ROTATION + b"\x00"}),
         "key 5 is 1-200 bytes"),
        ("OTA_OFFER ask again in 59 s", enc({**OTA_OFFER, 6: 59}), "key 6 is 60-604800"),
        ("OTA_OFFER ask again in 604801 s", enc({**OTA_OFFER, 6: 604801}), "key 6 is 60-604800"),
        ("OTA_OFFER component \"Agent\"", enc({**OTA_OFFER, 2: "Agent"}), "component is agent or firmware"),
        ("OTA_OFFER without a device id", enc(with_(OTA_OFFER, k1=DROP)), "key 1 is required"),
        ("OTA_WINDOW limit below ack", enc({**OTA_WINDOW, 4: 4095}), "ack <= limit"),
        ("OTA_WINDOW rewind is 1, not a bool", enc({**OTA_WINDOW, 5: 1}), "key 5 is a bool"),
        ("OTA_WINDOW ack as a float", enc({**OTA_WINDOW, 3: 4096.0}), "not an unsigned integer"),
        ("OTA_WINDOW without key 4 (limit)", enc(with_(OTA_WINDOW, k4=DROP)), "key 4 is required"),
        ("OTA_WINDOW sequence true", enc({**OTA_WINDOW, 2: True}), "true is not an integer"),
        ("OTA_CHUNK with empty data", enc({**OTA_CHUNK, 4: b""}), "key 4 is 1-960 bytes"),
        ("OTA_CHUNK of 961 bytes", enc({**OTA_CHUNK, 4: CHUNK_DATA + b"\x00"}), "key 4 is 1-960 bytes"),
        ("OTA_CHUNK data as text", enc({**OTA_CHUNK, 4: "abc"}), "key 4 is a byte string"),
        ("OTA_CHUNK data as an array", enc({**OTA_CHUNK, 4: [1, 2, 3]}), "key 4 is a byte string"),
        ("OTA_CHUNK offset negative", enc({**OTA_CHUNK, 3: -960}), "not an unsigned integer"),
        ("OTA_CHUNK without an offset", enc(with_(OTA_CHUNK, k3=DROP)), "key 3 is required"),
        ("OTA_CHUNK data as a bignum-tagged string", raw_map(pairs_of(with_(OTA_CHUNK, k4=DROP))
                                                            + [(enc(4), b"\xc2" + enc(b"\x01\x02"))]),
         "a CBOR tag"),
        ("OTA_STATE state \"done\"", enc({**OTA_STATE_CONFIRMED, 4: "done"}), "state is one of section 7.2"),
        ("OTA_STATE state \"Confirmed\"", enc({**OTA_STATE_CONFIRMED, 4: "Confirmed"}),
         "state is one of section 7.2"),
        ("OTA_STATE state empty", enc({**OTA_STATE_CONFIRMED, 4: ""}), "state is 1-16 characters"),
        ("OTA_STATE check of 33 characters", enc({**OTA_STATE_REFUSED, 8: "c" * 33}), "check is 1-32 characters"),
        ("OTA_STATE reason of 201 characters", enc({**OTA_STATE_REFUSED, 9: "r" * 201}),
         "reason is 0-200 characters"),
        ("OTA_STATE reason with an escape", enc({**OTA_STATE_REFUSED, 9: "\x1b[2Jgone"}), "control character"),
        ("OTA_STATE held negative", enc({**OTA_STATE_DOWNLOADING, 6: -1}), "not an unsigned integer"),
        ("OTA_STATE size as a float", enc({**OTA_STATE_DOWNLOADING, 7: 130001.0}), "not an unsigned integer"),
        ("OTA_STATE without key 3 (sequence)", enc(with_(OTA_STATE_CONFIRMED, k3=DROP)), "key 3 is required"),
        ("OTA_STATE version of 33 characters", enc({**OTA_STATE_CONFIRMED, 5: "9" * 33}),
         "version is 1-32 characters"),
    ]
    return [{"name": n, "hex": h.hex(), "why": w} for n, h, w in cases]


def accepted() -> list[dict]:
    time_pairs = pairs_of(TIME)
    cases: list[tuple[str, bytes, str]] = [
        ("TIME with an unknown key true holding text", raw_map(time_pairs + [(b"\xf5", enc("x"))]), "TIME"),
        ("TIME with an unknown key false before key 1", raw_map([time_pairs[0], (b"\xf4", enc(5)), time_pairs[1]]),
         "TIME"),
        ("TIME with a float key 1.0 besides key 1", raw_map(time_pairs + [(b"\xf9\x3c\x00", enc(0))]), "TIME"),
        ("TIME with a float key 2.0 holding true (not key 2)", raw_map(time_pairs + [(b"\xf9\x40\x00", b"\xf5")]),
         "TIME"),
        ("TIME with a negative key -1", raw_map(time_pairs + [(enc(-1), enc([1, 2]))]), "TIME"),
        ("TIME with a text key", raw_map(time_pairs + [(enc("1"), enc(0))]), "TIME"),
        ("TIME with an array key", raw_map(time_pairs + [(enc([1]), enc({"a": 1}))]), "TIME"),
        ("TIME with a map key", raw_map(time_pairs + [(enc({1: 2}), enc(None))]), "TIME"),
        ("TIME with a null key", raw_map(time_pairs + [(b"\xf6", enc(1))]), "TIME"),
        ("TIME with unknown key 20 holding a map with repeated keys",
         raw_map(time_pairs + [(enc(20), b"\xa2\x01\x01\x01\x02")]), "TIME"),
        ("TIME with unknown key 20 nested 8 deep (the limit)", enc({**TIME, 20: nested(7)}), "TIME"),
        ("TIME with unknown key 20 holding an indefinite-length array",
         raw_map(time_pairs + [(enc(20), b"\x9f\x01\x02\xff")]), "TIME"),
        ("TIME with unknown key 20 holding a float and bytes", enc({**TIME, 20: [1.5, b"\x00"]}), "TIME"),
        ("TIME, key 1 and its value in non-shortest encodings",
         raw_map([time_pairs[0], (b"\x18\x01", b"\x1b" + NOW.to_bytes(8, "big"))]), "TIME"),
        ("TIME with keys in descending order", raw_map(list(reversed(time_pairs))), "TIME"),
        ("HELLO with unknown key 11 and a true key", raw_map(pairs_of({**HELLO, 11: "x"}) + [(b"\xf5", enc(9))]),
         "HELLO"),
        ("BATCH with an unknown key 10", enc({**BATCH, 10: {"x": [1]}}), "BATCH"),
        ("BATCH whose end is exactly 2**63-1", enc({**BATCH, 2: MAX_UINT - 13}), "BATCH"),
        ("ACK with a float key 2.5", raw_map(pairs_of(ACK) + [(b"\xf9\x41\x00", enc(1))]), "ACK"),
        ("OTA_WINDOW with rewind false (the same as no key 5)", enc({**OTA_WINDOW, 5: False}), "OTA_WINDOW"),
        ("OTA_WINDOW with ack = limit (the whole image held)", enc({**OTA_WINDOW, 3: 12288}), "OTA_WINDOW"),
        ("OTA_CHUNK data as an indefinite-length byte string",
         raw_map(pairs_of(with_(OTA_CHUNK, k4=DROP)) + [(enc(4), b"\x5f\x42\x01\x02\x41\x03\xff")]),
         "OTA_CHUNK"),
        ("OTA_QUERY with unknown key 10", enc({**OTA_QUERY, 10: [1, 2]}), "OTA_QUERY"),
        ("OTA_STATE with unknown key 10 holding bytes", enc({**OTA_STATE_CONFIRMED, 10: b"\x00"}), "OTA_STATE"),
    ]
    return [{"name": n, "hex": h.hex(), "type": t, "accept": True} for n, h, t in cases]


def main() -> None:
    (OUT / "messages.json").write_text(json.dumps(good(), indent=1, ensure_ascii=True) + "\n")
    (OUT / "bad_messages.json").write_text(
        json.dumps(bad() + accepted(), indent=1, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
