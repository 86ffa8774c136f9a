"""Agent slots on the device (docs/protocol.md 7.7): the pointer, the strict
unpack of an agent bundle (7.1) into the inactive slot, the switch, trial
boots, confirm and rollback, under MicroPython with the esp32 heap."""

from __future__ import annotations

import ast
import struct

import pytest

from tests.firmware.slots_device import agent, board, boot, bundle, device, install, read_pointer, write_pointer

DEFAULTS = {"active": "", "prev": "", "seq": {}, "digest": {}, "version": {}, "bad": {}, "why": ""}


def tree(folder) -> dict:
    """Every file and folder under ``folder``: {relative path: bytes, or None for a folder}."""
    return {p.relative_to(folder).as_posix(): None if p.is_dir() else p.read_bytes() for p in folder.rglob("*")}


def out(proc) -> str:
    return proc.stdout.decode().strip()


def test_a_board_without_a_pointer_runs_slot_zero_with_counters_zero(tmp_path):
    fs = board(tmp_path)
    got = out(device(fs, """
from edgefw import slots
print(slots.read("") == %r, slots.counter("", "agent"), slots.running_digest("", "agent"),
      slots.bad("", "agent"), slots.on_trial(""), slots.take_report(""), slots.confirm(""))
""" % DEFAULTS))
    assert got == "True 0 None None False None None"
    rc, versions, _ = boot(fs)
    assert rc == 0 and versions == ["1"] * 7
    assert not (fs / "ota" / "slot").exists()   # booting wrote nothing


def test_a_torn_pointer_reads_as_none(tmp_path):
    fs = board(tmp_path)
    write_pointer(fs, {"active": "a", "seq": {"agent": 9}})
    raw = (fs / "ota" / "slot").read_bytes()
    (fs / "ota" / "slot").write_bytes(raw[:-3])
    assert out(device(fs, "from edgefw import slots\nprint(slots.counter('', 'agent'))")) == "0"
    rc, versions, _ = boot(fs)
    assert versions == ["1"] * 7


def test_a_bundle_is_unpacked_into_the_inactive_slot_and_the_switch_boots_it_on_trial(tmp_path):
    fs = board(tmp_path)
    files = agent("2")
    install(fs, bundle(files), 2, apply=False)
    for name, data in files:
        assert (fs / "slots" / "a" / name).read_bytes() == data
    assert not (fs / "ota" / "dl").exists()
    assert read_pointer(fs) is None             # nothing switched yet
    assert out(device(fs, "from edgefw import slots\nt = slots.AgentTarget('')\n"
                          "print(t.installed(2, 'd2'), t.installed(3, 'd2'), t.installed(2, 'x'))")) \
        == "True False False"
    device(fs, "from edgefw import slots\nslots.AgentTarget('').apply(2, 'd2', 'v2')")
    p = read_pointer(fs)
    assert (p["active"], p["prev"], p["trial"]) == ("a", "", 0)
    assert p["pending"] == {"component": "agent", "seq": 2, "digest": "d2", "version": "v2"}
    rc, versions, _ = boot(fs)
    assert rc == 0 and versions == ["2"] * 7
    assert read_pointer(fs)["trial"] == 1
    assert out(device(fs, "from edgefw import slots\nprint(slots.take_report(''), slots.take_report(''))")) \
        == "('trial', 'agent', 2, 'v2', '') None"


def test_confirm_raises_the_counter_in_the_same_write_that_ends_the_trial(tmp_path):
    fs = board(tmp_path)
    install(fs, bundle(agent("2")), 2)
    boot(fs)
    # Every rename the confirm makes, logged: exactly one, onto ota/slot.
    got = out(device(fs, """
import os, sys
class LogOs:
    pass
log = LogOs()
for k in dir(os):
    setattr(log, k, getattr(os, k))
def rename(a, b):
    print("rename", a, b)
    os.rename(a, b)
log.rename = rename
sys.modules["os"] = log
from edgefw import slots
print(slots.confirm(""))
print(slots.confirm(""))
"""))
    lines = got.splitlines()
    assert lines[0] == "rename ota/slot.new ota/slot" and lines[2] == "None", got
    assert ast.literal_eval(lines[1]) == {"component": "agent", "seq": 2, "digest": "d2", "version": "v2"}
    p = read_pointer(fs)
    assert "trial" not in p and "pending" not in p
    assert (p["active"], p["seq"], p["digest"], p["version"]) == ("a", {"agent": 2}, {"agent": "d2"},
                                                                  {"agent": "v2"})
    for _ in range(4):   # confirmed: no more trial boots, no rollback
        rc, versions, _ = boot(fs)
        assert versions == ["2"] * 7
    assert read_pointer(fs)["active"] == "a"


