"""Signed OTA end to end on virtual Pico W boards, through the `edge` command:
the release engineer's keygen, bundle, sign and publish; the bench's push
over serial and over BLE; the gateway's staged rollout over BLE; the firmware
under MicroPython downloading in windows, installing to its inactive slot,
booting on trial and confirming, or rolling back by itself. The registry's
view (`edge ota status`) is checked against the board's own pointer file
(docs/protocol.md 7.7).

- a virtual ESP32 takes a push over serial to confirmed (a push to the Pico W,
  the same release again, a downgrade, a transfer cut and power cuts mid-install
  are the HIL OTA suite's: hil/suites/test_ota.py);
- a new agent that crashes at boot, rolled out through the gateway: every
  board rolls back by itself, the rollout halts by itself once the share
  that rolled back passes --halt-at, and the release pushed again is refused;
- a staged rollout through the gateway reaches every board of the fraction.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from edge_agent.firmware import agent_version, mpy_cross_exe
from edge_ota.bundle import pack, unpack
from tests import harness
from tests.test_ble_e2e import ble_env, gateway, pair, stored_once

pytestmark = pytest.mark.slow

CRASH = 'raise RuntimeError("injected: this agent crashes at boot")\n'


def pointer(board: dict) -> dict:
    """The board's ota/slot (JSON, then the CRC-32 edgefw.atomic appends), with the
    defaults edgefw.slots reads in a missing one (the slot `edge flash` installed)."""
    f = Path(board["fs"]) / "ota" / "slot"
    d = json.loads(f.read_bytes()[:-4]) if f.exists() else {}
    return {"active": "", "seq": {}, "bad": {}, **d}


def device_version(home, device_id: str) -> str | None:
    with sqlite3.connect(home.db) as db:
        row = db.execute("SELECT version FROM devices WHERE device_id = ?", (device_id,)).fetchone()
    return row[0] if row else None


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """`edge ota bundle` of the agent for picow, once for the module; ``crash``: the same
    bundle with edgefw/agent replaced by an agent that raises at boot."""
    tmp = tmp_path_factory.mktemp("images")
    image = tmp / "agent-picow.bundle"
    harness.edge("ota", "bundle", "--board", "picow", "--version", "9.1.0", "-o", str(image), timeout=180)
    src = tmp / "agent.py"
    src.write_text(CRASH)
    out = tmp / "agent.mpy"
    subprocess.run([mpy_cross_exe(), "-o", str(out), "-s", "edgefw/agent.py", str(src)], check=True)
    crash = tmp / "agent-picow-crash.bundle"
    crash.write_bytes(pack([(n, out.read_bytes() if n == "edgefw/agent.mpy" else d)
                            for n, d in unpack(image.read_bytes())]))
    return {"good": image, "crash": crash}


def sign(home, image: Path, version: str, sequence: int) -> Path:
    """`edge ota sign` with this home's key, for picow's agent."""
    manifest = home.root / f"agent-{version}-{sequence}.manifest"
    home.edge("ota", "sign", str(image), "--board", "picow", "--component", "agent", "--version", version,
              "--sequence", str(sequence), "-o", str(manifest))
    return manifest


def paired_picows(home) -> list[dict]:
    """Two virtual Pico W boards paired to account "home", and the OTA key made."""
    boards = home.up("picow", "picow")
    for b in boards:
        pair(home, b, "home")
    home.edge("ota", "keygen")
    return boards


def publish(home, image: Path, manifest: Path, *args: str) -> int:
    """`edge ota publish` to the whole fleet (fraction 1); the release's number."""
    return home.json("ota", "publish", str(image), str(manifest), "--fraction", "1", *args)["id"]


def push(home, target: str, image: Path, manifest: Path, *, ble: bool = False):
    return harness.edge("ota", "push", target, str(image), str(manifest), "--json", "--timeout", "5m",
                        env=ble_env(home) if ble else home.env, timeout=360, check=False)


def history(home, device_id: str) -> list[dict]:
    return home.json("ota", "status", "--device", device_id)["history"]


def release_row(home, release: int) -> dict:
    (row,) = home.json("ota", "status", "--release", str(release))["releases"]
    return row


