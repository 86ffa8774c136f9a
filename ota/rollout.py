"""Staged rollouts: which devices a release reaches at a fraction, and when it halts.

A device's place in a release is :func:`bucket`, a number in [0, 1) from
SHA-256 of the release and the device id: the same on every host and every
run, independent across releases (the first 10 % of one release are not the
first 10 % of the next). A device is :func:`eligible` when its bucket is
below the fraction, so raising the fraction only adds devices.
"""

from __future__ import annotations

import hashlib



def bucket(device_id: str, release_id: str) -> float:
    """The device's place in the release, in [0, 1): deterministic, uniform over devices."""
    digest = hashlib.sha256(f"edge-rollout\0{release_id}\0{device_id}".encode()).digest()
    # 53 bits, the float's mantissa: the result is exact and stays below 1.0.
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


def eligible(device_id: str, release_id: str, fraction: float) -> bool:
    """True if the release reaches the device at ``fraction`` (0 none, 1 all); monotonic in it."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a rollout fraction is from 0 to 1, got {fraction}")
    return bucket(device_id, release_id) < fraction


def halt_reason(attempted: int, failed: int, threshold: float, minimum: int) -> str | None:
    """Why a rollout must halt, or None: once ``attempted >= minimum``, more than
    ``threshold`` of the attempts failed."""
    if attempted < 0 or not 0 <= failed <= attempted:
        raise ValueError(f"{failed} failed of {attempted} attempted: counts are 0 <= failed <= attempted")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"a failure threshold is from 0 to 1, got {threshold}")
    if attempted < max(minimum, 1) or failed / attempted <= threshold:
        return None
    return (f"{failed} of {attempted} devices failed ({failed / attempted:.1%}), above the "
            f"{threshold:.1%} threshold (checked from {minimum} attempts on)")
