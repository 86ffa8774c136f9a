"""The device's store-and-forward journal (firmware/edgefw/journal.py).

Most tests run the journal under the real micropython with the ESP32 heap
(`tests.mpy.run`); the files it leaves are then damaged from here the way a
kill or bad flash would. The kill tests SIGKILL `journal_driver.py` at random
moments and at every flash operation in turn, and check after each restart
that no acknowledged record comes back and no durable record is lost or
duplicated. A model-based test compares the journal with a list model under
hypothesis (CPython, fast) and under micropython (seeded, one process).
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import struct
import subprocess
import textwrap
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mpy import FIRMWARE, board_heap, firmware_on_path, micropython_exe, run

DRIVER = Path(__file__).with_name("journal_driver.py")


def _driver_function(name: str) -> str:
    """Source of one function of journal_driver.py, shared with the snippets here."""
    text = DRIVER.read_text()
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == name)
    return "\n" + str(ast.get_source_segment(text, node)) + "\n"


# The payload of the entry (first, count): what the driver writes and the checks expect.
PAYLOAD_SRC = _driver_function("payload")
_ns: dict = {}
exec(PAYLOAD_SRC, _ns)
payload = _ns["payload"]

PRELUDE = '''
import os
from edgefw.journal import Journal
ROOT = %r
def J(mb=%d, sb=%d):
    j = Journal(ROOT, max_bytes=mb, seg_bytes=sb)
    j.open()
    return j
def info(j):
    return [j.next_seq, j.acked, j.dropped, j.used_bytes, j.pending_count]
def everything(j):
    return [(a, b, c) for a, b, c in j.iter_pending()]
'''


def mp(root: Path, *code: str, mb: int = 65536, sb: int = 4096, heap="esp32") -> list:
    """Run `code` under micropython with the journal helpers; each printed line is a literal."""
    src = PRELUDE % (str(root), mb, sb) + PAYLOAD_SRC + "".join(textwrap.dedent(c) for c in code)
    out = run(src, heap=heap).stdout.decode()
    return [ast.literal_eval(line) for line in out.splitlines() if line.strip()]


def segments(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith("s") and p.name.endswith(".log"))


def entries_on_flash(root: Path) -> list[tuple[Path, int, int, int, int]]:
    """(segment, offset, first_seq, count, payload length) of every intact entry.

    An independent reading of the on-flash format documented in journal.py.
    """
    found = []
    for seg in segments(root):
        data = seg.read_bytes()
        pos = 0
        while pos + 16 <= len(data):
            magic, ver, n, first, count, check = struct.unpack_from(">BBHIHH", data, pos)
            if (magic, ver) != (0xEA, 1) or check != zlib.crc32(data[pos:pos + 10]) & 0xFFFF:
                break
            body = data[pos:pos + 12 + n]
            if len(body) != 12 + n or data[pos + 12 + n:pos + 16 + n] != struct.pack(">I", zlib.crc32(body)):
                break
            found.append((seg, pos, first, count, n))
            pos += 16 + n
    return found


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def root(tmp_path):
    return tmp_path / "journal"


FILL = '''
j = J()
for c in %r:
    j.append(payload(j.next_seq, c), c)
'''


# -- append, pending, ack ----------------------------------------------------

def test_append_numbers_records_consecutively_and_pending_lists_entries_oldest_first(root):
    (firsts, state, pend), = mp(root, '''
        j = J()
        firsts = [j.append(payload(j.next_seq, c), c) for c in (1, 3, 2, 1)]
        print(repr([firsts, info(j), j.pending(10000, 100)]))
    ''')
    assert firsts == [0, 1, 4, 6]
    assert state[:3] == [7, 0, 0] and state[4] == 7
    assert pend == [(0, 1, payload(0, 1)), (1, 3, payload(1, 3)), (4, 2, payload(4, 2)),
                    (6, 1, payload(6, 1))]
    assert state[3] == sum(16 + len(p) for _, _, p in pend)


def test_pending_stops_before_max_bytes_or_max_entries_but_returns_at_least_one_entry(root):
    out = mp(root, '''
        j = J()
        print(repr(j.pending(100, 10)))
        for i in range(5):
            j.append(bytes([i]) * 100, 1)
        print(repr([len(j.pending(250, 10)), len(j.pending(300, 10)), len(j.pending(50, 10)),
                    len(j.pending(0, 10)), len(j.pending(10000, 3)), len(j.pending(10000, 100))]))
    ''')
    assert out == [[], [2, 3, 1, 1, 3, 5]]


def test_ack_inside_an_entry_is_kept_exactly_and_that_entry_stays_pending(root):
    out = mp(root, FILL % ([1, 3, 2, 1],), '''
        j.ack(2)
        print(repr([j.acked, j.pending(10000, 100)[0][0]]))
        j.ack(5)
        print(repr([j.acked, j.pending_count, [e[0] for e in j.pending(10000, 100)]]))
    ''')
    assert out == [[2, 1], [5, 2, [4, 6]]]


def test_ack_lower_than_the_pointer_is_ignored(root):
    out = mp(root, FILL % ([1, 3, 2, 1],), '''
        j.ack(4)
        st = open(ROOT + '/state', 'rb').read()
        j.ack(1)
        j.ack(4)
        print(repr([j.acked, [e[0] for e in j.pending(10000, 100)], open(ROOT + '/state', 'rb').read() == st]))
    ''')
    assert out == [[4, [4, 6], True]]


def test_ack_beyond_next_seq_is_rejected_and_changes_nothing(root):
    out = mp(root, FILL % ([1, 3],), '''
        before = [info(j), sorted(os.listdir(ROOT)), open(ROOT + '/state', 'rb').read()]
        try:
            j.ack(5)
            print(repr('accepted'))
        except ValueError as e:
            print(repr(str(e)))
        print(repr([info(j), sorted(os.listdir(ROOT)), open(ROOT + '/state', 'rb').read()] == before))
        print(repr(info(J())))
    ''')
    assert "beyond" in out[0] and "next_seq 4" in out[0]
    assert out[1] is True
    assert out[2][:3] == [4, 0, 0]


def test_acked_records_never_come_back_and_next_seq_holds_after_restart(root):
    mp(root, FILL % ([2, 2, 2, 2],), 'j.ack(6)\n')
    out = mp(root, '''
        j = J()
        print(repr([info(j), j.pending(10000, 100)]))
        print(repr(j.append(payload(8, 1), 1)))
    ''')
    assert out[0][0][:3] == [8, 6, 0]
    assert out[0][1] == [(6, 2, payload(6, 2))]
    assert out[1] == 8


def test_ack_deletes_fully_acknowledged_segments_but_keeps_the_newest(root):
    out = mp(root, '''
        j = J(2048, 256)
        for i in range(20):
            j.append(payload(j.next_seq, 1), 1)
        print(repr([len(os.listdir(ROOT)), j.used_bytes]))
        j.ack(10)
        print(repr([len(os.listdir(ROOT)), j.used_bytes]))
        j.ack(j.next_seq)
        print(repr([len(os.listdir(ROOT)), j.used_bytes, j.pending(1000, 10)]))
    ''', mb=2048, sb=256)
    (n0, u0), (n1, u1), (n2, u2, pend) = out
    assert n1 < n0 and u1 < u0
    assert n2 == 2 and u2 > 0 and pend == []  # the state file and the newest segment
    assert len(segments(root)) == 1
    # Even with its state file gone, the journal never reuses a number.
    (root / "state").unlink()
    (nxt, *_), = mp(root, 'print(repr(info(J(2048, 256))))', mb=2048, sb=256)
    assert nxt == 20


def test_journal_survives_restarts_in_new_processes(root):
    mp(root, FILL % ([1, 2, 3],), 'j.ack(3)\n')
    out1 = mp(root, '''
        j = J()
        print(repr(info(j)))
        j.append(payload(j.next_seq, 4), 4)
    ''')
    out2 = mp(root, 'j = J()\nprint(repr([info(j), everything(j)]))\n')
    assert out1[0][:3] == [6, 3, 0]
    assert out2[0][0][:3] == [10, 3, 0] and out2[0][0][4] == 7
    assert out2[0][1] == [(3, 3, payload(3, 3)), (6, 4, payload(6, 4))]


# -- bounded size ------------------------------------------------------------

def test_full_journal_drops_the_oldest_segment_only_when_full_and_counts_unacked_records(root):
    out = mp(root, '''
        j = J(2048, 512)
        log = []
        while j.dropped == 0:
            before = j.used_bytes
            p = payload(j.next_seq, 2)
            j.append(p, 2)
            log.append([before, 16 + len(p), j.dropped, j.used_bytes])
            if j.next_seq == 8:
                j.ack(4)
        for i in range(40):
            j.append(payload(j.next_seq, 2), 2)
            assert j.used_bytes <= 2048
        print(repr(log))
        print(repr([info(j), everything(j)]))
    ''', mb=2048, sb=512)
    log, (state, pend) = out
    # Nothing is dropped while the entry fits; the first drop comes when it would not.
    for before, need, dropped, _ in log[:-1]:
        assert dropped == 0 and before + need <= 2048
    assert log[-1][0] + log[-1][1] > 2048
    nxt, acked, dropped, used, count = state
    assert acked == 4 and used <= 2048
    # What is left is the newest records, contiguous up to next_seq, and every
    # unacknowledged record that is gone is counted once.
    assert pend and pend[-1][0] + pend[-1][1] == nxt
    for (a, n, p), (b, _, _) in zip(pend, pend[1:]):
        assert a + n == b and p == payload(a, n)
    assert dropped == pend[0][0] - acked
    assert count == nxt - pend[0][0]
    # The count is persisted and survives a restart.
    (again,) = mp(root, 'j = J(2048, 512)\nprint(repr([info(j), everything(j)]))\n', mb=2048, sb=512)
    assert again == [state, pend]


def test_full_journal_counts_nothing_for_a_dropped_segment_that_was_acknowledged(root):
    (state,) = mp(root, '''
        j = J(2048, 512)
        while j.used_bytes < 1900:
            j.append(payload(j.next_seq, 1), 1)
        j.ack(j.next_seq)
        kept = sorted(os.listdir(ROOT))[0]  # the newest segment, all acknowledged
        while kept in os.listdir(ROOT):
            j.append(payload(j.next_seq, 1), 1)
        print(repr(info(j)))
    ''', mb=2048, sb=512)
    assert state[2] == 0


# -- damage and recovery -----------------------------------------------------

def fill_three_segments(root: Path) -> list:
    mp(root, FILL % ([1, 2, 1, 3] * 8,), 'j.ack(3)\n', mb=4096, sb=512)
    found = entries_on_flash(root)
    assert len({e[0] for e in found}) >= 3
    return found


def reopen(root: Path) -> list:
    (out,) = mp(root, 'j = J(4096, 512)\nprint(repr([info(j), everything(j)]))\n', mb=4096, sb=512)
    return out


@pytest.mark.parametrize("where", ["payload", "header", "crc"])
def test_damage_inside_a_segment_loses_that_entry_only_and_counts_it_once(root, where):
    found = fill_three_segments(root)
    seg, off, first, count, n = [e for e in found if e[0] == segments(root)[0]][3]
    flip(seg, off + {"payload": 12 + n // 2, "header": 0, "crc": 12 + n + 1}[where])
    (nxt, acked, dropped, _, pcount), pend = reopen(root)
    expected = [(a, c, payload(a, c)) for _, _, a, c, _ in found if a >= acked and a != first]
    assert pend == expected
    assert dropped == count and nxt == found[-1][2] + found[-1][3]
    assert pcount == sum(c for _, c, _ in expected)
    # Found again at every open, but counted once; appending goes on.
    assert reopen(root) == [[nxt, acked, dropped, _, pcount], pend]
    (first_new,) = mp(root, 'print(J(4096, 512).append(b"x", 1))', mb=4096, sb=512)
    assert first_new == nxt


def test_torn_tail_of_the_last_segment_is_cut_off_and_appends_go_to_a_new_segment(root):
    found = fill_three_segments(root)
    seg, off, first, count, n = found[-1]
    for cut in (off + 16 + n - 1, off + 7):  # kill mid-payload, kill mid-header
        shutil.copy(seg, seg.with_suffix(".bak"))
        with open(seg, "r+b") as f:
            f.truncate(cut)
        (nxt, acked, dropped, _, _), pend = reopen(root)
        assert nxt == first and dropped == 0
        assert pend[-1][0] + pend[-1][1] == first
        shutil.move(seg.with_suffix(".bak"), seg)
    with open(seg, "r+b") as f:
        f.truncate(off + 20)
    before = len(segments(root))
    (got,) = mp(root, 'j = J(4096, 512)\nprint(repr([j.append(payload(j.next_seq, 2), 2), everything(j)]))\n',
                mb=4096, sb=512)
    assert got[0] == first
    assert len(segments(root)) == before + 1  # the torn bytes stay behind, never mid-segment
    assert got[1][-1] == (first, 2, payload(first, 2))
    (nxt, _, dropped, _, _), pend = reopen(root)
    assert nxt == first + 2 and dropped == 0 and pend == got[1]


def test_damaged_last_entry_keeps_its_sequence_numbers_from_reuse(root):
    found = fill_three_segments(root)
    seg, off, first, count, n = found[-1]
    flip(seg, off + 12)  # the entry is complete, its payload is damaged
    (nxt, _, dropped, _, _), pend = reopen(root)
    assert nxt == first + count and dropped == count
    assert pend[-1][0] + pend[-1][1] == first


def test_missing_state_file_keeps_every_record_on_flash_pending(root):
    found = fill_three_segments(root)
    (root / "state").unlink()
    (nxt, acked, dropped, _, _), pend = reopen(root)
    assert dropped == 0 and nxt == found[-1][2] + found[-1][3]
    assert pend == [(a, c, payload(a, c)) for _, _, a, c, _ in found]
    assert acked == found[0][2]
    assert (root / "state").exists()


@pytest.mark.parametrize("garbage", [b"", b"EJS", bytes(range(200, 224)), b"EJS1" + bytes(20)])
def test_garbage_state_file_is_ignored(root, garbage):
    found = fill_three_segments(root)
    (root / "state").write_bytes(garbage)
    (nxt, acked, dropped, _, _), pend = reopen(root)
    assert dropped == 0 and nxt == found[-1][2] + found[-1][3] and acked == found[0][2]
    assert len(pend) == len(found)


def test_complete_leftover_new_state_file_is_used_when_the_state_file_is_missing(root):
    fill_three_segments(root)
    state = (root / "state").read_bytes()
    (root / "state").rename(root / "state.new")  # cut between remove and rename (FAT)
    (nxt, acked, _, _, _), pend = reopen(root)
    assert acked == 3 and pend[0][0] == 3
    assert (root / "state").read_bytes() == state and not (root / "state.new").exists()


def test_torn_leftover_new_state_file_is_ignored(root):
    fill_three_segments(root)
    mp(root, 'J(4096, 512).ack(7)\n', mb=4096, sb=512)
    good = (root / "state").read_bytes()
    (root / "state.new").write_bytes(good[:-3])  # torn copy of a newer state
    (_, acked, _, _, _), _ = reopen(root)
    assert acked == 7
    (root / "state").unlink()
    (_, acked, _, _, _), pend = reopen(root)  # only the torn copy: no state at all
    assert acked == pend[0][0] and pend[0][0] == 0


def test_empty_segment_file_is_ignored_and_removed(root):
    found = fill_three_segments(root)
    nxt = found[-1][2] + found[-1][3]
    empty = root / ("s%08x.log" % nxt)
    empty.write_bytes(b"")
    (n, acked, dropped, _, _), pend = reopen(root)
    assert n == nxt and dropped == 0
    assert pend == [(a, c, payload(a, c)) for _, _, a, c, _ in found if a >= acked]
    assert not empty.exists()


def test_segment_truncated_to_three_bytes_loses_only_its_records_counted_once(root):
    found = fill_three_segments(root)
    middle = segments(root)[1]
    with open(middle, "r+b") as f:
        f.truncate(3)
    lost = [(a, c) for s, _, a, c, _ in found if s == middle]
    (nxt, acked, dropped, _, _), pend = reopen(root)
    assert dropped == sum(c for _, c in lost)
    assert pend == [(a, c, payload(a, c)) for s, _, a, c, _ in found if s != middle and a >= acked]
    assert nxt == found[-1][2] + found[-1][3]
    assert reopen(root)[0][2] == dropped


def test_numbers_never_go_below_the_name_of_a_damaged_newest_segment(root):
    # Segments are named by their first sequence number: even with the
    # middle segments gone and the newest cut to 3 bytes, the journal knows
    # numbers up to that name were handed out, and counts the vanished ones.
    found = fill_three_segments(root)
    segs = segments(root)
    for seg in segs[1:-1]:
        seg.unlink()
    with open(segs[-1], "r+b") as f:
        f.truncate(3)
    name = int(segs[-1].name[1:9], 16)
    first_seg = [(a, c) for s, _, a, c, _ in found if s == segs[0]]
    (nxt, acked, dropped, _, _), pend = reopen(root)
    assert nxt == name
    assert dropped == name - (first_seg[-1][0] + first_seg[-1][1])
    assert pend == [(a, c, payload(a, c)) for a, c in first_seg if a >= acked]
    (first_new,) = mp(root, 'print(J(4096, 512).append(b"x", 1))', mb=4096, sb=512)
    assert first_new == name


def test_files_that_are_not_segments_are_left_alone(root):
    root.mkdir()
    for name in ("notes.txt", "s0000001.log", "sXYZ00000.log", "S00000000.log"):
        (root / name).write_bytes(b"keep")
    (state,) = mp(root, FILL % ([1, 1],), 'print(repr(info(J())))\n')
    assert state[0] == 2
    for name in ("notes.txt", "s0000001.log", "sXYZ00000.log", "S00000000.log"):
        assert (root / name).read_bytes() == b"keep"


def test_bad_arguments_are_rejected_and_nothing_is_written(root):
    out = mp(root, '''
        for args in ((1000, 512), (4096, 32)):
            try:
                Journal(ROOT, max_bytes=args[0], seg_bytes=args[1])
                print(repr('accepted'))
            except ValueError as e:
                print(repr(str(e)))
        try:
            Journal(ROOT).append(b'x', 1)
        except RuntimeError as e:
            print(repr(str(e)))
        j = J(2048, 512)
        for payload_, count in ((b'x', 0), (b'x', 70000), (bytes(497), 1)):
            try:
                j.append(payload_, count)
                print(repr('accepted'))
            except ValueError as e:
                print(repr(str(e)))
        print(repr([info(j), sorted(os.listdir(ROOT))]))
        j.append(bytes(496), 1)
        print(repr(info(j)[0]))
    ''', mb=2048, sb=512)
    assert "2 * seg_bytes" in out[0] and "seg_bytes must be" in out[1]
    assert "open()" in out[2]
    assert "count" in out[3] and "count" in out[4] and "seg_bytes 512" in out[5]
    assert out[6] == [[0, 0, 0, 0, 0], ["state"]]
    assert out[7] == 1


def test_atomic_file_reads_back_only_a_complete_write(tmp_path):
    base = str(tmp_path / "f")
    out = mp(tmp_path, f'''
        from edgefw import atomic
        P = {base!r}
        print(repr(atomic.read(P)))
        atomic.write(P, b"one")
        atomic.write(P, b"two")
        print(repr([atomic.read(P), sorted(os.listdir({str(tmp_path)!r}))]))
        os.rename(P, P + ".new")  # replace cut between remove and rename
        atomic.write(P + "x", b"")
        print(repr([atomic.read(P), atomic.read(P + "x")]))
        atomic.remove(P)
        print(repr(atomic.read(P)))
    ''')
    assert out[0] is None
    assert out[1] == [b"two", ["f"]]
    assert out[2] == [b"two", b""]
    assert out[3] is None
    # Torn, damaged, empty and oversized files are refused, never trusted.
    good = zlib.crc32(b"data").to_bytes(4, "big")
    for raw in (b"data" + good[:2], b"dbta" + good, b"", bytes(5000)):
        (tmp_path / "g").write_bytes(raw)
        assert mp(tmp_path, f'from edgefw import atomic\nprint(repr(atomic.read({str(tmp_path / "g")!r})))\n') == [None]
    (tmp_path / "g").write_bytes(b"data" + good)
    assert mp(tmp_path, f'from edgefw import atomic\nprint(repr(atomic.read({str(tmp_path / "g")!r})))\n') == [b"data"]


# -- memory and size on a board's heap ---------------------------------------

def test_a_full_64k_journal_works_with_12k_of_free_heap_and_little_allocation_per_append(root):
    (alloc, state), = mp(root, '''
        import gc
        j = J(65536, 4096)
        p = bytes(60)
        for i in range(1200):
            j.append(p, 1)
        gc.collect()
        gc.disable()
        a = gc.mem_alloc()
        for i in range(50):
            j.append(p, 1)
        alloc = (gc.mem_alloc() - a) // 50
        gc.enable()
        print(repr([alloc, info(j)]))
    ''')
    nxt, acked, dropped, used, count = state
    assert nxt == 1250 and used <= 65536 and dropped > 0 and count == nxt - dropped
    # One file object and the entry's buffers, never a segment in RAM.
    assert alloc < 512, alloc
    # A new boot with only 12 KB of heap left to the journal: recovery,
    # reading everything, acknowledging and appending all fit.
    # Recovery's code (journal_open, dropped after open()) is loaded first,
    # as it was when it lived in journal.py: the 12 KB is the journal's data.
    (free, n, after), = mp(root, '''
        import gc
        import edgefw.journal_open
        gc.collect()
        ballast = [None] * 400
        i = 0
        while gc.mem_free() > 12 * 1024 + 512:
            ballast[i] = bytearray(496)
            i += 1
        gc.collect()
        free = gc.mem_free()
        j = J(65536, 4096)
        n = 0
        for e in j.iter_pending():
            n += 1
        p = j.pending(480, 8)
        j.ack(p[-1][0] + p[-1][1])
        for i in range(100):
            j.append(bytes(60), 1)
        print(repr([free, n, info(j)]))
    ''')
    assert free <= 13 * 1024 and n == count
    assert after[0] == 1350 and after[1] == 1250 - count + 8 and after[2] >= dropped


# -- SIGKILL fault injection ---------------------------------------------------

def start_driver(root: Path, out: Path, seed: int, mb: int, sb: int, acks: bool,
                 kill_at: int = 0, torn: bool = False, appends: int = 10 ** 9) -> subprocess.Popen:
    cmd = [micropython_exe(), "-X", f"heapsize={board_heap('esp32')}", str(DRIVER), str(FIRMWARE),
           str(root), str(seed), str(mb), str(sb), "1" if acks else "0", str(kill_at),
           "1" if torn else "0", str(appends)]
    with open(out, "wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "MICROPYPATH": ".frozen"})


class History:
    """What the driver proved durable across runs, and the checks after each restart."""

    def __init__(self, root: Path, mb: int, sb: int, drops: bool):
        self.root, self.mb, self.sb, self.drops = root, mb, sb, drops
        self.known: dict[int, int] = {}  # first_seq -> count of every entry proven durable
        self.acked = 0  # highest acked pointer reported
        self.end = 0  # no sequence number below this may be handed out again
        self.dropped = 0
        self.appends = 0

    def absorb(self, text: str) -> None:
        """Driver stdout: a line is printed only after the call returned."""
        expect = None
        # A kill can cut the last line short: only whole lines count.
        for line in text.split("\n")[:-1]:
            parts = line.split()
            if not parts or parts[0] not in ("O", "A", "K"):
                assert parts in ([], ["DONE"]), text
                continue
            nums = [int(x) for x in parts[1:]]
            if parts[0] == "O":
                nxt, acked, dropped = nums
                assert nxt >= self.end and acked >= self.acked and dropped >= self.dropped, line
                self.end, self.acked, self.dropped = nxt, acked, dropped
                expect = nxt
            elif parts[0] == "A":
                first, count = nums
                assert first >= self.end, f"sequence number {first} reused (end was {self.end})"
                assert expect is None or first == expect, line
                self.known[first] = count
                self.end = expect = first + count
                self.appends += 1
            else:
                (acked,) = nums
                assert self.acked <= acked <= self.end, line
                self.acked = acked

    def check(self) -> None:
        """Restart the journal in a fresh micropython and check the invariants."""
        (state, pend), = mp(self.root, 'j = J()\nprint(repr([info(j), everything(j)]))\n',
                            mb=self.mb, sb=self.sb)
        self.verify(state, pend)

    def verify(self, state: list, pend: list) -> None:
        """Check a journal just reopened after the cut: ``state`` is its
        [next_seq, acked, dropped, used_bytes, pending_count] (``info``),
        ``pend`` its pending entries as (first, count, payload)."""
        nxt, acked, dropped, used, count = state
        # (1) every acknowledged record stays acknowledged
        assert acked >= self.acked
        assert all(first + n > acked for first, n, _ in pend)
        # (3) numbers never go back
        assert nxt >= self.end
        # pending is exact: in order, no overlap, no hole, every payload intact
        for first, n, p in pend:
            assert p == payload(first, n), f"entry {first} has a wrong payload"
        for (a, n, _), (b, _, _) in zip(pend, pend[1:]):
            assert a + n == b, f"hole or overlap between {a}+{n} and {b}"
        records = sum(first + n - max(first, acked) for first, n, _ in pend)
        assert count == records and used <= self.mb
        if pend:
            assert pend[-1][0] + pend[-1][1] == nxt
        head = pend[0][0] if pend else nxt
        if self.drops:
            # Without acks, every record below next_seq is pending or counted.
            assert dropped == nxt - acked - records and dropped >= self.dropped
        else:
            assert dropped == 0 and (head == acked if not pend else head <= acked < head + pend[0][1])
        # (2) every entry proven durable and not acknowledged is there, once
        where = {first: n for first, n, _ in pend}
        for first, n in self.known.items():
            if first >= head:
                assert where.get(first) == n, f"durable entry {first} lost"
        self.known.update(where)
        self.acked, self.end, self.dropped = acked, nxt, dropped


def flash_after_kill(root: Path) -> tuple[bool, bool]:
    """What a kill left on flash: (a segment wholly below the persisted
    pointers that open() must delete without counting, a torn newest segment)."""
    raw = (root / "state").read_bytes() if (root / "state").exists() else b""
    low = None
    if len(raw) == 28 and raw[:4] == b"EJS2" and struct.unpack(">I", raw[24:])[0] == zlib.crc32(raw[:24]):
        _, acked, floor, _, _ = struct.unpack(">4sIIII", raw[:20])
        low = max(acked, floor)
    found = entries_on_flash(root)
    segs = segments(root)
    ends = {}
    for seg, off, first, count, n in found:
        ends[seg] = (first + count, off + 16 + n)
    below = low is not None and any(ends[s][0] <= low for s in segs[:-1] if s in ends)
    torn = bool(segs) and segs[-1].stat().st_size > ends.get(segs[-1], (0, 0))[1]
    return below, torn


def test_sigkill_at_random_moments_never_loses_duplicates_or_resurrects_records(root, tmp_path):
    rng = random.Random(20261123)
    h = History(root, 65536, 4096, drops=False)
    out = tmp_path / "driver.out"
    t0 = time.monotonic()
    for i in range(40):
        proc = start_driver(root, out, seed=i, mb=65536, sb=4096, acks=True)
        if i % 4:
            # Most kills land while it appends and acks (the interpreter takes
            # ~0.1 s to start); every fourth one from the start, in recovery.
            while proc.poll() is None and not out.read_bytes().startswith(b"O "):
                time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.15))
        proc.kill()
        assert proc.wait(timeout=10) == -9
        h.absorb(out.read_text())
        h.check()
    assert h.appends > 300 and h.acked > 0, (h.appends, h.acked)
    assert time.monotonic() - t0 < 60


def run_kills(h: History, tmp_path: Path, kills: range, appends: int, acks: bool, torn_every: int):
    """Kill the driver before its k-th flash operation for each k in turn."""
    out = tmp_path / "driver.out"
    killed = below = torn = 0
    for k in kills:
        proc = start_driver(h.root, out, seed=k, mb=h.mb, sb=h.sb, acks=acks, kill_at=k,
                            torn=k % torn_every == 0, appends=appends)
        rc = proc.wait(timeout=20)
        text = out.read_text()
        assert rc == -9 or (rc == 0 and "DONE" in text), text
        killed += rc == -9
        b, t = flash_after_kill(h.root)
        below += b
        torn += t
        h.absorb(text)
        h.check()
    return killed, below, torn


def test_sigkill_at_each_flash_operation_in_turn_keeps_every_invariant(root, tmp_path):
    # Before the k-th write/rename/remove of a run, for each k (every other
    # write done by half): inside appends, ack state writes, segment deletions
    # and the recovery of the previous kill.
    h = History(root, 65536, 512, drops=False)
    killed, below, torn = run_kills(h, tmp_path, range(1, 46), appends=25, acks=True, torn_every=2)
    assert killed >= 40 and h.acked > 0
    # The delicate windows were hit: a kill between persisting an ack and
    # deleting the segments it frees, and a kill in the middle of an append.
    assert below >= 1 and torn >= 1, (below, torn)


def test_sigkill_while_the_full_journal_drops_segments_never_loses_or_doubles_the_count(root, tmp_path):
    h = History(root, 1024, 256, drops=True)
    killed, below, torn = run_kills(h, tmp_path, range(1, 36), appends=30, acks=False, torn_every=3)
    assert h.dropped > 30 and killed >= 30
    # Among them a kill between persisting the count and deleting the segment.
    assert below >= 1, below


# -- model-based ---------------------------------------------------------------

# Runs under micropython and CPython alike: executes ops, one result per op.
EXEC_SRC = '''
def execute(Journal, root, mb, sb, ops, emit):
    j = Journal(root, max_bytes=mb, seg_bytes=sb)
    j.open()
    i = 0
    for op in ops:
        i += 1
        kind = op[0]
        if kind == "a":
            r = j.append(bytes([i & 255]) * op[1], op[2])
        elif kind == "k":
            r = op[1] % (j.next_seq + 3)
            try:
                j.ack(r)
            except ValueError:
                r = -1
        elif kind == "p":
            r = j.pending(op[1], op[2])
        else:
            j = Journal(root, max_bytes=mb, seg_bytes=sb)
            j.open()
            r = None
        emit((kind, r, j.next_seq, j.acked, j.dropped, j.used_bytes, j.pending_count))
'''


class Model:
    """The journal's specification as plain lists: segments of (first, count, payload)."""

    def __init__(self, mb: int, sb: int):
        self.mb, self.sb = mb, sb
        self.segs: list[list[tuple[int, int, bytes]]] = []
        self.acked = self.floor = self.dropped = self.next = 0

    @staticmethod
    def size(seg):
        return sum(16 + len(p) for _, _, p in seg)

    def used(self):
        return sum(self.size(s) for s in self.segs)

    def low(self):
        return max(self.acked, self.floor)

    def append(self, p, count):
        need = 16 + len(p)
        target = self.segs[-1] if self.segs and self.size(self.segs[-1]) + need <= self.sb else None
        while self.used() + need > self.mb and self.segs and self.segs[0] is not target:
            seg = self.segs.pop(0)
            end = seg[-1][0] + seg[-1][1]
            self.dropped += max(0, end - self.low())
            self.floor = max(self.floor, end)
        if target is None:
            target = []
            self.segs.append(target)
        first = self.next
        target.append((first, count, p))
        self.next += count
        return first

    def entries(self):
        return [e for s in self.segs for e in s if e[0] + e[1] > self.low()]

    def ack(self, n):
        if n > self.next:
            return -1
        if n <= self.acked:
            return n
        self.acked = n  # exact, even inside an entry
        self.prune()
        return n

    def prune(self):
        """Segments wholly acknowledged go, except the newest."""
        while len(self.segs) > 1 and self.segs[0][-1][0] + self.segs[0][-1][1] <= self.low():
            self.segs.pop(0)

    def pending(self, max_bytes, max_entries):
        out, total = [], 0
        for first, count, p in self.entries():
            if out and (len(out) >= max_entries or total + len(p) > max_bytes):
                break
            out.append((first, count, p))
            total += len(p)
        return out

    def run(self, ops):
        results = []
        for i, op in enumerate(ops, 1):
            kind = op[0]
            if kind == "a":
                r = self.append(bytes([i & 255]) * op[1], op[2])
            elif kind == "k":
                r = self.ack(op[1] % (self.next + 3))
            elif kind == "p":
                r = self.pending(op[1], op[2])
            else:
                r = None
                self.prune()  # a restart deletes what an ack would have
            count = sum(f + c - max(f, self.low()) for f, c, _ in self.entries())
            results.append((kind, r, self.next, self.acked, self.dropped, self.used(), count))
        return results


