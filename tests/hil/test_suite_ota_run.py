"""The OTA suite run as QA runs it on three virtual boards (slow), and its two faults on their own:
a power cut after N bytes of an update and at a named install step (hil/pytest_plugin.py), driven
by a registry that hears an update as `edge ota push` records it, with a switch that records cuts."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from edge_agent.store import Store
from edge_hil.faults import INSTALL_STEPS, Faults, board_device_id
from tests.hil.suite_run import run_suite_passing, whole_run

DEVICE = "picow-0a0b0c0d0e0f"
SIZE = 1000


# -- the suite on a rig of virtual boards -----------------------------------------------------

@whole_run
def test_the_ota_suite_passes_on_a_rig_of_virtual_boards(tmp_path):
    # Quick tests on every board; the long ones (an update to confirmed, a trial deadline, a killed
    # push, power cuts) on the Pico W only.
    run_suite_passing("test_ota.py", tmp_path, {"sim-esp32": 2, "sim-esp32c3": 2, "sim-picow": 6})


# -- the faults, on a registry fed by hand ------------------------------------------------------

class Switch:
    """A power switch that records what it was told, and when."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def on(self) -> None:
        self.calls.append("on")

    def off(self) -> None:
        self.calls.append("off")


@pytest.fixture
def rig(tmp_path):
    """A board with power and OTA (its device id told by `edge devs`), a host whose registry holds one
    release for it; ``rig.note(state)`` / ``rig.progress(held)`` record what a push would."""
    db = tmp_path / "registry.db"
    with Store(db) as store:
        release, _ = store.add_release(board="picow", component="agent", version="9.1.0", sequence=7,
                                       digest=b"\x01" * 32, size=SIZE, manifest=b"m", image="i",
                                       expires=2 ** 31, fraction=0.0, halt_at=1.0, min_devices=1)
    devs = [{"name": "picow-1", "port": "/dev/pts/9", "device_id": DEVICE}]
    host = SimpleNamespace(registry=lambda: Store(db),
                           edge=lambda *args, **kw: SimpleNamespace(returncode=0, stdout=json.dumps(devs)))
    row = SimpleNamespace(name="sim-picow", kind="virtual", capabilities=frozenset({"power", "ota", "console"}))
    target = SimpleNamespace(rig_board=row, name=row.name, port="/dev/pts/9", power=Switch(), bench=None,
                             bench_name="picow-1", flash_args=["-p", "picow-1"])

    def note(state: str, held: int | None = None) -> None:
        with Store(db) as s:
            s.note_ota_state(DEVICE, "agent", 7, state, release_id=release.id, held=held, size=SIZE)

    def progress(held: int) -> None:
        with Store(db) as s:
            s.note_ota_progress(DEVICE, release.id, held, SIZE)

    return SimpleNamespace(faults=Faults(target, host), power=target.power, note=note, progress=progress,
                           target=target, host=host)


def later(*steps) -> threading.Thread:
    """Run ``steps`` one after the other in a thread, a little apart, as a board's reports arrive."""
    def run() -> None:
        for step in steps:
            time.sleep(0.1)
            step()
    t = threading.Thread(target=run)
    t.start()
    return t


def test_a_cut_after_n_bytes_falls_at_the_first_progress_past_n_and_the_power_comes_back(rig):
    rig.note("downloading", held=0)            # heard before it was armed: not counted
    rig.progress(600)
    cut = rig.faults.power_cut_after_ota_bytes(500, off_s=0)
    feed = later(lambda: rig.note("offered"), lambda: rig.progress(300), lambda: rig.progress(650))
    assert cut.wait(10) is cut
    feed.join()
    assert cut.fired and cut.held == 650 and cut.state is None      # progress is no state of the history
    assert rig.power.calls == ["off", "on"]


def test_a_board_past_verified_holds_the_whole_image(rig):
    cut = rig.faults.power_cut_after_ota_bytes(SIZE, off_s=0)
    with cut:
        later(lambda: rig.progress(900), lambda: rig.note("verified")).join()
    assert (cut.fired, cut.held, cut.states) == (True, SIZE, ["verified"])


