"""Agent messages, protocol version 2 (docs/protocol.md section 2).

Each message is a CBOR map with small unsigned-integer keys; key 0 is the
type. One table (:data:`_SCHEMAS`) lists, for every type, its keys, the field
each fills and the check its value must pass; :func:`decode_message` and
:func:`encode_message` both read it, so the two directions cannot drift.

Decoding treats the payload as hostile and keeps the rules of section 2.1, in
their order:

1. exactly one well-formed CBOR item of at most :data:`MAX_MESSAGE` bytes
   (this layer's own limit; the serial frame limit derives from it), no tag
   anywhere, containers nested at most :data:`MAX_DEPTH` deep;
2. a map; only unsigned-integer keys are read, every other key (``true``,
   ``2.0``, text, ...) is skipped with its value; two equal unsigned-integer
   keys reject the message;
3. key 0 names a known type (a version-1 BATCH, type 3, and a HELLO without
   key 9 get :class:`OldProtocol`, whose hint is ``edge flash``);
4. every known key has its declared type (ids, names and units follow
   :mod:`edge_agent.names`); required keys are present;
5. values are in range (TIME within 2020..2100, a SENSORS table id that is
   the CRC-32 of its table as sent, BATCH ticks in order and within bounds).

cbor2 decodes the common case. A map with keys that Python holds equal
(``1``, ``1.0`` and ``true``) is legal CBOR that a Python dict cannot hold,
so such a payload, and every SENSORS (whose table id is the CRC of key 3's
bytes as sent), goes through :func:`_walk`, a small strict reader that keeps
map entries as pairs and knows where each item starts and ends.

Encoding uses RFC 8949 section 4.2.1 deterministic encoding, as the vectors in
``tests/vectors/messages.json`` do.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass, fields
from itertools import chain, repeat
from operator import and_, itemgetter
from typing import Any, Callable

import cbor2

from edge_agent.errors import BadInput
from edge_agent.names import is_device_id, is_sensor_name, is_unit

HELLO, TIME, BATCH_V1, ACK, STATUS, SENSORS, BATCH, REFUSE = 1, 2, 3, 4, 5, 6, 7, 8
OTA_QUERY, OTA_OFFER, OTA_WINDOW, OTA_CHUNK, OTA_STATE = 9, 10, 11, 12, 13
PROTOCOL = 2               # HELLO key 9

MAX_MESSAGE = 1024         # bytes in one message, whatever link carries it
MAX_DEPTH = 8              # nesting of CBOR containers; the message map is depth 1
MAX_UINT = 2**63 - 1       # largest uint a message carries (and SQLite stores)
MAX_SHORT = 64             # characters in a board name, version, state or reason word
MAX_TEXT = 512             # characters in a STATUS reason
MAX_TICKS = 128            # ticks in a BATCH
MAX_PAIRS = 64             # (index, value) pairs in a tick
MAX_RECORDS = 256          # records in a BATCH
MAX_SENSORS = 64           # entries in a SENSORS table
MAX_VALUE_TEXT = 64        # characters in a text value
MIN_TIME_MS = 1577836800000    # 2020-01-01T00:00:00Z
END_TIME_MS = 4102444800000    # 2100-01-01T00:00:00Z, excluded

# Section 7.2: the words OTA messages may carry.
OTA_COMPONENTS = ("agent", "firmware")
OTA_WHY = ("boot", "schedule", "command", "resume", "retry")
OTA_STATES = ("refused", "current", "downloading", "stalled", "verified", "installed", "applying",
              "trial", "confirmed", "rolled-back", "failed", "stale", "busy")
MAX_MANIFEST = 512         # bytes in OTA_OFFER key 3
MAX_KEY_LIST = 640         # bytes in OTA_OFFER key 4
MAX_ROTATION = 200         # bytes in OTA_OFFER key 5
MAX_CHUNK = 960            # image bytes in one OTA_CHUNK
MIN_RETRY_S, MAX_RETRY_S = 60, 604800   # OTA_OFFER key 6

TIME_HOST = 0              # BATCH key 4: the boot's epoch came from a host's TIME
TIME_ESTIMATED = 1         # BATCH key 4: estimated epoch (section 2.5)


def _is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


class MessageError(BadInput, ValueError):
    """A payload that is not a valid message; the text names the problem."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint or "check the sender against docs/protocol.md section 2")


