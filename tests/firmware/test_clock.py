"""Device time (docs/protocol.md section 2.5): epochs fixed once per boot,
TIME validated before use, and a boot counter that survives whatever the
state files hold."""

from __future__ import annotations

import ast
import struct
import zlib
from pathlib import Path

import pytest

from tests.firmware.compiled import prelude
from tests.firmware.fakes import Port
from tests.mpy import firmware_on_path, run

firmware_on_path()

from edgefw import cbor  # noqa: E402
from edgefw import clock_start  # noqa: E402
from edgefw.clock import Clock  # noqa: E402

T0 = 1_763_906_430_123


def atomic_file(path: Path, data: bytes) -> None:
    """A file as atomic.write leaves it: the data and its CRC-32."""
    path.write_bytes(data + struct.pack(">I", zlib.crc32(data)))


def start(path: Path) -> Clock:
    c = Clock(Port(), str(path))
    c.start()
    return c


def test_boots_are_counted_and_persisted(tmp_path):
    assert [start(tmp_path / "clock").boot for _ in range(3)] == [0, 1, 2]


def test_the_first_time_of_a_boot_fixes_its_epoch_and_later_times_change_nothing(tmp_path):
    c = start(tmp_path / "clock")
    c._port.t = 500
    assert c.set_time(T0) is True
    assert c.epoch(0) == (T0 - 500, False)
    c._port.t = 900
    assert c.set_time(T0 + 3_600_000) is False
    assert c.epoch(0) == (T0 - 500, False)
    assert start(tmp_path / "clock").epoch(0) == (T0 - 500, False)  # persisted


@pytest.mark.parametrize("value", [0, 1577836800000 - 1, 4102444800000, 2**64 - 1, 2**200, True, 1.7e12])
def test_a_time_outside_2020_2100_raises_and_persists_nothing(tmp_path, value):
    c = start(tmp_path / "clock")
    before = (tmp_path / "clock").read_bytes()
    with pytest.raises(ValueError):
        c.set_time(value)
    assert (tmp_path / "clock").read_bytes() == before and c.epoch(0) is None


@pytest.mark.parametrize("content", [
    cbor.dumps([5, {5: 2**200}]),  # the version-1 firmware persisted a bignum epoch
    cbor.dumps([5, {5: 10**300, 4: -1, "x": 3}]),
    cbor.dumps([5, [[5, 2**64, True], [4, "x", 1], [9, T0, False]]]),  # an epoch of a boot to come
    cbor.dumps([5, 0]),
])
def test_garbage_epochs_are_discarded_and_the_boot_count_goes_on(tmp_path, content):
    atomic_file(tmp_path / "clock", content)
    c = start(tmp_path / "clock")
    assert c.boot == 6 and c.known() == []


@pytest.mark.parametrize("content", [b"", b"\xff" * 40, cbor.dumps([2**200, {}]), cbor.dumps("x"),
                                     cbor.dumps([-3, {}]), cbor.dumps([True, {}])])
def test_an_unreadable_clock_file_never_makes_the_boot_counter_go_backwards(tmp_path, content):
    for _ in range(4):
        start(tmp_path / "clock")  # boots 0..3
    atomic_file(tmp_path / "clock", content)
    assert start(tmp_path / "clock").boot == 4  # from the second copy


def test_a_torn_clock_file_is_ignored_and_the_counter_continues(tmp_path):
    for _ in range(3):
        start(tmp_path / "clock")
    (tmp_path / "clock").write_bytes(b"\x82\x05")  # no CRC: torn
    assert start(tmp_path / "clock").boot == 3


def test_a_1000_byte_bignum_time_written_by_the_old_firmware_cannot_crash_a_board_at_boot(tmp_path):
    huge = 1 << 7990
    atomic_file(tmp_path / "clock", cbor.dumps([7, {7: huge}]))
    out = run(prelude() + f"""
from edgefw.clock import Clock
class P:
    def ticks_ms(self): return 0
    def ticks_diff(self, a, b): return a - b
for _ in range(3):
    c = Clock(P(), {str(tmp_path / 'clock')!r})
    c.start()
    print(repr([c.boot, c.known()]))
""", heap="esp32").stdout.decode()
    assert [ast.literal_eval(x) for x in out.splitlines()] == [[8, []], [9, []], [10, []]]


def test_estimated_epochs_are_persisted_with_their_flag_and_never_recomputed(tmp_path):
    c = start(tmp_path / "clock")
    c = start(tmp_path / "clock")  # boot 1
    clock_start.estimate(c, 0, T0 - 10_000)
    clock_start.estimate(c, 0, T0 - 99_999)
    assert start(tmp_path / "clock").epoch(0) == (T0 - 10_000, True)


def test_epochs_kept_are_bounded(tmp_path):
    for _ in range(40):
        c = start(tmp_path / "clock")
        c.set_time(T0)
    assert len(c.known()) <= 16 and c.epoch(c.boot) is not None


def test_the_bound_keeps_the_oldest_epoch_the_one_the_journal_head_needs(tmp_path):
    c = start(tmp_path / "clock")
    c.set_time(T0)                      # boot 0: its records are the journal's head
    for k in range(1, 40):
        c = start(tmp_path / "clock")
        c.set_time(T0 + k)
    assert c.known()[0] == 0 and c.known()[-1] == 39 and len(c.known()) == 16


def test_an_estimate_for_the_head_forgets_the_epochs_before_it_and_outlives_the_bound(tmp_path):
    for k in range(20):
        c = start(tmp_path / "clock")
        if k > 2:
            c.set_time(T0 + k)          # boots 3..19 heard a host; 0..2 did not
    clock_start.estimate(c, 2, T0 - 5)  # boot 2 reaches the journal's head
    assert c.known()[0] == 2 and c.epoch(2) == (T0 - 5, True) and len(c.known()) <= 16
    c = start(tmp_path / "clock")
    c.set_time(T0 + 20)
    assert c.epoch(2) == (T0 - 5, True) and c.epoch(20) is not None


def test_an_epoch_that_could_not_be_persisted_is_not_used(tmp_path, monkeypatch):
    c = start(tmp_path / "clock")
    from edgefw import clock as clock_module

    def full(path, data):
        raise OSError(28)

    monkeypatch.setattr(clock_module.atomic, "write", full)
    with pytest.raises(OSError):
        c.set_time(T0)
    assert c.epoch(0) is None
    monkeypatch.undo()
    assert c.set_time(T0) is True and start(tmp_path / "clock").epoch(0) is not None
