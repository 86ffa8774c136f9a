"""The host library (edge_ota) against tests/vectors/ota.json, the vectors the
device's checks (edgefw.ota_manifest) must agree with; and the file is what
tests/host/build_ota_vectors.py makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_ota.cose import OtaError
from edge_ota.manifest import ImageCheck, Installed, KeyList, TrustedState

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "ota.json").read_text())


def verdict(fn) -> str:
    try:
        fn()
    except OtaError as e:
        return e.check
    return "ok"


def image(length: int, corrupt: bool) -> bytes:
    data = bytearray(i & 0xFF for i in range(length))
    if corrupt:
        data[5000] ^= 1
    return bytes(data)


@pytest.mark.parametrize("case", VECTORS["manifests"], ids=lambda c: c["name"])
def test_manifest_vectors(case):
    state = TrustedState(bytes.fromhex(VECTORS["root"]))
    if case["key_list"]:
        state.update_key_list(bytes.fromhex(case["key_list"]))
    installed = {c: Installed(v, s) for c, (v, s) in case["counters"].items()}
    assert verdict(lambda: state.verify_manifest(
        bytes.fromhex(case["manifest"]), board=case["board"], installed=installed,
        now=case["now"], capacity=case["capacity"])) == case["expect"]


@pytest.mark.parametrize("case", VECTORS["key_lists"], ids=lambda c: c["name"])
def test_key_list_vectors(case):
    state = TrustedState(bytes.fromhex(VECTORS["root"]), key_list=KeyList(case["current"]))
    assert verdict(lambda: state.update_key_list(bytes.fromhex(case["data"]))) == case["expect"]


def test_image_vectors():
    good = VECTORS["manifests"][0]
    state = TrustedState(bytes.fromhex(VECTORS["root"]))
    state.update_key_list(bytes.fromhex(good["key_list"]))
    m = state.verify_manifest(bytes.fromhex(good["manifest"]), board=good["board"],
                              installed={"agent": Installed("1.2.0", 6)}, now=good["now"])
    for case in VECTORS["images"]:
        def feed(case=case):
            chk = ImageCheck(m)
            data = image(case["length"], case["corrupt"])
            for i in range(0, len(data), 1000):
                chk.update(data[i:i + 1000])
            chk.finish()
        assert verdict(feed) == case["expect"], case


def test_every_check_has_a_case_and_the_file_is_the_builders():
    from tests.host.build_ota_vectors import build

    assert build() == VECTORS
    names = {c["expect"] for c in VECTORS["manifests"]}
    assert names >= {"ok", "malformed", "trailing-bytes", "not-canonical", "unknown-key",
                     "key-expired", "bad-signature", "wrong-board", "wrong-component",
                     "rollback", "version-too-old", "expired", "too-large"}
