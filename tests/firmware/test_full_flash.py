"""A full flash is not a crash: the board keeps sampling and sending, and it
says so (a console line and a STATUS error with fs_full), on a board folder
that is a small filesystem of its own (tmpfs), as full as a board's flash can
get."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.device import PipeDevice, install, pump
from tests.firmware.spec_host import SpecHost


@pytest.fixture
def small_fs(tmp_path):
    """A 512 KiB filesystem (the firmware's sources take about 300 KiB of it) mounted for the test and always unmounted."""
    mnt = tmp_path / "flash"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path, leave: int) -> None:
    """Fill the filesystem of ``fs`` with one file until ``leave`` bytes are free."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    with open(fs / "filler.bin", "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    assert os.statvfs(fs).f_bavail * st.f_frsize <= leave


def run_until_full(small_fs: Path) -> PipeDevice:
    """Boot a board on the small filesystem, then fill it until the journal meets ENOSPC."""
    # The journal may grow to 1 MB: the flash fills long before that.
    fs = install(small_fs, sample_period_ms=100, journal_bytes=1 << 20)
    dev = PipeDevice(fs)
    dev.start()
    end = time.monotonic() + 10
    while b"edge: agent" not in dev.console and time.monotonic() < end:
        time.sleep(0.1)
    # Booted: now the flash is full but for one 4 KiB page (tmpfs counts
    # whole pages: one more journal segment), and no host answers, so
    # records pile up until an append meets the full flash.
    fill(small_fs, 4 * 1024)
    end = time.monotonic() + 40
    while b"edge: flash full" not in dev.console and time.monotonic() < end:
        time.sleep(0.2)
    time.sleep(1)
    return dev


@pytest.mark.slow
def test_a_full_flash_keeps_the_agent_running_and_says_so(small_fs):
    dev = run_until_full(small_fs)
    host = SpecHost()
    try:
        console = bytes(dev.console).decode(errors="replace")
        assert dev.proc.poll() is None, console[-2000:]
        assert "edge: flash full" in console and "Traceback" not in console, console[-2000:]
        dev.write(host.start())
        pump(dev, host, 8)
        errors = [st for st in host.statuses() if st[2] == "error"]
        assert errors and "flash full" in errors[0][3], host.statuses()
        assert errors[0][5]["fs_full"] > 0, errors[0]
        assert dev.proc.poll() is None
    finally:
        dev.stop()


@pytest.mark.slow
def test_after_a_full_flash_the_journal_is_sent_and_sampling_resumes(small_fs):
    dev = run_until_full(small_fs)
    host = SpecHost()
    try:
        dev.write(host.start())
        pump(dev, host, 10)
        seqs = sorted(host.records)
        assert len(seqs) > 100 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        newest = seqs[-1]
        pump(dev, host, 6)
        assert max(host.records) > newest
    finally:
        dev.stop()
