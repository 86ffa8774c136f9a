"""The host's pairing and session cryptography (edge_agent.crypto) against
the published vectors in tests/vectors/crypto.json, which the device's
passes too (tests/firmware/test_crypto_device.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent import crypto

VECTORS = json.loads((Path(__file__).resolve().parent.parent / "vectors" / "crypto.json").read_text())
h = bytes.fromhex


@pytest.mark.parametrize("v", VECTORS["hmac_sha256"], ids=lambda v: v["name"])
def test_hmac_sha256_gives_the_rfc4231_test_cases(v):
    assert crypto.hmac_sha256(h(v["key"]), h(v["data"])).hex().startswith(v["mac"])


@pytest.mark.parametrize("v", VECTORS["hkdf_sha256"], ids=lambda v: v["name"])
def test_hkdf_gives_the_rfc5869_test_cases(v):
    assert crypto.hkdf(h(v["salt"]), h(v["ikm"]), h(v["info"]), v["length"]).hex() == v["okm"]


@pytest.mark.parametrize("v", VECTORS["ccm"], ids=lambda v: v["name"])
def test_ccm_seals_and_opens_the_rfc3610_and_sp800_38c_vectors(v):
    c = crypto.CCM(h(v["key"]))
    sealed = c.seal(h(v["nonce"]), h(v["aad"]), h(v["plaintext"]), len(v["tag"]) // 2)
    assert sealed.hex() == v["ciphertext"] + v["tag"]
    assert c.open(h(v["nonce"]), h(v["aad"]), sealed, len(v["tag"]) // 2) == h(v["plaintext"])


def test_ccm_open_refuses_a_flipped_bit_or_a_truncated_input_with_none():
    v = VECTORS["ccm"][3]
    c = crypto.CCM(h(v["key"]))
    n, a, d = h(v["nonce"]), h(v["aad"]), h(v["ciphertext"] + v["tag"])
    for i in range(len(d) * 8):
        bad = bytearray(d)
        bad[i // 8] ^= 1 << (i % 8)
        assert c.open(n, a, bytes(bad)) is None
    assert c.open(n, a, d[:-1]) is None and c.open(n, a, d[:7]) is None and c.open(n, a, b"") is None
    assert c.open(n, a[:-1], d) is None and c.open(bytes(13), a, d) is None


def test_ccm_refuses_nonces_and_tags_of_sizes_ccm_does_not_have():
    c = crypto.CCM(bytes(16))
    for nonce, tag_len in ((bytes(6), 8), (bytes(14), 8), (bytes(13), 5), (bytes(13), 18)):
        with pytest.raises(ValueError):
            c.seal(nonce, b"", b"", tag_len)
    with pytest.raises(ValueError):
        c.seal(bytes(13), bytes(0xFF00), b"")
    assert c.open(bytes(13), bytes(0xFF00), bytes(8)) is None