@pytest.mark.parametrize("step", INSTALL_STEPS)
def test_a_cut_at_an_install_step_falls_once_the_board_reports_it(rig, step):
    before = INSTALL_STEPS[:INSTALL_STEPS.index(step)]
    cut = rig.faults.power_cut_at_install_step(step, off_s=0)
    with cut:
        later(*[lambda s=s: rig.note(s) for s in before]).join()
        assert rig.power.calls == []           # not yet: the board has not reported it
        rig.note(step)
    assert cut.fired and cut.state == step and cut.states == [*before, step]
    assert rig.power.calls == ["off", "on"]


def test_a_cut_armed_after_another_counts_what_the_board_reported_since_that_one_fell(rig):
    # The board reported 'installed' while the first cut was switching it off, and the registry heard
    # it only then: the next cut, armed after, must not wait for a report that will never come again.
    first = rig.faults.power_cut_at_install_step("verified", off_s=0)
    with first:
        rig.note("verified")
    rig.note("installed")
    cut = rig.faults.power_cut_at_install_step("installed", off_s=0, after=first)
    assert cut.wait(10).fired and cut.states == ["installed"]
    assert rig.power.calls == ["off", "on", "off", "on"]


def test_the_block_ending_first_checks_the_registry_once_more(rig):
    # The update reached the step just as the block ended: the cut falls then, not never.
    cut = rig.faults.power_cut_at_install_step("installed", off_s=0)
    with cut:
        rig.note("installed")
    assert cut.fired and rig.power.calls == ["off", "on"]


def test_a_cut_that_never_falls_fails_the_test_saying_what_the_board_reported(rig):
    cut = rig.faults.power_cut_at_install_step("trial", off_s=0)
    with pytest.raises(pytest.fail.Exception) as e:
        with cut:
            rig.note("downloading", held=0)
            rig.note("refused")
    assert "install step 'trial' never fell" in str(e.value) and "downloading, refused" in str(e.value)
    assert rig.power.calls == []


@pytest.mark.parametrize("n", [-1, 1.5, "10", True, None])
def test_a_count_of_bytes_that_is_no_count_is_refused(rig, n):
    with pytest.raises(ValueError, match="a count of bytes"):
        rig.faults.power_cut_after_ota_bytes(n)


@pytest.mark.parametrize("name", ["confirmed", "offered", "Verified", "", None])
def test_a_step_that_is_no_install_step_is_refused_naming_the_steps(rig, name):
    with pytest.raises(ValueError, match="downloading, verified, installed, applying, trial"):
        rig.faults.power_cut_at_install_step(name)


def test_a_board_the_run_cannot_switch_skips_the_test(rig):
    rig.target.power = None
    with pytest.raises(pytest.skip.Exception, match="cannot take a power cut"):
        rig.faults.power_cut_at_install_step("trial")
    rig.target.rig_board.capabilities = frozenset({"ota"})
    with pytest.raises(pytest.skip.Exception, match="the rig gives it no power"):
        rig.faults.power_cut_after_ota_bytes(10)


def test_the_device_id_of_a_usb_board_is_read_back_by_edge_flash(rig):
    said = []

    def edge(*args, **kw):
        said.append(args[0])
        out = [{"name": None, "port": "/dev/ttyACM0", "device_id": None}] if args[0] == "devs" else \
            [{"device_id": "picow-ffeeddccbbaa", "ok": True}]
        return SimpleNamespace(returncode=0, stdout=json.dumps(out))

    usb = SimpleNamespace(**{**vars(rig.target), "port": "/dev/ttyACM0", "bench_name": None,
                             "flash_args": ["-p", "/dev/ttyACM0", "--board", "picow"]})
    assert board_device_id(usb, SimpleNamespace(edge=edge)) == "picow-ffeeddccbbaa"
    assert said == ["devs", "flash"]
