"""The device's pairing core, bonds and sealed messages (docs/protocol.md 5.4-5.6),
on the real MicroPython with an ESP32's heap.

Each test drives ``edgefw.pairing`` through :class:`tests.firmware.pairing_device.Device`,
a micropython process whose folder is the board's flash; a second Device on the
same folder is a reboot. Exchanges that need CPace run against the host's
``edge_agent.pairing`` (the exchange cannot be driven without a peer that
knows the code).
"""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest

from tests.firmware.pairing_device import Device, atomic_bytes, provision, snapshot
from tests.mpy import run

VECTORS = Path(__file__).parents[1] / "vectors" / "pairing.json"


def error_of(reply: bytes | None) -> dict:
    assert reply is not None
    msg = cbor2.loads(reply)
    assert msg[0] == 31, msg
    return msg


def on_device(folder: Path, code: str) -> list[str]:
    """Run code under micropython in the board's folder; its printed lines."""
    return run(code, cwd=folder).stdout.decode().split("\n")[:-1]


@pytest.fixture
def board(tmp_path) -> Path:
    provision(tmp_path)
    return tmp_path


# -- hostile input on the control characteristic

START = {0: 16, 1: b"s" * 16, 2: b"\x09" + bytes(31), 3: "acme", 4: b"h" * 16, 9: b"\x09" + bytes(31)}
MALFORMED = {
    "not cbor": b"\xff",
    "truncated map": b"\xa5\x00\x10\x01",
    "two items": cbor2.dumps({0: 16}) + b"\x00",
    "an array": cbor2.dumps([16, 1, 2]),
    "a tag": cbor2.dumps(cbor2.CBORTag(24, {0: 16})),
    "too deep": bytes.fromhex("a20010" + "01" + "81" * 9 + "00"),
    "type twice": bytes.fromhex("a2001000 10"),
    "type as text": cbor2.dumps({0: "16"}),
    "type as true": b"\xa1\x00\xf5",
    "unknown type": cbor2.dumps({0: 99}),
    "a device's type": cbor2.dumps({0: 17, 2: bytes(32), 5: bytes(32), 6: bytes(16)}),
    "unsealed unpair": cbor2.dumps({0: 22}),
    "sid short": cbor2.dumps({**START, 1: b"s" * 15}),
    "sid long": cbor2.dumps({**START, 1: b"s" * 17}),
    "Ya as text": cbor2.dumps({**START, 2: "x" * 32}),
    "Ya short": cbor2.dumps({**START, 2: bytes(31)}),
    "account too long": cbor2.dumps({**START, 3: "a" * 65}),
    "account upper case": cbor2.dumps({**START, 3: "Acme"}),
    "account empty": cbor2.dumps({**START, 3: ""}),
    "account as bytes": cbor2.dumps({**START, 3: b"acme"}),
    "host_id missing": cbor2.dumps({k: v for k, v in START.items() if k != 4}),
    "oversized": cbor2.dumps({**START, 9: bytes(1100)}),
    "confirm without start": cbor2.dumps({0: 18, 6: bytes(16)}),
    "confirm tag short": cbor2.dumps({0: 18, 6: bytes(15)}),
    "resume bond_id as int": cbor2.dumps({0: 20, 7: 12345678, 8: bytes(16)}),
    "resume garbage": cbor2.dumps({0: 20, 7: b"\xff" * 9, 8: b"n" * 16}),
    "empty": b"",
}


def test_every_malformed_control_message_gets_bad_message_and_persists_nothing(board):
    before = snapshot(board)
    with Device(board) as dev:
        for name, payload in MALFORMED.items():
            reply, opened = dev.control(payload)
            assert error_of(reply)[1] == "bad_message", name
            assert not opened, name
        assert dev.info()["bad_messages"] == len(MALFORMED)
        assert dev.info()["attempts"] == 0
        assert "pairing_exchange" not in dev.modules()
    assert snapshot(board) == before


