"""The bench's own commands on an emulated Pico, unchanged: `edge flash`, `edge label`,
`edge monitor`, `edge telemetry ingest` across power cuts, on the real rp2 firmware.

What the emulated chip does not model shows here as it would on a faulty board:
its os.urandom repeats one byte (the bench then draws the identity key). One
bench for the module; the tests run in order (flash first).
"""

from __future__ import annotations

import json
import time

import pytest

from edge_agent.store import Store
from tests.harness import mpremote
from tests.hil.test_emulated_board import wait_repl
from tests.mpy import board_heap

pytestmark = [pytest.mark.emulated, pytest.mark.timeout(900)]

NAME = "pico-1"
OTHER = "pico-2"
SEEN: dict = {}         # what one test learns for the next (device id, heap size)


@pytest.fixture(scope="module")
def bench(module_bench):
    rows = module_bench.up("pico", "pico", extra=("--emulated", "--unprovisioned"), timeout=300)
    assert [r["name"] for r in rows] == [NAME, OTHER]
    module_bench.edge("sim", "power", OTHER, "off")     # until its test: two emulators share 2 cores
    wait_repl(rows[0]["port"])
    return module_bench


def flash(bench, name: str) -> dict:
    proc = bench.edge("flash", "-p", name, "--json", timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = json.loads(proc.stdout)
    return result


def test_edge_flash_deploys_provisions_and_self_tests_it(bench):
    r = flash(bench, NAME)
    assert r["ok"] and r["steps"] == ["check", "deploy", "provision", "selftest", "register"], r
    assert r["device_id"].startswith("pico-") and r["identity_created"] and r["files_copied"] > 20
    # The chip's os.urandom fails the health check: the key was drawn on the bench, and it says so.
    assert "os.urandom failed the health check" in r["warning"]
    assert r["selftest"]["sensors"] == 3 and r["selftest"]["sensor_errors"] == []
    SEEN["device"] = r["device_id"]


def test_a_second_emulated_pico_gets_an_identity_of_its_own(bench):
    # Both chips' os.urandom give the same bytes: keys made from them would be one key.
    bench.edge("sim", "power", OTHER, "on")
    try:
        wait_repl(bench.port(OTHER))
        other = flash(bench, OTHER)
    finally:
        bench.edge("sim", "power", OTHER, "off")
    assert other["ok"] and other["device_id"].startswith("pico-")
    assert other["device_id"] != SEEN["device"]


def test_edge_label_prints_its_pairing_label(bench, tmp_path):
    out = bench.json("label", SEEN["device"], "--out", str(tmp_path))
    assert (tmp_path / f"{SEEN['device']}.png").stat().st_size > 0 and out["payload"]


def test_the_agent_stopped_for_the_repl_leaves_no_watchdog_to_reset_the_board(bench):
    # The agent arms the RP2040 watchdog (8 s). mpremote interrupts it; a session
    # longer than that must not be cut by a reset (before, `edge flash` lost the
    # board while the chip computed its public key).
    proc = mpremote(bench.port(NAME), "exec",
                    "import time, machine, gc; time.sleep(12); "
                    "print(machine.reset_cause() == machine.WDT_RESET, time.ticks_ms() > 12000, "
                    "gc.mem_free() + gc.mem_alloc())", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    was_wdt, up_long, heap_total = proc.stdout.split()
    assert was_wdt == "False" and up_long == "True"
    SEEN["heap_total"] = int(heap_total)
    bench.edge("sim", "reset", NAME)            # the agent runs again


def test_monitor_shows_its_frames_decoded(bench):
    out = bench.edge("monitor", NAME, "--for", "20", timeout=60).stdout
    assert f"HELLO {SEEN['device']}" in out and f"BATCH {SEEN['device']}" in out, out
    assert "#EA:" not in out


def test_ingest_across_two_power_cuts_stores_every_record_once_within_the_heap_budget(bench):
    ingest = bench.start("telemetry", "ingest", NAME, "--for", "75", "--json")
    for _ in range(2):
        time.sleep(20)
        bench.edge("sim", "power", NAME, "off")
        time.sleep(2)
        bench.edge("sim", "power", NAME, "on")
    out, err = ingest.communicate(timeout=150)
    assert ingest.returncode == 0, err
    summary = json.loads(out)
    assert all(not p["bad_frames"] for p in summary["ports"]), summary

    with Store(bench.db) as store:
        rows = list(store.query(device=SEEN["device"]))
    seqs = sorted(r.seq for r in rows)
    assert len(seqs) > 20 and seqs == list(range(len(seqs))), "a record lost or stored twice"
    assert len({r.boot for r in rows}) >= 3, "each power cut starts a new boot"
    assert {r.name for r in rows} == {"uptime", "heap_free", "mcu_temp"}
    # The emulator's temperature sensor sits at 27 C; the agent reads it through the real ADC.
    assert all(26.5 < r.value < 27.5 for r in rows if r.name == "mcu_temp")
    used = max(SEEN["heap_total"] - r.value for r in rows if r.name == "heap_free")
    assert used <= board_heap("pico"), f"the agent's live heap reached {used} B"
