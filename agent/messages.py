"""Agent messages: the CBOR maps carried by frames (docs/protocol.md section 2).

Each message is a CBOR map with small unsigned-integer keys; key 0 is the
type. One table (:data:`_SCHEMAS`) lists, for every type, its keys, the field
each fills and the check its value must pass; :func:`decode_message` and
:func:`encode_message` both read it, so the two directions cannot drift.

Decoding treats the payload as hostile:

- it must be exactly one well-formed CBOR data item, at most
  :data:`~edge_agent.frames.MAX_PAYLOAD` bytes, nested at most
  :data:`MAX_DEPTH` deep, with no duplicate map keys and no tags at all
  (none of the messages uses one; refusing them also keeps cbor2's semantic
  decoders - dates, regular expressions, shared references - out of reach);
- every known key is type-checked, and its error names the message, the key
  and what was expected; unknown keys are ignored (forward compatibility);
- unsigned integers must fit the registry (at most ``2**63 - 1``); ``true``
  and ``false`` are not integers; strings are bounded and free of control
  characters (they end up on terminals); a BATCH pack holds at most
  :data:`MAX_RECORDS` maps. The records inside a pack are checked by
  :func:`edge_agent.senml.resolve`.

Encoding uses RFC 8949 section 4.2.1 deterministic encoding (map keys sorted
by their encoded bytes, shortest integers, the shortest float that holds the
value exactly), as the test vectors in ``tests/vectors/messages.json`` do.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, fields
from typing import Any, Callable

import cbor2

from edge_agent.errors import BadInput
from edge_agent.frames import MAX_PAYLOAD

HELLO, TIME, BATCH, ACK, STATUS = 1, 2, 3, 4, 5

MAX_RECORDS = 256          # SenML records in one BATCH pack
MAX_DEPTH = 8              # nesting of CBOR containers (a BATCH needs 3)
MAX_UINT = 2**63 - 1       # largest integer the registry (SQLite) stores exactly
MAX_ID = 64                # characters in a device id
MAX_SHORT = 64             # characters in a board name, version or state
MAX_TEXT = 512             # characters in a STATUS reason

TIME_SENML = 0             # BATCH key 4: times as SenML defines them
TIME_ESTIMATED = 1         # BATCH key 4: uptimes of an earlier boot that never learned the time

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class MessageError(BadInput, ValueError):
    """A payload that is not a valid message; the text names the problem."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint or "check the sender against docs/protocol.md section 2")


@dataclass(frozen=True, slots=True)
class Hello:
    """HELLO (1), device to host: the device and its journal state."""

    device_id: str
    board: str
    version: str
    boot: int
    uptime_ms: int
    next_seq: int
    acked: int
    dropped: int


@dataclass(frozen=True, slots=True)
class Time:
    """TIME (2), host to device: the host's clock in ms since the Unix epoch.

    ``hello`` (key 2) asks the device to announce itself: a host sets it when
    it opens a link, never in reply to a HELLO (so the two cannot ping-pong).
    """

    unix_ms: int
    hello: bool | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """BATCH (3), device to host: a SenML pack whose records start at ``first_seq``.

    ``pack`` is the list of SenML record maps as decoded (integer labels);
    ``last_uptime_ms`` is key 7, present only when ``time_basis`` is 1.
    """

    device_id: str
    first_seq: int
    boot: int
    time_basis: int
    dropped: int
    pack: list
    last_uptime_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK (4), host to device: every record with a lower sequence number is stored."""

    device_id: str
    next_seq: int


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS (5), device to host: a condition a person should see.

    ``selftest`` (key 4) is the boot self-test: ``sensors`` (readable count),
    ``sensor_errors`` (names), ``heap_free``, ``fs_free`` (bytes or None),
    ``version``.
    """

    device_id: str
    state: str
    reason: str
    selftest: dict | None = None


Message = Hello | Time | Batch | Ack | Status


# -- value checks: each returns None if the value is fine, else what was expected

