"""The host's pairing, RESUME and sealed messages (edge_agent.pairing, docs/protocol.md 5.4-5.6)."""

from __future__ import annotations

import json
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import crypto
from edge_agent.pairing import (Bond, HostSession, Initiator, PairingError, Resumer, decode_control,
                                new_host_id, unpair_payload)

VECTORS = Path(__file__).parents[1] / "vectors" / "pairing.json"


def queue(*values: bytes):
    items = list(values)
    return lambda n: items.pop(0)


def host_randoms(p: dict) -> list[bytes]:
    return [bytes.fromhex(p["randoms"][k]) for k in ("sid", "ya", "ea")]


def vectors() -> dict:
    return json.loads(VECTORS.read_text())


# -- decoding what a device sends

def test_an_error_from_the_device_becomes_a_pairing_error_with_reason_wait_and_text():
    init = Initiator("esp32-3f9a0c12b7d4", "4821-3907", "acme", bytes(16))
    init._state = "started"  # as after start(): reply() takes the device's answer
    with pytest.raises(PairingError) as e:
        init.reply(cbor2.dumps({0: 31, 1: "paused", 2: 4000, 3: "wrong codes: wait"}))
    assert (e.value.reason, e.value.wait_ms, e.value.text) == ("paused", 4000, "wrong codes: wait")
    assert "4.0 s" in str(e.value)


@pytest.mark.parametrize("payload", [
    b"\xff", b"", cbor2.dumps([17]), cbor2.dumps({0: 17, 2: bytes(32), 5: bytes(32)}),
    cbor2.dumps({0: 17, 2: bytes(31), 5: bytes(32), 6: bytes(16)}),
    cbor2.dumps({0: 17, 2: "x" * 32, 5: bytes(32), 6: bytes(16)}),
    cbor2.dumps({0: 19, 7: bytes(9)}), cbor2.dumps({0: 31}),
    cbor2.dumps({0: 31, 1: "x" * 33}), cbor2.dumps({0: 31, 1: "paused", 2: -1}),
    cbor2.dumps({0: 31, 1: "paused", 2: True}), cbor2.dumps({0: 31, 1: "bad\x1b[31m"}),
    cbor2.dumps({0: 31, 1: "x", 3: "y" * 121}), cbor2.dumps({0: 2, 1: 5}),
    cbor2.dumps(cbor2.CBORTag(1, {0: 19, 7: bytes(8)})), cbor2.dumps({0: 19, 7: bytes(8)}) + b"\x00",
])
def test_a_malformed_device_message_is_bad_message(payload):
    with pytest.raises(PairingError) as e:
        decode_control(payload)
    assert e.value.reason == "bad_message"


def test_control_messages_round_trip_and_unknown_keys_are_skipped():
    assert decode_control(cbor2.dumps({0: 19, 7: b"b" * 8, 99: "x", -1: 2})) == (19, {7: b"b" * 8})
    assert decode_control(unpair_payload()) == (22, {})
    assert len(new_host_id()) == 16 and new_host_id() != new_host_id()


# -- sealed messages on the host

K_H2D, K_D2H = bytes(range(16)), bytes(range(16, 32))


def test_a_host_session_refuses_a_message_sealed_in_the_other_direction():
    host = HostSession(K_H2D, K_D2H)
    device_side = HostSession(K_D2H, K_H2D)  # seals with direction 0x01 under k_d2h: not the device
    forged = device_side.seal(b"x")
    assert host.open(forged) is None  # wrong direction byte in the nonce
    assert host.bad_sealed == 1


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_sealed_messages_open_in_order_once_each(messages):
    # The device's seal is its own (tests/firmware); here the host opens what
    # a device key seals, built from the vectors' formula.
    host = HostSession(K_H2D, K_D2H)
    sealed = []
    for n, m in enumerate(messages):
        nonce = b"\x02" + bytes(8) + n.to_bytes(4, "big")
        sealed.append(n.to_bytes(4, "big") + crypto.CCM(K_D2H).seal(nonce, b"", m, 8))
    for s, m in zip(sealed, messages):
        assert host.open(s) == m
    for s in sealed:
        assert host.open(s) is None
    assert host.bad_sealed == len(messages)


def test_the_host_refuses_to_seal_at_the_last_counter():
    host = HostSession(K_H2D, K_D2H)
    host._next = 0xFFFFFFFE
    host.seal(b"last")
    with pytest.raises(PairingError) as e:
        host.seal(b"one more")
    assert e.value.reason == "counter_exhausted"


# -- against the shared vectors

def test_the_host_reproduces_the_pairing_and_resume_of_the_vectors():
    v = vectors()
    p, r = v["pairing"], v["resume"]
    init = Initiator(v["device_id"], v["code"], v["account"], bytes.fromhex(v["host_id"]),
                     fingerprint=bytes.fromhex(v["fingerprint"]),
                     rand=queue(*host_randoms(p)))
    assert init.start().hex() == p["messages"]["PAIR_START"]
    assert init.reply(bytes.fromhex(p["messages"]["PAIR_REPLY"])).hex() == p["messages"]["PAIR_CONFIRM"]
    bond, session = init.done(bytes.fromhex(p["messages"]["PAIR_DONE"]))
    assert bond == Bond(v["device_id"], v["account"], bytes.fromhex(v["host_id"]),
                        bytes.fromhex(p["derived"]["bond_id"]), bytes.fromhex(p["derived"]["bond_key"]),
                        bytes.fromhex(v["D"]))
    check_sealed(session, p["sealed"])
    resumer = Resumer(bond, rand=queue(bytes.fromhex(r["randoms"]["Nh"])))
    assert resumer.start().hex() == r["messages"]["RESUME"]
    check_sealed(resumer.reply(bytes.fromhex(r["messages"]["RESUME_OK"])), r["sealed"])