def until(what, seconds: float, proc: subprocess.Popen):
    """Poll ``what()`` every 2 s until it is true or ``seconds`` pass (a guard against a hang,
    not a measure: the test then fails on what the registry says); stops if ``proc`` ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        got = what()
        if got:
            return got
        time.sleep(2)
    return what()


def stop(gw: subprocess.Popen) -> tuple[list[dict], str]:
    """End the gateway (SIGTERM: a clean stop); its JSON event log and stderr."""
    gw.terminate()
    out, err = gw.communicate(timeout=60)
    assert gw.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")], err


def what_happened(home, boards: list[dict], row: dict, events: list[dict], err: str) -> str:
    """Everything a failed rollout leaves to read, whole (pytest shortens an assertion's repr):
    the release, each board's history, the gateway's last events and stderr, the bench's logs."""
    logs = [*sorted(home.sim_dir.glob("*.log")), *sorted(home.sim_dir.glob("*/ble.log")),
            *(Path(b["fs"]).parent / "console.log" for b in boards)]
    return "\n".join([json.dumps(row), *(json.dumps(history(home, b["device_id"])) for b in boards),
                      *map(json.dumps, events[-40:]), err[-6000:],
                      *(f"== {f}\n{f.read_text(errors='replace')[-4000:]}" for f in logs if f.exists())])


def in_order(states: list[str], expected: tuple[str, ...]) -> None:
    at = [states.index(s) if s in states else -1 for s in expected]
    assert -1 not in at and at == sorted(at), (expected, states)


def test_a_release_that_crashes_at_boot_rolls_back_everywhere_and_halts_its_rollout(bench, images):
    home = bench
    boards = paired_picows(home)
    before = {b["device_id"]: pointer(b) for b in boards}
    manifest = sign(home, images["crash"], "9.2.0", 2)
    rid = publish(home, images["crash"], manifest, "--halt-at", "0.5", "--min-devices", "2")
    gw = gateway(home)
    try:
        halted = until(lambda: release_row(home, rid)["state"] == "halted", 150, gw)
    finally:
        events, err = stop(gw)
    row = release_row(home, rid)
    if not (halted and row["rolled_back"] == 2 and row["confirmed"] == 0):
        pytest.fail(what_happened(home, boards, row, events, err))
    assert row["halt_reason"].startswith("2 of 2 devices failed"), row
    assert any(e["event"] == "rollout_halted" for e in events), events[-20:]
    for b in boards:
        dev = b["device_id"]
        # Back on the slot it ran, counter and version unchanged, the bad sequence remembered.
        ptr = pointer(b)
        assert ptr["active"] == before[dev]["active"] and ptr["seq"] == before[dev]["seq"], ptr
        assert ptr["bad"] == {"agent": 2}, ptr
        assert device_version(home, dev) == agent_version()     # the agent `edge sim up` flashed
        last = [h for h in history(home, dev) if h["state"] == "rolled-back"]
        assert last and "crash" in (last[-1]["reason"] or ""), history(home, dev)
        stored_once(home, b)
    # Pushed again over BLE (by hand, past the halt): the device refuses the sequence it rolled back from.
    dev = boards[0]["device_id"]
    p = push(home, dev, images["crash"], manifest, ble=True)
    assert p.returncode == 3, p.stdout + p.stderr[-3000:]
    assert json.loads(p.stdout)["states"][-1]["check"] == "rolled-back"
    assert pointer(boards[0])["seq"] == before[dev]["seq"]
    assert release_row(home, rid)["state"] == "halted"


def test_a_staged_rollout_over_ble_reaches_every_board_through_the_gateway(bench, images):
    home = bench
    boards = paired_picows(home)
    manifest = sign(home, images["good"], "9.1.0", 5)
    rid = publish(home, images["good"], manifest)
    gw = gateway(home)
    try:
        until(lambda: release_row(home, rid)["confirmed"] == len(boards), 150, gw)
    finally:
        events, err = stop(gw)
    row = release_row(home, rid)
    assert (row["state"], row["eligible"], row["confirmed"]) == ("active", 2, 2), (row, err[-3000:])
    assert row["rolled_back"] == row["failed"] == row["refused"] == 0, row
    for b in boards:
        dev = b["device_id"]
        ptr = pointer(b)
        assert "trial" not in ptr and ptr["seq"]["agent"] == 5 and ptr["version"]["agent"] == "9.1.0", ptr
        assert device_version(home, dev) == "9.1.0"
        in_order([h["state"] for h in history(home, dev)],
                 ("offered", "downloading", "verified", "installed", "applying", "trial", "confirmed"))
        assert sum(e["event"] == "ota_state" and e.get("state") == "confirmed" and e["device"] == dev
                   for e in events) == 1
        stored_once(home, b)


def test_a_virtual_esp32_takes_a_push_over_serial_to_confirmed(bench, tmp_path):
    # The smallest board (110 KiB, beside its BLE stack): the transfer holds no
    # block in RAM, and an offer its heap cannot check just now (the agent
    # catching up its telemetry) is answered `busy` and asked for again.
    home = bench
    (board,) = home.up("esp32")
    home.edge("ota", "keygen")
    image = tmp_path / "agent-esp32.bundle"
    home.edge("ota", "bundle", "--board", "esp32", "--version", "9.1.0", "-o", str(image), timeout=180)
    manifest = tmp_path / "agent-esp32.manifest"
    home.edge("ota", "sign", str(image), "--board", "esp32", "--component", "agent", "--version", "9.1.0",
              "--sequence", "1", "-o", str(manifest))
    p = push(home, board["port"], image, manifest)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["state"] == "confirmed", out
    assert {s["state"] for s in out["states"]} <= {"busy", "downloading", "verified", "installed", "applying",
                                                   "trial", "confirmed"}, out
    ptr = pointer(board)
    assert ptr["seq"]["agent"] == 1 and ptr["version"]["agent"] == "9.1.0" and "trial" not in ptr, ptr
    assert device_version(home, board["device_id"]) == "9.1.0"
