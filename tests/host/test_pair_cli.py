"""`edge scan`, `edge pair` and `edge devices` end to end: virtual boards
running the firmware's BLE link on the bench's air, the host on bleak and
the Bumble backend, the real pairing cores on both sides.

One bench for the module; the steps build on each other as an owner would
use them (pair, refuse, unpair, pair again).
"""

from __future__ import annotations

import json
import time

import pytest

from edge_agent.store import Store
from tests import harness

pytestmark = pytest.mark.slow


def ble_env(home) -> dict:
    """The home's environment on the bench's air (a free host controller of its bench)."""
    return {**home.env, "EDGE_BLE": "sim"}


def edge(home, *args, check=True, timeout=90):
    return harness.edge(*args, env=ble_env(home), check=check, timeout=timeout)


def heard(home, device_id: str, seconds: str = "3s", tries: int = 3) -> dict:
    """The scan row of ``device_id``: a board re-advertises some time after a link ends (a loaded machine)."""
    for _ in range(tries):
        rows = {r["device_id"]: r for r in json.loads(edge(home, "scan", "--for", seconds, "--json").stdout)}
        if device_id in rows:
            return rows[device_id]
    raise AssertionError(f"{device_id} not heard in {tries} scans")


@pytest.fixture(scope="module")
def boards(module_bench):
    rows = module_bench.up("esp32", "picow")
    labels = {}
    for b in rows:    # the label's QR payload carries the code; the registry forgets it afterwards
        made = json.loads(module_bench.edge("label", b["device_id"], "--out",
                                            str(module_bench.root / "labels"), "--json").stdout)
        labels[b["device_id"]] = made
    return {b["board"]: {**b, "qr": labels[b["device_id"]]["payload"],
                         "code": labels[b["device_id"]]["setup_code"]} for b in rows}


def test_scan_shows_the_boards_with_their_board_and_unpaired(module_bench, boards):
    rows = {r["device_id"]: r for r in json.loads(edge(module_bench, "scan", "--for", "4s", "--json").stdout)}
    for b in boards.values():
        assert rows[b["device_id"]]["board"] == b["board"] and not rows[b["device_id"]]["paired"], rows
    table = edge(module_bench, "scan", "--for", "3s").stdout
    assert boards["esp32"]["device_id"] in table and "RSSI" in table


def test_pair_with_the_label_binds_the_account_and_another_account_is_refused(module_bench, boards):
    esp = boards["esp32"]
    bond = json.loads(edge(module_bench, "pair", "--qr", esp["qr"], "--account", "alice", "--json").stdout)
    assert bond["device_id"] == esp["device_id"] and bond["account"] == "alice"
    row = heard(module_bench, esp["device_id"])
    assert row["paired"] and row["account"] == "alice"

    # Here: refused before any radio traffic.
    r = edge(module_bench, "pair", esp["device_id"], "--code", esp["code"], "--account", "bob", check=False)
    assert r.returncode == 4 and "alice" in r.stderr and "edge devices unpair" in r.stderr

    # Forgotten here, the device itself refuses: it is bound to alice.
    r = edge(module_bench, "devices", "unpair", esp["device_id"], "--forget")
    assert "stays bound" in r.stderr
    r = edge(module_bench, "pair", esp["device_id"], "--code", esp["code"], "--account", "bob", check=False)
    assert r.returncode == 4 and "another owner" in r.stderr, r.stderr

    # A factory reset of the board frees it for bob.
    reset = json.loads(edge(module_bench, "devices", "factory-reset", esp["name"], "--json").stdout)
    assert reset["device_id"] == esp["device_id"]
    edge(module_bench, "pair", esp["device_id"], "--code", esp["code"], "--account", "bob", timeout=120)
    with Store(module_bench.db) as s:
        actions = [a["action"] for a in s.audit_log(esp["device_id"])]
    assert actions == ["paired", "pair_refused", "forgotten", "pair_refused", "factory_reset", "paired"]


def test_a_wrong_code_is_refused_and_the_back_off_is_shown(module_bench, boards):
    pico = boards["picow"]
    wrong = "0000-0000" if pico["code"] != "0000-0000" else "1111-1111"
    # backoff(3) = 2 s and backoff(4) = 4 s are waited out; the 5th wrong code makes it 8 s, long
    # enough for the two commands below to land inside it on a loaded machine.
    waits = {3: 2.5, 4: 4.5}
    for n in range(1, 6):
        r = edge(module_bench, "pair", pico["device_id"], "--code", wrong, check=False, timeout=120)
        assert r.returncode == 5 and "wrong code" in r.stderr, r.stderr
        time.sleep(waits.get(n, 0))
    r = edge(module_bench, "pair", pico["device_id"], "--code", pico["code"], "--json", check=False)
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 4 and "next attempt in" in err["error"], err
    assert heard(module_bench, pico["device_id"], "1s")["paused"]
    time.sleep(8.5)
    edge(module_bench, "pair", pico["device_id"], "--code", pico["code"], "--account", "alice", timeout=120)


def test_unpair_tells_the_device_and_then_another_account_pairs(module_bench, boards):
    pico = boards["picow"]
    if not json.loads(edge(module_bench, "devices", "list", "--account", "alice", "--json").stdout):
        # Run alone (-k): the wrong-code test has not paired it to alice.
        edge(module_bench, "pair", pico["device_id"], "--code", pico["code"], "--account", "alice", timeout=120)
    listed = json.loads(edge(module_bench, "devices", "list", "--account", "alice", "--json").stdout)
    assert [d["device_id"] for d in listed] == [pico["device_id"]]
    out = json.loads(edge(module_bench, "devices", "unpair", pico["device_id"], "--json").stdout)
    assert out["device_told"] is True
    assert not heard(module_bench, pico["device_id"])["paired"]
    edge(module_bench, "pair", pico["device_id"], "--code", pico["code"], "--account", "bob", timeout=120)
    shown = json.loads(edge(module_bench, "devices", "show", pico["device_id"], "--json").stdout)
    assert shown["bond"]["account"] == "bob"
    assert [a["action"] for a in shown["audit"]][-2:] == ["unpaired", "paired"]