def check_sealed(session: HostSession, cases: list[dict]) -> None:
    for c in cases:
        if c["direction"] == "h2d":
            session._next = c["counter"]
            assert session.seal(bytes.fromhex(c["message"])).hex() == c["sealed"]
        else:
            assert session.open(bytes.fromhex(c["sealed"])).hex() == c["message"]


def test_the_vectors_file_is_what_the_builder_writes():
    from tests.host.build_pairing_vectors import build
    assert build() == vectors()


def test_a_device_key_other_than_the_registered_one_or_the_labels_is_wrong_device():
    v = vectors()
    p = v["pairing"]
    for kw in ({"device_key": bytes(32)}, {"fingerprint": bytes(8)}):
        init = Initiator(v["device_id"], v["code"], v["account"], bytes.fromhex(v["host_id"]),
                         rand=queue(*host_randoms(p)), **kw)
        init.start()
        with pytest.raises(PairingError) as e:
            init.reply(bytes.fromhex(p["messages"]["PAIR_REPLY"]))
        assert e.value.reason == "wrong_device"


def test_a_host_with_the_wrong_code_gets_wrong_code_from_tag_d_and_sends_no_confirm():
    v = vectors()
    p = v["pairing"]
    init = Initiator(v["device_id"], "00000001", v["account"], bytes.fromhex(v["host_id"]),
                     rand=queue(*host_randoms(p)))
    init.start()
    with pytest.raises(PairingError) as e:
        init.reply(bytes.fromhex(p["messages"]["PAIR_REPLY"]))
    assert e.value.reason == "wrong_code"
    with pytest.raises(PairingError):
        init.done(bytes.fromhex(p["messages"]["PAIR_DONE"]))


def test_a_resume_ok_whose_tag_does_not_prove_the_bond_is_refused():
    v = vectors()
    r = v["resume"]
    bond = Bond(v["device_id"], v["account"], bytes(16), bytes.fromhex(v["pairing"]["derived"]["bond_id"]),
                bytes(32), bytes(32))
    resumer = Resumer(bond, rand=queue(bytes.fromhex(r["randoms"]["Nh"]), bytes(16)))
    resumer.start()
    with pytest.raises(PairingError) as e:
        resumer.reply(bytes.fromhex(r["messages"]["RESUME_OK"]))
    assert e.value.reason == "bad_tag"
    resumer.start()
    with pytest.raises(PairingError) as e:
        resumer.reply(cbor2.dumps({0: 31, 1: "unknown_bond", 3: "no such bond: pair again"}))
    assert e.value.reason == "unknown_bond"


def test_bad_codes_and_accounts_are_refused_before_anything_is_sent():
    for code, account in (("1234567", "acme"), ("1234567O", "acme"), ("12345678", "Acme"), ("１２３４５６７８", "a")):
        with pytest.raises(PairingError):
            Initiator("esp32-3f9a0c12b7d4", code, account, bytes(16))


def test_a_host_with_its_static_key_pairs_with_three_scalar_multiplications(monkeypatch):
    # 5.4.1: Ea is the host's pair, made once (the registry keeps it); then a
    # pairing costs the host Ya, K and S only, and the device accepts it as
    # it accepts a fresh Ea.
    from edge_agent import crypto, pairing as hp

    host_key = hp.new_host_key()
    assert crypto.scalar_mult_vfy(host_key[0], b"\x09" + bytes(31)) == host_key[1]
    calls = []
    real = crypto.scalar_mult_vfy
    monkeypatch.setattr(crypto, "scalar_mult_vfy", lambda y, x: calls.append(1) or real(y, x))
    d = crypto.sample_scalar()
    dpub = real(d, b"\x09" + bytes(31))
    ini = hp.Initiator("esp32-3f9a0c12b7d4", "48213907", "home", hp.new_host_id(), device_key=dpub,
                       host_key=host_key)
    start = ini.start()
    assert hp.decode_control(start)[1][9] == host_key[1]
    assert len(calls) == 1                      # Ya
    # The device's side, from the firmware's exchange under CPython.
    from tests.mpy import firmware_on_path
    firmware_on_path()
    from edgefw import pairing_exchange
    f = hp.decode_control(start)[1]
    r = pairing_exchange.respond("48213907", "esp32-3f9a0c12b7d4", f[1], f[2], f[3], f[4], f[9], d, dpub)
    yb, _, tag_d, tag_h, bond_id, bond_key = r
    confirm = ini.reply(hp._encode(hp.PAIR_REPLY, {2: yb, 5: dpub, 6: tag_d}))
    assert len(calls) == 3                      # + K, S
    assert hp.decode_control(confirm)[1][6] == tag_h
