"""SenML (RFC 8428) packs in their CBOR form: resolve a BATCH into stored records.

:func:`resolve` applies RFC 8428's base-value resolution (section 4.6) to the
pack of a :class:`~edge_agent.messages.Batch` and places every record on the
host's time axis as docs/protocol.md ("Times") prescribes:

- names: ``bn`` (carried forward until replaced) is prepended to ``n``; the
  resolved name must follow RFC 8428 section 4.5.1 (letters, digits and
  ``-:./_``, starting with a letter or digit). The ``"<device id>/"`` prefix
  is then stripped for storage (the device id has its own column);
- units: ``u``, else ``bu``, else none;
- values: exactly one of ``v`` (plus ``bv``), ``vs``, ``vb``; a record with
  only a sum ``s`` takes ``bs + s`` as its value; data values (``vd``) are not
  stored and are refused; a record without a value is an error; numbers must
  be finite;
- times (``bt + t``): at least 2**28 is absolute Unix time; less is relative
  to ``received_at``; for a batch with time basis 1 (estimated) it is the
  uptime within its boot and the record is placed at
  ``boot_start - (last_uptime_ms - uptime_ms) / 1000`` and marked estimated;
- labels this module does not know are ignored, except text labels ending
  in ``_``, which RFC 8428 section 4.4 makes mandatory to understand;
- record *i* of the pack gets sequence number ``first_seq + i``.

Any violation raises :class:`~edge_agent.messages.MessageError` naming the
record and the label, and no record of the batch is returned.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, NamedTuple

from edge_agent.messages import MAX_TEXT, TIME_ESTIMATED, Batch, MessageError

# SenML labels, CBOR representation (RFC 8428 table 4).
BVER, BN, BT, BU, BV, BS = -1, -2, -3, -4, -5, -6
N, U, V, VS, VB, S, T, UT, VD = 0, 1, 2, 3, 4, 5, 6, 7, 8
LABEL_NAMES = {BVER: "bver", BN: "bn", BT: "bt", BU: "bu", BV: "bv", BS: "bs", N: "n",
               U: "u", V: "v", VS: "vs", VB: "vb", S: "s", T: "t", UT: "ut", VD: "vd"}

SENML_VERSION = 10         # the highest bver this reader understands (RFC 8428)
RELATIVE_LIMIT = 2**28     # bt + t below this is relative to "now" (RFC 8428 section 4.5.3)
MAX_NAME = 128             # characters in a resolved name
MAX_UNIT = 32              # characters in a unit

_ABSENT = object()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Record(NamedTuple):
    """One resolved measurement, ready to store.

    ``t`` is Unix seconds; ``estimated`` says it was placed from an uptime in
    a boot that never learned the time; ``boot`` is the device's boot counter.
    (A named tuple: immutable, and several times cheaper to build than a
    frozen dataclass, which counts at one per record.)
    """

    seq: int
    name: str
    unit: str | None
    value: float | int | str | bool
    t: float
    estimated: bool
    boot: int


def _is_number(value: Any) -> bool:
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


def resolve(batch: Batch, received_at: float, boot_start: float | None) -> list[Record]:
    """The records of ``batch``, resolved (see the module docstring).

    ``received_at`` is the host clock (Unix seconds) when the frame arrived;
    ``boot_start`` is the host's estimate of when the device's current boot
    began (the clock at its last HELLO minus the uptime it carried), or None
    when no HELLO has been seen, in which case ``received_at`` stands in.
    """
    prefix = batch.device_id + "/"
    estimated = batch.time_basis == TIME_ESTIMATED
    anchor = 0.0
    if estimated:
        start = received_at if boot_start is None else boot_start
        anchor = start - batch.last_uptime_ms / 1000
    base: dict[int, Any] = {BN: "", BT: 0, BU: None, BV: 0, BS: 0}
    names: dict[str, str] = {}     # resolved name -> stored name, checked once per batch
    units: set[str] = set()        # units already checked in this batch
    records = []
    first_seq, boot = batch.first_seq, batch.boot
    for i, rec in enumerate(batch.pack):
        seq = first_seq + i
        has_base = foreign = False
        for label in rec:
            if type(label) is int:
                has_base = has_base or label < 0
            elif type(label) is str:
                if label.endswith("_"):
                    raise _bad(i, seq, label, "must be understood (RFC 8428 section 4.4) and is not")
            else:
                foreign = True
        if foreign:
            # A label 2.0 or true compares equal to 2 or 1 in Python: drop such
            # labels (unknown, so ignored) before looking labels up.
            rec = {k: v for k, v in rec.items() if type(k) is int or type(k) is str}
        if has_base:
            _base_values(rec, base, i, seq)
        get = rec.get

        name = get(N, "")
        if type(name) is not str:
            raise _bad(i, seq, N, "must be text")
        full = base[BN] + name
        name = names.get(full)
        if name is None:
            names[full] = name = _stored_name(full, prefix, i, seq)

        unit = get(U, _ABSENT)
        if unit is _ABSENT:
            unit = base[BU]
        elif type(unit) is not str or unit not in units:
            units.add(_unit(unit, U, i, seq))

        value = get(V, _ABSENT)
        if value is not _ABSENT and VS not in rec and VB not in rec and VD not in rec:
            if not (type(value) is int or (type(value) is float and math.isfinite(value))):
                raise _bad(i, seq, V, "must be a finite number")
            value = base[BV] + value
            if type(value) is float and not math.isfinite(value):
                raise _bad(i, seq, V, "overflows when the base value is added")
        else:
            value = _other_value(rec, base[BS], i, seq)

        offset = get(T, 0)
        if not _is_number(offset):
            raise _bad(i, seq, T, "must be a finite number")
        when = base[BT] + offset
        if estimated:
            t = float(anchor + when)
        elif when >= RELATIVE_LIMIT:
            t = float(when)
        else:
            t = float(received_at + when)
        if not math.isfinite(t):
            raise _bad(i, seq, T, "overflows when the base time is added")
        records.append(Record(seq, name, unit, value, t, estimated, boot))
    return records


def _bad(i: int, seq: int, label: int | str, problem: str) -> MessageError:
    what = LABEL_NAMES.get(label, label) if isinstance(label, int) else "text label"
    return MessageError(f"BATCH record {i} (seq {seq}): label {label!r} ({what}) {problem}")


def _base_values(rec: dict, base: dict, i: int, seq: int) -> None:
    """Check the base labels of ``rec`` and carry them into ``base``."""
    version = rec.get(BVER, _ABSENT)
    if version is not _ABSENT and (type(version) is not int or not 0 < version <= SENML_VERSION):
        raise _bad(i, seq, BVER, f"is {version!r}; this reader understands SenML versions up to {SENML_VERSION}")
    value = rec.get(BN, _ABSENT)
    if value is not _ABSENT:
        if type(value) is not str:
            raise _bad(i, seq, BN, "must be text")
        base[BN] = value
    value = rec.get(BU, _ABSENT)
    if value is not _ABSENT:
        base[BU] = _unit(value, BU, i, seq)
    for label in (BT, BV, BS):
        value = rec.get(label, _ABSENT)
        if value is not _ABSENT:
            if not _is_number(value):
                raise _bad(i, seq, label, "must be a finite number")
            base[label] = value


def _stored_name(full: str, prefix: str, i: int, seq: int) -> str:
    """Check a resolved name (RFC 8428 section 4.5.1) and strip the device's prefix."""
    if len(full) > MAX_NAME or not _NAME.fullmatch(full):
        raise MessageError(
            f"BATCH record {i} (seq {seq}): name {full[:MAX_NAME]!r} is not a SenML name "
            f"(1-{MAX_NAME} of A-Z a-z 0-9 - : . / _, starting with a letter or digit)")
    if full.startswith(prefix) and len(full) > len(prefix):
        return full[len(prefix):]
    return full