def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a negative integer" if value < 0 else "an integer too large"
    names = {str: "text", bytes: "a byte string", float: "a float", list: "an array",
             dict: "a map", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _uint(value: Any) -> str | None:
    if type(value) is int and 0 <= value <= MAX_UINT:
        return None
    return f"an unsigned integer up to 2**63-1, got {_kind(value)}"


def _text_check(limit: int, empty_ok: bool) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if type(value) is not str:
            return f"text, got {_kind(value)}"
        if not value and not empty_ok:
            return "non-empty text"
        if len(value) > limit:
            return f"text of at most {limit} characters, got {len(value)}"
        if _CONTROL.search(value):
            return "text without control characters"
        return None
    return check


def _bool(value: Any) -> str | None:
    if type(value) is bool:
        return None
    return f"true or false, got {_kind(value)}"


def _time_basis(value: Any) -> str | None:
    if type(value) is int and value in (TIME_SENML, TIME_ESTIMATED):
        return None
    return f"0 (SenML times) or 1 (estimated), got {value!r}"


def _pack(value: Any) -> str | None:
    if type(value) is not list:
        return f"an array (the SenML pack), got {_kind(value)}"
    if len(value) > MAX_RECORDS:
        return f"at most {MAX_RECORDS} records, got {len(value)}"
    for i, record in enumerate(value):
        if type(record) is not dict:
            return f"an array of maps (SenML records), record {i} is {_kind(record)}"
    return None


_SELFTEST_KEYS: dict[str, type | tuple[type, ...]] = {"sensors": int, "sensor_errors": list, "heap_free": int, "fs_free": (int, type(None)),
                  "version": str}


def _selftest(value: Any) -> str | None:
    if type(value) is not dict:
        return f"a map (the self-test), got {_kind(value)}"
    for key, kind in _SELFTEST_KEYS.items():
        if key in value and (not isinstance(value[key], kind) or type(value[key]) is bool):
            return f"self-test {key!r} of the right type, got {_kind(value[key])}"
    errors = value.get("sensor_errors", [])
    if len(errors) > 32 or any(type(e) is not str or len(e) > MAX_SHORT for e in errors):
        return "self-test sensor_errors: at most 32 sensor names"
    return None


_ID = _text_check(MAX_ID, empty_ok=False)
_ID_OR_EMPTY = _text_check(MAX_ID, empty_ok=True)
_SHORT = _text_check(MAX_SHORT, empty_ok=False)
_TEXT = _text_check(MAX_TEXT, empty_ok=True)

# type -> (class, name, ((key, field, check, required), ...))
_SCHEMAS: dict[int, tuple[type, str, tuple[tuple[int, str, Callable[[Any], str | None], bool], ...]]] = {
    HELLO: (Hello, "HELLO", (
        (1, "device_id", _ID, True),
        (2, "board", _SHORT, True),
        (3, "version", _SHORT, True),
        (4, "boot", _uint, True),
        (5, "uptime_ms", _uint, True),
        (6, "next_seq", _uint, True),
        (7, "acked", _uint, True),
        (8, "dropped", _uint, True),
    )),
    TIME: (Time, "TIME", (
        (1, "unix_ms", _uint, True),
        (2, "hello", _bool, False),
    )),
    BATCH: (Batch, "BATCH", (
        (1, "device_id", _ID, True),
        (2, "first_seq", _uint, True),
        (3, "boot", _uint, True),
        (4, "time_basis", _time_basis, True),
        (5, "dropped", _uint, True),
        (6, "pack", _pack, True),
        (7, "last_uptime_ms", _uint, False),
    )),
    ACK: (Ack, "ACK", (
        (1, "device_id", _ID, True),
        (2, "next_seq", _uint, True),
    )),
    STATUS: (Status, "STATUS", (
        (1, "device_id", _ID_OR_EMPTY, True),
        (2, "state", _SHORT, True),
        (3, "reason", _TEXT, True),
        (4, "selftest", _selftest, False),
    )),
}
_TYPE_OF = {cls: msg_type for msg_type, (cls, _, _) in _SCHEMAS.items()}


class _TagRefused(Exception):
    pass


def _refuse_tag(*args: Any) -> Any:
    raise _TagRefused("CBOR tags are not used by any message")


# cbor2 decodes these tags itself unless overridden; every one is refused, as
# are all others (tag_hook).
_NO_SEMANTICS = {tag: _refuse_tag for tag in (*range(0, 300), 1004, 1040, 55799)}


def _loads_one(payload: bytes) -> Any:
    """Decode exactly one CBOR data item, refusing tags and deep nesting."""
    stream = io.BytesIO(payload)
    decoder = cbor2.CBORDecoder(stream, semantic_decoders=_NO_SEMANTICS, tag_hook=_refuse_tag,
                                max_depth=MAX_DEPTH, allow_duplicate_keys=False)
    try:
        item = decoder.decode()
    except Exception as e:  # cbor2 raises several types (and wraps ours): all mean "not CBOR"
        cause = e.__cause__ or e.__context__
        detail = str(cause) if isinstance(cause, _TagRefused) else str(e)
        raise MessageError(f"payload is not valid CBOR: {detail}") from None
    if stream.tell() != len(payload):
        raise MessageError(
            f"payload is not one CBOR data item: {len(payload) - stream.tell()} bytes follow it")
    return item


def decode_message(payload: bytes) -> Message:
    """Decode and check one message payload; raise :class:`MessageError` if it is not one."""
    if len(payload) > MAX_PAYLOAD:
        raise MessageError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit")
    if not payload:
        raise MessageError("payload is empty: a message is one CBOR map")
    item = _loads_one(bytes(payload))
    if type(item) is not dict:
        raise MessageError(f"message is not a CBOR map but {_kind(item)}")
    # Only integer keys are ours; a key 1.0 or true compares equal to 1 in
    # Python, so keys of other types are dropped here, unread.
    item = {k: v for k, v in item.items() if type(k) is int}
    if 0 not in item:
        raise MessageError("message has no key 0 (message type)")
    msg_type = item[0]
    if type(msg_type) is not int or msg_type not in _SCHEMAS:
        known = ", ".join(f"{t} {name}" for t, (_, name, _) in _SCHEMAS.items())
        raise MessageError(f"unknown message type {msg_type!r} (known: {known})")
    cls, name, keys = _SCHEMAS[msg_type]
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
    return cls(**values)


def _check_batch(values: dict[str, Any]) -> None:
    if values["time_basis"] == TIME_ESTIMATED and "last_uptime_ms" not in values:
        raise MessageError("BATCH has no key 7 (last_uptime_ms), which is required when key 4 is 1")
    if values["first_seq"] + len(values["pack"]) - 1 > MAX_UINT:
        raise MessageError("BATCH key 2 (first_seq): the pack's sequence numbers pass 2**63-1")


def encode_message(msg: Message) -> bytes:
    """The CBOR payload of ``msg`` (deterministic encoding); ValueError if a field is invalid."""
    msg_type = _TYPE_OF.get(type(msg))
    if msg_type is None:
        raise TypeError(f"not a message: {msg!r}")
    _, name, keys = _SCHEMAS[msg_type]
    item: dict[int, Any] = {0: msg_type}
    for key, field_name, check, required in keys:
        value = getattr(msg, field_name)
        if value is None and not required:
            continue
        problem = check(value)
        if problem:
            raise ValueError(f"{name} {field_name} (key {key}): expected {problem}")
        item[key] = value
    if msg_type == BATCH:
        _check_batch({f.name: v for f in fields(msg) if (v := getattr(msg, f.name)) is not None})
    return cbor2.dumps(item, canonical=True)


def message_fields(msg: Message) -> dict[str, Any]:
    """The fields of ``msg`` as a plain dict (for JSON output and test vectors)."""
    return {f.name: getattr(msg, f.name) for f in fields(msg)}
