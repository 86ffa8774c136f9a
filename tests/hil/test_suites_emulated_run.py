"""The suites that apply, run as QA runs them, on a rig of one emulated Pico
(tests/hil/rigs/emulated1.yaml: the real rp2 firmware on rp2040js). The Pico
has no radio, so what needs BLE skips saying so; the faults of virtual boards
only (a clock jump, a full filesystem) skip too. One run for all of them: the
board is flashed and brought up once."""

from __future__ import annotations

import pytest

from tests.hil.suite_run import run_suite

pytestmark = [pytest.mark.emulated, pytest.mark.slow, pytest.mark.timeout(2000)]

RIG = "tests/hil/rigs/emulated1.yaml"
SUITES = "test_smoke.py test_telemetry.py test_pairing.py test_ota.py test_soak.py"
# smoke; telemetry's rate and its three serial faults; OTA's quick tests (a downgrade refused, a
# crashing release rolled back: the long ones run on the Pico W of the virtual rig); the soak
PASSED = 4 + 4 + 2 + 1


def test_the_suites_pass_on_an_emulated_pico_and_what_needs_a_radio_skips_saying_so(tmp_path):
    proc = run_suite(SUITES, "-rs", "--soak-seconds", "20", timeout=1900, run_dir=tmp_path, rig=RIG)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-2000:]
    last = out.splitlines()[-1]
    assert f"{PASSED} passed" in last and "failed" not in last, out[-3000:]
    # The summary table: the board, its kind, the count passed and none failed.
    assert any(line.split()[:5] == ["emu-pico", "pico", "emulated", str(PASSED), "0"]
               for line in out.splitlines()), out[-2000:]
    # Each skip names why: no radio, or a fault of virtual boards only.
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skips and all("emu-pico lacks ble" in s or "virtual boards only" in s or "no board of type picow" in s
                         for s in skips), skips
