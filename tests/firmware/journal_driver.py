# Fault-injection driver for the journal, run by tests/firmware/test_journal.py
# under the real micropython (also runs under CPython).
#
#   micropython journal_driver.py FIRMWARE ROOT SEED MAX_BYTES SEG_BYTES ACKS KILL_AT TORN APPENDS
#
# Opens the journal in ROOT, then appends entries whose payload is a pure
# function of (first_seq, count) and, if ACKS is 1, acknowledges a prefix of
# the pending entries now and then, as a host would. After each append
# returns it prints "A first count"; after each ack returns "K acked"; stdout
# is flushed after every line, so a line on stdout proves the call returned.
#
# KILL_AT > 0: the process SIGKILLs itself just before its KILL_AT-th flash
# operation (a file write, rename or remove, counted from start, recovery
# included); with TORN 1 a write is first done half (a torn write). The
# driver stops after APPENDS appends ("DONE") unless killed first.
import os
import sys

sys.path.insert(0, sys.argv[1])

from edgefw import atomic, journal  # noqa: E402

ROOT = sys.argv[2]
SEED = int(sys.argv[3])
MAX_BYTES = int(sys.argv[4])
SEG_BYTES = int(sys.argv[5])
ACKS = sys.argv[6] == "1"
KILL_AT = int(sys.argv[7])
TORN = sys.argv[8] == "1"
APPENDS = int(sys.argv[9])

_ops = [0]


def _kill():
    # A real SIGKILL at an exact point: the shell's parent is this process.
    os.system("kill -9 $PPID")
    while True:
        pass


def _op():
    _ops[0] += 1
    return KILL_AT and _ops[0] == KILL_AT


class _File:
    def __init__(self, f):
        self._f = f

    def write(self, b):
        if _op():
            if TORN:
                self._f.write(bytes(b)[:len(b) // 2])
                self._f.flush()
            _kill()
        return self._f.write(b)

    def close(self):
        self._f.close()

    def flush(self):
        self._f.flush()

    def fileno(self):
        return self._f.fileno()


def _open(path, mode="r"):
    f = open(path, mode)
    return f if "r" in mode else _File(f)


class _Os:
    listdir = staticmethod(os.listdir)
    stat = staticmethod(os.stat)
    mkdir = staticmethod(os.mkdir)

    @staticmethod
    def remove(path):
        if _op():
            _kill()
        os.remove(path)

    @staticmethod
    def rename(a, b):
        if _op():
            _kill()
        os.rename(a, b)


journal.open = _open
journal.os = _Os
atomic.open = _open
atomic.os = _Os


def payload(first, count):
    # test_journal.py reads this function from here for its checks.
    n = (first * 7 + count) % 48
    b = bytearray(("%d/%d:" % (first, count)).encode())
    for i in range(n):
        b.append((first * 31 + i * 7) & 0xFF)
    return bytes(b)


def say(*args):
    print(*args)
    sys.stdout.flush()


def main():
    j = journal.Journal(ROOT, max_bytes=MAX_BYTES, seg_bytes=SEG_BYTES)
    j.open()
    say("O", j.next_seq, j.acked, j.dropped)
    rng = SEED * 2654435761 + 12345
    for _ in range(APPENDS):
        rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
        count = 1 + (rng >> 8) % 3
        first = j.append(payload(j.next_seq, count), count)
        say("A", first, count)
        if ACKS and (rng >> 4) % 4 == 0:
            p = j.pending(4096, 16)
            k = len(p) - (rng >> 12) % 4
            if k > 0:
                first, count, _ = p[k - 1]
                # Now and then an ack lands inside an entry.
                end = first + count - ((rng >> 16) % 2 if count > 1 else 0)
                j.ack(end)
                say("K", j.acked)
    say("DONE")


main()