def test_a_resume_for_a_bond_the_device_does_not_hold_gets_unknown_bond(board):
    with Device(board) as dev:
        reply, opened = dev.control(cbor2.dumps({0: 20, 7: b"b" * 8, 8: b"n" * 16}))
        assert error_of(reply)[1] == "unknown_bond" and not opened


def test_a_device_without_identity_says_no_identity_before_counting(tmp_path):
    with Device(tmp_path) as dev:
        assert error_of(dev.control(cbor2.dumps(START))[0])[1] == "no_identity"
        assert dev.info()["attempts"] == 0
    assert snapshot(tmp_path) == {}


# -- bonds and the owner

ADD = """
from edgefw import bonds
for i in range(%d):
    bonds.add("", %r, bytes([i]) * 16, bytes([i]) * 8, bytes([i]) * 32)
a, bl, bad = bonds.load("")
print(a, [b[1][0] for b in bl], bad)
"""


def test_a_bound_device_refuses_another_account_before_any_scalar_multiplication(board):
    on_device(board, ADD % (1, "acme"))
    before = snapshot(board)
    with Device(board) as dev:
        assert dev.state(0) == 0x11
        reply, _ = dev.control(cbor2.dumps({**START, 3: "other"}))
        assert error_of(reply)[1] == "bound"
        assert "pairing_exchange" not in dev.modules() and "cpace" not in dev.modules()
        assert dev.info()["attempts"] == 0
    assert snapshot(board) == before


def test_bonds_keep_at_most_four_a_fifth_host_drops_the_oldest(board):
    assert on_device(board, ADD % (5, "acme")) == ["acme [1, 2, 3, 4] False"]


def test_a_bond_of_another_account_replaces_every_bond(board):
    on_device(board, ADD % (2, "acme"))
    assert on_device(board, ADD % (1, "bob")) == ["bob [0] False"]


@pytest.mark.parametrize("content", [
    b"garbage",                                         # no CRC
    atomic_bytes(b"\xff"),                              # CRC fine, not CBOR
    atomic_bytes(cbor2.dumps(["acme", []])),            # no bond
    atomic_bytes(cbor2.dumps(["ACME", [[b"b" * 8, b"h" * 16, b"k" * 32]]])),
    atomic_bytes(cbor2.dumps(["acme", [[b"b" * 7, b"h" * 16, b"k" * 32]]])),
    atomic_bytes(cbor2.dumps(["acme", [[b"b" * 8, b"h" * 16, b"k" * 32]] * 5])),
    atomic_bytes(cbor2.dumps(["acme", [[b"b" * 8, b"h" * 16, "k" * 32]]])),
    atomic_bytes(cbor2.dumps({"acme": 1})),
], ids=["no-crc", "not-cbor", "empty-list", "bad-account", "short-bond-id", "five-bonds",
        "key-as-text", "a-map"])
def test_a_corrupt_bonds_file_reads_as_no_bonds_and_is_reported_never_a_crash(board, content):
    (board / "state").mkdir()
    (board / "state" / "bonds").write_bytes(content)
    with Device(board) as dev:
        info = dev.info()
        assert info["paired"] == 0 and info["bad_state"] == 1
        assert dev.state(0) == 0x10
        reply, _ = dev.control(cbor2.dumps({0: 20, 7: b"b" * 8, 8: b"n" * 16}))
        assert error_of(reply)[1] == "unknown_bond"


def test_factory_reset_clears_bonds_and_the_attempt_count_but_keeps_the_identity(board):
    on_device(board, ADD % (2, "acme") + "bonds.set_attempts('', 7)\n")
    identity = {k: v for k, v in snapshot(board).items() if k.startswith("identity")}
    assert on_device(board, "from edgefw import bonds\nbonds.factory_reset('')\n"
                     "print(bonds.load(''), bonds.attempts(''))") == ["(None, [], False) 0"]
    assert snapshot(board) == identity


# -- wrong codes: the back-off