class OldProtocol(MessageError):
    """A message of protocol version 1: the device needs a version-2 agent."""

    def __init__(self, message: str):
        super().__init__(message, "run `edge flash` on the board: it installs a protocol version 2 agent")


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO (1), device to host: the device, its journal state and its protocol version."""

    device_id: str
    board: str
    version: str
    boot: int
    uptime_ms: int
    next_seq: int
    acked: int
    dropped: int
    protocol: int = PROTOCOL
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Time:
    """TIME (2), host to device: the host's clock in ms since the Unix epoch.

    ``hello`` (key 2) asks the device to announce itself: a host sets it when
    it opens a link (or must see a table again), never in reply to a HELLO.
    """

    unix_ms: int
    hello: bool | None = None


@dataclass(frozen=True, slots=True)
class Sensors:
    """SENSORS (6), device to host: the table BATCH sensor indexes refer to.

    ``sensors`` is the list of ``[name, unit]``; ``table_id`` is the CRC-32 of
    its CBOR encoding as sent.
    """

    device_id: str
    table_id: int
    sensors: list


@dataclass(frozen=True, slots=True)
class Batch:
    """BATCH (7), device to host: ticks ``[dt_ms, k0, v0, k1, v1, ...]`` from ``first_seq`` on.

    The time of a tick is ``epoch_ms + base_uptime_ms + dt_ms``; its records
    are numbered pair by pair from ``first_seq``.
    """

    device_id: str
    first_seq: int
    boot: int
    time_basis: int
    dropped: int
    table_id: int
    epoch_ms: int
    base_uptime_ms: int
    ticks: list

    @property
    def count(self) -> int:
        """The number of records (pairs) in the batch."""
        return (sum(map(len, self.ticks)) - len(self.ticks)) // 2


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK (4), host to device: every record with a lower sequence number is stored."""

    device_id: str
    next_seq: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """REFUSE (8), host to device: records ``first_seq`` up to ``end_seq`` will never be stored."""

    device_id: str
    first_seq: int
    end_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS (5), device to host: a condition a person should see.

    ``selftest`` (key 4) is the boot self-test; ``counters`` (key 5) maps
    counter names to totals.
    """

    device_id: str
    state: str
    reason: str
    selftest: dict | None = None
    counters: dict | None = None


@dataclass(frozen=True, slots=True)
class OtaQuery:
    """OTA_QUERY (9), device to host: what the device runs and holds for one component (7.2).

    ``resume_sequence`` and ``resume_held`` describe an unfinished download;
    ``why`` is ``boot``, ``schedule``, ``command`` or ``resume``.
    """

    device_id: str
    component: str
    version: str
    counter: int
    keys_sequence: int
    root_epoch: int
    resume_sequence: int | None = None
    resume_held: int | None = None
    why: str = "schedule"


@dataclass(frozen=True, slots=True)
class OtaOffer:
    """OTA_OFFER (10), host to device: the newest signed documents the host has (7.2).

    ``manifest``, ``key_list`` and ``rotation`` are COSE_Sign1 documents
    (section 6) or None; ``retry_s`` is when the device should ask again.
    """

    device_id: str
    component: str
    manifest: bytes | None = None
    key_list: bytes | None = None
    rotation: bytes | None = None
    retry_s: int | None = None


@dataclass(frozen=True, slots=True)
class OtaWindow:
    """OTA_WINDOW (11), device to host: bytes below ``ack`` are held, the host may send below ``limit`` (7.5).

    ``rewind`` asks the host to send again from ``ack``.
    """

    device_id: str
    sequence: int
    ack: int
    limit: int
    rewind: bool = False


@dataclass(frozen=True, slots=True)
class OtaChunk:
    """OTA_CHUNK (12), host to device: image bytes at ``offset`` of transfer ``sequence``."""

    device_id: str
    sequence: int
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OtaState:
    """OTA_STATE (13), device to host: where an update stands (one of :data:`OTA_STATES`).

    ``held`` and ``size`` are bytes held durably and the image's size;
    ``check`` names a refusal (6.5, ``bad-bundle``, ``rolled-back``) and
    ``reason`` explains it to a person.
    """

    device_id: str
    component: str
    sequence: int
    state: str
    version: str | None = None
    held: int | None = None
    size: int | None = None
    check: str | None = None
    reason: str | None = None


Message = Hello | Time | Sensors | Batch | Ack | Refuse | Status | OtaQuery | OtaOffer | OtaWindow | OtaChunk | OtaState


# -- value checks: each returns None if the value is fine, else what was expected

def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a negative integer" if value < 0 else "an integer too large"
    names = {str: "text", bytes: "a byte string", float: "a float", list: "an array",
             dict: "a map", type(None): "null", _Pairs: "a map"}
    return names.get(type(value), type(value).__name__)


def _uint(value: Any) -> str | None:
    if type(value) is int and 0 <= value <= MAX_UINT:
        return None
    return f"an unsigned integer up to 2**63-1, got {_kind(value)}"


def _text_check(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"text, got {_kind(value)}"
        if not low <= len(value) <= high:
            return f"text of {low} to {high} characters, got {len(value)}"
        if any(_is_control(c) for c in value):
            return "text without control characters"
        return None
    return check


def _device_id(value: Any) -> str | None:
    if is_device_id(value):
        return None
    return ("a device id (1-64 of a-z 0-9 - ., first a letter or digit; section 2.2), "
            f"got {value!r}"[:200])


def _id_or_empty(value: Any) -> str | None:
    return None if value == "" and type(value) is str else _device_id(value)


def _bool(value: Any) -> str | None:
    return None if type(value) is bool else f"true or false, got {_kind(value)}"


def _time_basis(value: Any) -> str | None:
    if type(value) is int and value in (TIME_HOST, TIME_ESTIMATED):
        return None
    return f"0 (epoch from a host) or 1 (estimated), got {value!r}"


def _unix_ms(value: Any) -> str | None:
    problem = _uint(value)
    if problem:
        return problem
    if not MIN_TIME_MS <= value < END_TIME_MS:
        return f"a time from 2020-01-01 to 2100-01-01 in ms, got {value}"
    return None


def _sensor_table(value: Any) -> str | None:
    if type(value) is not list or not 1 <= len(value) <= MAX_SENSORS:
        return f"an array of 1 to {MAX_SENSORS} [name, unit] entries"
    seen = set()
    for k, entry in enumerate(value):
        if type(entry) is not list or len(entry) != 2:
            return f"[name, unit] entries; entry {k} is not"
        name, unit = entry
        if not is_sensor_name(name):
            return f"sensor names of section 2.2; entry {k} is {name!r}"[:200]
        if not is_unit(unit):
            return f"units of section 2.2; entry {k} has {unit!r}"[:200]
        if name in seen:
            return f"unique sensor names; {name!r} repeats"
        seen.add(name)
    return None


def _value_problem(v: Any) -> str | None:
    t = type(v)
    if t is int:
        return None if -MAX_UINT <= v <= MAX_UINT else "an integer of magnitude below 2**63"
    if t is float:
        return None if math.isfinite(v) else "a finite float"
    if t is bool:
        return None
    if t is str:
        if len(v) > MAX_VALUE_TEXT or any(_is_control(c) for c in v):
            return f"text of at most {MAX_VALUE_TEXT} characters without control characters"
        return None
    return f"an integer, float, bool or text, got {_kind(v)}"


_NUMBER_TYPES = frozenset((int, float, bool))
_INT_TYPE = frozenset((int,))
_LIST_TYPE = frozenset((list,))


def _ticks_fine(value: list) -> bool:
    """True only if :func:`_ticks` would find nothing wrong; False means "look closer".

    The common batch passes with a few C-level passes per batch instead of
    several Python calls per record. Every rule of :func:`_ticks` is covered:
    dt_ms non-decreasing from 0 bounds every dt by the last; indexes are
    exactly ``int`` (not bool), here within 0..255; values are exactly int,
    float or bool whose magnitudes sum to at most 2**63-1 (so each is an
    integer in range, or a finite float). Text values, and anything
    doubtful, go to the full check.
    """
    if not set(map(type, value)) <= _LIST_TYPE:
        return False
    sizes = list(map(len, value))
    # Odd sizes (dt and pairs), 1 to MAX_PAIRS pairs: a size's low bit is 1 for all of them.
    if sum(map(and_, sizes, repeat(1))) != len(sizes) or min(sizes) < 3 or max(sizes) > 2 * MAX_PAIRS + 1:
        return False
    if (sum(sizes) - len(sizes)) // 2 > MAX_RECORDS:
        return False
    dts = list(map(itemgetter(0), value))
    if not set(map(type, dts)) <= _INT_TYPE or dts[0] < 0 or dts[-1] > MAX_UINT or dts != sorted(dts):
        return False
    indexes = list(chain.from_iterable([tick[1::2] for tick in value]))
    if not set(map(type, indexes)) <= _INT_TYPE:
        return False
    try:
        bytes(indexes)              # every index an int in 0..255 (larger ones: the full check)
    except ValueError:
        return False
    values = list(chain.from_iterable([tick[2::2] for tick in value]))
    if not set(map(type, values)) <= _NUMBER_TYPES:
        return False
    # Bounds every magnitude by 2**63-1; NaN fails the comparison and an infinity the bound.
    return sum(map(abs, values)) <= MAX_UINT


def _ticks(value: Any) -> str | None:
    if type(value) is not list or not 1 <= len(value) <= MAX_TICKS:
        return f"an array of 1 to {MAX_TICKS} ticks"
    return None if _ticks_fine(value) else _ticks_problem(value)


def _ticks_problem(value: list) -> str | None:
    """What is wrong with a list of ticks, checked one by one (None if nothing)."""
    records = 0
    last_dt = 0
    for i, tick in enumerate(value):
        if type(tick) is not list:
            return f"ticks that are arrays; tick {i} is {_kind(tick)}"
        pairs, odd = divmod(len(tick) - 1, 2)
        if odd or not 1 <= pairs <= MAX_PAIRS:
            return f"ticks [dt_ms, k0, v0, ...] of 1 to {MAX_PAIRS} pairs; tick {i} has {len(tick)} items"
        dt = tick[0]
        if _uint(dt):
            return f"dt_ms that is an unsigned integer; tick {i} has {_kind(dt)}"
        if dt < last_dt:
            return f"dt_ms that never decreases; tick {i} goes back from {last_dt} to {dt}"
        last_dt = dt
        for j in range(1, len(tick), 2):
            if _uint(tick[j]):
                return f"sensor indexes that are unsigned integers; tick {i} has {_kind(tick[j])}"
            problem = _value_problem(tick[j + 1])
            if problem:
                return f"{problem} as the value of tick {i}, pair {j // 2}"
        records += pairs
    if records > MAX_RECORDS:
        return f"at most {MAX_RECORDS} records, got {records}"
    return None


_SELFTEST_KEYS: dict[str, Callable[[Any], bool]] = {
    "sensors": lambda v: _uint(v) is None,
    "sensor_errors": lambda v: type(v) is list and len(v) <= MAX_SENSORS
    and all(_text_check(0, MAX_SHORT)(e) is None for e in v),
    "heap_free": lambda v: _uint(v) is None,
    "fs_free": lambda v: v is None or _uint(v) is None,
    "version": lambda v: _text_check(0, MAX_SHORT)(v) is None,
}


def _selftest(value: Any) -> str | None:
    if type(value) is not dict or any(type(k) is not str for k in value):
        return f"a map with text keys (the self-test), got {_kind(value)}"
    for key, ok in _SELFTEST_KEYS.items():
        if key in value and not ok(value[key]):
            return f"self-test {key!r} of its declared type, got {_kind(value[key])}"
    return None


def _counters(value: Any) -> str | None:
    if type(value) is not dict:
        return f"a map of counters, got {_kind(value)}"
    for k, v in value.items():
        if _text_check(1, MAX_SHORT)(k) is not None:
            return f"counter names that are text, got {_kind(k)}"
        if _uint(v):
            return f"counter {k!r}: an unsigned integer, got {_kind(v)}"
    return None


def _bytes_check(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            return f"a byte string, got {_kind(value)}"
        if not low <= len(value) <= high:
            return f"a byte string of {low} to {high} bytes, got {len(value)}"
        return None
    return check


def _word_check(high: int, words: tuple[str, ...], what: str) -> Callable[[Any], str | None]:
    text = _text_check(1, high)

    def check(value: Any) -> str | None:
        problem = text(value)
        if problem:
            return problem
        if value not in words:
            return f"{what} ({', '.join(words)}), got {value!r}"
        return None
    return check


def _retry_s(value: Any) -> str | None:
    problem = _uint(value)
    if problem:
        return problem
    if not MIN_RETRY_S <= value <= MAX_RETRY_S:
        return f"seconds from {MIN_RETRY_S} to {MAX_RETRY_S}, got {value}"
    return None


_SHORT = _text_check(1, MAX_SHORT)
_TEXT = _text_check(0, MAX_TEXT)
_COMPONENT = _word_check(16, OTA_COMPONENTS, "a component")

Check = Callable[[Any], "str | None"]
# type -> (class, name, ((key, field, check, required), ...))
_SCHEMAS: dict[int, tuple[type, str, tuple[tuple[int, str, Check, bool], ...]]] = {
    HELLO: (Hello, "HELLO", (
        (1, "device_id", _device_id, True),
        (2, "board", _SHORT, True),
        (3, "version", _SHORT, True),
        (4, "boot", _uint, True),
        (5, "uptime_ms", _uint, True),
        (6, "next_seq", _uint, True),
        (7, "acked", _uint, True),
        (8, "dropped", _uint, True),
        (9, "protocol", _uint, True),
        (10, "refused", _uint, True),
    )),
    TIME: (Time, "TIME", (
        (1, "unix_ms", _unix_ms, True),
        (2, "hello", _bool, False),
    )),
    SENSORS: (Sensors, "SENSORS", (
        (1, "device_id", _device_id, True),
        (2, "table_id", _uint, True),
        (3, "sensors", _sensor_table, True),
    )),
    BATCH: (Batch, "BATCH", (
        (1, "device_id", _device_id, True),
        (2, "first_seq", _uint, True),
        (3, "boot", _uint, True),
        (4, "time_basis", _time_basis, True),
        (5, "dropped", _uint, True),
        (6, "table_id", _uint, True),
        (7, "epoch_ms", _uint, True),
        (8, "base_uptime_ms", _uint, True),
        (9, "ticks", _ticks, True),
    )),
    ACK: (Ack, "ACK", (
        (1, "device_id", _device_id, True),
        (2, "next_seq", _uint, True),
    )),
    REFUSE: (Refuse, "REFUSE", (
        (1, "device_id", _device_id, True),
        (2, "first_seq", _uint, True),
        (3, "end_seq", _uint, True),
        (4, "reason", _SHORT, True),
    )),
    STATUS: (Status, "STATUS", (
        (1, "device_id", _id_or_empty, True),
        (2, "state", _SHORT, True),
        (3, "reason", _TEXT, True),
        (4, "selftest", _selftest, False),
        (5, "counters", _counters, False),
    )),
    OTA_QUERY: (OtaQuery, "OTA_QUERY", (
        (1, "device_id", _device_id, True),
        (2, "component", _COMPONENT, True),
        (3, "version", _text_check(1, 32), True),
        (4, "counter", _uint, True),
        (5, "keys_sequence", _uint, True),
        (6, "root_epoch", _uint, True),
        (7, "resume_sequence", _uint, False),
        (8, "resume_held", _uint, False),
        (9, "why", _word_check(16, OTA_WHY, "a reason to ask"), True),
    )),
    OTA_OFFER: (OtaOffer, "OTA_OFFER", (
        (1, "device_id", _device_id, True),
        (2, "component", _COMPONENT, True),
        (3, "manifest", _bytes_check(1, MAX_MANIFEST), False),
        (4, "key_list", _bytes_check(1, MAX_KEY_LIST), False),
        (5, "rotation", _bytes_check(1, MAX_ROTATION), False),
        (6, "retry_s", _retry_s, False),
    )),
    OTA_WINDOW: (OtaWindow, "OTA_WINDOW", (
        (1, "device_id", _device_id, True),
        (2, "sequence", _uint, True),
        (3, "ack", _uint, True),
        (4, "limit", _uint, True),
        (5, "rewind", _bool, False),
    )),
    OTA_CHUNK: (OtaChunk, "OTA_CHUNK", (
        (1, "device_id", _device_id, True),
        (2, "sequence", _uint, True),
        (3, "offset", _uint, True),
        (4, "data", _bytes_check(1, MAX_CHUNK), True),
    )),
    OTA_STATE: (OtaState, "OTA_STATE", (
        (1, "device_id", _device_id, True),
        (2, "component", _COMPONENT, True),
        (3, "sequence", _uint, True),
        (4, "state", _word_check(16, OTA_STATES, "a state of section 7.2"), True),
        (5, "version", _text_check(1, 32), False),
        (6, "held", _uint, False),
        (7, "size", _uint, False),
        (8, "check", _text_check(1, 32), False),
        (9, "reason", _text_check(0, 200), False),
    )),
}
_TYPE_OF = {cls: msg_type for msg_type, (cls, _, _) in _SCHEMAS.items()}
# Types holding only unsigned integers, booleans, text and arrays of text, their keys put in
# ascending order: cbor2's plain encoding of them is the deterministic one already (no float
# to shorten, no map to sort) and costs a third of ``canonical=True`` (an ACK per batch).
# The OTA types hold byte strings besides: their plain encoding is deterministic too.
_PLAIN = frozenset((HELLO, TIME, SENSORS, ACK, REFUSE, OTA_QUERY, OTA_OFFER, OTA_WINDOW, OTA_CHUNK,
                    OTA_STATE))
# An optional key is left out when its field holds the field's default (None, or
# OTA_WINDOW's rewind False): a decoder gives the same default when it is absent.
_DEFAULTS = {cls: {f.name: f.default for f in fields(cls)} for cls, _, _ in _SCHEMAS.values()}


# -- CBOR: the fast path (cbor2) and the strict walker

class _TagRefused(Exception):
    pass


def _refuse_tag(*args: Any) -> Any:
    raise _TagRefused("a CBOR tag (no message uses one)")


# cbor2 decodes these tags itself unless overridden; every one is refused, as
# are all others (tag_hook).
_NO_SEMANTICS = {tag: _refuse_tag for tag in (*range(0, 300), 1004, 1040, 55799)}


class _Pairs(list):
    """A CBOR map read by :func:`_walk`: its (key, value) entries in order, keys of any type."""


def _walk(data: bytes, pos: int, depth: int, spans: dict | None = None) -> tuple[Any, int]:
    """Decode the item at ``pos`` strictly; return (value, end). Maps become :class:`_Pairs`.

    ``spans``, for the top-level map, receives ``key -> (start, end)`` of
    each unsigned-integer key's value.
    """
    if pos >= len(data):
        raise MessageError("payload is not valid CBOR: it ends in the middle of an item")
    head = data[pos]
    major, info = head >> 5, head & 31
    pos += 1
    if info < 24:
        arg = info
    elif info <= 27:
        size = 1 << (info - 24)
        if pos + size > len(data):
            raise MessageError("payload is not valid CBOR: it ends in the middle of an item")
        arg = int.from_bytes(data[pos:pos + size], "big")
        if major == 7:
            pos += size
            if size == 1:
                if arg < 32:
                    raise MessageError("payload is not valid CBOR: a simple value below 32 in two bytes")
                return ("simple", arg), pos
            fmt = {2: ">e", 4: ">f", 8: ">d"}[size]
            return struct.unpack(fmt, data[pos - size:pos])[0], pos
        pos += size
    elif info == 31 and major in (2, 3, 4, 5):
        arg = -1  # indefinite length
    else:
        raise MessageError(f"payload is not valid CBOR: reserved or misplaced additional info {info}")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if arg >= 0:
            if pos + arg > len(data):
                raise MessageError("payload is not valid CBOR: a string runs past the end")
            raw = data[pos:pos + arg]
            pos += arg
        else:
            chunks = []
            while True:
                if pos >= len(data):
                    raise MessageError("payload is not valid CBOR: an indefinite string has no end")
                if data[pos] == 0xFF:
                    pos += 1
                    break
                if data[pos] >> 5 != major or data[pos] & 31 == 31:
                    raise MessageError("payload is not valid CBOR: a bad chunk in an indefinite string")
                chunk, pos = _walk(data, pos, depth, None)
                chunks.append(chunk.encode() if major == 3 else chunk)
            raw = b"".join(chunks)
        if major == 2:
            return bytes(raw), pos
        try:
            return bytes(raw).decode("utf-8"), pos
        except UnicodeDecodeError:
            raise MessageError("payload is not valid CBOR: text that is not UTF-8") from None
    if major == 6:
        raise MessageError("payload is not valid CBOR: a CBOR tag (no message uses one)")
    if major == 7:
        if info == 31:
            raise MessageError("payload is not valid CBOR: a break where an item was expected")
        return {20: False, 21: True, 22: None}.get(arg, ("simple", arg)), pos
    if depth >= MAX_DEPTH:
        raise MessageError(f"payload is not valid CBOR: containers nested deeper than {MAX_DEPTH}")
    items: list = [] if major == 4 else _Pairs()
    count = 0
    while arg < 0 or count < arg:
        if arg < 0:
            if pos >= len(data):
                raise MessageError("payload is not valid CBOR: an indefinite container has no end")
            if data[pos] == 0xFF:
                pos += 1
                break
        if major == 4:
            value, pos = _walk(data, pos, depth + 1)
            items.append(value)
        else:
            key, pos = _walk(data, pos, depth + 1)
            start = pos
            value, pos = _walk(data, pos, depth + 1)
            items.append((key, value))
            if spans is not None and type(key) is int and key >= 0:
                spans.setdefault(key, (start, pos))
        count += 1
    return items, pos


def _plain(value: Any) -> Any:
    """A walked value as cbor2 would give it: maps become dicts when Python can hold them."""
    if type(value) is list:
        return [_plain(v) for v in value]
    if type(value) is _Pairs:
        out: dict = {}
        for k, v in value:
            if type(k) is not str or k in out:
                return _Pairs((k, _plain(v)) for k, v in value)   # fails every map check
            out[k] = _plain(v)
        return out
    return value


def _loads(payload: bytes, want_spans: bool) -> tuple[dict[int, Any], dict]:
    """The message map's unsigned-integer keys and their values (rules 1 and 2)."""
    spans: dict = {}
    if not want_spans:
        stream = io.BytesIO(payload)
        decoder = cbor2.CBORDecoder(stream, semantic_decoders=_NO_SEMANTICS, tag_hook=_refuse_tag,
                                    max_depth=MAX_DEPTH, allow_duplicate_keys=False)
        try:
            item = decoder.decode()
        except Exception as e:  # cbor2 raises several types (and wraps ours)
            cause = e.__cause__ or e.__context__
            if "Duplicate map key" not in str(e) or isinstance(cause, _TagRefused):
                detail = str(cause) if isinstance(cause, _TagRefused) else str(e)
                raise MessageError(f"payload is not valid CBOR: {detail}") from None
            # Keys Python holds equal (1, 1.0, true), or a real duplicate: walk it.
            return _loads(payload, True)
        if stream.tell() != len(payload):
            raise MessageError(
                f"payload is not one CBOR data item: {len(payload) - stream.tell()} bytes follow it")
        if type(item) is not dict:
            raise MessageError(f"message is not a CBOR map but {_kind(item)}")
        return {k: v for k, v in item.items() if type(k) is int and k >= 0}, spans
    walked, end = _walk(payload, 0, 0, spans)
    if end != len(payload):
        raise MessageError(f"payload is not one CBOR data item: {len(payload) - end} bytes follow it")
    if type(walked) is not _Pairs:
        raise MessageError(f"message is not a CBOR map but {_kind(walked)}")
    out: dict[int, Any] = {}
    for key, value in walked:
        if type(key) is int and key >= 0:
            if key in out:
                raise MessageError(f"message has key {key} twice")
            out[key] = _plain(value)
    return out, spans


