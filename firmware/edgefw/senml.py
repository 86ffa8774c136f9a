# Telemetry batches: journal entries -> one BATCH message holding a SenML pack
# (RFC 8428, CBOR labels). See docs/protocol.md "BATCH" and "Times".
#
# A journal entry is the CBOR array [boot, uptime_ms, name, value, ...] of one
# sampling tick; it holds one SenML record (one sequence number) per pair.
from edgefw import cbor

from micropython import const

T_BATCH = const(3)
_BN = const(-2)
_BT = const(-3)
_N = const(0)
_U = const(1)
_V = const(2)
_VS = const(3)
_VB = const(4)
_T = const(6)


def entry(boot, uptime_ms, pairs):
    return cbor.dumps([boot, uptime_ms] + pairs)


def _records(entries, units, t0):
    # t0: the ms value that maps to bt seconds. Record times are rounded to
    # 1/1024 s: a binary fraction, exact in a float32 (5 bytes on the wire)
    # for offsets under 4.5 hours, where 1/1000 would need a float64.
    recs = []
    for e in entries:
        t = ((e[1] - t0) * 1024 + 500) // 1000 / 1024
        i = 2
        while i < len(e):
            name = e[i]
            v = e[i + 1]
            r = {_N: name}
            u = units.get(name)
            if u:
                r[_U] = u
            if isinstance(v, bool):
                r[_VB] = v
            elif isinstance(v, str):
                r[_VS] = v
            else:
                r[_V] = v
            r[_T] = t
            recs.append(r)
            i += 2
    return recs


def build(device_id, first_seq, entries, epoch, current_boot, now_ms, dropped, units, boot_end_ms=None):
    # entries: decoded journal entries of ONE boot, in sequence order, the
    # first holding first_seq. epoch: that boot's epoch in ms, or None.
    # boot_end_ms: for an earlier boot without epoch, the uptime of its last
    # record in the journal (the host's anchor for estimated times).
    boot = entries[0][0]
    first_ms = entries[0][1]
    msg = {0: T_BATCH, 1: device_id, 2: first_seq, 3: boot, 4: 0, 5: dropped}
    if epoch is not None:
        # Absolute: bt is whole Unix seconds (an int, since a float32 cannot
        # hold today's Unix time to the millisecond), t the remainder.
        abs_ms = epoch + first_ms
        bt = abs_ms // 1000
        t0 = bt * 1000 - epoch
    elif boot == current_boot:
        # Relative to now (SenML: times below 2**28 are relative).
        age = now_ms - first_ms
        bt = -((age + 999) // 1000)
        t0 = now_ms + bt * 1000
    else:
        # An earlier boot that never learned the time: boot-relative seconds,
        # placed by the host just before the current boot (estimated).
        bt = first_ms // 1000
        t0 = bt * 1000
        msg[4] = 1
        msg[7] = boot_end_ms if boot_end_ms is not None else entries[-1][1]
    recs = _records(entries, units, t0)
    if recs:
        recs[0][_BN] = device_id + "/"
        recs[0][_BT] = bt
    msg[6] = recs
    return cbor.dumps(msg)
