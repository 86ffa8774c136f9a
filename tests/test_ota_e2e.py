"""Signed OTA end to end on virtual boards, through the `edge` command: the
release engineer's keygen, bundle, sign and publish; the bench's push over
serial; the gateway's staged rollout over BLE; the firmware under MicroPython
downloading in windows, installing to its inactive slot, booting on trial and
confirming, or rolling back by itself. The registry's view (edge ota status)
is checked against the board's own pointer file (docs/protocol.md 7.7).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from edge_agent.firmware import mpy_cross_exe
from edge_ota.bundle import pack, unpack
from tests import harness
from tests.test_ble_e2e import ble_env, pair, stored_once

pytestmark = pytest.mark.slow


def pointer(board: dict) -> dict:
    """The board's ota/slot (JSON, then the CRC-32 edgefw.atomic appends); {} when absent."""
    f = Path(board["fs"]) / "ota" / "slot"
    return json.loads(f.read_bytes()[:-4]) if f.exists() else {}


def device_version(home, device_id: str) -> str | None:
    with sqlite3.connect(home.db) as db:
        row = db.execute("SELECT version FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return row[0] if row else None


def release(home, tmp: Path, board: str, version: str, sequence: int, *,
            broken: str | None = None) -> tuple[Path, Path]:
    """`edge ota bundle` + `edge ota sign`; ``broken`` replaces edgefw/agent with that source."""
    image = tmp / f"agent-{board}-{version}.bundle"
    home.edge("ota", "bundle", "--board", board, "--version", version, "-o", str(image), timeout=180)
    if broken is not None:
        src = tmp / "agent.py"
        src.write_text(broken)
        out = tmp / "agent.mpy"
        subprocess.run([mpy_cross_exe(), "-o", str(out), "-s", "edgefw/agent.py", str(src)], check=True)
        files = [(n, out.read_bytes() if n == "edgefw/agent.mpy" else d) for n, d in unpack(image.read_bytes())]
        image.write_bytes(pack(files))
    manifest = tmp / f"agent-{board}-{version}.manifest"
    home.edge("ota", "sign", str(image), "--board", board, "--component", "agent", "--version", version,
              "--sequence", str(sequence), "-o", str(manifest))
    return image, manifest


def push(home, port: str, image: Path, manifest: Path, *args: str, timeout: float = 300):
    return harness.edge("ota", "push", port, str(image), str(manifest), "--json", "--timeout", "4m", *args,
                        env=home.env, timeout=timeout, check=False)


def ota_device(home, device_id: str) -> dict:
    return home.json("ota", "status", "--device", device_id)


@pytest.fixture(scope="module")
def serial_bench(module_bench, tmp_path_factory):
    home = module_bench
    (board,) = home.up("esp32")
    home.edge("ota", "keygen")
    return home, board, tmp_path_factory.mktemp("releases")


def test_a_push_over_serial_installs_boots_on_trial_and_confirms(serial_bench):
    home, board, tmp = serial_bench
    dev = board["device_id"]
    old = device_version(home, dev)
    image, manifest = release(home, tmp, "esp32", "9.1.0", 1)
    p = push(home, board["port"], image, manifest)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["state"] == "confirmed", out
    # The board runs the new slot, confirmed, its counter raised in the same write.
    ptr = pointer(board)
    assert ptr["active"] in ("a", "b") and "trial" not in ptr, ptr
    assert ptr["seq"]["agent"] == 1 and ptr["version"]["agent"] == "9.1.0"
    assert device_version(home, dev) == "9.1.0" != old
    # The registry went through every state, in order.
    states = [h["state"] for h in home.json("ota", "status", "--device", dev)["history"]]
    for a, b in zip(("offered", "downloading", "verified", "installed", "trial", "confirmed"),
                    ("downloading", "verified", "installed", "trial", "confirmed", None)):
        assert a in states, states
        if b is not None:
            assert states.index(a) < states.index(b), states
    # Telemetry taken across the reset is stored once, no gap.
    stored_once(home, board)
    # The same release again: the board says it runs it.
    p = push(home, board["port"], image, manifest)
    assert p.returncode == 0 and json.loads(p.stdout)["state"] == "current", p.stdout
    # An older sequence (a downgrade) is refused before anything is written.
    image0, manifest0 = release(home, tmp, "esp32", "9.0.0", 0)
    p = push(home, board["port"], image0, manifest0)
    assert p.returncode == 3, p.stdout + p.stderr[-2000:]
    assert "rollback" in p.stdout
    assert pointer(board) == ptr


def test_a_new_agent_that_crashes_on_boot_rolls_back_by_itself_and_is_not_offered_again(serial_bench):
    home, board, tmp = serial_bench
    dev = board["device_id"]
    before = pointer(board)
    running = device_version(home, dev)
    image, manifest = release(home, tmp, "esp32", "9.2.0", 2,
                              broken='raise RuntimeError("injected: this agent crashes at boot")\n')
    p = push(home, board["port"], image, manifest)
    assert p.returncode == 4, p.stdout + p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["state"] == "rolled-back" and "crash" in json.dumps(out["states"][-1]), out
    # Back on the slot it ran, counter unchanged, the bad sequence remembered.
    ptr = pointer(board)
    assert ptr["active"] == before["active"] and ptr["seq"] == before["seq"]
    assert device_version(home, dev) == running
    st = ota_device(home, dev)
    assert any(h["state"] == "rolled-back" for h in st["history"])
    # Offered again, the device refuses it: it rolled back from that sequence.
    p = push(home, board["port"], image, manifest)
    assert p.returncode == 3 and "rolled-back" in p.stdout, p.stdout


def test_a_staged_rollout_over_ble_reaches_every_board_through_the_gateway(bench, tmp_path):
    home = bench
    boards = home.up("esp32", "picow")
    for b in boards:
        pair(home, b, "home")
    home.edge("ota", "keygen")
    rel = {}
    for b in boards:
        image, manifest = release(home, tmp_path, b["board"], "9.5.0", 5)
        r = home.json("ota", "publish", str(image), str(manifest), "--fraction", "1")
        rel[b["device_id"]] = r
    gw = harness.start("gateway", "run", "--account", "home", "--json-log", "--for", "150",
                       env=ble_env(home))
    deadline = time.time() + 170
    done: set[str] = set()
    while time.time() < deadline and len(done) < len(boards):
        time.sleep(5)
        for b in boards:
            d = ota_device(home, b["device_id"])
            if any(row["state"] == "confirmed" for row in d["devices"]):
                done.add(b["device_id"])
    gw.terminate()
    out, err = gw.communicate(timeout=60)
    assert len(done) == len(boards), (done, err[-3000:])
    for b in boards:
        assert pointer(b)["version"]["agent"] == "9.5.0"
        assert device_version(home, b["device_id"]) == "9.5.0"
        stored_once(home, b)
