# The builders of messages.py, loaded for each use through messages.<name>
# and dropped after: they write the deterministic encoding (definite
# lengths, shortest heads, keys ascending) with the in-place writers of
# cbor_put, maps in deterministic order (a MicroPython dict keeps no
# insertion order), so a board needs none of cbor.py at run time. Messages
# are small (a HELLO, a STATUS); dump also writes the agent's state files.
from binascii import crc32

from edgefw.cbor_put import put, put_head
from edgefw.messages import MAX_MESSAGE, T_HELLO, T_SENSORS, T_STATUS, VERSION

_S = bytearray(9)  # one head or scalar


def _key(k):
    # A key's encoded bytes: RFC 8949 4.2.1 orders map keys by them (small
    # integers ascending, shorter text first).
    out = bytearray()
    dump_into(out, k)
    return bytes(out)


def dump_into(out, v):
    # Appends the CBOR of v (None, bool, int, float, str, bytes, list, tuple,
    # dict) to the bytearray out; maps in deterministic order, nested ones too.
    if isinstance(v, dict):
        keys = sorted(v, key=_key)
        out.extend(_S[:put_head(_S, 0, 0xA0, len(keys))])
        for k in keys:
            dump_into(out, k)
            dump_into(out, v[k])
    elif isinstance(v, (list, tuple)):
        out.extend(_S[:put_head(_S, 0, 0x80, len(v))])
        for x in v:
            dump_into(out, x)
    elif isinstance(v, (str, bytes, bytearray, memoryview)):
        b = v.encode() if isinstance(v, str) else v
        out.extend(_S[:put_head(_S, 0, 0x60 if b is not v else 0x40, len(b))])
        out.extend(b)
    else:
        out.extend(_S[:put(_S, 0, v)])


def dump(v):
    # v as deterministic CBOR bytes (state files written by the agent).
    out = bytearray()
    dump_into(out, v)
    return bytes(out)


def encode(kind, fields):
    # {key: value} -> message bytes of that type, deterministic. Raises
    # ValueError if the result is over MAX_MESSAGE.
    msg = dict(fields)
    msg[0] = kind
    out = dump(msg)
    if len(out) > MAX_MESSAGE:
        raise ValueError("message type %d of %d bytes is over %d" % (kind, len(out), MAX_MESSAGE))
    return out


def hello(device_id, board, version, boot, uptime_ms, next_seq, acked, dropped, refused):
    return encode(T_HELLO, {1: device_id, 2: board, 3: version, 4: boot, 5: uptime_ms,
                            6: next_seq, 7: acked, 8: dropped, 9: VERSION, 10: refused})


def status(device_id, state, reason, selftest=None, counters=None):
    # reason is cut to the 512 characters section 2.10 allows.
    f = {1: device_id or "", 2: state, 3: reason[:512]}
    if selftest is not None:
        f[4] = selftest
    if counters is not None:
        f[5] = counters
    return encode(T_STATUS, f)


def table_bytes(table):
    # CBOR of the SENSORS key 3 array for [(name, unit), ...].
    return dump([[name, unit] for name, unit in table])


def table_id(table):
    return crc32(table_bytes(table))


def sensors(device_id, table):
    return encode(T_SENSORS, {1: device_id, 2: table_id(table),
                              3: [[name, unit] for name, unit in table]})

