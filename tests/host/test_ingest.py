"""The ingest core, the registry writer and the serial link, against a scripted v2 device.

Each test wires a :class:`FakeDevice` to a host (core + writer) in memory and
checks what each side ends with: what the registry holds, what the device
thinks is acknowledged or refused, and what was counted.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cbor2
import pytest

from edge_agent.frames import encode_frame
from edge_agent.ingest import PortSession
from edge_agent.links.serial import SerialLink, check_baud
from edge_agent.messages import MAX_UINT, Batch, Time, decode_message, encode_message
from edge_agent.store import Store
from edge_agent.telemetry.ingest import IngestCore, LinkSession
from edge_agent.telemetry.writer import Job, RegistryWriter

from .fake_device import FakeDevice

NOW = 1_763_906_430.123
VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "messages.json").read_text())


class Host:
    """A host: one registry writer (threaded unless ``inline``) and one ingest core."""

    def __init__(self, path: Path, inline: bool = False, **writer_options):
        self.registry = Store(path, shared=True)
        self.writer = (RegistryWriter(store=self.registry, inline=True) if inline
                       else RegistryWriter(path, **writer_options))
        self.core = IngestCore(self.writer, self.registry, clock=lambda: NOW)

    def link(self, name: str = "/dev/ttyUSB0") -> tuple[LinkSession, list[bytes]]:
        sent: list[bytes] = []
        lock = threading.Lock()

        def send(payload: bytes) -> None:
            with lock:
                sent.append(payload)
        return self.core.link(name, send), sent

    def close(self) -> None:
        self.writer.close()
        self.registry.close()


def converse(device: FakeDevice, session: LinkSession, sent: list[bytes], host: Host | None = None,
             rounds: int = 200) -> None:
    """Carry messages both ways until both sides are quiet."""
    for _ in range(rounds):
        moved = False
        for payload in device.take():
            session.receive_message(payload)
            moved = True
        if host is not None:
            host.writer.flush(5)
        while sent:
            device.receive(sent.pop(0))
            moved = True
        if not moved:
            return


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path / "registry.db")
    yield h
    h.close()


def payload_of(frame: bytes) -> bytes:
    """The payload of one frame line."""
    return base64.b64decode(frame[4:].split(b":")[0])


def stored(path: Path, device_id: str | None = None) -> list:
    with Store(path, create=False) as s:
        return list(s.query(device=device_id))


def test_a_device_streams_every_record_once_with_its_time_and_its_kind(host, tmp_path):
    dev = FakeDevice()
    dev.sample((0, 21.5), (1, 2**53 + 1), (2, 48112), at=1000)
    dev.sample((3, True), (4, "heating"), at=1500)
    dev.sample((0, 21.75), (1, MAX_UINT), at=2500)
    session, sent = host.link()
    session.opening()
    dev.start()
    converse(dev, session, sent, host)
    rows = stored(tmp_path / "registry.db")
    assert dev.acked == 7 and not dev.rejected
    assert [r.seq for r in rows] == list(range(7))
    assert [r.value for r in rows] == [21.5, 2**53 + 1, 48112, True, "heating", 21.75, MAX_UINT]
    assert [type(r.value) for r in rows] == [float, int, int, bool, str, float, int]
    epoch = dev.epoch
    assert [r.t_ms for r in rows] == [epoch + 1000] * 3 + [epoch + 1500] * 2 + [epoch + 2500] * 2
    assert session.stats.records == 7 and session.stats.device == dev.device_id


def test_the_batch_vector_resolves_to_its_records(tmp_path):
    host = Host(tmp_path / "r.db", inline=True)
    batch = next(v for v in VECTORS if v["type"] == "BATCH" and v["fields"]["time_basis"] == 0)
    table = next(v for v in VECTORS if v["name"] == batch["table"])
    hello = next(v for v in VECTORS if v["type"] == "HELLO")
    session, sent = host.link()
    for case in (hello, table, batch):
        session.receive_message(bytes.fromhex(case["hex"]))
    rows = stored(tmp_path / "r.db")
    assert [{"seq": r.seq, "name": r.name, "unit": r.unit, "value": r.value, "t_ms": r.t_ms,
             "estimated": r.estimated} for r in rows] == sorted(batch["records"], key=lambda r: (r["t_ms"], r["seq"]))
    assert decode_message(sent[-1]).next_seq == batch["fields"]["first_seq"] + len(batch["records"])
    host.close()


def test_a_refused_batch_in_the_middle_is_kept_and_the_device_goes_on(host, tmp_path):
    dev = FakeDevice(per_batch=2)
    dev.sample((0, 1), (0, 2), at=1000)
    dev.sample((9, 3), (0, 4), at=2000)      # index 9: the table has 5 sensors
    dev.sample((0, 5), (0, 6), at=3000)
    session, sent = host.link()
    session.opening()
    dev.start()
    converse(dev, session, sent, host)
    assert dev.acked == 6 and dev.refused == 2 and not dev.rejected
    assert [r.value for r in stored(tmp_path / "registry.db")] == [1, 2, 5, 6]
    with Store(tmp_path / "registry.db", create=False) as s:
        [kept] = s.refused_batches()
    assert (kept["first_seq"], kept["end_seq"], kept["reason"]) == (2, 4, "bad_index")
    assert decode_message(kept["payload"]).first_seq == 2 and kept["source"] == "/dev/ttyUSB0"
    assert session.stats.refused == 2


@pytest.mark.parametrize("epoch,base", [(0, 0), (MAX_UINT - 5000, 0), (1_763_906_000_000, MAX_UINT // 2)])
def test_absurd_times_are_refused_at_ingest(host, tmp_path, epoch, base):
    dev = FakeDevice()
    dev.sample((1, 7), at=base)
    session, sent = host.link()
    session.opening()
    dev.start()
    dev.epoch_override = epoch
    converse(dev, session, sent, host)
    assert dev.refused == 1 and stored(tmp_path / "registry.db") == []
    with Store(tmp_path / "registry.db", create=False) as s:
        assert [r["reason"] for r in s.refused_batches()] == ["time_range"]


def test_a_host_killed_between_commit_and_ack_stores_the_batch_once(tmp_path):
    path = tmp_path / "registry.db"
    dev = FakeDevice(per_batch=3)
    for i in range(6):
        dev.sample((0, float(i)))
    first = Host(path)
    session, sent = first.link()
    session.opening()
    dev.start()
    for payload in dev.take():     # HELLO, SENSORS
        session.receive_message(payload)
    first.writer.flush(5)
    dev.receive(sent.pop(0))       # the TIME opening the link
    dev.receive(sent.pop(0))       # the TIME answering HELLO: the first batch goes out
    for payload in dev.take():
        session.receive_message(payload)
    first.writer.flush(5)
    first.close()                  # "killed": the ACK never reaches the device
    assert dev.acked == 0 and len(stored(path)) == 3
    second = Host(path)
    session2, sent2 = second.link()
    session2.opening()
    converse(dev, session2, sent2, second)
    assert dev.acked == 6
    assert [r.value for r in stored(path)] == [float(i) for i in range(6)]
    assert session2.stats.duplicates == 3 and session2.stats.conflicts == 0
    second.close()


def test_two_hosts_taking_turns_on_one_device_store_each_record_once(tmp_path):
    path = tmp_path / "registry.db"
    hosts = [Host(path), Host(path)]
    dev = FakeDevice(per_batch=4)
    dev.start()
    for turn in range(6):
        for i in range(5):
            dev.sample((2, turn * 100 + i))
        session, sent = hosts[turn % 2].link(f"port{turn % 2}")
        session.opening()
        converse(dev, session, sent, hosts[turn % 2])
    for h in hosts:
        h.close()
    assert [r.value for r in stored(path)] == [t * 100 + i for t in range(6) for i in range(5)]
    assert dev.acked == 30 and not dev.rejected


def test_a_registry_locked_by_another_process_delays_the_ack_and_loses_nothing(tmp_path):
    path = tmp_path / "registry.db"
    Store(path).close()
    locker = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        db = sqlite3.connect({str(path)!r}, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        time.sleep(1.5)
        db.execute("COMMIT")
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        host = Host(path, timeout=0.2)
        dev = FakeDevice(per_batch=4)
        for i in range(8):
            dev.sample((2, i))
        session, sent = host.link()
        session.opening()
        dev.start()
        for _ in range(3):
            for payload in dev.take():
                session.receive_message(payload)
            while sent:
                dev.receive(sent.pop(0))
        time.sleep(0.3)
        assert dev.acked == 0 and not any(type(decode_message(p)).__name__ == "Ack" for p in sent)
        locker.wait(10)
        converse(dev, session, sent, host)
        assert dev.acked == 8 and host.writer.retries > 0 and host.writer.failures == 0
        host.close()
        assert [r.value for r in stored(path)] == list(range(8))
    finally:
        locker.kill()
        locker.wait()


def test_a_registry_error_costs_the_batch_not_the_link(tmp_path, monkeypatch):
    path = tmp_path / "registry.db"
    host = Host(path, retry_for=0)
    dev = FakeDevice(per_batch=2)
    for i in range(4):
        dev.sample((2, i))
    real = Store.insert_samples
    disk_full = True

    def insert_samples(self, *args, **kwargs):
        if disk_full:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Store, "insert_samples", insert_samples)
    session, sent = host.link()
    session.opening()
    dev.start()
    converse(dev, session, sent, host)
    assert dev.acked == 0 and session.stats.failed == 1 and host.writer.failures == 1
    assert session.stats.device == dev.device_id      # the HELLO in the same group was kept
    disk_full = False
    session.opening()              # the device is asked again (a reopened link does this)
    converse(dev, session, sent, host)
    assert dev.acked == 4
    host.close()
    assert [r.value for r in stored(path)] == [0, 1, 2, 3]


def test_a_batch_ending_at_2_63_is_rejected_and_the_link_answers_the_next(host, tmp_path):
    session, sent = host.link()
    dev = FakeDevice()
    dev.start()
    for payload in dev.take():
        session.receive_message(payload)
    host.writer.flush(5)
    sent.clear()
    over = Batch(dev.device_id, MAX_UINT - 1, 1, 0, 0, dev.table_id, 1_763_906_000_000, 0, [[0, 0, 1]])
    session.receive_message(cbor2.dumps({**cbor2.loads(encode_message(over)), 2: MAX_UINT}, canonical=True))
    assert session.stats.bad == {"bad_message": 1} and sent == []
    ok = Batch(dev.device_id, MAX_UINT - 1, 1, 0, 0, dev.table_id, 1_763_906_000_000, 0, [[0, 0, 1]])
    session.receive_message(encode_message(ok))
    host.writer.flush(5)
    assert decode_message(sent[-1]).next_seq == MAX_UINT
    assert [r.seq for r in stored(tmp_path / "registry.db")] == [MAX_UINT - 1]


def test_a_link_is_bound_to_its_first_device_and_refuses_another_id(host, tmp_path):
    real, fake = FakeDevice("esp32-aaaaaaaaaaaa"), FakeDevice("esp32-bbbbbbbbbbbb")
    real.sample((0, 1.0))
    fake.sample((0, 99.0))
    session, sent = host.link()
    session.opening()
    real.start()
    converse(real, session, sent, host)
    fake.epoch = real.epoch
    fake._send_batch()
    for payload in fake.take():
        session.receive_message(payload)
    host.writer.flush(5)
    assert session.stats.bad.get("foreign") == 1 and sent == []
    assert [r.device_id for r in stored(tmp_path / "registry.db")] == [real.device_id]


def test_a_batch_in_flight_when_a_host_opens_the_link_is_asked_for_again_not_counted_bad(host, tmp_path):
    # A device streaming to a host that went away (a bench's self-test, another
    # ingest) sends its next BATCH before the new host has its HELLO: protocol
    # 2.3 answers TIME key 2 = true and stores nothing. That is the protocol
    # working, not a bad frame: users saw "bad frames: 1 (unbound)" after every
    # `edge flash` + `edge telemetry ingest`.
    dev = FakeDevice("esp32-aaaaaaaaaaaa")
    dev.sample((0, 1.0), (1, 2.0))
    dev.epoch = int(NOW * 1000) - dev.uptime_ms          # it had a host before
    dev._send_batch()
    session, sent = host.link()
    for payload in dev.take():
        session.receive_message(payload)
    assert [decode_message(p).hello for p in sent] == [True]
    converse(dev, session, sent, host)
    host.writer.flush(5)
    assert session.stats.bad == {} and session.stats.early == 1
    assert [r.seq for r in stored(tmp_path / "registry.db")] == [0, 1]
    with Store(tmp_path / "registry.db", create=False) as s:
        assert s.bad_frames() == []


def test_a_hello_never_overwrites_the_provisioned_board_and_is_refused(host, tmp_path):
    path = tmp_path / "registry.db"
    with Store(path) as s:
        s.record_identity("esp32-0123456789ab", "esp32", b"k" * 32, "00" * 8, "v", None, "op")
    dev = FakeDevice(board="picow")
    dev.sample((0, 1.0))
    session, sent = host.link()
    session.opening()
    dev.start()
    converse(dev, session, sent, host)
    assert session.bound is None and session.stats.bad.get("board_mismatch", 0) >= 1
    assert not any(isinstance(decode_message(p), Time) and not decode_message(p).hello for p in sent)
    with Store(path, create=False) as s:
        assert s.device(dev.device_id)["board"] == "esp32"
        assert s.count() == 0


def test_a_retransmission_with_other_content_is_a_conflict_not_a_duplicate(host, tmp_path):
    path = tmp_path / "registry.db"
    dev = FakeDevice()
    dev.sample((0, 21.5))
    session, sent = host.link()
    session.opening()
    dev.start()
    converse(dev, session, sent, host)
    forged = Batch(dev.device_id, 0, 1, 0, 0, dev.table_id, dev.epoch, 1000, [[0, 0, 99.0]])
    same = Batch(dev.device_id, 0, 1, 0, 0, dev.table_id, dev.epoch, 1000, [[0, 0, 21.5]])
    session.receive_message(encode_message(same))
    session.receive_message(encode_message(forged))
    host.writer.flush(5)
    assert session.stats.duplicates == 1 and session.stats.conflicts == 1
    with Store(path, create=False) as s:
        [conflict] = s.conflicts()
        assert [r.value for r in s.query()] == [21.5]
    assert json.loads(conflict["stored"])[3] == 21.5 and json.loads(conflict["offered"])[3] == 99.0


def test_an_unknown_table_is_asked_for_again_not_refused(host, tmp_path):
    dev = FakeDevice()
    dev.sample((0, 1.0))
    session, sent = host.link()
    session.opening()
    dev.start()
    hello, _sensors = dev.take()                 # the SENSORS is lost on the way
    session.receive_message(hello)
    host.writer.flush(5)
    while sent:
        dev.receive(sent.pop(0))
    out = dev.take()
    dev.outbox = [p for p in out if type(decode_message(p)).__name__ != "Sensors"]
    for payload in dev.take():
        session.receive_message(payload)
    host.writer.flush(5)
    assert session.stats.bad.get("unknown_table") == 1 and dev.refused == 0
    assert decode_message(sent[-1]) == Time(int(NOW * 1000), hello=True)
    converse(dev, session, sent, host)
    assert dev.acked == 1 and dev.refused == 0


def test_a_version_1_device_is_told_to_flash_and_gets_no_time(host, caplog):
    session, sent = host.link()
    hello = cbor2.dumps({0: 1, 1: "esp32-1", 2: "esp32", 3: "0.1.0", 4: 1, 5: 0, 6: 0, 7: 0, 8: 0})
    session.receive_message(hello)
    session.receive_message(hello)
    assert sent == [] and session.stats.bad == {"old_protocol": 2}
    assert sum("edge flash" in r.getMessage() for r in caplog.records) == 1


def test_the_writer_commits_batches_of_many_links_together(tmp_path):
    path = tmp_path / "registry.db"
    writer = RegistryWriter(path)
    gate = threading.Event()
    writer.submit(Job(lambda s: gate.wait(5), what="hold"))     # the next jobs queue up meanwhile
    done: list[int] = []
    for i in range(50):
        writer.submit(Job(lambda s, i=i: s.note_bad_frame(f"port{i}", "bad_crc", b"x"),
                          lambda r, e, i=i: done.append(i), records=1))
    commits_before = writer.commits
    gate.set()
    writer.flush(5)
    assert sorted(done) == list(range(50)) and writer.commits - commits_before <= 3
    writer.close()


def test_a_group_meeting_stored_records_is_stored_job_by_job_with_exact_counts(tmp_path):
    """Batches of a group go in together unless one was stored before: then each goes alone."""
    from .test_store import seqs

    path = tmp_path / "registry.db"
    writer = RegistryWriter(path)
    writer.submit(Job(lambda s: s.add_batch("dev-1", seqs(0, 10), NOW)))
    writer.flush(5)
    for jobs in ([("dev-1", 10, 10), ("dev-2", 0, 10)],                      # all new: staged together
                 [("dev-1", 20, 10), ("dev-1", 15, 20), ("dev-2", 10, 5)]):   # 15..34 meets 15..29
        gate = threading.Event()
        writer.submit(Job(lambda s: gate.wait(5), what="hold"))
        results: list = []
        for device, first, n in jobs:
            writer.submit(Job(lambda s, d=device, f=first, n=n: s.add_batch(d, seqs(f, n), NOW),
                              lambda r, e: results.append((r, e)), records=n))
        gate.set()
        writer.flush(5)
        assert [r for r, _ in results] == ([10, 10] if len(jobs) == 2 else [10, 5, 5])
        assert all(e is None for _, e in results)
    writer.close()
    with Store(path, create=False) as s:
        assert s.count("dev-1") == 35 and s.count("dev-2") == 15 and s.conflicts() == []
        assert s.next_missing("dev-1") == 35


def test_a_completion_runs_only_after_the_commit_is_visible_to_others(tmp_path):
    path = tmp_path / "registry.db"
    writer = RegistryWriter(path)
    seen: list[int] = []

    def check(result, error):
        with sqlite3.connect(path) as other:
            seen.append(other.execute("SELECT count(*) FROM ingest_errors").fetchone()[0])
    writer.submit(Job(lambda s: s.note_bad_frame("p", "bad_crc", b"x"), check))
    writer.close()
    assert seen == [1]


def test_a_job_that_raises_fails_alone_and_the_writer_goes_on(tmp_path):
    writer = RegistryWriter(tmp_path / "registry.db")
    results: list = []
    writer.submit(Job(lambda s: 1 / 0, lambda r, e: results.append(type(e).__name__)))
    writer.submit(Job(lambda s: 7, lambda r, e: results.append(r)))
    writer.close()
    assert results == ["ZeroDivisionError", 7] and writer.failures == 1


def test_console_text_with_markup_reaches_the_console_callback_as_bytes(tmp_path):
    host = Host(tmp_path / "r.db", inline=True)
    lines: list[bytes] = []
    link = SerialLink("/dev/pts/9", host.core, on_console=lambda port, text: lines.append(text),
                      write=lambda b: None)
    link.feed(b"boom [/] [link=file:///etc/passwd]x[/link]\r\n")
    assert lines == [b"boom [/] [link=file:///etc/passwd]x[/link]"]
    host.close()


def test_a_console_callback_that_raises_costs_that_line_only(tmp_path):
    host = Host(tmp_path / "r.db", inline=True)
    out: list[bytes] = []

    def explode(port, text):
        raise RuntimeError("terminal gone")
    link = SerialLink("/dev/pts/9", host.core, on_console=explode, write=out.append)
    dev = FakeDevice()
    dev.start()
    link.feed(b"hello\r\n" + b"".join(encode_frame(p) for p in dev.take()))
    assert link.stats.bad.get("internal_error") == 1 and link.stats.device == dev.device_id
    assert out and isinstance(decode_message(payload_of(out[-1])), Time)
    host.close()


@pytest.mark.parametrize("baud", [-1, 0, 10**9])
def test_an_impossible_baud_rate_is_refused_up_front(baud):
    with pytest.raises(ValueError, match="not a baud rate"):
        check_baud(baud)


def test_port_session_wires_link_core_and_writer_for_one_console(tmp_path):
    with Store(tmp_path / "r.db") as store:
        session = PortSession("/dev/pts/3", store, clock=lambda: NOW)
        assert decode_message(payload_of(session.start())).hello
        dev = FakeDevice()
        dev.sample((0, 20.0))
        dev.start()
        dev.receive(encode_message(Time(int(NOW * 1000))))
        replies = session.receive(b"".join(encode_frame(p) for p in dev.take()))
        assert [type(decode_message(payload_of(r))).__name__ for r in replies] == ["Time", "Ack"]
        assert store.count() == 1


def test_a_second_hello_with_another_id_does_not_rebind_the_link(host, tmp_path):
    real, fake = FakeDevice("esp32-aaaaaaaaaaaa"), FakeDevice("esp32-bbbbbbbbbbbb")
    session, sent = host.link()
    real.start()
    converse(real, session, sent, host)
    fake.start()
    for payload in fake.take():
        session.receive_message(payload)
    host.writer.flush(5)
    assert session.bound == real.device_id and sent == []
    assert session.stats.bad == {"foreign": 2}          # its HELLO and its SENSORS
    with Store(tmp_path / "registry.db", create=False) as s:
        assert s.device(fake.device_id) is None
