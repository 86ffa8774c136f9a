"""edgefw.atomic on a full flash: the state writes that free room have room
of their own (a reserve file), in-process under CPython with a filesystem
whose free space the test sets."""

from __future__ import annotations

import builtins
import errno
import os

import pytest

from tests.mpy import firmware_on_path

firmware_on_path()

from edgefw import atomic  # noqa: E402


@pytest.fixture
def full_flash(monkeypatch):
    """Opening a file for writing fails with ENOSPC while ``full[0]`` is true,
    unless the reserve file has been removed since (its block is then free)."""
    full = [False]
    real_open = builtins.open

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and full[0] and not path.endswith("reserve"):
            if atomic._reserve is None or os.path.exists(atomic._reserve[0]):
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    yield full
    atomic._reserve = None


def test_a_state_write_on_a_full_flash_uses_the_reserve_and_takes_it_back(tmp_path, full_flash):
    atomic.reserve(str(tmp_path / "reserve"), 4096)
    assert (tmp_path / "reserve").stat().st_size == 4096
    atomic.write(str(tmp_path / "state"), b"one")
    full_flash[0] = True
    for data in (b"two", b"three", b"four"):
        atomic.write(str(tmp_path / "state"), data)
        assert atomic.read(str(tmp_path / "state")) == data
        assert (tmp_path / "reserve").exists(), "the reserve is taken back after each write"


def test_without_a_reserve_a_full_flash_raises_enospc_and_keeps_the_old_data(tmp_path, full_flash):
    atomic.write(str(tmp_path / "state"), b"old")
    full_flash[0] = True
    with pytest.raises(OSError) as e:
        atomic.write(str(tmp_path / "state"), b"new")
    assert e.value.args[0] == errno.ENOSPC
    assert atomic.read(str(tmp_path / "state")) == b"old"


def test_a_reserve_that_could_not_be_made_is_made_once_room_comes_back(tmp_path, monkeypatch):
    real_open = builtins.open

    def no_room(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_room)
    try:
        atomic.reserve(str(tmp_path / "reserve"), 4096)
        assert not (tmp_path / "reserve").exists()
        assert not atomic.refill()
        monkeypatch.setattr(builtins, "open", real_open)
        assert atomic.refill()
        assert (tmp_path / "reserve").stat().st_size == 4096
    finally:
        atomic._reserve = None
