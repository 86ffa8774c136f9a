"""Pairing: pair with the label, the bond kept across a reset, wrong codes and back-off, owner rules, unpair.

Every step is the owner's or the bench's command (`edge pair`, `edge
devices`, `edge scan`, `edge gateway run`) on the rig's BLE air; the label
is the one `edge label` printed for the board (its code is shown once per
identity: hil.rig.strategy.label_payload reads it back). Each test starts
from a board that holds no bond and no wrong-code count (`edge devices
factory-reset`, the bench's own command), and leaves it so, so the tests do
not lean on each other, and the other suites find the board unpaired.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time

import pytest

from edge_hil.faults import board_device_id
from edge_hil.rig.strategy import label_payload

pytestmark = pytest.mark.needs("console", "ble")
GATEWAY_WAIT_S = 60.0       # bound on a gateway finding and resuming the board (a hang guard, not a measure)


@pytest.fixture
def device(board, host, agent):
    """The board's device id, the board holding no bond and no wrong-code count; after the test,
    again (here and on the board): a test that leaves the board bonded to another owner's host
    must not leave the suites that run next a board that host cannot pair."""
    device_id = board_device_id(board, host)
    host.edge("devices", "factory-reset", board.port, "--json")
    yield device_id
    host.edge("devices", "factory-reset", board.port, "--json")


@pytest.fixture
def other_host(tmp_path):
    """Another owner's host (a phone): its own registry, nothing of this run's."""
    return {"EDGE_HOME": str(tmp_path), "EDGE_DB": str(tmp_path / "registry.db")}


def pair(host, device: str, account: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`edge pair --qr LABEL --account ACCOUNT` (any exit code)."""
    return host.edge("pair", "--qr", label_payload(host, device), "--account", account, "--json", *args,
                     check=False, env=env)


def bond_of(host, device: str) -> dict | None:
    return json.loads(host.edge("devices", "show", device, "--json").stdout)["bond"]


def scanned(host, device: str) -> dict:
    """The device's row in `edge scan` (it advertises again once a link ends: looked for up to 3 times)."""
    for _ in range(3):
        rows = json.loads(host.edge("scan", "--for", "3s", "--json").stdout)
        row = next((r for r in rows if r["device_id"] == device), None)
        if row is not None:
            return row
    pytest.fail(f"{device} was not heard in three scans of 3 s")


def the_code(host, device: str) -> str:
    return label_payload(host, device).split(":")[2]


def test_pairing_with_the_label_binds_the_device_to_the_owner_account(board, host, device):
    p = pair(host, device, "alice")
    assert p.returncode == 0, p.stderr
    bond = json.loads(p.stdout)
    assert (bond["device_id"], bond["account"]) == (device, "alice") and "bond_key" not in bond, bond
    listed = json.loads(host.edge("devices", "list", "--account", "alice", "--json").stdout)
    assert device in {d["device_id"] for d in listed}
    row = scanned(host, device)
    assert row["paired"] is True and row["account"] == "alice", row


def test_the_bond_survives_a_reset_and_the_gateway_resumes_it_without_a_code(board, host, device, faults):
    assert pair(host, device, "alice").returncode == 0
    faults.reset()
    events = gateway_until_connected(host, "alice", device)
    assert any(e["event"] == "connected" and e.get("device") == device for e in events), events
    bond = bond_of(host, device)
    assert bond is not None and bond["account"] == "alice" and bond["last_connected"], bond


def gateway_until_connected(host, account: str, device: str) -> list[dict]:
    """`edge gateway run --account ACCOUNT` until it says ``device`` is connected (then SIGTERM: a
    clean stop); the events it logged."""
    proc = host.start("gateway", "run", "--account", account, "--json-log")
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    events: list[dict] = []
    deadline = time.monotonic() + GATEWAY_WAIT_S
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if line.startswith("{"):
                events.append(json.loads(line))
                if events[-1]["event"] == "connected" and events[-1].get("device") == device:
                    break
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    return events


def test_wrong_codes_are_refused_and_after_the_third_the_device_pauses_pairing(board, host, device):
    code = the_code(host, device)
    wrong = f"{(int(code) + 1) % 10 ** 8:08d}"
    # The first three are heard: no back-off before the third wrong code.
    for _ in range(3):
        p = host.edge("pair", device, "--code", wrong, "--account", "alice", check=False)
        assert p.returncode == 5 and "wrong code" in p.stderr and "label" in p.stderr, p.stderr
    # Then the device pauses (2 s, 4 s, 8 s ... from the last attempt): an attempt within it is
    # refused unheard. A host slower than a pause has its attempt heard, and the next pause doubles.
    for _ in range(4):
        p = host.edge("pair", device, "--code", wrong, "--account", "alice", check=False)
        if p.returncode != 5:
            break
    assert p.returncode == 4 and "pausing pairing" in p.stderr, p.stderr
    wait = re.search(r"next attempt in (\d+) s", p.stderr)
    assert wait, p.stderr
    # Once the pause is over, the right code pairs (and clears the count).
    time.sleep(int(wait.group(1)) + 1)
    p = host.edge("pair", device, "--code", code, "--account", "alice", "--json", check=False)
    assert p.returncode == 0, p.stderr
    assert bond_of(host, device)["account"] == "alice"


def test_another_account_is_refused_while_the_device_is_bonded(board, host, device, other_host):
    assert pair(host, device, "alice").returncode == 0
    # This host refuses before any radio traffic, naming the owner.
    p = pair(host, device, "bob")
    assert p.returncode == 4 and "alice" in p.stderr and "edge devices unpair" in p.stderr, p.stderr
    # Another host with the label: the device itself refuses.
    p = pair(host, device, "bob", env=other_host)
    assert p.returncode == 4 and "another owner" in p.stderr, p.stderr
    assert bond_of(host, device)["account"] == "alice"


def test_unpair_tells_the_device_and_then_another_account_may_pair(board, host, device, other_host):
    assert pair(host, device, "alice").returncode == 0
    p = host.edge("devices", "unpair", device, "--account", "bob", check=False)
    assert p.returncode == 4 and "alice" in p.stderr, p.stderr          # not bob's to unpair
    done = json.loads(host.edge("devices", "unpair", device, "--account", "alice", "--json").stdout)
    assert done == {"device_id": device, "account": "alice", "unpaired": True, "device_told": True}, done
    assert bond_of(host, device) is None
    # The device holds no bond now: another owner, on another host, pairs it with the label.
    p = pair(host, device, "bob", env=other_host)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["account"] == "bob"