def test_updates_alternate_between_the_slots_and_prev_is_the_slot_each_came_from(tmp_path):
    fs = board(tmp_path)
    for seq, slot, prev in ((2, "a", ""), (3, "b", "a")):
        install(fs, bundle(agent(str(seq))), seq)
        rc, versions, _ = boot(fs)
        assert versions == [str(seq)] * 7
        device(fs, "from edgefw import slots\nslots.confirm('')")
        p = read_pointer(fs)
        assert (p["active"], p["prev"], p["seq"]) == (slot, prev, {"agent": seq})
    # 4 goes into a, which prev names: prev is dropped before a is emptied,
    # so stage 0 never falls back to a slot being rewritten.
    install(fs, bundle(agent("4")), 4, apply=False)
    p = read_pointer(fs)
    assert (p["active"], p["prev"]) == ("b", "")
    device(fs, "from edgefw import slots\nslots.AgentTarget('').apply(4, 'd4', 'v4')")
    assert (read_pointer(fs)["active"], read_pointer(fs)["prev"]) == ("a", "b")
    assert boot(fs)[1] == ["4"] * 7


def test_an_install_on_trial_is_refused_and_touches_nothing(tmp_path):
    fs = board(tmp_path)
    install(fs, bundle(agent("2")), 2)
    boot(fs)
    before = (fs / "ota" / "slot").read_bytes()
    proc = install(fs, bundle(agent("3")), 3, apply=False, check=False)
    assert proc.returncode != 0 and b"on trial" in proc.stderr + proc.stdout
    assert (fs / "ota" / "slot").read_bytes() == before
    assert not (fs / "slots" / "b").exists()


def _name(n: int) -> str:
    return "edgefw/" + "n" * (n - 7)


GOOD = agent("3", pad=200)
BAD_BUNDLES = {
    "bad magic": bundle(GOOD, magic=b"EAB2"),
    "no magic at all": b"EA",
    "empty": b"",
    "traversal ../x": bundle(GOOD + [("../x", b"evil")]),
    "traversal in the middle": bundle(GOOD + [("edgefw/../../x", b"evil")]),
    "segment .": bundle(GOOD + [("edgefw/./x", b"evil")]),
    "absolute /abs": bundle(GOOD + [("/abs", b"evil")]),
    "empty segment": bundle(GOOD + [("edgefw//x", b"evil")]),
    "trailing slash": bundle(GOOD + [("edgefw/", b"evil")]),
    "upper case": bundle(GOOD + [("edgefw/X.py", b"")]),
    "a space": bundle(GOOD + [("edgefw/a b", b"")]),
    "name too long (65)": bundle(GOOD + [(_name(65), b"")]),
    "duplicate name": bundle(GOOD + [GOOD[2]]),
    "a file where a folder is": bundle(GOOD + [("edgefw", b"")]),
    "a folder where a file is": bundle(GOOD + [("edgefw/m0.py/x", b"")]),
    "size past the end": bundle(GOOD)[:-1] + b"\x05abcde" + struct.pack(">I", 4096) + b"abc\x00",
    "name past the end": b"EAB1\x40edgefw/",
    "size cut short": b"EAB1\x01a\x00\x00",
    "missing end byte": bundle(GOOD, end=b""),
    "trailing bytes": bundle(GOOD) + b"\x00",
    "129 files": bundle([(f"f{i}", b"x") for i in range(129)]),
    "no files at all": bundle([]),
    "no edgefw/__init__": bundle([f for f in GOOD if not f[0].startswith("edgefw/__init__")]),
}


