# The checks of section 2.1 for the messages a device sends (HELLO, STATUS,
# SENSORS, BATCH), beyond their keys' kinds: what a host must verify. The
# device never receives these; edgefw.messages imports this module only when
# it decodes one (tests against the shared vectors, a host running this code),
# so it costs a board no memory.
from edgefw.messages import (K_ARRAY, K_BOOL, K_ID, K_ID_OR_EMPTY, K_MAP, K_TSTR, K_UINT, UINT_MAX, T_BATCH,
                             T_HELLO, T_OTA_QUERY, T_OTA_STATE, T_OTA_WINDOW, T_SENSORS, T_STATUS, VERSION,
                             plain_text, valid_name, valid_unit)

KEYS = {
    T_HELLO: ((1, K_ID, 1, 0, 0), (2, K_TSTR, 1, 1, 64), (3, K_TSTR, 1, 1, 64),
              (4, K_UINT, 1, 0, UINT_MAX), (5, K_UINT, 1, 0, UINT_MAX), (6, K_UINT, 1, 0, UINT_MAX),
              (7, K_UINT, 1, 0, UINT_MAX), (8, K_UINT, 1, 0, UINT_MAX), (9, K_UINT, 1, VERSION, UINT_MAX),
              (10, K_UINT, 0, 0, UINT_MAX)),
    T_STATUS: ((1, K_ID_OR_EMPTY, 1, 0, 0), (2, K_TSTR, 1, 1, 64), (3, K_TSTR, 1, 0, 512),
               (4, K_MAP, 0, 0, 0), (5, K_MAP, 0, 0, 0)),
    T_SENSORS: ((1, K_ID, 1, 0, 0), (2, K_UINT, 1, 0, 0xFFFFFFFF), (3, K_ARRAY, 1, 1, 64)),
    T_BATCH: ((1, K_ID, 1, 0, 0), (2, K_UINT, 1, 0, UINT_MAX), (3, K_UINT, 1, 0, UINT_MAX),
              (4, K_UINT, 1, 0, 1), (5, K_UINT, 1, 0, UINT_MAX), (6, K_UINT, 1, 0, 0xFFFFFFFF),
              (7, K_UINT, 1, 0, UINT_MAX), (8, K_UINT, 1, 0, UINT_MAX), (9, K_ARRAY, 1, 1, 128)),
    T_OTA_QUERY: ((1, K_ID, 1, 0, 0), (2, K_TSTR, 1, 1, 16), (3, K_TSTR, 1, 1, 32), (4, K_UINT, 1, 0, UINT_MAX),
                  (5, K_UINT, 1, 0, UINT_MAX), (6, K_UINT, 1, 0, UINT_MAX), (7, K_UINT, 0, 0, UINT_MAX),
                  (8, K_UINT, 0, 0, UINT_MAX), (9, K_TSTR, 1, 1, 16)),
    T_OTA_WINDOW: ((1, K_ID, 1, 0, 0), (2, K_UINT, 1, 0, UINT_MAX), (3, K_UINT, 1, 0, UINT_MAX),
                   (4, K_UINT, 1, 0, UINT_MAX), (5, K_BOOL, 0, 0, 0)),
    T_OTA_STATE: ((1, K_ID, 1, 0, 0), (2, K_TSTR, 1, 1, 16), (3, K_UINT, 1, 0, UINT_MAX), (4, K_TSTR, 1, 1, 16),
                  (5, K_TSTR, 0, 1, 32), (6, K_UINT, 0, 0, UINT_MAX), (7, K_UINT, 0, 0, UINT_MAX),
                  (8, K_TSTR, 0, 1, 32), (9, K_TSTR, 0, 0, 200)),
}


def check(kind, fields):
    # ValueError naming the rule a decoded message of these types breaks.
    if kind == T_STATUS:
        _status_ok(fields)
    elif kind == T_SENSORS:
        _table_ok(fields[3], fields.pop(-1), fields[2])
    elif kind == T_BATCH:
        _ticks_ok(fields[2], fields[9])
    elif kind == T_OTA_QUERY:
        _one_of(fields[2], "agent firmware", "component")
        _one_of(fields[9], "boot schedule command resume retry", "why")
        if (8 in fields) and (7 not in fields):
            raise ValueError("key 8 (bytes held) comes only with key 7 (the download's sequence)")
    elif kind == T_OTA_WINDOW and fields[4] < fields[3]:
        raise ValueError("key 4 (limit) is below key 3 (ack)")
    elif kind == T_OTA_STATE:
        _one_of(fields[2], "agent firmware", "component")
        _one_of(fields[4], "refused current downloading stalled verified installed applying trial "
                "confirmed rolled-back failed stale busy", "state")


def _one_of(v, words, what):
    # Section 7.2's closed lists.
    if v not in words.split():
        raise ValueError("%s %r is not one of: %s" % (what, v, words))


def _uint_ok(v):
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= UINT_MAX


def _value_ok(v):
    # A record's value (section 2.7): integer of magnitude below 2**63,
    # finite float, bool, or text of at most 64 characters.
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        return -UINT_MAX <= v <= UINT_MAX
    if isinstance(v, float):
        return v == v and -1.8e308 < v < 1.8e308
    return isinstance(v, str) and len(v) <= 64 and plain_text(v)


def _ticks_ok(first, ticks):
    records = 0
    last = 0
    for t in ticks:
        if not isinstance(t, list) or len(t) < 3 or len(t) > 129 or not len(t) & 1:
            raise ValueError("key 9: a tick is [dt_ms, k, v, ...] with 1 to 64 pairs")
        if not _uint_ok(t[0]) or t[0] < last:
            raise ValueError("key 9: dt_ms must be a uint that never decreases")
        last = t[0]
        for i in range(1, len(t), 2):
            if not _uint_ok(t[i]) or not _value_ok(t[i + 1]):
                raise ValueError("key 9: a pair is a sensor index (uint) and a value of section 2.7")
        records += len(t) >> 1
    if records > 256:
        raise ValueError("key 9: %d records, at most 256" % records)
    if first + records > UINT_MAX:
        raise ValueError("key 2: the batch's end is above 2**63-1")


def _status_ok(f):
    for k in (4, 5):
        d = f.get(k)
        if d is None:
            continue
        for name in d:
            if not isinstance(name, str) or (k == 5 and not _uint_ok(d[name])):
                raise ValueError("key %d: keys are text%s" % (k, " and values uints" if k == 5 else ""))


def _table_ok(table, crc, table_id):
    seen = []
    for e in table:
        if (not isinstance(e, list) or len(e) != 2 or not valid_name(e[0])
                or not valid_unit(e[1]) or e[0] in seen):
            raise ValueError("key 3: each entry must be [name, unit] (section 2.2), names unique")
        seen.append(e[0])
    if crc != table_id:
        raise ValueError("key 2 is not the CRC-32 of key 3")
