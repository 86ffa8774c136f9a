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


def build(device_id, first_seq, entries, epoch, current_boot, now_ms, dropped, units, boot_end_ms=None):
    # entries: decoded journal entries of ONE boot, in sequence order, the
    # first holding first_seq. epoch: that boot's epoch in ms, or None.
    # boot_end_ms: for an earlier boot without epoch, the uptime of its last
    # record in the journal (the host's anchor for estimated times).
    # The message is streamed into one buffer: no dict per record.
    boot = entries[0][0]
    first_ms = entries[0][1]
    basis = 0
    if epoch is not None:
        # Absolute: bt is whole Unix seconds (an int, since a float32 cannot
        # hold today's Unix time to the millisecond), t the remainder.
        bt = (epoch + first_ms) // 1000
        t0 = bt * 1000 - epoch
    elif boot == current_boot:
        # Relative to now (SenML: times below 2**28 are relative).
        bt = -((now_ms - first_ms + 999) // 1000)
        t0 = now_ms + bt * 1000
    else:
        # An earlier boot that never learned the time: boot-relative seconds,
        # placed by the host just before the current boot (estimated).
        bt = first_ms // 1000
        t0 = bt * 1000
        basis = 1
    n = 0
    for e in entries:
        n += (len(e) - 2) // 2
    w = cbor.Writer()
    w.map(8 if basis else 7)
    w.item(0)
    w.item(T_BATCH)
    w.item(1)
    w.item(device_id)
    w.item(2)
    w.item(first_seq)
    w.item(3)
    w.item(boot)
    w.item(4)
    w.item(basis)
    w.item(5)
    w.item(dropped)
    if basis:
        w.item(7)
        w.item(boot_end_ms if boot_end_ms is not None else entries[-1][1])
    w.item(6)
    w.array(n)
    first = True
    for e in entries:
        # Record times are rounded to 1/1024 s: a binary fraction, exact in
        # a float32 (5 bytes on the wire) for offsets under 4.5 hours, where
        # 1/1000 would need a float64.
        t = ((e[1] - t0) * 1024 + 500) // 1000 / 1024
        i = 2
        while i < len(e):
            name = e[i]
            v = e[i + 1]
            u = units.get(name)
            w.map((3 if u else 2) + (2 if first else 0) + 1)
            w.item(_N)
            w.item(name)
            if u:
                w.item(_U)
                w.item(u)
            w.item(_VB if isinstance(v, bool) else _VS if isinstance(v, str) else _V)
            w.item(v)
            w.item(_T)
            w.item(t)
            if first:
                w.item(_BN)
                w.item(device_id + "/")
                w.item(_BT)
                w.item(bt)
                first = False
            i += 2
    return w.bytes()
