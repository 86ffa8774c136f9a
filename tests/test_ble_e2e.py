"""The BLE link end to end on the bench's virtual air: real bleak and Bumble
on the host, the firmware under MicroPython on three virtual boards.

- one board's journal goes to the registry over serial, over BLE, over both
  at once and over serial again, and every record is stored exactly once;
- the gateway killed (SIGKILL) at random moments and the board power-cut
  mid-stream lose nothing;
- the link dropped mid-message and mid-pairing leaves both sides consistent
  (docs/protocol.md 5.3, 5.4.1, 5.4.4) and the next pairing works;
- replayed, tampered and reordered sealed messages are refused and counted
  (5.6; the counters reach the host in the board's STATUS) while the
  session goes on;
- hostile writes before any pairing store nothing and the board then pairs.

(Three boards streaming to one gateway and a power cut ridden out by the
gateway are in tests/test_gateway.py.) The hostile hosts are
tests/ble_e2e_central.py, each a host process of its own.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cbor2
import pytest

from edge_agent.store import Store
from tests import harness

pytestmark = pytest.mark.slow

CENTRAL = Path(__file__).with_name("ble_e2e_central.py")
REPO = Path(__file__).resolve().parents[1]


def ble_env(home) -> dict:
    env = {**home.env, "EDGE_BLE": "sim", "PYTHONPATH": str(REPO)}
    env.pop("EDGE_BLE_HCI", None)
    return env


def qr(home, device_id: str) -> str:
    """The label's QR payload (printed once per device: the registry keeps it for the test's home)."""
    cache = home.__dict__.setdefault("qr", {})
    if device_id not in cache:
        cache[device_id] = json.loads(home.edge("label", device_id, "--out", str(home.root / "labels"), "--json").stdout)["payload"]
    return cache[device_id]


def pair(home, board: dict, account: str) -> None:
    harness.edge("pair", "--qr", qr(home, board["device_id"]), "--account", account, "--scan-for", "20",
                 env=ble_env(home), timeout=120)


def central(home, *args: str, timeout: float = 120) -> dict:
    p = subprocess.run([sys.executable, str(CENTRAL), *args], env=ble_env(home), capture_output=True,
                       text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.splitlines()[-1])


def gateway(home, *args: str) -> subprocess.Popen:
    return subprocess.Popen([harness.EDGE, "gateway", "run", "--json-log", "--account", "home", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=ble_env(home))


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def serial_ingest(home, board: dict, seconds: int) -> subprocess.Popen:
    return home.start("telemetry", "ingest", board["port"], "--for", str(seconds), "--json")


def device_file(board: dict, *parts: str) -> bytes | None:
    """A file of the board's flash (atomic.py: data, then its CRC-32), the data; None if absent."""
    f = Path(board["fs"]).joinpath(*parts)
    return f.read_bytes()[:-4] if f.exists() else None


def journal_acked(board: dict) -> int:
    raw = device_file(board, "journal", "state")
    assert raw is not None and raw[:4] == b"EJS2"
    return struct.unpack_from(">I", raw, 4)[0]


def device_bonds(board: dict) -> tuple[str | None, list]:
    raw = device_file(board, "state", "bonds")
    if raw is None:
        return None, []
    account, bonds = cbor2.loads(raw)
    return account, bonds


def attempts(board: dict) -> int:
    raw = device_file(board, "state", "pairing")
    return struct.unpack(">I", raw[:4])[0] if raw else 0


def host_bond(home, device_id: str) -> dict | None:
    with Store(home.db) as store:
        return next((b for b in store.bonds() if b["device_id"] == device_id), None)


def stored_once(home, board: dict, allow_empty: bool = False) -> list[int]:
    """The board's stored sequence numbers: each once, from 0 with no gap, and covering the journal's ack pointer."""
    with Store(home.db) as store:
        seqs = sorted(r.seq for r in store.query(device=board["device_id"]))
        assert not store.conflicts(board["device_id"])
    assert seqs or allow_empty, "nothing stored"
    assert seqs == list(range(len(seqs))), f"gaps or repeats: {len(seqs)} rows up to {seqs[-1]}"
    assert journal_acked(board) <= len(seqs), "the board holds an ACK for a record the registry lacks"
    return seqs