@pytest.mark.parametrize("case", sorted(BAD_BUNDLES))
def test_a_malformed_bundle_is_refused_and_leaves_the_active_slot_and_the_pointer(tmp_path, case):
    fs = board(tmp_path)
    active = agent("2", pad=100)
    for name, data in active:
        (fs / "slots" / "a" / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / "slots" / "a" / name).write_bytes(data)
    write_pointer(fs, {"active": "a", "prev": "", "seq": {"agent": 2}})
    before = (fs / "ota" / "slot").read_bytes()
    slots_before = tree(fs / "slots")
    proc = install(fs, BAD_BUNDLES[case], 3, check=False)
    assert proc.returncode == 2 and out(proc) == "REFUSED bad-bundle", proc.stderr.decode()
    assert (fs / "ota" / "slot").read_bytes() == before
    assert tree(fs / "slots") == slots_before    # slot a as it was, no slot b
    assert not (fs / "ota" / "dl").exists() and not (fs / "ota" / "inst").exists()
    rc, versions, _ = boot(fs)
    assert versions == ["2"] * 7


def test_the_limits_themselves_are_accepted(tmp_path):
    fs = board(tmp_path)
    small = agent("2", pad=10)     # 8 files
    files = small + [(f"f{i}", b"") for i in range(128 - len(small) - 1)] + [(_name(64), b"y" * 5000)]
    install(fs, bundle(files), 2, apply=False)
    assert (fs / "slots" / "a" / _name(64)).read_bytes() == b"y" * 5000
    assert len([p for p in (fs / "slots" / "a").rglob("*") if p.is_file()]) == 128


@pytest.mark.parametrize("how,why", [
    ("    raise RuntimeError('boom')\n", "crashed on trial: RuntimeError('boom'"),
    ("    return 'crashed'\n", "crashed on trial: 'crashed'"),
    ("    return 'safe'\n", "crashed on trial: 'safe'"),
    ("    import edgefw.missing\n", "crashed on trial: ImportError"),
])
def test_a_new_agent_that_crashes_on_trial_rolls_back_at_once_and_reports_why(tmp_path, how, why):
    fs = board(tmp_path)
    install(fs, bundle(agent("2", boot=how)), 2)
    rc, versions, console = boot(fs)
    assert rc == 1 and versions is None, console     # rolled back, then reset
    p = read_pointer(fs)
    assert p["active"] == "" and "trial" not in p and p["bad"] == {"agent": 2}
    assert p["why"].startswith(why), p["why"]
    rc, versions, _ = boot(fs)
    assert rc == 0 and versions == ["1"] * 7
    got = out(device(fs, "from edgefw import slots\nprint(slots.take_report(''))\n"
                         "print(slots.bad('', 'agent'), slots.counter('', 'agent'))"))
    report, rest = got.splitlines()
    report = ast.literal_eval(report)
    assert report[:4] == ("rolled-back", "agent", 2, "v2") and report[4] == p["why"]
    assert rest == "2 0"
    assert out(device(fs, "from edgefw import slots\nprint(slots.take_report(''))")) == "None"


def test_a_new_agent_that_never_confirms_rolls_back_after_three_trial_boots(tmp_path):
    fs = board(tmp_path)
    install(fs, bundle(agent("2")), 2)
    for n in (1, 2, 3):
        rc, versions, _ = boot(fs)
        assert versions == ["2"] * 7 and read_pointer(fs)["trial"] == n
    rc, versions, _ = boot(fs)
    assert rc == 0 and versions == ["1"] * 7
    p = read_pointer(fs)
    assert p["why"] == "never confirmed after 3 trial boots" and p["bad"] == {"agent": 2}
    assert out(device(fs, "from edgefw import slots\nprint(slots.take_report(''))")) == \
        "('rolled-back', 'agent', 2, 'v2', 'never confirmed after 3 trial boots')"


def test_the_agent_may_roll_back_itself(tmp_path):
    fs = board(tmp_path)
    install(fs, bundle(agent("2")), 2)
    boot(fs)
    device(fs, "from edgefw import slots\nslots.rollback('', 'self-test failed')")
    p = read_pointer(fs)
    assert p["active"] == "" and p["why"] == "self-test failed" and p["bad"] == {"agent": 2}
    assert boot(fs)[1] == ["1"] * 7


@pytest.mark.parametrize("pointer,expect", [
    ({"active": "b", "prev": "a"}, "2"),       # b missing: prev
    ({"active": "b", "prev": ""}, "1"),        # b missing, no prev: factory
    ({"active": "a", "prev": "b"}, "2"),       # a whole
    ({"active": "zz", "prev": "../x"}, "1"),   # nonsense: factory
])
def test_a_missing_slot_falls_back_to_prev_then_to_the_factory_slot(tmp_path, pointer, expect):
    fs = board(tmp_path)
    for name, data in agent("2", pad=100):
        (fs / "slots" / "a" / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / "slots" / "a" / name).write_bytes(data)
    (fs / "slots" / "b" / "edgefw").mkdir(parents=True)   # a folder without __init__: broken
    write_pointer(fs, pointer)
    rc, versions, _ = boot(fs)
    assert rc == 0 and versions == [expect] * 7