OPS = st.lists(st.one_of(
    st.tuples(st.just("a"), st.integers(0, 150), st.integers(1, 4)),
    st.tuples(st.just("a"), st.integers(0, 40), st.integers(1, 2)),
    st.tuples(st.just("k"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("p"), st.integers(0, 400), st.integers(1, 6)),
    st.just(("r",)),
), max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, sb=st.sampled_from([256, 512]), factor=st.sampled_from([2, 3, 5]))
def test_journal_matches_its_list_model_under_cpython(tmp_path_factory, ops, sb, factor):
    firmware_on_path()
    from edgefw.journal import Journal

    root = tmp_path_factory.mktemp("j")
    got: list = []
    ns: dict = {}
    exec(EXEC_SRC, ns)
    ns["execute"](Journal, str(root), sb * factor, sb, ops, got.append)
    assert got == Model(sb * factor, sb).run(ops)


def test_journal_matches_its_list_model_under_micropython(tmp_path):
    rng = random.Random(7)
    cases = []
    for case in range(6):
        sb = rng.choice([256, 512])
        ops = []
        for _ in range(250):
            x = rng.random()
            if x < 0.55:
                ops.append(("a", rng.choice([rng.randint(0, 150), rng.randint(0, 30)]), rng.randint(1, 4)))
            elif x < 0.75:
                ops.append(("k", rng.randint(0, 10 ** 6)))
            elif x < 0.95:
                ops.append(("p", rng.randint(0, 400), rng.randint(1, 6)))
            else:
                ops.append(("r",))
        cases.append((str(tmp_path / f"j{case}"), sb * rng.choice([2, 3, 5]), sb, ops))
    # The cases travel as JSON on stdin: as source they would not compile in a board's heap.
    code = PRELUDE % ("", 0, 0) + EXEC_SRC + '''
import json, sys
while True:
    line = sys.stdin.readline()
    if not line:
        break
    root, mb, sb, ops = json.loads(line)
    line = None
    print(repr("case"))
    execute(Journal, root, mb, sb, ops, lambda r: print(repr(r)))
'''
    stdin = "".join(json.dumps(c) + "\n" for c in cases).encode()
    text = run(code, stdin=stdin).stdout.decode()
    out = [ast.literal_eval(line) for line in text.splitlines()]
    results: list = []
    for line in out:
        if line == "case":
            results.append([])
        else:
            results[-1].append(line)
    assert len(results) == len(cases)
    for (root, mb, sb, ops), got in zip(cases, results):
        assert got == Model(mb, sb).run(ops)


# -- version 2: refused total, exact pointer, full filesystem ---------------

def test_refused_records_are_counted_in_the_same_state_write_as_the_pointer_and_survive_restart(root):
    out = mp(root, FILL % ([2, 3, 1],), '''
        j.ack(4, refused=3)
        print(repr([j.acked, j.refused]))
        j2 = J()
        print(repr([j2.acked, j2.refused, j2.pending_count]))
    ''')
    assert out == [[4, 3], [4, 3, 2]]
    raw = (root / "state").read_bytes()
    assert raw[:4] == b"EJS2" and struct.unpack(">I", raw[20:24])[0] == 3


def test_state_of_the_version_1_firmware_is_still_read(root):
    mp(root, FILL % ([2, 2],))
    body = struct.pack(">4sIIII", b"EJS1", 2, 0, 0, 0)
    (root / "state").write_bytes(body + struct.pack(">I", zlib.crc32(body)))
    (info,) = mp(root, 'j = J()\nprint(repr(info(j) + [j.refused]))\n')
    assert info[1] == 2 and info[4] == 2 and info[5] == 0


ENOSPC = '''
from edgefw import journal
FULL = [0]  # writes left before the filesystem is full; -1: never full
_real_open = open
class _F:
    def __init__(self, f):
        self.f = f
    def write(self, b):
        if FULL[0] == 0:
            raise OSError(28)  # ENOSPC
        FULL[0] -= 1
        return self.f.write(b)
    def close(self):
        self.f.close()
    def flush(self):
        self.f.flush()
    def readinto(self, b):
        return self.f.readinto(b)
    def read(self, *a):
        return self.f.read(*a)
    def seek(self, p):
        return self.f.seek(p)
def fake_open(path, mode="r"):
    f = _real_open(path, mode)
    return f if "r" in mode else _F(f)
journal.open = fake_open
FULL[0] = -1
'''


def test_full_filesystem_drops_the_oldest_segment_by_its_counted_rule_and_the_append_succeeds(root):
    out = mp(root, ENOSPC, '''
        j = J(mb=65536, sb=256)
        for c in [1] * 12:
            j.append(payload(j.next_seq, c), c)
        segs = len([n for n in os.listdir(ROOT) if n.endswith(".log")])
        FULL[0] = 0  # the next write meets a full filesystem
        import os as _os
        _rm = _os.remove
        class O:
            listdir = staticmethod(_os.listdir)
            stat = staticmethod(_os.stat)
            mkdir = staticmethod(_os.mkdir)
            rename = staticmethod(_os.rename)
            @staticmethod
            def remove(p):
                _rm(p)
                if p.endswith(".log"):
                    FULL[0] = -1  # a segment deleted: room again
        journal.os = O
        first = j.append(payload(12, 2), 2)
        print(repr([first, j.next_seq, j.dropped, j.fs_full, j.pending_count, segs]))
        j2 = J(mb=65536, sb=256)
        print(repr(info(j2) + [everything(j2)[0][0], everything(j2)[-1][0]]))
    ''')
    (first, nxt, dropped, fs_full, pending, segs), again = out
    assert first == 12 and nxt == 14 and fs_full == 1
    assert dropped > 0 and pending == 14 - dropped  # counted, never silent
    assert again[0] == 14 and again[2] == dropped and again[4] == pending
    assert again[-2] == dropped and again[-1] == 12  # the oldest went, the new entry is there


def test_full_filesystem_with_nothing_to_drop_raises_oserror_and_changes_nothing(root):
    out = mp(root, ENOSPC, '''
        j = J(mb=65536, sb=4096)
        j.append(payload(0, 2), 2)
        before = info(j)
        FULL[0] = 0
        try:
            j.append(payload(2, 1), 1)
            print(repr("appended"))
        except OSError as e:
            print(repr(["OSError", e.args[0]]))
        print(repr([before, info(j), j.fs_full]))
        FULL[0] = -1
        j2 = J()
        print(repr([info(j2), everything(j2)]))
    ''')
    assert out[0] == ["OSError", 28]
    before, after, fs_full = out[1]
    assert fs_full == 1 and after[:3] == before[:3] and after[4] == before[4]
    assert out[2] == [[2, 0, 0, out[2][0][3], 2], [(0, 2, payload(0, 2))]]


def test_full_filesystem_when_the_state_write_itself_fails_raises_and_counts_nothing_twice(root):
    out = mp(root, ENOSPC, '''
        from edgefw import atomic
        atomic.open = fake_open
        j = J(mb=65536, sb=256)
        for c in [1] * 12:
            j.append(payload(j.next_seq, c), c)
        FULL[0] = 0  # never room again: not even for the state that drops a segment
        try:
            j.append(payload(12, 1), 1)
        except OSError as e:
            print(repr(["OSError", e.args[0], info(j)]))
        FULL[0] = -1
        j2 = J(mb=65536, sb=256)
        print(repr(info(j2)))
    ''')
    assert out[0][:2] == ["OSError", 28]
    assert out[0][2][2] == 0 and out[1][2] == 0 and out[1][4] == 12  # nothing dropped, nothing lost