def console_clean(board: dict) -> None:
    console = Path(board["console_log"]).read_text(errors="replace")
    assert "Traceback" not in console and "MemoryError" not in console, console[-2000:]


def wait_free(home, board: dict, timeout: float = 30) -> None:
    """Until the board advertises again (its last central has gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = json.loads(harness.edge("scan", "--for", "3s", "--json", env=ble_env(home)).stdout)
        if board["device_id"] in {r["device_id"] for r in rows}:
            return
    raise AssertionError(f"{board['device_id']} does not advertise again")


@pytest.fixture(scope="module")
def boards(module_bench):
    """A (esp32): paired to account home; B (picow), C (esp32c3): not paired."""
    rows = module_bench.up("esp32", "picow", "esp32c3")
    pair(module_bench, rows[0], "home")
    return rows


def test_serial_ble_both_then_serial_again_store_the_journal_exactly_once(module_bench, boards):
    home, a = module_bench, boards[0]
    out = json.loads(finish(serial_ingest(home, a, 6)))
    assert out["ports"][0]["records"] > 0
    n_serial = len(stored_once(home, a))
    log = [json.loads(line) for line in finish(gateway(home, "--for", "12s")).splitlines()]
    assert any(e["event"] == "connected" and e["device"] == a["device_id"] for e in log), log
    n_ble = len(stored_once(home, a))
    assert n_ble > n_serial
    # Both links up at once, each with its own Uplink over the one journal.
    gw = gateway(home, "--for", "16s")
    time.sleep(4)
    both = finish(serial_ingest(home, a, 8))
    finish(gw)
    port = json.loads(both)["ports"][0]
    # Both links carried batches; a record the other link stored first is a duplicate, not stored again.
    assert port["batches"] > 0 and port["conflicts"] == 0, port
    n_both = len(stored_once(home, a))
    assert n_both > n_ble
    finish(serial_ingest(home, a, 6))
    seqs = stored_once(home, a)
    assert len(seqs) > n_both
    # The last serial run acknowledged what it stored: the pointer is at the end of it (give or take one batch).
    assert journal_acked(a) >= len(seqs) - 64, (journal_acked(a), len(seqs))
    console_clean(a)


def test_gateway_killed_at_random_moments_and_a_power_cut_lose_nothing(module_bench, boards):
    home, a = module_bench, boards[0]
    rnd = random.Random(os.environ.get("EDGE_TEST_SEED", "ble-e2e"))
    with Store(home.db) as store:
        before = store.count(a["device_id"])
    kills = []
    for i in range(4):
        gw = gateway(home)
        at = rnd.uniform(4.0, 10.0)
        kills.append(round(at, 2))
        time.sleep(at)
        if i == 2:
            # A power cut while the gateway streams, then the gateway killed too.
            home.edge("sim", "power", a["name"], "off")
            time.sleep(1.5)
            home.edge("sim", "power", a["name"], "on")
            time.sleep(rnd.uniform(2.0, 6.0))
        gw.send_signal(signal.SIGKILL)
        gw.communicate(timeout=30)
        stored_once(home, a, allow_empty=True)     # consistent at every kill
    wait_free(home, a)
    log = [json.loads(line) for line in finish(gateway(home, "--for", "15s")).splitlines()]
    assert any(e["event"] == "connected" for e in log), (kills, log)
    seqs = stored_once(home, a)
    assert len(seqs) > before, kills
    with Store(home.db) as store:
        assert len({r.boot for r in store.query(device=a["device_id"])}) >= 2, "the power cut made a new boot"
    print(f"gateway killed after {kills} s; {len(seqs)} records stored once; acked {journal_acked(a)}")
    console_clean(a)


def test_replayed_tampered_and_reordered_sealed_messages_are_refused_counted_and_the_session_goes_on(
        module_bench, boards):
    home, a = module_bench, boards[0]
    wait_free(home, a)
    p = subprocess.Popen([sys.executable, str(CENTRAL), "tamper", a["device_id"], "22"], env=ble_env(home),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        line = p.stdout.readline()
        assert line.startswith('{"injected"'), p.stderr.read()[-3000:] if p.poll() is not None else line
        injected = json.loads(line)["injected"]
        # A lone Ctrl-C byte on the console (2.11): counted, and the board
        # sends a STATUS with every link's counters, this BLE link's too.
        with open(a["port"], "wb", buffering=0) as console:
            console.write(b"\x03")
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err[-3000:]
    got = json.loads(out.splitlines()[-1])
    assert got["host_bad_sealed"] == 1, got      # the replayed notification, refused by the host
    stray = [s for s in got["statuses"] if "Ctrl-C" in s["reason"]]
    assert stray, got["statuses"]
    # The replay, the flipped bit and the late one: counted by the board's BLE link.
    assert stray[-1]["counters"]["bad_frames"] >= 3, stray
    assert got["records"] > injected["records"], "records flowed after the tampering"
    stored_once(home, a)
    console_clean(a)


def test_hostile_writes_before_pairing_store_nothing_and_the_board_then_pairs(module_bench, boards):
    home, b = module_bench, boards[1]
    with Store(home.db) as store:
        audit_before = store.audit_log(device_id=b["device_id"])
    address = next(r["address"] for r in json.loads(harness.edge("scan", "--for", "4s", "--json",
                                                                 env=ble_env(home)).stdout)
                   if r["device_id"] == b["device_id"])
    got = central(home, "hostile", address, b["device_id"])
    replies = got["replies"]
    bad_message = [{"0": 31, "1": "bad_message"}]
    for name in ("bad_cbor", "not_a_map", "sid_wrong_type", "ya_too_short", "account_too_long",
                 "still_answering"):
        assert [{k: v for k, v in m.items() if k in ("0", "1")} for m in replies[name]] == bad_message, \
            (name, replies)
    # Dropped by reassembly (5.3), answered by nothing: too long, segments out of order.
    assert replies["oversized_pair_start"] == [] and replies["out_of_order"] == [], replies
    assert replies["after_telemetry"] == [] and got["connected"]
    # Nothing stored: no bond on either side, no attempt counted, no record.
    assert device_bonds(b) == (None, []) and attempts(b) == 0
    assert host_bond(home, b["device_id"]) is None
    with Store(home.db) as store:
        assert store.count(b["device_id"]) == 0
        assert store.audit_log(device_id=b["device_id"]) == audit_before
    console_clean(b)
    # And it pairs afterwards.
    pair(home, b, "home")
    assert host_bond(home, b["device_id"])["account"] == "home"
    account, bonds = device_bonds(b)
    assert account == "home" and len(bonds) == 1 and attempts(b) == 0


def test_a_link_dropped_mid_message_or_mid_pairing_leaves_both_sides_consistent(module_bench, boards):
    home, c = module_bench, boards[2]
    label = qr(home, c["device_id"])
    args = ("pair", "--qr", label, "--account", "office", "--scan-for", "20")

    # The first segment of PAIR_START, then the link drops: nothing happened.
    assert central(home, "cut", "start", *args)["exit"] != 0
    assert device_bonds(c) == (None, []) and attempts(c) == 0 and host_bond(home, c["device_id"]) is None

    # PAIR_START / PAIR_REPLY, then the link drops: the attempt is counted (5.4.4), nothing bound.
    assert central(home, "cut", "reply", *args)["exit"] != 0
    assert device_bonds(c) == (None, []) and attempts(c) == 1 and host_bond(home, c["device_id"]) is None

    # PAIR_CONFIRM verified, PAIR_DONE never read: the device keeps the bond
    # and clears the count; the host, with no PAIR_DONE, records nothing.
    assert central(home, "cut", "confirm", *args)["exit"] != 0
    account, bonds = device_bonds(c)
    assert account == "office" and len(bonds) == 1 and attempts(c) == 0
    assert host_bond(home, c["device_id"]) is None

    # The next pairing by the same account works and replaces that bond (same host id).
    pair(home, c, "office")
    row = host_bond(home, c["device_id"])
    assert row is not None and row["account"] == "office"
    account, bonds = device_bonds(c)
    assert account == "office" and [bond[0].hex() for bond in bonds] == [row["bond_id"]]
    assert attempts(c) == 0
    console_clean(c)