def decode_message(payload: bytes) -> Message:
    """Decode and check one message payload; raise :class:`MessageError` if it is not one."""
    payload = bytes(payload)
    if len(payload) > MAX_MESSAGE:
        raise MessageError(f"message of {len(payload)} bytes is over the {MAX_MESSAGE}-byte limit")
    if not payload:
        raise MessageError("payload is empty: a message is one CBOR map")
    item, spans = _loads(payload, want_spans=False)
    if 0 not in item:
        raise MessageError("message has no key 0 (message type)")
    msg_type = item[0]
    if type(msg_type) is not int:   # true == 1 and 2.0 == 2 in Python: neither is a type
        raise MessageError(f"message type (key 0) is {_kind(msg_type)}, not an unsigned integer")
    if msg_type == SENSORS and not spans:
        # Its table id is the CRC of key 3's bytes as sent: the walker knows where they are.
        item, spans = _loads(payload, want_spans=True)
    if msg_type == BATCH_V1:
        raise OldProtocol("a version 1 BATCH (type 3): this device runs a protocol version 1 agent")
    if msg_type not in _SCHEMAS:
        known = ", ".join(f"{t} {name}" for t, (_, name, _) in _SCHEMAS.items())
        raise MessageError(f"unknown message type {msg_type!r} (known: {known})")
    cls, name, keys = _SCHEMAS[msg_type]
    if msg_type == HELLO and (9 not in item or (type(item[9]) is int and item[9] < PROTOCOL)):
        raise OldProtocol(f"HELLO from {item.get(1)!r} without protocol version 2 (key 9): "
                          "the device runs a protocol version 1 agent"[:300])
    values: dict[str, Any] = {}
    for key, field_name, check, required in keys:
        if key not in item:
            if required:
                raise MessageError(f"{name} has no key {key} ({field_name})")
            continue
        problem = check(item[key])
        if problem:
            raise MessageError(f"{name} key {key} ({field_name}): expected {problem}")
        values[field_name] = item[key]
    if msg_type == BATCH:
        _check_batch(values)
    elif msg_type == SENSORS:
        start, end = spans[3]
        crc = zlib.crc32(payload[start:end])
        if crc != values["table_id"]:
            raise MessageError(f"SENSORS key 2 (table id) {values['table_id']} is not the CRC-32 "
                               f"of its table ({crc})")
    elif msg_type == REFUSE and values["end_seq"] <= values["first_seq"]:
        raise MessageError("REFUSE key 3 (end) must be above key 2 (first refused sequence number)")
    else:
        problem = _ota_problem(msg_type, values)
        if problem:
            raise MessageError(f"{name} {problem}")
    return cls(**values)


