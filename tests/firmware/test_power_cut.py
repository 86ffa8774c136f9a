"""Power cuts during an agent update (docs/protocol.md 7.7): the download,
the install into the inactive slot, the switch, stage 0's trial count, the
confirm, a second update and its rollback at the trial deadline (the
agent's path, ota_apply.trial_over) run under MicroPython (esp32 heap,
.mpy) with every write boundary numbered: each open for writing, write,
flush, close, rename, remove, mkdir and rmdir. For each k the run is killed
(SIGKILL: no finally block, no flush) just before boundary k, and a write
cut there leaves half its bytes. Then the board boots again (a new process):
it must run a whole slot, every module of it stating one version, and its
pointer must parse; and it must still take the next update.

What this does not model: the kernel keeps what a killed process wrote, so
a cut never loses data a write() returned for (LittleFS, which commits on
close and rename, does lose it; the atomic format's CRC covers that case)."""

from __future__ import annotations

import shutil
import signal
import subprocess

from tests.firmware.compiled import compiled_firmware
from tests.firmware.slots_device import FEED, agent, board, boot, bundle, device, read_pointer
from tests.mpy import board_heap, micropython_exe

# The fault injector, installed before the firmware is imported: os is
# replaced by a module of wrappers (a builtin module's attributes cannot be
# set) and builtins.open by one whose files count their writes.
CUTTER = """
import builtins, sys
import os as _os
_steps = 0
def step(what):
    global _steps
    _steps += 1
    if _steps == CUT:
        sys.stdout.write("CUT %d %s\\n" % (_steps, what))
        sys.stdin.read(1)   # the parent kills us here
class _Os:
    pass
fos = _Os()
for _k in dir(_os):
    setattr(fos, _k, getattr(_os, _k))
def _wrap(name):
    f = getattr(_os, name)
    def w(*a):
        step(name + " " + a[0])
        return f(*a)
    setattr(fos, name, w)
for _k in ("rename", "remove", "mkdir", "rmdir"):
    _wrap(_k)
sys.modules["os"] = fos
_open = builtins.open
class _File:
    def __init__(self, f):
        self.f = f
    def write(self, b):
        if _steps + 1 == CUT:
            self.f.write(bytes(b)[:len(b) // 2])   # a write torn in the middle
        step("write")
        return self.f.write(b)
    def flush(self):
        step("flush")
        self.f.flush()
    def close(self):
        step("close")
        self.f.close()
    def fileno(self):
        return self.f.fileno()
    def seek(self, *a):
        return self.f.seek(*a)
    def readinto(self, b):
        return self.f.readinto(b)
def _opener(p, mode="r", *a):
    if "w" in mode or "a" in mode or "+" in mode:
        step("open " + p)
        return _File(_open(p, mode, *a))
    return _open(p, mode, *a)
builtins.open = _opener
"""


# 3 rolls back as the agent on trial does at its deadline (7.7): stage 0's
# rollback write, then a reset (here a no-op: the run goes on to the end).
TRIAL_OVER = ("from edgefw import ota_apply\n"
              "ota_apply.trial_over('', 'not confirmed within 600 s: cut test', lambda: None)\n")


def feed(src: str) -> str:
    return f"SRC = {src!r}\n" + FEED


def scenario(tmp) -> str:
    """Update to 2 (install, switch, a trial boot's count, confirm), then to 3
    (install, switch, trial count) and roll 3 back at its trial deadline."""
    b2, b3 = tmp / "b2.bin", tmp / "b3.bin"
    b2.write_bytes(bundle(agent("2")))
    b3.write_bytes(bundle(agent("3")))
    return (feed(str(b2)) + "t.install(2, 'd2', '2')\nt.apply(2, 'd2', '2')\n"
            + "import stage0\nstage0.choose('')\nslots.confirm('')\n"
            + feed(str(b3)) + "t.install(3, 'd3', '3')\nt.apply(3, 'd3', '3')\n"
            + "stage0.choose('')\n" + TRIAL_OVER + "print('DONE', _steps)\n")


def cut_run(fs, code: str, cut: int) -> str:
    """Run ``code`` with the injector, killed at boundary ``cut``; returns the
    marker line ("CUT k what") or the last line when it ran to the end."""
    pre = (f"import sys\nsys.path[:] = [{str(compiled_firmware())!r}, '', '.frozen']\nCUT = {cut}\n")
    proc = subprocess.Popen([micropython_exe(), "-X", f"heapsize={board_heap('esp32')}", "-c",
                             pre + CUTTER + code], cwd=fs, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"MICROPYPATH": ".frozen"})
    last = b""
    try:
        for line in proc.stdout:
            last = line
            if line.startswith(b"CUT "):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=30)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stdin.close()
        proc.stderr.close()
    if not last.startswith(b"CUT ") and proc.returncode != 0:
        raise AssertionError(f"the update run failed: {err.decode(errors='replace')}")
    return last.decode().strip()


def expected_version(fs, p: dict | None) -> str:
    """The version stage 0 must boot for pointer ``p``: the active slot, else prev,
    else the factory slot, each only when whole (its package's __init__ there)."""
    p = p or {}
    if "trial" in p and p["trial"] >= 3:
        return expected_version(fs, {"active": p.get("prev", "")})
    for s in (p.get("active"), p.get("prev")):
        if s in ("a", "b") and (fs / "slots" / s / "edgefw" / "__init__.py").exists():
            return (fs / "slots" / s / "edgefw" / "__init__.py").read_text().split('"')[1]
    return "1"


def test_a_power_cut_at_any_write_boundary_of_an_update_leaves_a_whole_slot(tmp_path):
    template = board(tmp_path / "template")
    # What an earlier install cut short left in slot b (it is emptied first).
    (template / "slots" / "b" / "edgefw").mkdir(parents=True)
    (template / "slots" / "b" / "edgefw" / "m0.py").write_text('V = "0"\n')
    code = scenario(tmp_path)
    done = cut_run(shutil.copytree(template, tmp_path / "full"), code, 0)
    total = int(done.split()[1])
    assert total >= 100, done
    b4 = tmp_path / "b4.bin"
    b4.write_bytes(bundle(agent("4", pad=100)))
    recover = ("from edgefw import slots\nslots.confirm('')\n" + feed(str(b4))
               + "t.install(4, 'd4', '4')\nt.apply(4, 'd4', '4')\n")
    seen = set()
    kinds = {}
    for k in range(1, total + 1):
        fs = shutil.copytree(template, tmp_path / f"cut{k}")
        marker = cut_run(fs, code, k)
        assert marker.startswith(f"CUT {k} "), marker
        kinds[marker.split()[2]] = kinds.get(marker.split()[2], 0) + 1
        p = read_pointer(fs)                          # parses (or is absent)
        want = expected_version(fs, p)
        rc, versions, console = boot(fs)
        assert rc == 0 and versions is not None, f"cut {marker}: {console}"
        assert set(versions) == {want}, f"cut {marker}: booted {versions}, pointer {p}"
        seen.add(want)
        # And the board takes the next update from whatever the cut left.
        device(fs, recover)
        rc, versions, console = boot(fs)
        assert versions == ["4"] * 7, f"after cut {marker}: {console}"
        shutil.rmtree(fs)
    assert seen == {"1", "2", "3"}
    assert {"open", "write", "flush", "close", "rename", "remove", "mkdir", "rmdir"} <= set(kinds), kinds
    print(f"{total} cut points: {kinds}")
