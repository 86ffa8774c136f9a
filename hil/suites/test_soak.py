"""Soak: telemetry streamed for a while through random resets, power cuts and link drops loses and
duplicates nothing.

``pytest --rig RIGFILE hil/suites/test_soak.py --soak-seconds 3600`` (default
60 per board; ``--soak-seed N`` replays a printed run). Each board streams over
serial (``edge telemetry ingest``) and, if it has BLE, over BLE too (``edge
gateway run``, the board paired), both into the run's registry, while faults
chosen by a seeded random generator hit it every few seconds: a reset, a power
cut (where the rig can switch it), the serial link lost (the ingest killed and
started again), the BLE link dropped. The result, from the device's own journal
(its HELLO before and after) and the registry, is recorded as JUnit properties
and printed: records sent, stored, lost (must be 0) and duplicated (must be 0).
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from hil.suites.telemetry_steps import (exactly_once_window, gateway, ingest, paired, wait_boot_stored,
                                        wait_stored)

pytestmark = pytest.mark.needs("console")

GAP_S = (2.0, 5.0)      # seconds between two faults: long enough for a link to carry records again


def test_soak_random_resets_and_link_drops_lose_and_duplicate_nothing(board, strategy, host, faults, request,
                                                                      record_property):
    seconds = request.config.getoption("soak_seconds")
    seed = request.config.getoption("soak_seed")
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 32)
    rnd = random.Random(f"{seed}:{board.name}")
    print(f"soak on {board.name}: {seconds:g} s, seed {seed} (--soak-seed {seed} replays it)")
    record_property("soak_seed", seed)
    record_property("soak_seconds", seconds)
    ble = "ble" in board.rig_board.capabilities
    faults_here = ["reset", "serial_lost"] + (["power_cut"] if board.power is not None else []) + \
        (["ble_drop"] if ble else [])
    done: Counter[str] = Counter()

    def soak(before):
        if ble:
            paired(strategy, host, before.device_id)
        links = {"serial": ingest(host, board)}
        if ble:
            links["ble"] = gateway(host)
        wait_boot_stored(host, before.device_id, before.boot - 1, "records before the first fault",
                         alive=links["serial"])
        end = time.monotonic() + seconds
        while time.monotonic() + GAP_S[0] < end:
            time.sleep(min(rnd.uniform(*GAP_S), max(0.0, end - time.monotonic())))
            fault = rnd.choice(faults_here)
            done[fault] += 1
            if fault == "serial_lost":
                links["serial"].kill()
                links["serial"] = ingest(host, board)
            else:
                getattr(faults, fault)()
        # The links catch up with what the last fault left on the device.
        with host.registry() as store:
            n = store.count(before.device_id)
        wait_stored(host, before.device_id, n + 5, "records after the last fault", alive=links["serial"])
        for link in links.values():
            link.stop()

    t = exactly_once_window(host, board, record_property, soak)
    record_property("soak_faults", ", ".join(f"{k} {v}" for k, v in sorted(done.items())))
    print(f"soak on {board.name}, seed {seed}: {t.line()}; faults: {dict(done)}")
    assert sum(done.values()) > 0 or seconds < GAP_S[1], "the soak hit the board with no fault"