def test_the_backoff_is_0_0_2_4_8_seconds_up_to_an_hour():
    out = on_device(Path("."), "from edgefw.pairing import backoff_ms\n"
                    "print([backoff_ms(n) for n in (0, 1, 2, 3, 4, 5, 13, 14, 1000)])")
    assert out == ["[0, 0, 0, 2000, 4000, 8000, 2048000, 3600000, 3600000]"]


def test_a_running_backoff_answers_paused_with_wait_ms_and_restarts_in_full_after_a_reboot(board):
    on_device(board, "from edgefw import bonds\nbonds.set_attempts('', 5)\n")  # a wait of 8 s
    before = snapshot(board)
    with Device(board, uptime_ms=100) as dev:
        assert dev.state(100) == 0x12
        reply, _ = dev.control(cbor2.dumps(START), 3100)
        err = error_of(reply)
        assert err[1] == "paused" and err[2] == 5000
        assert "pairing_exchange" not in dev.modules() and "cpace" not in dev.modules()
        assert dev.state(8099) == 0x12 and dev.state(8100) == 0x10
    # A reboot 7 s into the wait: the count survives, the elapsed time does not.
    with Device(board, uptime_ms=0) as dev:
        err = error_of(dev.control(cbor2.dumps(START), 1000)[0])
        assert err[1] == "paused" and err[2] == 7000
        assert dev.info()["attempts"] == 5
    assert snapshot(board) == before


# -- sealed messages on the device

K_H2D, K_D2H = bytes(range(16)), bytes(range(16, 32))


def host_session():
    from edge_agent.pairing import HostSession
    return HostSession(K_H2D, K_D2H)


@pytest.fixture
def linked(tmp_path):
    with Device(tmp_path) as dev:
        assert dev.cmd(f"keys {K_H2D.hex()} {K_D2H.hex()}") == "ok"
        yield dev, host_session()


def test_sealed_messages_open_both_ways_and_the_host_is_proven_by_its_first(linked):
    dev, host = linked
    assert dev.info()["proven"] == 0
    for i in range(3):
        assert dev.open(host.seal(b"h%d" % i)) == b"h%d" % i
        assert host.open(dev.seal(b"d%d" % i)) == b"d%d" % i
    assert dev.info()["proven"] == 1


def test_a_replayed_or_reordered_message_is_dropped_counted_and_the_next_good_one_opens(linked):
    dev, host = linked
    sent = [host.seal(b"m%d" % i) for i in range(7)]
    assert dev.open(sent[0]) == b"m0"
    assert dev.open(sent[0]) is None                     # replay
    assert dev.open(sent[5]) == b"m5"
    assert dev.open(sent[3]) is None                     # counter 3 after 5
    assert dev.open(sent[5]) is None
    assert dev.open(sent[6]) == b"m6"
    assert dev.info()["bad_sealed"] == 3


def test_flipping_any_bit_of_counter_ciphertext_or_tag_or_cutting_the_message_is_rejected(linked):
    dev, host = linked
    good = host.seal(b"\x00telemetry")
    bad = [bytes(good[:i]) + bytes([good[i] ^ (1 << b)]) + good[i + 1:]
           for i in range(len(good)) for b in (0, 7)]
    bad += [good[:n] for n in (0, 3, 4, 11, len(good) - 1)]
    bad += [good + b"\x00"]
    for sealed in bad:
        assert dev.open(sealed) is None, sealed.hex()
    assert dev.info()["bad_sealed"] == len(bad)
    assert dev.open(good) == b"\x00telemetry"


def test_a_device_message_cannot_be_reflected_back_to_the_device(linked):
    dev, host = linked
    assert dev.open(dev.seal(b"hello")) is None


# -- against the shared vectors, and the heap it takes

def vector_board(folder: Path) -> dict:
    v = json.loads(VECTORS.read_text())
    provision(folder, bytes.fromhex(v["device_private_key"]), v["code"])
    return v


