"""No board crash-loops in the worst case: each board file's heap budget
leaves at least 25 % free while a full journal from an earlier boot is caught
up, the console is flooded and every sensor fails. The device runs with only
three quarters of its budget: if it streams through that, a quarter was free."""

from __future__ import annotations

import json

import pytest

from tests.firmware import worst_case
from tests.firmware.spec_host import SpecHost
from tests.device import pump
from tests.mpy import board_heap

BOARDS = ["virtual", "esp32", "esp32c3", "esp32s3", "picow"]


@pytest.mark.parametrize("board", BOARDS)
def test_the_worst_case_runs_in_three_quarters_of_each_boards_heap(tmp_path, board):
    fs = worst_case.board_folder(tmp_path, board)
    records = worst_case.prefill(fs)
    assert records > 500
    dev = worst_case.device(fs, board, heap=board_heap(board) * 3 // 4,
                            before_main=worst_case.FAIL_SENSORS)
    host = SpecHost()
    dev.start()
    try:
        dev.write(host.start())
        with worst_case.Flood(dev) as flood:
            pump(dev, host, 25, until=lambda: len(host.records) >= records // 2)
        console = bytes(dev.console).decode(errors="replace")
        assert dev.proc.poll() is None, console[-3000:]
        assert "MemoryError" not in console and "agent stopped" not in console, console[-3000:]
        # Caught up under the flood: at least half the earlier boot's records
        # arrived, in order, with their estimated epoch (time basis 1).
        seqs = sorted(host.records)
        first = seqs[0] if seqs else 0
        assert len(seqs) >= records // 2 and seqs == list(range(first, first + len(seqs))), (
            len(seqs), records)
        assert all(m[4] == 1 for m in host.messages if m[0] == 7)
        assert flood.sent > 50_000
    finally:
        dev.stop()


# The modules a running agent keeps (bench/bench_heap.py's "code .mpy"): the
# code run once at boot or rarely (journal_open, clock_start, uplink_start,
# uplink_estimate, uplink_v1, boot_build, sensors_build, agent_selftest,
# config, cbor, cbor_tree), the message builders (messages_write, loaded for
# each message sent) and the simulated sensors (sensors_sim, virtual boards
# only) are imported when needed, and dropped after or never loaded by a
# real board, and the refusal texts (why) at the first refusal, so they are
# not among them.


def test_the_agents_code_from_mpy_files_takes_at_most_57_000_bytes_of_heap():
    # A board on stock MicroPython imports the agent as .mpy files: their
    # bytecode and names live in the heap. Measured on the 64-bit Unix port:
    # 72,640 B before the cut (protocol 2), 54,304 B for the previous release,
    # 61,184 B before this cut, 53,504 B after it (this test's method;
    # bench_heap's "code .mpy": 59,936 -> 52,224); 56,000 B with OTA (the
    # five OTA types and the bstr kind in messages, the Uplink's routing to
    # the client, boot's trial path, the links' MemoryError guard).
    from tests.firmware.compiled import prelude
    from tests.mpy import run
    code = prelude() + worst_case.IMPORT_COST
    cost = int(run(code, heap=4 * 1024 * 1024).stdout.split()[-1])
    assert cost <= 57_000, cost
