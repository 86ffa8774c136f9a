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


# -- CPace (CPACE-X25519-SHA512, draft-irtf-cfrg-cpace-21)

def test_cpace_string_functions_give_the_drafts_vectors():
    s = VECTORS["cpace_strings"]
    c = VECTORS["cpace_x25519"]
    assert [crypto.prepend_len(h(d)).hex() for d, _ in s["prepend_len"]] == [o for _, o in s["prepend_len"]]
    assert crypto.lv_cat(*map(h, s["lv_cat"]["args"])).hex() == s["lv_cat"]["out"]
    assert [crypto.transcript_ir(*map(h, a)).hex() for a, _ in s["transcript_ir"]] == \
        [o for _, o in s["transcript_ir"]]
    assert crypto.generator_string(crypto.CPACE_DSI, h(c["prs"]), h(c["ci"]), h(c["sid"])).hex() == \
        c["generator_string"]


def test_cpace_gives_the_drafts_x25519_vectors_from_generator_to_isk():
    c = VECTORS["cpace_x25519"]
    g = crypto.cpace_generator(h(c["prs"]), h(c["ci"]), h(c["sid"]))
    assert g.hex() == c["g"]
    Ya, Yb = crypto.scalar_mult_vfy(h(c["ya"]), g), crypto.scalar_mult_vfy(h(c["yb"]), g)
    assert (Ya.hex(), Yb.hex()) == (c["Ya"], c["Yb"])
    K = crypto.scalar_mult_vfy(h(c["ya"]), Yb)
    assert K.hex() == c["K"] == crypto.scalar_mult_vfy(h(c["yb"]), Ya).hex()
    assert crypto.isk_ir(h(c["sid"]), K, Ya, h(c["ADa"]), Yb, h(c["ADb"])).hex() == c["ISK_IR"]


@pytest.mark.parametrize("p", VECTORS["cpace_x25519_low_order"]["points"], ids=lambda p: p["name"])
def test_cpace_scalar_mult_vfy_refuses_the_low_order_points_and_masks_bit_255(p):
    s = h(VECTORS["cpace_x25519_low_order"]["s"])
    if p["q"] == "00" * 32:
        with pytest.raises(ValueError):
            crypto.scalar_mult_vfy(s, h(p["u"]))
    else:
        assert crypto.scalar_mult_vfy(s, h(p["u"])).hex() == p["q"]


def test_cpace_two_host_sides_with_the_same_password_agree_and_with_another_do_not():
    sid, ci = b"\x01" * 16, b"ci"
    ya, yb = crypto.sample_scalar(), crypto.sample_scalar()
    g = crypto.cpace_generator(b"48213907", ci, sid)
    Ya = crypto.scalar_mult_vfy(ya, g)
    Yb = crypto.scalar_mult_vfy(yb, g)
    isk_a = crypto.isk_ir(sid, crypto.scalar_mult_vfy(ya, Yb), Ya, b"A", Yb, b"B")
    assert isk_a == crypto.isk_ir(sid, crypto.scalar_mult_vfy(yb, Ya), Ya, b"A", Yb, b"B")
    Yb_wrong = crypto.scalar_mult_vfy(yb, crypto.cpace_generator(b"48213908", ci, sid))
    assert isk_a != crypto.isk_ir(sid, crypto.scalar_mult_vfy(yb, Ya), Ya, b"A", Yb_wrong, b"B")
    assert len(isk_a) == 64 and ya != yb