def seal_at_counters(dev: Device, cases: list[dict]) -> None:
    """The device seals the vector's message at counters 0, 1 and 7 (filler between)."""
    want = {c["counter"]: c for c in cases if c["direction"] == "d2h"}
    for n in range(max(want) + 1):
        sealed = dev.seal(bytes.fromhex(want[n]["message"]) if n in want else b"filler")
        if n in want:
            assert sealed.hex() == want[n]["sealed"], n
    for c in cases:
        if c["direction"] == "h2d":
            assert dev.open(bytes.fromhex(c["sealed"])).hex() == c["message"]


def test_the_device_reproduces_the_pairing_and_resume_of_the_vectors_across_a_reboot(tmp_path):
    v = vector_board(tmp_path)
    p, r = v["pairing"], v["resume"]
    m = {k: bytes.fromhex(x) for k, x in {**p["messages"], **r["messages"]}.items()}
    with Device(tmp_path, device_id=v["device_id"], randoms=[bytes.fromhex(p["randoms"]["yb"])]) as dev:
        assert dev.control(m["PAIR_START"]) == (m["PAIR_REPLY"], False)
        assert dev.control(m["PAIR_CONFIRM"]) == (m["PAIR_DONE"], True)
        seal_at_counters(dev, p["sealed"])
        assert dev.info()["paired"] == 1 and dev.info()["attempts"] == 0
    with Device(tmp_path, device_id=v["device_id"], randoms=[bytes.fromhex(r["randoms"]["Nd"])]) as dev:
        assert dev.state(0) == 0x11
        assert dev.control(m["RESUME"]) == (m["RESUME_OK"], True)
        seal_at_counters(dev, r["sealed"])


def test_one_pairing_completes_in_an_esp32_heap_and_the_idle_agent_pays_little_for_pairing(tmp_path, record_property):
    """Live heap (after gc.collect) of an idle agent with and without Pairing, and
    the largest live heap inside the exchange (measured where the random scalar
    is drawn: g computed, the CPace and HKDF code loaded)."""
    v = vector_board(tmp_path)
    base = run("import gc\nfrom edgefw import messages, atomic, identity, cbor_read\n"
               "gc.collect()\nprint(gc.mem_alloc())", cwd=tmp_path)
    without = int(base.stdout.split()[-1])
    p = v["pairing"]
    m = {k: bytes.fromhex(x) for k, x in p["messages"].items()}
    with Device(tmp_path, device_id=v["device_id"], randoms=[bytes.fromhex(p["randoms"]["yb"])]) as dev:
        idle, _ = dev.heap()
        assert dev.control(m["PAIR_START"])[0] == m["PAIR_REPLY"]
        assert "pairing_exchange" not in dev.modules() and "cpace" not in dev.modules()
        assert dev.control(m["PAIR_CONFIRM"]) == (m["PAIR_DONE"], True)
        after, peak = dev.heap()
    record_property("heap_bytes", {"imports_without_pairing": without, "idle_with_pairing": idle,
                                   "peak_in_exchange": peak, "after_pairing_with_session": after})
    print(f"\nheap: without pairing {without}, idle with Pairing {idle}, "
          f"peak inside the exchange {peak}, after pairing (session open) {after}")
    assert idle - without < 12_000
    assert peak < 0.75 * 112_640


def test_twenty_pairings_in_one_boot_complete_in_an_esp32_heap_and_leave_nothing_behind(tmp_path):
    from edge_agent.pairing import Initiator, new_host_id
    v = vector_board(tmp_path)
    levels = []
    with Device(tmp_path, device_id=v["device_id"]) as dev:
        for _ in range(20):
            host = Initiator(v["device_id"], v["code"], v["account"], new_host_id(),
                             fingerprint=bytes.fromhex(v["fingerprint"]))
            confirm = host.reply(dev.control(host.start())[0])
            bond, session = host.done(dev.control(confirm)[0])
            assert session.open(dev.seal(b"x")) == b"x"
            levels.append(dev.heap()[0])
    assert max(levels[5:]) - min(levels[5:]) < 1024, levels