def _ota_problem(msg_type: int, values: dict[str, Any]) -> str | None:
    """What breaks a rule between two keys of an OTA message (section 7.2), or None."""
    if msg_type == OTA_WINDOW and values["limit"] < values["ack"]:
        return f"key 4 (limit) {values['limit']} is below key 3 (ack) {values['ack']}"
    if msg_type == OTA_QUERY and "resume_held" in values and "resume_sequence" not in values:
        return "key 8 (bytes held) comes only with key 7 (the download's sequence)"
    if msg_type == OTA_CHUNK and values["offset"] + len(values["data"]) > MAX_UINT:
        return "key 3 (offset) + the chunk's length passes 2**63-1"
    return None


def _check_batch(values: dict[str, Any]) -> None:
    ticks = values["ticks"]
    count = (sum(map(len, ticks)) - len(ticks)) // 2
    if values["first_seq"] + count > MAX_UINT:
        raise MessageError("BATCH key 2 (first_seq): the batch's end, key 2 + its records, "
                           "passes 2**63-1 (its ACK could not carry it)")


def encode_message(msg: Message) -> bytes:
    """The CBOR payload of ``msg`` (deterministic encoding); ValueError if a field is invalid."""
    msg_type = _TYPE_OF.get(type(msg))
    if msg_type is None:
        raise TypeError(f"not a message: {msg!r}")
    _, name, keys = _SCHEMAS[msg_type]
    defaults = _DEFAULTS[type(msg)]
    item: dict[int, Any] = {0: msg_type}
    for key, field_name, check, required in keys:
        value = getattr(msg, field_name)
        if not required and value is defaults[field_name]:
            continue
        problem = check(value)
        if problem:
            raise ValueError(f"{name} {field_name} (key {key}): expected {problem}")
        item[key] = bytes(value) if isinstance(value, (bytearray, memoryview)) else value
    if msg_type == BATCH:
        _check_batch({f.name: getattr(msg, f.name) for f in fields(msg)})
    if msg_type == SENSORS and item[2] != table_id(item[3]):
        raise ValueError(f"SENSORS table_id {item[2]} is not the CRC-32 of its table ({table_id(item[3])})")
    if msg_type == REFUSE and item[3] <= item[2]:
        raise ValueError("REFUSE end_seq must be above first_seq")
    problem = _ota_problem(msg_type, {f: item[k] for k, f, _, _ in keys if k in item})
    if problem:
        raise ValueError(f"{name} {problem}")
    payload = cbor2.dumps(item, canonical=msg_type not in _PLAIN)
    if len(payload) > MAX_MESSAGE:
        raise ValueError(f"{name} of {len(payload)} bytes is over the {MAX_MESSAGE}-byte limit")
    return payload


def table_id(sensors: list) -> int:
    """The table id of a sensor table as an encoder sends it (section 2.6)."""
    return zlib.crc32(cbor2.dumps(sensors, canonical=True))


def message_name(msg: Message) -> str:
    """The protocol's name of ``msg``'s type (``HELLO``, ``OTA_CHUNK``, ...)."""
    return _SCHEMAS[_TYPE_OF[type(msg)]][1]


def message_fields(msg: Message) -> dict[str, Any]:
    """The fields of ``msg`` as a plain dict (for JSON output and test vectors)."""
    return {f.name: getattr(msg, f.name) for f in fields(msg)}
