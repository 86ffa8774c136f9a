"""`edge gateway run` end to end: `--account` filtering and a clean stop on
SIGTERM and Ctrl-C. Paired boards kept connected, their telemetry stored
once across a reset, a power cut and a dropped link, is the HIL telemetry
suite's (hil/suites/test_telemetry.py, run on three virtual boards by
tests/hil/test_suite_telemetry_run.py).
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from edge_agent.store import Store
from tests import harness
from tests.harness import EDGE

pytestmark = pytest.mark.slow


def ble_env(home) -> dict:
    return {**home.env, "EDGE_BLE": "sim"}


def paired_bench(bench, accounts: list[str]) -> list[dict]:
    boards = bench.up("esp32", "esp32c3", "picow")
    for b, account in zip(boards, accounts):
        qr = json.loads(bench.edge("label", b["device_id"], "--out", str(bench.root / "labels"),
                                   "--json").stdout)["payload"]
        harness.edge("pair", "--qr", qr, "--account", account, env=ble_env(bench), timeout=120)
    return boards


def start_gateway(bench, *args: str):
    import subprocess

    return subprocess.Popen([EDGE, "gateway", "run", "--json-log", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=ble_env(bench))


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def assert_stored_once(bench, device_id: str) -> int:
    """Every record of the device once, numbered from 0 with no gap (the journal's numbering)."""
    with Store(bench.db) as store:
        seqs = sorted(r.seq for r in store.query(device=device_id))
        assert seqs == list(range(len(seqs))), f"{device_id}: gaps or repeats"
        assert not store.conflicts(device_id)
    return len(seqs)


def test_the_gateway_keeps_only_its_accounts_devices_and_show_filters_by_account(bench):
    boards = paired_bench(bench, ["home", "home", "work"])
    gw = start_gateway(bench, "--account", "home", "--for", "12s")
    out, err = gw.communicate(timeout=90)
    assert gw.returncode == 0, err
    connected = {e["device"] for e in events(out) if e["event"] == "connected"}
    assert connected == {boards[0]["device_id"], boards[1]["device_id"]}
    with Store(bench.db) as store:
        assert store.count(boards[2]["device_id"]) == 0
    home = {d["device_id"] for d in bench.json("telemetry", "show", "--account", "home")["devices"]}
    assert home == {boards[0]["device_id"], boards[1]["device_id"]}
    work = bench.json("telemetry", "show", "--account", "work")["devices"]
    assert [(d["device_id"], d["records"]) for d in work] == [(boards[2]["device_id"], 0)]
    assert bench.json("devices", "list", "--account", "work")[0]["device_id"] == boards[2]["device_id"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_the_gateway_cleanly(bench, sig):
    boards = paired_bench(bench, ["home"])
    gw = start_gateway(bench, "--account", "home")
    time.sleep(12)
    gw.send_signal(sig)
    out, err = gw.communicate(timeout=30)
    assert gw.returncode == 0, err
    log = events(out)
    names = [e["event"] for e in log]
    assert "stopping" in names and names[-1] == "stopped" and "Traceback" not in err
    stored = assert_stored_once(bench, boards[0]["device_id"])
    assert stored == log[-1]["records"] or stored > 0
    # The board is free again: it advertises for the next central.
    for _ in range(3):    # it re-advertises some time after the link ends (a loaded machine)
        rows = json.loads(harness.edge("scan", "--for", "4s", "--json", env=ble_env(bench)).stdout)
        if boards[0]["device_id"] in {r["device_id"] for r in rows}:
            break
    assert boards[0]["device_id"] in {r["device_id"] for r in rows}