def test_the_device_core_reproduces_the_vectors_under_cpython_as_on_a_raspberry_pi(tmp_path, monkeypatch):
    from tests.mpy import firmware_on_path
    firmware_on_path()
    from edgefw.pairing import Pairing  # type: ignore[import-not-found]

    v = vector_board(tmp_path)
    monkeypatch.chdir(tmp_path)
    p, r = v["pairing"], v["resume"]
    m = {k: bytes.fromhex(x) for k, x in {**p["messages"], **r["messages"]}.items()}

    class Clock:
        def uptime_ms(self) -> int:
            return 0
    randoms = [bytes.fromhex(p["randoms"]["yb"]), bytes.fromhex(r["randoms"]["Nd"])]
    dev = Pairing(str(tmp_path), v["device_id"], Clock(), lambda n: randoms.pop(0))
    assert dev.control(m["PAIR_START"], 0) == (m["PAIR_REPLY"], None)
    reply, session = dev.control(m["PAIR_CONFIRM"], 0)
    assert reply == m["PAIR_DONE"] and session is not None
    sealed = {c["counter"]: c for c in p["sealed"] if c["direction"] == "d2h"}
    assert session.seal(bytes.fromhex(sealed[0]["message"])).hex() == sealed[0]["sealed"]
    dev = Pairing(str(tmp_path), v["device_id"], Clock(), lambda n: randoms.pop(0))  # a reboot
    reply, session = dev.control(m["RESUME"], 0)
    assert reply == m["RESUME_OK"]
    for c in r["sealed"]:
        if c["direction"] == "h2d":
            assert session.open(bytes.fromhex(c["sealed"])).hex() == c["message"]


def test_a_device_out_of_memory_in_the_exchange_gives_the_attempt_back_and_says_no_memory(tmp_path, monkeypatch):
    # A fragmented heap just after boot can fail the exchange's allocations:
    # that is the device's shortage, not a guess (no PAIR_REPLY left), so the
    # attempt count stays as it was and the host is told to ask again.
    import sys
    import types

    from tests.firmware.pairing_device import CODE, DEVICE_ID, provision
    from tests.mpy import firmware_on_path

    firmware_on_path()
    provision(tmp_path)
    monkeypatch.chdir(tmp_path)
    from edge_agent import pairing as hp
    from edgefw import bonds, pairing

    class Clock:
        def uptime_ms(self):
            return 0

    def starved(*args):
        raise MemoryError("memory allocation failed, allocating 640 bytes")

    stub = types.ModuleType("edgefw.pairing_exchange")
    stub.respond = starved
    import edgefw
    # pairing.py imports the exchange for one PAIR_START and drops it after
    # (sys.modules and the package's attribute): the stub goes the same way.
    sys.modules.pop("edgefw.pairing_exchange", None)
    sys.modules["edgefw.pairing_exchange"] = stub
    edgefw.pairing_exchange = stub
    try:
        p = pairing.Pairing("", DEVICE_ID, Clock())
        start = hp.Initiator(DEVICE_ID, CODE, "home", hp.new_host_id()).start()
        reply, session = p.control(start, 0)
    finally:
        if sys.modules.get("edgefw.pairing_exchange") is stub:
            del sys.modules["edgefw.pairing_exchange"]
        if getattr(edgefw, "pairing_exchange", None) is stub:
            del edgefw.pairing_exchange
    kind, f = hp.decode_control(reply)
    assert (kind, f[1], session) == (hp.ERROR, "no_memory", None)
    assert bonds.attempts("") == 0 and p.attempts() == 0
    # With memory again, the same host pairs.
    ini = hp.Initiator(DEVICE_ID, CODE, "home", hp.new_host_id())
    reply, _ = p.control(ini.start(), 0)
    done, session = p.control(ini.reply(reply), 0)
    assert session is not None and ini.done(done)[0].account == "home"
