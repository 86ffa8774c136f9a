"""OTA manifests (docs/protocol.md section 6): every receiver rule refuses
with the error naming it, and the COSE_Sign1 interoperates with pycose."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import cbor2
import pytest

from edge_ota import cose
from edge_ota.cose import Ed25519Signer, kid_of, sign1
from edge_ota.manifest import (ImageCheck, Installed, KeyList, Manifest, RootRotation,
                               TrustedState)

ROOT = Ed25519Signer.from_seed(bytes(range(32)))
SIGNER = Ed25519Signer.from_seed(bytes(range(32, 64)))
OTHER = Ed25519Signer.from_seed(bytes(range(64, 96)))
NOW = 1_800_000_000
IMAGE = bytes(range(256)) * 40
BOARD = "esp32-devkitc"
INSTALLED = {"agent": Installed("1.2.0", 6), "firmware": Installed("1.24.0", 3)}


def manifest(**kw) -> Manifest:
    m = Manifest.for_image(IMAGE, board=BOARD, component="agent", version="1.3.0",
                           sequence=7, expires=NOW + 86400)
    return replace(m, **kw)


def state(*keys: tuple[bytes, int]) -> TrustedState:
    s = TrustedState(ROOT.public_key)
    s.update_key_list(KeyList.of(1, *(keys or ((SIGNER.public_key, NOW + 3600),))).sign(ROOT))
    return s


def check(data: bytes, s: TrustedState | None = None, **kw) -> Manifest:
    args = dict(board=BOARD, installed=INSTALLED, now=NOW, capacity={"agent-slot": 65536})
    args.update(kw)
    return (s or state()).verify_manifest(data, **args)  # type: ignore[arg-type]


def refused(check_name: str, fn, *a, **kw) -> None:
    with pytest.raises(cose.OtaError) as e:
        fn(*a, **kw)
    assert e.value.check == check_name, e.value.message


def test_a_signed_manifest_round_trips_and_its_image_checks():
    data = manifest(min_version="1.0.0").sign(SIGNER)
    m = check(data)
    assert m == manifest(min_version="1.0.0")
    assert data == manifest(min_version="1.0.0").sign(SIGNER)    # deterministic
    img = ImageCheck(m)
    for i in range(0, len(IMAGE), 1000):
        img.update(IMAGE[i:i + 1000])
    img.finish()


def test_the_signature_and_the_key_chain_are_checked_first():
    data = bytearray(manifest().sign(SIGNER))
    data[-1] ^= 1
    refused("bad-signature", check, bytes(data))
    # A key the root does not list (never listed, or revoked by a newer list).
    refused("unknown-key", check, manifest().sign(OTHER))
    s = state((SIGNER.public_key, NOW + 3600))
    s.update_key_list(KeyList.of(2, (OTHER.public_key, NOW + 3600)).sign(ROOT))
    refused("unknown-key", check, manifest().sign(SIGNER), s)
    refused("key-expired", check, manifest().sign(SIGNER), state((SIGNER.public_key, NOW)))
    # Signed by OTHER but naming SIGNER's kid: the listed key does not verify it.
    forged = list(cbor2.loads(manifest().sign(OTHER)).value)
    forged[0] = cose.protected_header(SIGNER.kid)
    refused("bad-signature", check, cose.dumps(cbor2.CBORTag(18, forged)))
    # The bad-signature check comes before the board's.
    refused("bad-signature", check, bytes(data), board="picow")


def test_board_component_counter_version_expiry_and_size_are_refused_in_order():
    refused("wrong-board", check, manifest(board="picow").sign(SIGNER))
    refused("wrong-component", check, manifest().sign(SIGNER), installed={
        "firmware": INSTALLED["firmware"]})
    refused("rollback", check, manifest(sequence=6).sign(SIGNER))
    refused("rollback", check, manifest(sequence=2, expires=NOW).sign(SIGNER))
    refused("version-too-old", check, manifest(min_version="1.2.1").sign(SIGNER))
    refused("expired", check, manifest(expires=NOW).sign(SIGNER))
    refused("too-large", check, manifest().sign(SIGNER), capacity={"agent-slot": 1000})
    # A manifest for the wrong board with an old counter names the board.
    refused("wrong-board", check, manifest(board="picow", sequence=1).sign(SIGNER))


def test_the_streamed_image_is_checked_for_size_and_digest():
    m = check(manifest().sign(SIGNER))
    short = ImageCheck(m)
    short.update(IMAGE[:-1])
    refused("size-mismatch", short.finish)
    refused("size-mismatch", ImageCheck(m).update, IMAGE + b"\0")
    bad = ImageCheck(m)
    bad.update(b"\1" + IMAGE[1:])
    refused("digest-mismatch", bad.finish)


def test_a_manifest_breaking_a_field_rule_is_malformed_even_when_signed():
    for body in ({0: 1}, [1, 2], {**cbor2.loads(manifest().to_cbor()), 10: 0},
                 {**cbor2.loads(manifest().to_cbor()), 7: "ota-partition"},
                 {**cbor2.loads(manifest().to_cbor()), 3: "1.02.0"},
                 {**cbor2.loads(manifest().to_cbor()), 5: b"\0" * 31}):
        refused("malformed", check, sign1(cose.dumps(body), SIGNER))


def test_trailing_bytes_and_non_deterministic_encodings_are_refused():
    data = manifest().sign(SIGNER)
    refused("trailing-bytes", check, data + b"\0")
    payload = manifest().to_cbor()
    assert payload[:3] == bytes([0xa9, 0x00, 0x01])
    # The same map with keys 0 and 1 swapped: out of order.
    swapped = bytes([0xa9, 0x01]) + cbor2.dumps(BOARD) + bytes([0x00, 0x01]) \
        + payload[4 + len(cbor2.dumps(BOARD)):]
    assert cbor2.loads(swapped) == cbor2.loads(payload)
    refused("not-canonical", check, sign1(swapped, SIGNER))
    # The kind 1 as 0x18 0x01: an integer not in its shortest form.
    refused("not-canonical", check, sign1(payload[:2] + b"\x18\x01" + payload[3:], SIGNER))
    # The whole COSE_Sign1 with its array length in a longer form.
    refused("not-canonical", check, data[:1] + b"\x98\x04" + data[2:])
    # The protected header itself must be deterministic too.
    parts = list(cbor2.loads(data).value)
    parts[0] = b"\xa2\x04\x48" + SIGNER.kid + b"\x01\x27"
    refused("not-canonical", check, cose.dumps(cbor2.CBORTag(18, parts)))
    refused("malformed", check, data[1:])                # untagged
    refused("malformed", check, data[:40])               # cut short


def test_key_lists_must_be_the_roots_and_newer_than_the_current_one():
    s = state()
    refused("stale-key-list", s.update_key_list,
            KeyList.of(1, (OTHER.public_key, NOW + 3600)).sign(ROOT))
    refused("not-root", s.update_key_list, KeyList.of(5).sign(SIGNER))
    data = bytearray(KeyList.of(5).sign(ROOT))
    data[-2] ^= 0x40
    refused("bad-signature", s.update_key_list, bytes(data))
    # A manifest is not a key list, even when the root signed it.
    refused("malformed", s.update_key_list, manifest().sign(ROOT))
    assert s.key_list.sequence == 1 and kid_of(SIGNER.public_key) in s.key_list.keys


def test_the_root_rotates_only_by_a_message_of_the_current_root():
    s = state()
    refused("not-root", s.rotate_root, RootRotation(1, OTHER.public_key).sign(SIGNER))
    refused("stale-rotation", s.rotate_root, RootRotation(2, OTHER.public_key).sign(ROOT))
    first = RootRotation(1, OTHER.public_key).sign(ROOT)
    s.rotate_root(first)
    assert (s.root, s.epoch) == (OTHER.public_key, 1)
    # The old root no longer signs key lists or rotations; the new one does.
    refused("not-root", s.update_key_list, KeyList.of(2).sign(ROOT))
    refused("not-root", s.rotate_root, first)
    s.update_key_list(KeyList.of(2, (SIGNER.public_key, NOW + 60)).sign(OTHER))
    check(manifest().sign(SIGNER), s)
    # Rotating back to the first root takes a new epoch; the old message stays stale.
    s.rotate_root(RootRotation(2, ROOT.public_key).sign(OTHER))
    refused("stale-rotation", s.rotate_root, RootRotation(1, OTHER.public_key).sign(ROOT))


def _pycose_key(signer: Ed25519Signer, private: bool):
    from pycose.keys import OKPKey
    from pycose.keys.curves import Ed25519

    if private:
        return OKPKey(crv=Ed25519, d=bytes(range(32, 64)), x=signer.public_key)
    return OKPKey(crv=Ed25519, x=signer.public_key)


def _pycose_decode(data: bytes):
    # pycose 1.1's Sign1Message.decode wants the tag's array as a list and its
    # unprotected header as a dict, and cbor2 6 gives a tuple and an immutable
    # map inside a tag: take the tag off here, and let pycose decode the rest
    # (protected header, payload, signature) itself.
    from pycose.messages import Sign1Message

    tagged = cbor2.loads(data)
    assert tagged.tag == 18
    protected, unprotected, payload, signature = tagged.value
    return Sign1Message.from_cose_obj([protected, dict(unprotected), payload, signature], True)


def test_a_manifest_we_sign_verifies_with_pycose():
    data = manifest().sign(SIGNER)
    msg = _pycose_decode(data)
    msg.key = _pycose_key(SIGNER, private=False)
    assert msg.verify_signature()
    assert msg.payload == manifest().to_cbor()
    tampered = _pycose_decode(data[:-1] + bytes([data[-1] ^ 1]))
    tampered.key = msg.key
    assert not tampered.verify_signature()


def test_a_cose_sign1_pycose_makes_verifies_with_ours():
    from pycose.algorithms import EdDSA
    from pycose.headers import KID, Algorithm
    from pycose.messages import Sign1Message

    msg = Sign1Message(phdr={Algorithm: EdDSA, KID: SIGNER.kid}, payload=manifest().to_cbor())
    msg.key = _pycose_key(SIGNER, private=True)
    data = msg.encode()
    assert data == manifest().sign(SIGNER)
    assert check(data) == manifest()
