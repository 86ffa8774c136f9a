"""The uplink as a sans-I/O core (docs/protocol.md section 2), in-process
under CPython: a fake tick source, a real journal and clock in a temporary
folder, payloads fed in and polled out as a host would see them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware.fakes import Port, Sensor
from tests.mpy import firmware_on_path

firmware_on_path()

from edgefw import cbor, messages  # noqa: E402
from edgefw.clock import Clock  # noqa: E402
from edgefw.journal import Journal  # noqa: E402
from edgefw.ticks import TickWriter  # noqa: E402
from edgefw.uplink import Uplink  # noqa: E402

DEV = "esp32-3f9a0c12b7d4"
T0 = 1_763_906_430_123  # 2025-11-23


def sensors() -> list:
    return [Sensor("temp", "Cel", 21.5), Sensor("humidity", "%RH", 40.125), Sensor("rssi", "dBm", -61),
            Sensor("door", "", True), Sensor("uptime", "s", 1234)]


class Device:
    """One board: clock, journal, tick writer and one uplink per link."""

    def __init__(self, root: Path, links: int = 1, table: list | None = None,
                 journal_bytes: int = 65536) -> None:
        self.root = root
        self.journal_bytes = journal_bytes
        self.sensors = table or sensors()
        self.boot(links)

    def boot(self, links: int = 1) -> None:
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        self.port = Port()
        self.clock = Clock(self.port, str(self.root / "state" / "clock"))
        self.clock.start()
        self.journal = Journal(str(self.root / "journal"), max_bytes=self.journal_bytes,
                               seg_bytes=min(4096, self.journal_bytes // 4))
        self.journal.open()
        self.ticks = TickWriter(self.journal, self.sensors)
        self.links = [Uplink(DEV, "esp32", "0.2.0", self.clock, self.journal, self.ticks.table)
                      for _ in range(links)]
        self.link = self.links[0]

    def sample(self, n: int, every_ms: int = 1000) -> None:
        for _ in range(n):
            self.port.t += every_ms
            self.ticks.append(self.clock.boot, self.clock.uptime_ms())

    def feed(self, payload: bytes, link: int = 0) -> None:
        self.links[link].receive(payload, self.port.t)

    def drain(self, link: int = 0) -> list[tuple[int, dict]]:
        """Every message the link wants to send now, decoded."""
        out = []
        for _ in range(50):
            payload, _wait = self.links[link].poll(self.port.t)
            if payload is None:
                return out
            out.append(messages.decode(bytes(payload)))
            if out[-1][0] == messages.T_BATCH:
                return out
        raise AssertionError("the link never stops sending")

    def batch_payload(self, link: int = 0) -> bytes:
        """The next BATCH payload as sent, after whatever comes before it."""
        for _ in range(50):
            payload, _wait = self.links[link].poll(self.port.t)
            if payload is not None and messages.decode(bytes(payload))[0] == messages.T_BATCH:
                return bytes(payload)
        raise AssertionError("no BATCH")

    def deliver_all(self, link: int = 0) -> list[dict]:
        """Every batch the link sends, each acknowledged by its host."""
        out = []
        for _ in range(100):
            b = self.batch(link)
            if b is None:
                return out
            out.append(b)
            self.feed(ack(end(b)), link)
        raise AssertionError("batches never end")

    def batch(self, link: int = 0) -> dict | None:
        got = [f for t, f in self.drain(link) if t == messages.T_BATCH]
        return got[-1] if got else None


def time_msg(unix_ms: int, hello: bool = False) -> bytes:
    return messages.encode(messages.T_TIME, {1: unix_ms, 2: True} if hello else {1: unix_ms})


def ack(n: int, dev: str = DEV) -> bytes:
    return messages.encode(messages.T_ACK, {1: dev, 2: n})


def refuse(a: int, end: int, reason: str = "time_range") -> bytes:
    return messages.encode(messages.T_REFUSE, {1: DEV, 2: a, 3: end, 4: reason})


def records(batch: dict) -> list[tuple[int, int, object, int]]:
    """(seq, sensor index, value, time ms) of every record, as a host reads them."""
    out, seq = [], batch[2]
    for tick in batch[9]:
        for i in range(1, len(tick), 2):
            out.append((seq, tick[i], tick[i + 1], batch[7] + batch[8] + tick[0]))
            seq += 1
    return out


def end(batch: dict) -> int:
    return batch[2] + sum(len(t) // 2 for t in batch[9])


@pytest.fixture
def dev(tmp_path):
    return Device(tmp_path / "board")


# -- the exchange ------------------------------------------------------------

def test_hello_sensors_and_status_come_first_and_no_record_leaves_before_a_time(dev):
    dev.link.report(dev.link.status("ok", "self-test passed"))
    dev.sample(3)
    kinds = [t for t, _ in dev.drain()]
    assert kinds == [messages.T_HELLO, messages.T_SENSORS, messages.T_STATUS]
    dev.feed(time_msg(T0))
    b = dev.batch()
    assert [r[2] for r in records(b)][:5] == [21.5, 40.125, -61, True, 1234]
    assert b[6] == messages.table_id(dev.ticks.table) and b[4] == 0


def test_hello_carries_protocol_2_and_the_refused_total(dev):
    (t, hello), *_ = dev.drain()
    assert t == messages.T_HELLO and hello[9] == 2 and hello[10] == 0


def test_a_batch_time_is_epoch_plus_uptime_of_its_tick(dev):
    dev.sample(2, every_ms=5000)  # ticks at uptime 5000 and 10000
    dev.port.t += 100
    dev.feed(time_msg(T0))  # at uptime 10100: epoch = T0 - 10100
    times = sorted({r[3] for r in records(dev.batch())})
    assert times == [T0 - 5100, T0 - 100]


# -- bug 3: times never move -------------------------------------------------

def test_a_wrong_time_later_in_the_boot_moves_nothing(dev):
    dev.sample(2)
    dev.feed(time_msg(T0))
    first = records(dev.batch())
    dev.feed(time_msg(T0 + 3_600_000, hello=True))  # an hour off, and "announce yourself"
    again = dev.batch()
    assert records(again) == first


def test_two_hosts_an_hour_apart_see_the_same_record_times(tmp_path):
    d = Device(tmp_path / "board", links=2)
    d.sample(4)
    d.feed(time_msg(T0, hello=True), link=0)
    d.feed(time_msg(T0 + 3_600_000, hello=True), link=1)
    assert records(d.batch(0)) == records(d.batch(1))


def test_a_time_received_after_a_reboot_never_changes_an_earlier_boot(dev):
    dev.sample(2)
    dev.feed(time_msg(T0))
    before = records(dev.batch())
    dev.boot()
    dev.feed(time_msg(T0 + 7_200_000))
    assert records(dev.batch()) == before


def test_an_earlier_boot_that_never_learned_the_time_ends_just_before_the_next_boot(dev):
    dev.sample(3, every_ms=1000)  # boot 0: uptimes 1000..3000, never a TIME
    dev.boot()
    dev.sample(2, every_ms=1000)  # boot 1: uptimes 1000, 2000
    dev.port.t += 500
    dev.feed(time_msg(T0))  # boot 1 epoch = T0 - 2500
    b0 = dev.batch()
    assert b0[3] == 0 and b0[4] == 1  # estimated
    dev.feed(ack(end(b0)))
    b1 = dev.batch()
    assert b1[3] == 1 and b1[4] == 0
    last_of_0 = records(b0)[-1][3]
    first_of_1 = records(b1)[0][3]
    assert last_of_0 < first_of_1
    assert last_of_0 == T0 - 2500 - 1  # 1 ms before boot 1 started
    # The estimate is persisted with its flag: a reboot sends the same times.
    dev.boot()
    dev.feed(time_msg(T0 + 99_000))
    assert records(dev.batch())[0] == records(b1)[0]


# -- bug 4: ACK semantics ----------------------------------------------------

def test_an_ack_inside_a_tick_is_exact_and_the_next_batch_starts_mid_tick(dev):
    dev.sample(3)
    dev.feed(time_msg(T0))
    b = dev.batch()
    all_records = records(b)
    dev.feed(ack(b[2] + 7))  # inside the second tick (5 records a tick)
    assert dev.journal.acked == 7
    nxt = dev.batch()
    assert nxt[2] == 7 and records(nxt) == all_records[7:]
    assert len(nxt[9][0]) == 1 + 2 * 3  # the rest of the second tick


def test_an_ack_above_what_was_sent_is_rejected_and_changes_nothing(dev):
    dev.sample(3)
    dev.feed(time_msg(T0))
    b = dev.batch()
    dev.sample(3)  # written, never sent
    with pytest.raises(ValueError, match="above"):
        dev.feed(ack(end(b) + 1))
    assert dev.journal.acked == 0


def test_an_ack_or_time_built_from_true_or_floats_is_not_applied(dev):
    dev.sample(3)
    dev.feed(time_msg(T0))
    dev.batch()
    for bad in ("a3000401" + "72" + DEV.encode().hex() + "02f5",  # next = true
                "a3000401" + "72" + DEV.encode().hex() + "02f94400",  # next = 4.0
                "a300f9440001" + "72" + DEV.encode().hex() + "0203"):  # type 4.0
        with pytest.raises(ValueError):
            dev.feed(bytes.fromhex(bad))
    assert dev.journal.acked == 0


def test_an_ack_for_another_device_is_rejected(dev):
    dev.sample(1)
    dev.feed(time_msg(T0))
    dev.batch()
    with pytest.raises(ValueError, match="another|this is"):
        dev.feed(ack(5, dev="esp32-000000000000"))
    assert dev.journal.acked == 0


def test_a_host_killed_between_commit_and_ack_gets_the_same_batch_again_same_bytes(dev):
    dev.sample(4)
    dev.feed(time_msg(T0, hello=True))
    first = dev.batch_payload()
    # The host stored it and died before its ACK; a new host opens the link.
    dev.port.t += 100
    dev.feed(time_msg(T0 + 50, hello=True))
    assert dev.batch_payload() == first


def test_a_batch_is_sent_again_after_the_retry_time_without_an_ack(dev):
    dev.sample(2)
    dev.feed(time_msg(T0))
    first = dev.batch()
    assert dev.link.poll(dev.port.t)[0] is None
    dev.port.t += 2000
    assert dev.batch() == first


# -- bug 5: REFUSE -----------------------------------------------------------

def test_refuse_in_the_middle_moves_on_counts_and_reports_with_the_reason(dev):
    dev.sample(30)
    dev.feed(time_msg(T0))
    b1 = dev.batch()
    dev.feed(ack(end(b1)))
    dev.sample(120)  # more than one batch holds
    b2 = dev.batch()
    dev.feed(refuse(b2[2], end(b2), "bad_value"))
    assert dev.journal.acked == end(b2) and dev.journal.refused == end(b2) - b2[2]
    out = dev.drain()
    status = [f for t, f in out if t == messages.T_STATUS]
    assert status and status[0][2] == "error" and "bad_value" in status[0][3]
    assert status[0][5]["refused"] == end(b2) - b2[2]
    b3 = [f for t, f in out if t == messages.T_BATCH][0]
    assert b3[2] == end(b2)
    # The total is persisted with the pointer and announced in HELLO key 10.
    dev.boot()
    hello = dev.drain()[0][1]
    assert hello[10] == end(b2) - b2[2] and hello[7] == end(b2)


def test_refuse_outside_what_is_in_flight_is_rejected(dev):
    dev.sample(2)
    dev.feed(time_msg(T0))
    b = dev.batch()
    with pytest.raises(ValueError):
        dev.feed(refuse(b[2], end(b) + 1))
    assert dev.journal.refused == 0 and dev.journal.acked == 0


# -- two hosts, one journal ---------------------------------------------------

def test_two_hosts_taking_turns_acknowledge_one_journal(tmp_path):
    d = Device(tmp_path / "board", links=2)
    d.sample(6)
    d.feed(time_msg(T0, hello=True), link=0)
    b0 = d.batch(0)
    d.feed(ack(end(b0)), link=0)
    d.sample(6)
    d.feed(time_msg(T0 + 10, hello=True), link=1)
    b1 = d.batch(1)
    assert b1[2] == end(b0)  # link 1 starts where link 0's ACK left the journal
    d.feed(ack(end(b1)), link=1)
    d.sample(2)
    d.port.t += 30_000
    b2 = d.batch(0)
    assert b2[2] == end(b1)


# -- bug 2: TIME that could brick a board -------------------------------------

@pytest.mark.parametrize("value", [0, 2**64 - 1, 2**200, 10**1000])
def test_a_time_outside_2020_2100_is_rejected_and_nothing_is_persisted(dev, value):
    state = (dev.root / "state" / "clock").read_bytes()
    raw = b"\xa2\x00\x02\x01" + (cbor.dumps(value) if value < 2**64 else b"\xc2" + cbor.dumps(
        value.to_bytes((value.bit_length() + 7) // 8, "big")))
    with pytest.raises(ValueError):
        dev.feed(raw)
    assert (dev.root / "state" / "clock").read_bytes() == state
    assert dev.clock.epoch(dev.clock.boot) is None


# -- bug 8: wire format -------------------------------------------------------

def test_batches_stay_within_1024_bytes_256_records_and_128_ticks(tmp_path):
    one = [Sensor("temp", "Cel", 21.5)]
    d = Device(tmp_path / "one", table=one)
    d.sample(300, every_ms=1)  # small ticks: the tick limit comes first
    d.feed(time_msg(T0))
    b = d.batch()
    assert len(b[9]) == 128
    many = [Sensor(f"s{i}", "", i % 2 == 0) for i in range(64)]  # 2 bytes a record
    d = Device(tmp_path / "many", table=many)
    d.sample(40)
    d.feed(time_msg(T0))
    payload = d.batch_payload()
    b = messages.decode(bytes(payload))[1]
    assert len(payload) <= 1024 and sum(len(t) // 2 for t in b[9]) == 256
    big = [Sensor(f"s{i}", "V", 3.3 + i / 3) for i in range(20)]  # 10 bytes a record
    d = Device(tmp_path / "big", table=big)
    d.sample(40)
    d.feed(time_msg(T0))
    payload = d.batch_payload()
    assert 1000 < len(payload) <= 1024


def test_sensors_table_id_is_the_crc_of_the_table_as_sent(dev):
    out = dev.drain()
    sensors_msg = [f for t, f in out if t == messages.T_SENSORS][0]
    assert sensors_msg[3] == [[s.name, s.unit] for s in dev.sensors]
    assert sensors_msg[2] == messages.table_id(dev.ticks.table)


def test_entries_of_the_version_1_firmware_are_sent_with_names_mapped_to_indexes(dev):
    # [boot, uptime, name, value, ...] as the version-1 firmware wrote them.
    dev.journal.append(cbor.dumps([0, 500, "temp", 20.5, "gone", 1, "rssi", -70]), 3)
    dev.journal.append(cbor.dumps([0, 900, "gone", 2]), 1)
    dev.journal.append(cbor.dumps([0, 1000, "door", False]), 1)
    dev.port.t += 1000
    dev.feed(time_msg(T0))
    got = [r for b in dev.deliver_all() for r in records(b)]
    assert [(s, k, v) for s, k, v, _ in got] == [(0, 0, 20.5), (2, 2, -70), (4, 3, False)]
    assert dev.journal.dropped == 2  # the two records named "gone", counted


def test_a_changed_table_after_reflashing_keeps_the_old_table_for_the_old_boot(tmp_path):
    d = Device(tmp_path / "board")
    d.sample(2)
    d.feed(time_msg(T0))
    old_id = messages.table_id(d.ticks.table)
    d.sensors = [Sensor("pressure", "Pa", 101325)] + d.sensors
    d.boot()
    d.sample(1)
    out = d.drain()
    tables = {f[2]: f[3] for t, f in out if t == messages.T_SENSORS}
    assert old_id in tables and messages.table_id(d.ticks.table) in tables
    d.feed(time_msg(T0 + 60_000))
    b = d.batch()
    assert b[3] == 0 and b[6] == old_id


def test_a_sensor_that_raises_or_gives_a_wrong_kind_is_counted_not_written(dev):
    dev.sensors[0].values = [OSError("i2c")]
    dev.sensors[1].values = [float("nan")]
    dev.sample(1)
    assert dev.ticks.sensor_errors == 2 and dev.journal.next_seq == 3


def test_a_tick_with_no_reading_appends_nothing(dev):
    for s in dev.sensors:
        s.values = [None]
    dev.port.t += 1000
    assert dev.ticks.append(dev.clock.boot, dev.clock.uptime_ms()) == 0
    assert dev.journal.next_seq == 0


def test_entries_of_the_version_1_firmware_from_before_the_upgrade_are_named_by_the_current_table(tmp_path):
    d = Device(tmp_path / "board")
    d.journal.append(cbor.dumps([0, 500, "temp", 20.5, "rssi", -70]), 2)  # written by version 1, boot 0
    (tmp_path / "board" / "journal" / "tables").unlink()  # version 1 kept no tables
    d.boot()  # the upgrade: boot 1 runs version 2
    d.port.t += 1000
    d.feed(time_msg(T0))
    b = d.batch()
    assert b[3] == 0 and b[4] == 1 and b[6] == messages.table_id(d.ticks.table)
    assert [(s, k, v) for s, k, v, _ in records(b)] == [(0, 0, 20.5), (1, 2, -70)]
    assert d.journal.dropped == 0


def test_readings_outside_the_value_kinds_of_a_batch_are_counted_never_sent(dev):
    # Section 2.7: integers of magnitude below 2**63, finite floats, bools,
    # text of at most 64 characters without control characters.
    kinds = [2**63 - 1, -(2**63) + 1, "heating", True, 2**63, -(2**63), float("inf"), "x" * 65, "a\nb",
             b"raw", [1]]
    d = Device(dev.root.parent / "kinds", table=[Sensor(f"s{i}", "", v) for i, v in enumerate(kinds)])
    d.sample(1)
    d.feed(time_msg(T0))
    b = d.batch()
    assert [(k, v) for _, k, v, _ in records(b)] == [(0, 2**63 - 1), (1, -(2**63) + 1), (2, "heating"),
                                                     (3, True)]
    assert d.ticks.sensor_errors == len(kinds) - 4


def test_a_boot_counter_lost_with_both_clock_files_restarts_above_the_newest_boot_in_the_journal(dev):
    for _ in range(3):
        dev.boot()
        dev.sample(2)  # boots 1..3 write records, no host
    state = dev.root / "state"
    (state / "clock").write_bytes(b"garbage")
    (state / "clock.boot").write_bytes(b"garbage")
    dev.boot()
    assert dev.clock.boot == 4
    dev.sample(1)
    dev.port.t += 10
    dev.feed(time_msg(T0))
    assert [b[3] for b in dev.deliver_all()] == [1, 2, 3, 4]  # every boot's records go, in order


# -- many boots before a host comes: every boot's records still go ------------

def unheard_boots(d: Device, n: int) -> None:
    """n boots (the first is d's own) that sample 2 records each and never hear a host."""
    for k in range(n):
        if k:
            d.boot()
        d.sample(2, every_ms=1000 + k)


def delivered(d: Device, time_ms: int) -> list[tuple[int, int, object, int]]:
    """Every record the board sends to a host that comes now, in order."""
    d.port.t += 10
    d.feed(time_msg(time_ms))
    return [r for b in d.deliver_all() for r in records(b)]


def test_a_board_reset_more_times_than_it_keeps_epochs_before_a_host_comes_sends_every_boot(dev):
    unheard_boots(dev, 21)
    dev.boot()                         # boot 21: the host comes
    dev.sample(1)
    got = delivered(dev, T0)
    assert [r[0] for r in got] == list(range(21 * 10 + 5))   # each record once, in order
    times = [r[3] for r in got]
    assert times == sorted(times)
    # Boot 20 ends 1 ms before boot 21 starts; each earlier boot 1 ms before the next.
    assert times[-6] == T0 - 1000 - 10 - 1


def test_times_of_those_boots_are_the_same_when_the_board_resets_halfway_through_sending(tmp_path):
    whole = Device(tmp_path / "whole")
    unheard_boots(whole, 21)
    whole.boot()
    expected = delivered(whole, T0)

    halfway = Device(tmp_path / "halfway")
    unheard_boots(halfway, 21)
    halfway.boot()
    halfway.port.t += 10
    halfway.feed(time_msg(T0))
    got = []
    for _ in range(9):                 # a few boots' batches acknowledged, then a reset
        b = halfway.batch()
        got += records(b)
        halfway.feed(ack(end(b)))
    halfway.boot()
    got += delivered(halfway, T0 + 3_600_000)   # another host, an hour off: no time moves
    assert got == expected


def test_a_boot_that_needs_an_estimate_after_many_boots_that_heard_a_host_still_gets_one(dev):
    for k in range(17):                # 17 boots hear a TIME and send, but nothing is acknowledged
        if k:
            dev.boot()
        dev.sample(2)
        dev.port.t += 10
        dev.feed(time_msg(T0 + k * 60_000))
        assert dev.batch() is not None
    dev.boot()
    dev.sample(2)                      # boot 17: no host
    dev.boot()                         # boot 18: a host acknowledges everything
    dev.sample(1)
    got = delivered(dev, T0 + 3_600_000)
    assert [r[0] for r in got] == list(range(18 * 10 + 5))
    assert got[0][3] == T0 - 10 - 1000        # boot 0's records keep the time its host gave
    times = [r[3] for r in got]
    assert times == sorted(times)
