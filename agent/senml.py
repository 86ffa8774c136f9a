"""SenML (RFC 8428) export of stored records, in its JSON and CBOR representations.

Each record becomes one SenML record with its full name
``<device id>/<sensor name>`` (section 2.2 makes that a valid SenML name),
its unit if any, one value (``v`` for numbers, ``vs`` for text, ``vb`` for
booleans) and its absolute time ``t`` in seconds since 1970 (ms precision).
No base fields are used, so every record stands alone and a stream can be
cut anywhere. Integers stay integers (JSON and CBOR both hold 64-bit ones).
The CBOR form uses SenML's integer labels (RFC 8428 table 4) in an
indefinite-length array, so an export streams without counting first.
"""

from __future__ import annotations

from typing import IO, Any, Iterable

import cbor2

from edge_agent.store import StoredRecord

# SenML labels, CBOR representation (RFC 8428 table 4).
N, U, V, VS, VB, T = 0, 1, 2, 3, 4, 6
JSON_LABELS = {N: "n", U: "u", V: "v", VS: "vs", VB: "vb", T: "t"}


def senml_record(r: StoredRecord) -> dict[int, Any]:
    """The SenML record (integer labels) of one stored record."""
    rec: dict[int, Any] = {N: f"{r.device_id}/{r.name}"}
    if r.unit:
        rec[U] = r.unit
    value = r.value
    rec[VB if type(value) is bool else VS if type(value) is str else V] = value
    rec[T] = r.t_ms / 1000 if r.t_ms % 1000 else r.t_ms // 1000
    return rec


def senml_json(r: StoredRecord) -> dict[str, Any]:
    """The SenML record of one stored record, with JSON labels."""
    return {JSON_LABELS[k]: v for k, v in senml_record(r).items()}


def write_cbor(rows: Iterable[StoredRecord], out: IO[bytes]) -> int:
    """Write a SenML CBOR pack of ``rows`` to ``out``; return the number of records."""
    count = 0
    out.write(b"\x9f")
    for r in rows:
        out.write(cbor2.dumps(senml_record(r), canonical=True))
        count += 1
    out.write(b"\xff")
    return count
