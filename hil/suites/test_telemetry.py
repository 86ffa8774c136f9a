"""Telemetry: records come at the board's sample period and each reaches the registry exactly once,
across a reset, a power cut and a lost link, over serial and over BLE.

Run it with ``pytest --rig RIGFILE hil/suites/test_telemetry.py``. Every test
reads the board's journal from its own HELLO before and after (a reset
each), and checks the window between them (``telemetry_steps``): nothing the
device numbered is missing from the registry, nothing is there twice, and a
board that never dropped a record shows sequence numbers ``0..n-1`` with no
gap in ``edge telemetry show``. Serial links are ``edge telemetry ingest`` on
the board's port; a lost serial link is that process killed (SIGKILL) and
started again. BLE links are ``edge gateway run`` with the board paired; a
lost BLE link is ``faults.ble_drop()``.
"""

from __future__ import annotations

import statistics
import time

import pytest

from hil.suites.telemetry_steps import (Background, exactly_once_window, gateway, hello_after_reset, ingest,
                                        paired, sample_period_ms, stored, wait_boot_stored, wait_stored)

pytestmark = pytest.mark.needs("console")

TICKS = 4           # sampling intervals the rate is measured over
JUMP_S = 3600       # a clock jump: the board stalled for an hour
FULL_TIMEOUT_S = 150  # until a 4 KB journal segment fills at one tick a second, and then some


def test_records_arrive_at_the_boards_sample_period_by_its_own_clock(board, agent, host, record_property):
    """Ticks (the records taken at one instant) of one boot are one period apart on the device's uptime,
    whatever the host's load: never sooner, and, taken together, not much later."""
    period = sample_period_ms(board)
    record_property("sample_period_ms", period)
    boots: list[int] = []

    def stream(before):
        boots.append(before.boot)
        link = ingest(host, board)
        deadline = time.monotonic() + (TICKS + 4) * period / 1000 + 30
        while len(_ticks(host, before.device_id, before.boot)) <= TICKS:
            if link.proc.poll() is not None or time.monotonic() >= deadline:
                pytest.fail(f"{TICKS + 1} ticks of boot {before.boot} were not stored in time")
            time.sleep(0.5)
        link.stop()

    t = exactly_once_window(host, board, record_property, stream)
    ticks = _ticks(host, t.device_id, boots[0])
    times = sorted(ticks)
    steps = [b - a for a, b in zip(times, times[1:])]
    record_property("median_interval_ms", statistics.median(steps))
    assert min(steps) >= period * 0.99, f"a tick came sooner than the period {period} ms: {steps}"
    assert statistics.median(steps) <= period * 1.25, f"ticks come slower than every {period} ms: {steps}"
    names = list(ticks.values())
    assert all(n == names[0] for n in names), f"ticks hold different sensors: {names}"


@pytest.mark.parametrize("fault", ["reset", "power_cut", "link_lost"])
def test_serial_each_record_is_stored_once_across(fault, board, agent, host, faults, record_property):
    def stream(before):
        link = ingest(host, board)
        wait_boot_stored(host, before.device_id, before.boot - 1, "records before the fault", alive=link)
        if fault == "link_lost":
            n = len(stored(host, before.device_id))
            link.kill()
            link = ingest(host, board)
            wait_stored(host, before.device_id, n + 1, "records after ingest was killed and started again",
                        alive=link)
        else:
            getattr(faults, fault)()
            wait_boot_stored(host, before.device_id, before.boot, f"records after the {fault}", alive=link)
        link.stop()

    exactly_once_window(host, board, record_property, stream)


@pytest.mark.needs("ble")
@pytest.mark.parametrize("fault", ["reset", "power_cut", "ble_drop"])
def test_ble_each_record_is_stored_once_across(fault, board, strategy, host, faults, record_property):
    def stream(before):
        paired(strategy, host, before.device_id)
        link = gateway(host)
        wait_boot_stored(host, before.device_id, before.boot - 1, "records over BLE before the fault", alive=link)
        if fault == "ble_drop":
            n = len(stored(host, before.device_id))
            connected = link.said('"connected"')
            faults.ble_drop()
            _wait_said(link, '"connected"', connected, "the gateway connected again after the drop")
            wait_stored(host, before.device_id, n + 1, "records after the link drop", alive=link)
        else:
            getattr(faults, fault)()
            wait_boot_stored(host, before.device_id, before.boot, f"records over BLE after the {fault}", alive=link)
        link.stop()

    exactly_once_window(host, board, record_property, stream)