def test_a_missing_slot_on_trial_rolls_back(tmp_path):
    fs = board(tmp_path)
    write_pointer(fs, {"active": "b", "prev": "", "trial": 0,
                       "pending": {"component": "agent", "seq": 5, "digest": "d", "version": "5"}})
    rc, versions, _ = boot(fs)
    assert versions == ["1"] * 7
    p = read_pointer(fs)
    assert p["why"] == "slot b is missing or broken" and p["bad"] == {"agent": 5}


def test_stage0_and_edgefw_atomic_agree_on_the_pointer_format(tmp_path):
    fs = board(tmp_path)
    got = out(device(fs, """
import stage0
from edgefw import atomic, slots
stage0.save("", {"active": "a", "seq": {"agent": 7}})
print(slots.counter("", "agent"), atomic.read("ota/slot") is not None)
slots._write("", {"active": "b", "seq": {"agent": 8}})
print(stage0.load("")["seq"]["agent"], stage0.load("")["active"])
"""))
    assert got.splitlines() == ["7 True", "8 b"]
    assert read_pointer(fs) == {"active": "b", "seq": {"agent": 8}}


def test_a_download_resumes_from_its_last_whole_block_and_is_read_back(tmp_path):
    fs = board(tmp_path)
    (fs / "ota").mkdir()
    data = bytes(range(256)) * 41    # 10496 bytes: two blocks and a torn third
    (fs / "ota" / "dl").write_bytes(data)
    got = out(device(fs, """
from edgefw import slots
t = slots.AgentTarget("")
n = t.begin(True)
buf = bytearray(100)
print(n, t.read_into(4000, buf), bytes(buf[:4]).hex(), t.read_into(8190, buf))
t.write(8192, memoryview(b"z" * 10))
t.flush()
t.close()
print(t.begin(True))
t.close()
print(t.begin(False))
t.close()
"""))
    assert got.splitlines() == ["8192 100 a0a1a2a3 2", "8192", "0"]
    assert (fs / "ota" / "dl").read_bytes() == b""
    device(fs, "from edgefw import slots\nslots.AgentTarget('').discard()")
    assert not (fs / "ota" / "dl").exists()


def test_capacity_is_half_the_free_flash_less_a_reserve(tmp_path):
    fs = board(tmp_path)
    import os
    st = os.statvfs(fs)
    got = int(out(device(fs, "from edgefw import slots\nprint(slots.AgentTarget('').capacity())")))
    want = (st.f_bavail * st.f_bsize - 16384) // 2
    assert abs(got - want) < 1 << 20   # the disk is shared with other tests


def test_under_cpython_with_a_data_folder_the_update_boots_from_that_folder(tmp_path):
    # A Raspberry Pi: CPython, the firmware's sources, the device's files in
    # $EDGE_DEVICE_ROOT (a root prefix, where a board's is "").
    import os
    import subprocess
    import sys

    from tests.mpy import CPYTHON_SHIM, FIRMWARE

    fs = tmp_path / "data"
    fs.mkdir()
    (tmp_path / "b.bin").write_bytes(bundle(agent("2")))
    code = f"""
import sys
sys.path[:0] = [{str(FIRMWARE)!r}, {str(CPYTHON_SHIM)!r}]
from edgefw import slots
t = slots.AgentTarget({str(fs)!r})
t.begin(False)
data = open({str(tmp_path / 'b.bin')!r}, "rb").read()
for off in range(0, len(data), 4096):
    t.write(off, memoryview(data)[off:off + 4096])
t.flush()
t.close()
t.install(2, "d2", "2")
t.apply(2, "d2", "2")
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    env = {**os.environ, "EDGE_DEVICE_ROOT": str(fs)}
    proc = subprocess.run([sys.executable, str(FIRMWARE / "main.py")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["AGENT"] + ["2"] * 7, proc.stderr
    assert read_pointer(fs)["trial"] == 1