def _other_value(rec: dict, base_sum: int | float, i: int, seq: int) -> int | float | str | bool:
    """The value of a record that is not simply ``v``: ``vs``, ``vb``, a sum, or an error."""
    found = [label for label in (V, VS, VB, VD) if label in rec]
    if len(found) > 1:
        names = " and ".join(f"{label} ({LABEL_NAMES[label]})" for label in found)
        raise MessageError(f"BATCH record {i} (seq {seq}): has more than one value: labels {names}")
    if not found:
        if S not in rec:
            raise MessageError(f"BATCH record {i} (seq {seq}): has no value (v, vs, vb or s)")
        if not _is_number(rec[S]):
            raise _bad(i, seq, S, "must be a finite number")
        value = base_sum + rec[S]
        if type(value) is float and not math.isfinite(value):
            raise _bad(i, seq, S, "overflows when the base sum is added")
        return value
    if found[0] == V:      # v alone is handled by resolve(); here it is not a number
        raise _bad(i, seq, V, "must be a finite number")
    if found[0] == VS:
        value = rec[VS]
        if type(value) is not str or len(value) > MAX_TEXT or _CONTROL.search(value):
            raise _bad(i, seq, VS, f"must be text of at most {MAX_TEXT} characters without control characters")
        return value
    if found[0] == VB:
        value = rec[VB]
        if type(value) is not bool:
            raise _bad(i, seq, VB, "must be true or false")
        return value
    raise _bad(i, seq, VD, "is a data value, which this host does not store; send numbers, text or booleans")


def _unit(value: Any, label: int, i: int, seq: int) -> str:
    if type(value) is not str or len(value) > MAX_UNIT or _CONTROL.search(value):
        raise _bad(i, seq, label, f"must be text of at most {MAX_UNIT} characters without control characters")
    return value


def build_pack(device_id: str, samples: Iterable[tuple[str, str | None, Any, float]],
               base_time: int | None = None) -> list[dict]:
    """A SenML pack as the firmware builds one, for tests and benchmarks.

    ``samples`` are ``(name, unit, value, t)`` with ``t`` in Unix seconds (or
    relative seconds, below 2**28). The first record carries the base name
    ``"<device id>/"`` and the base time (by default the first sample's time,
    rounded down); every record's ``t`` is relative to it and omitted when 0.
    """
    pack: list[dict] = []
    bt = 0
    for name, unit, value, t in samples:
        rec: dict[int, Any] = {}
        if not pack:
            rec[BN] = device_id + "/"
            bt = math.floor(t) if base_time is None else base_time
            rec[BT] = bt
        rec[N] = name
        if unit:
            rec[U] = unit
        if isinstance(value, bool):
            rec[VB] = value
        elif isinstance(value, str):
            rec[VS] = value
        else:
            rec[V] = value
        offset = t - bt
        if offset:
            rec[T] = int(offset) if float(offset).is_integer() else offset
        pack.append(rec)
    return pack