def test_nothing_is_lost_when_the_filesystem_fills_and_is_freed_again(board, agent, host, faults, rig,
                                                                      record_property):
    """With the board's flash full, the journal's next segment finds no room: the agent says so, counts
    the samples it could not keep (none gets a sequence number) and goes on; freed again, it journals
    again. Nothing numbered is lost. A segment is 4 KB (docs/protocol.md), so the agent meets the full
    flash within about a minute at one tick a second: the test runs on the rig's first virtual board
    only (the journal is the same firmware on every board)."""
    first = next((b.name for b in rig.boards if b.kind == "virtual"), None)
    if first is None:
        pytest.skip(f"a full filesystem is a fault of virtual boards only; rig {rig.name} has none")
    if board.name != first:
        pytest.skip(f"the full-flash journal runs on the rig's first virtual board ({first}): "
                    "the same firmware on every board, and a minute per board")

    def stream(before):
        link = ingest(host, board, "--console")
        wait_boot_stored(host, before.device_id, before.boot - 1, "records before the filesystem fills", alive=link)
        # Not a byte left: a host that acknowledges keeps one free block enough for the journal's next
        # segment (the acknowledged one is then deleted), so "a few KB" would never fill it.
        free = faults.fill_fs(leave=0)
        _wait_said(link, "edge: flash full", 0, "the agent reported its full flash", timeout=FULL_TIMEOUT_S)
        n = len(stored(host, before.device_id))
        free()
        wait_stored(host, before.device_id, n + 10, "records after the filesystem was freed", alive=link)
        link.stop()

    exactly_once_window(host, board, record_property, stream)


def test_a_clock_jump_while_streaming_keeps_records_in_order_on_the_boots_epoch(board, agent, host, faults,
                                                                                record_property):
    """The boot's epoch came from the host's TIME and never moves (docs/protocol.md 2.5): records after
    the jump are stamped an hour on, in sequence order, none estimated."""
    boots: list[int] = []

    def stream(before):
        boots.append(before.boot)
        link = ingest(host, board)
        wait_boot_stored(host, before.device_id, before.boot - 1, "records before the jump", alive=link)
        faults.clock_jump(JUMP_S)
        n = len(stored(host, before.device_id))
        wait_stored(host, before.device_id, n + 10, "records after the jump", alive=link)
        link.stop()

    t = exactly_once_window(host, board, record_property, stream)
    of_boot = [r for r in _rows(host, t.device_id) if r.boot == boots[0]]
    times = [r.t_ms for r in of_boot]
    assert times == sorted(times), "records of one boot are out of order after the clock jump"
    assert not any(r.estimated for r in of_boot), "records of a boot that had the host's TIME are flagged estimated"
    steps = [b - a for a, b in zip(times, times[1:])]
    assert max(steps) >= JUMP_S * 1000, f"the jump does not show in the records' times (largest step {max(steps)} ms)"


def test_a_clock_jump_while_nobody_listens_gives_the_boot_an_estimated_epoch_before_the_next(
        board, agent, host, faults, record_property):
    """A boot that never learned the time gets its epoch estimated from the next boot's (2.5): its
    records are flagged estimated and its last lands just before the next boot began, however far
    its clock jumped; sequence order and time order agree across the two boots."""
    period = sample_period_ms(board)
    boots: list[int] = []

    def offline_then_stream(before):
        boots.append(before.boot)            # no host: this boot never hears a TIME
        time.sleep(1.5 * period / 1000)
        faults.clock_jump(JUMP_S)
        time.sleep(1.5 * period / 1000)
        nxt = hello_after_reset(board)
        boots.append(nxt.boot)
        link = ingest(host, board)
        wait_boot_stored(host, before.device_id, nxt.boot - 1, "records of the boot after", alive=link)
        link.stop()

    t = exactly_once_window(host, board, record_property, offline_then_stream)
    rows = _rows(host, t.device_id)
    silent = [r for r in rows if r.boot == boots[0]]
    heard = [r for r in rows if r.boot == boots[1]]
    assert silent and heard, f"records of boots {boots}: {len(silent)} and {len(heard)}"
    assert all(r.estimated for r in silent), "records of the boot that never heard a TIME are not flagged estimated"
    assert not any(r.estimated for r in heard)
    assert max(r.t_ms for r in silent) < min(r.t_ms for r in heard)
    times = [r.t_ms for r in rows if r.boot in boots]
    assert times == sorted(times), "time order and sequence order disagree across the two boots"


# -- reading back ---------------------------------------------------------------------

def _rows(host, device_id):
    with host.registry() as store:
        return sorted(store.query(device=device_id), key=lambda r: r.seq)


def _ticks(host, device_id, boot) -> dict[int, list[str]]:
    """Per tick (its time) of one boot, the sensor names it holds."""
    out: dict[int, list[str]] = {}
    for r in _rows(host, device_id):
        if r.boot == boot:
            out.setdefault(r.t_ms, []).append(r.name)
    return out


def _wait_said(link: Background, text: str, more_than: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while link.said(text) <= more_than:
        if link.proc.poll() is not None or time.monotonic() >= deadline:
            pytest.fail(f"{what}: edge {' '.join(link.args)} said {text!r} {link.said(text)} time(s) "
                        f"(waiting for more than {more_than}):\n{link.output[-3000:]}")
        time.sleep(0.2)
