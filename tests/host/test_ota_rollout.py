"""edge_ota.rollout: deterministic buckets, monotonic eligibility, the halt rule."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_ota.rollout import bucket, eligible, halt_reason

DEVICES = [f"esp32-{i:012x}" for i in range(2000)]


def test_a_bucket_is_fixed_by_the_device_and_the_release():
    b = bucket("esp32-7c9e3a0b1d2f", "agent-0.3.0-7")
    assert 0.0 <= b < 1.0 and b == bucket("esp32-7c9e3a0b1d2f", "agent-0.3.0-7")
    digest = hashlib.sha256(b"edge-rollout\0agent-0.3.0-7\0esp32-7c9e3a0b1d2f").digest()
    assert b == (int.from_bytes(digest[:8], "big") >> 11) / 2**53   # SHA-256, the same on any host
    assert b != bucket("esp32-7c9e3a0b1d2f", "agent-0.3.0-8")


def test_buckets_spread_devices_evenly_and_differ_between_releases():
    first = [bucket(d, "r1") for d in DEVICES]
    tenths = [sum(1 for b in first if k / 10 <= b < (k + 1) / 10) for k in range(10)]
    assert all(140 <= n <= 260 for n in tenths), tenths            # 200 each expected
    early_r1 = {d for d in DEVICES if eligible(d, "r1", 0.1)}
    early_r2 = {d for d in DEVICES if eligible(d, "r2", 0.1)}
    assert 140 <= len(early_r1) <= 260 and len(early_r1 & early_r2) < 60   # ~20 expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=64), st.text(max_size=40), st.floats(0, 1), st.floats(0, 1))
def test_a_device_in_at_a_fraction_stays_in_at_every_larger_one(device, release, f1, f2):
    low, high = sorted((f1, f2))
    if eligible(device, release, low):
        assert eligible(device, release, high)


@pytest.mark.parametrize("device", DEVICES[:50])
def test_no_device_at_0_and_every_device_at_1(device):
    assert not eligible(device, "r1", 0.0) and eligible(device, "r1", 1.0)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_a_fraction_outside_0_to_1_is_refused(fraction):
    with pytest.raises(ValueError, match="from 0 to 1"):
        eligible("esp32-1", "r1", fraction)


def test_a_rollout_halts_only_above_the_threshold_once_enough_devices_tried():
    assert halt_reason(attempted=9, failed=9, threshold=0.2, minimum=10) is None
    assert halt_reason(attempted=10, failed=2, threshold=0.2, minimum=10) is None     # equal: goes on
    reason = halt_reason(attempted=10, failed=3, threshold=0.2, minimum=10)
    assert reason is not None
    assert "3 of 10" in reason and "30.0%" in reason and "20.0%" in reason and "10 attempts" in reason
    assert halt_reason(attempted=0, failed=0, threshold=0.0, minimum=0) is None
    assert halt_reason(attempted=1, failed=1, threshold=0.0, minimum=0) is not None


@pytest.mark.parametrize("attempted, failed, threshold", [(5, 6, 0.1), (-1, 0, 0.1), (5, -1, 0.1),
                                                          (5, 1, 1.5)])
def test_impossible_figures_are_refused(attempted, failed, threshold):
    with pytest.raises(ValueError):
        halt_reason(attempted, failed, threshold, 1)
