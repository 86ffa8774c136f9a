"""OTA: update to confirmed, rollback by itself, downgrade refused, transfer cut and resumed, power cuts mid-install.

Each test pushes a release signed for the run (hil/suites/ota_releases.py)
with `edge ota push` over the board's serial port and reads what the board
says: the push's outcome, the registry's view (`edge ota status`) and the
HELLO its agent sends after a reset (which agent booted, whole). Quick tests
run on every board with OTA; the long ones (each waits out a trial: the
agent confirms after 30 s of health) on the Pico W only.
"""

from __future__ import annotations

import json

import pytest

from edge_hil.faults import INSTALL_STEPS, OtaHeard, board_device_id
from hil.suites.ota_releases import (CRASH, BackgroundPush, Releases, agent_hello, never_confirming_agent,
                                     push, short_trial, wait_until_held)

pytestmark = pytest.mark.needs("console", "ota")
# One long test of each kind is enough: on the Pico W.
long_case = pytest.mark.boards("picow")
TRIAL_S = 10        # the trial deadline the never-confirming release is given (a board file keeps 60..86400)


@pytest.fixture(scope="session")
def releases(host):
    return Releases(host)


@pytest.fixture
def device_id(board, host, agent):
    return board_device_id(board, host)


def in_order(states: list[str], expected: tuple[str, ...]) -> None:
    at = [states.index(s) if s in states else -1 for s in expected]
    assert -1 not in at and at == sorted(at), f"expected {expected} in order, the board reported {states}"


def ota_status(host, device_id: str) -> dict:
    """`edge ota status --device ID --json`: the device's state per release and its history."""
    return json.loads(host.edge("ota", "status", "--device", device_id, "--json").stdout)


def registry_row(host, device_id: str, release) -> dict:
    """The registry's state of the device for ``release``."""
    (row,) = [r for r in ota_status(host, device_id)["devices"] if r["sequence"] == release.sequence]
    return row


def history(host, device_id: str) -> list[dict]:
    return ota_status(host, device_id)["history"]


# -- quick: every board with OTA ----------------------------------------------------------------

def test_a_downgrade_is_refused_before_anything_is_written(board, agent, host, releases):
    before = agent_hello(board)
    older = releases.make(board.rig_board.board, sequence=0, version="0.0.1")
    p = push(host, board, older)
    assert p.code == 3 and p.state == "refused", p
    assert p.last().get("check") == "rollback", p
    assert "downloading" not in p.states, p
    after = agent_hello(board)
    # Same agent, and no boot but the reset this test made.
    assert (after.version, after.boot) == (before.version, before.boot + 1), (before, after)


def test_a_release_that_crashes_at_boot_rolls_back_by_itself(board, agent, host, releases, device_id):
    before = agent_hello(board)
    crash = releases.make(board.rig_board.board, replace={"edgefw/agent": CRASH})
    p = push(host, board, crash)
    assert p.code == 4 and p.state == "rolled-back", p
    in_order(p.states, ("applying", "rolled-back"))
    assert "crash" in p.reported("rolled-back").get("reason", ""), p
    assert agent_hello(board).version == before.version
    # The registry's history holds the rollback and its reason.
    rolled = [h for h in history(host, device_id) if h["sequence"] == crash.sequence and h["state"] == "rolled-back"]
    assert rolled and "crash" in (rolled[-1]["reason"] or ""), rolled
    # Pushed again, it is refused: the board remembers the sequence it rolled back from.
    again = push(host, board, crash)
    assert again.code == 3 and again.last().get("check") == "rolled-back", again


# -- long: the Pico W ---------------------------------------------------------------------------

@long_case
def test_an_update_installs_boots_on_trial_and_confirms(board, agent, host, releases, device_id):
    new = releases.make(board.rig_board.board)
    p = push(host, board, new)
    assert p.code == 0 and p.state == "confirmed", p
    assert p.out["held"] == p.out["size"] == new.size, p
    in_order(p.states, (*INSTALL_STEPS, "confirmed"))
    row = registry_row(host, device_id, new)
    assert (row["state"], row["version"]) == ("confirmed", new.version), row
    assert agent_hello(board).version == new.version
    # The same release again: the board says it runs it.
    again = push(host, board, new)
    assert again.code == 0 and again.state == "current", again


@long_case
def test_a_release_that_never_confirms_rolls_back_at_its_trial_deadline(board, agent, host, releases):
    before = agent_hello(board)
    stuck = releases.make(board.rig_board.board, replace={"edgefw/agent": never_confirming_agent()})
    with short_trial(board, TRIAL_S):
        p = push(host, board, stuck)
    assert p.code == 4 and p.state == "rolled-back", p
    in_order(p.states, ("applying", "trial", "rolled-back"))
    assert p.reported("rolled-back").get("reason", "").startswith(f"not confirmed within {TRIAL_S} s"), p
    assert agent_hello(board).version == before.version


@long_case
def test_a_push_killed_mid_transfer_resumes_when_run_again_and_the_board_confirms(board, agent, host, releases,
                                                                                  device_id):
    new = releases.make(board.rig_board.board)
    heard = OtaHeard(host, device_id)
    with BackgroundPush(host, board, new) as first:
        held = wait_until_held(host, heard, new.size // 4, first)
        first.kill()
    assert 0 < held < new.size
    p = push(host, board, new)
    assert p.code == 0 and p.state == "confirmed", p
    # It went on from what the board held: no download started over from byte 0.
    assert all(s.get("held") for s in p.out["states"] if s["state"] == "downloading"), p
    assert agent_hello(board).version == new.version


@long_case
@pytest.mark.needs("power")
def test_power_cuts_at_each_step_of_an_install_leave_a_whole_agent_and_the_update_completes(
        board, agent, host, releases, faults):
    """The power goes once half the image is held, then at each install step the board reports next
    (a fast board reports several at once: the cut falls after the last it reported); the push rides
    each cut out, and the board confirms."""
    new = releases.make(board.rig_board.board)
    cut = faults.power_cut_after_ota_bytes(new.size // 2)
    cuts = []
    with BackgroundPush(host, board, new) as pushing:
        while True:
            cuts.append(cut.wait())
            step = INSTALL_STEPS.index(cut.state) + 1 if cut.state in INSTALL_STEPS else len(INSTALL_STEPS)
            if step == len(INSTALL_STEPS):
                break
            cut = faults.power_cut_at_install_step(INSTALL_STEPS[step], after=cut)
        p = pushing.result()
    where = [(c.state, c.held) for c in cuts]
    assert cuts[0].held >= new.size // 2 and cuts[0].state == "downloading", where
    assert cuts[-1].state == "trial", where          # the last one fell on the new agent, on trial
    assert set(INSTALL_STEPS) <= {s for c in cuts for s in c.states}, where
    assert p.code == 0 and p.state == "confirmed", p
    # A new push: the board runs the release, whole.
    again = push(host, board, new)
    assert again.code == 0 and again.state == "current", again
    assert agent_hello(board).version == new.version
