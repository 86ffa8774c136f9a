"""Pairing across the wire: the device's core under the real MicroPython (one
process per boot, its flash a folder) against the host's ``edge_agent.pairing``
in CPython, with real randoms on both sides (docs/protocol.md 5.4-5.6)."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import struct
from pathlib import Path

import cbor2
import pytest

from edge_agent import crypto
from edge_agent.pairing import (Bond, HostSession, Initiator, PairingError, Resumer, decode_control,
                                new_host_id, unpair_payload)
from tests.firmware.pairing_device import CODE, DEVICE_ID, Device, clamp, provision, snapshot
from tests.host.build_pairing_vectors import responder

KEY = bytes(range(1, 33))
D = crypto.scalar_mult_vfy(clamp(KEY), b"\x09" + bytes(31))
FINGERPRINT = hashlib.sha256(D).digest()[:8]


@pytest.fixture
def board(tmp_path) -> Path:
    provision(tmp_path, KEY, CODE)
    return tmp_path


def pair(dev: Device, account: str = "acme", host_id: bytes | None = None, code: str = CODE,
         now_ms: int = 0) -> tuple[Bond, HostSession]:
    host = Initiator(DEVICE_ID, code, account, host_id or new_host_id(), fingerprint=FINGERPRINT)
    reply, _ = dev.control(host.start(), now_ms)
    assert reply is not None
    confirm = host.reply(reply)
    done, opened = dev.control(confirm, now_ms)
    assert opened
    assert done is not None
    return host.done(done)


def attempts_on_flash(folder: Path) -> int:
    f = folder / "state" / "pairing"
    return struct.unpack(">I", f.read_bytes()[:4])[0] if f.exists() else 0


def exchange(dev: Device, session: HostSession, n: int = 5) -> None:
    for i in range(n):
        msg = cbor2.dumps({0: 2, 1: 1763906430123 + i})
        assert dev.open(session.seal(msg)) == msg
        out = cbor2.dumps({0: 4, 1: DEVICE_ID, 2: i})
        assert session.open(dev.seal(out)) == out


def test_pair_seal_both_ways_then_resume_after_a_reboot_with_a_new_host_object(board):
    with Device(board) as dev:
        bond, session = pair(dev)
        assert bond.device_key == D and bond.account == "acme"
        exchange(dev, session)
        assert dev.info()["proven"] == 1
    saved = dataclasses.asdict(bond)  # what a registry keeps
    with Device(board, uptime_ms=5) as dev:  # a reboot: the bond came from the folder
        assert dev.state(5) == 0x11
        resumer = Resumer(Bond(**saved))
        reply, opened = dev.control(resumer.start(), 5)
        assert opened
        session = resumer.reply(reply)
        assert dev.info()["proven"] == 0  # no telemetry before the host's first sealed message
        exchange(dev, session)
        assert session.bad_sealed == 0 and dev.info()["bad_sealed"] == 0


def test_a_wrong_code_costs_an_attempt_persisted_before_pair_reply_and_the_backoff_grows(board):
    with Device(board) as dev:
        # 1: a host that learns from tag_d that its code is wrong and never confirms.
        host = Initiator(DEVICE_ID, "11111111", "acme", new_host_id())
        reply, _ = dev.control(host.start(), 0)
        assert attempts_on_flash(board) == 1  # on flash as PAIR_REPLY arrives
        with pytest.raises(PairingError) as e:
            host.reply(reply)
        assert e.value.reason == "wrong_code"
        dev.disconnected()
        # 2: a host that confirms anyway: the device says wrong_code.
        host = Initiator(DEVICE_ID, "22222222", "acme", new_host_id())
        dev.control(host.start(), 0)
        assert attempts_on_flash(board) == 2
        err = decode_control(dev.control(cbor2.dumps({0: 18, 6: secrets.token_bytes(16)}), 0)[0])
        assert err == (31, {1: "wrong_code", 3: "the setup code did not match"})
        # 3, 4, 5: waits of 0, 2, 4 s between them, then 8 s.
        t = 0
        for n, wait in ((3, 2000), (4, 4000), (5, 8000)):
            host = Initiator(DEVICE_ID, "33333333", "acme", new_host_id())
            start = host.start()
            assert decode_control(dev.control(start, t)[0])[0] == 17
            assert attempts_on_flash(board) == n
            dev.disconnected()
            assert dev.state(t + wait - 1) == 0x12
            err = decode_control(dev.control(start, t + 1)[0])[1]
            assert err[1] == "paused" and err[2] == wait - 1
            assert "pairing_exchange" not in dev.modules() and "cpace" not in dev.modules()
            assert attempts_on_flash(board) == n  # a paused PAIR_START is not counted
            t += wait
            assert dev.state(t) == 0x10
    # A reboot restarts the 8 s wait in full; after it, the right code pairs and clears the count.
    with Device(board, uptime_ms=0) as dev:
        assert decode_control(dev.control(Initiator(DEVICE_ID, CODE, "acme", new_host_id()).start(), 7999)[0])[1][1] == "paused"
        pair(dev, now_ms=8000)
        assert dev.info()["attempts"] == 0 and attempts_on_flash(board) == 0
        assert dev.state(8000) == 0x11


def test_no_pair_reply_leaves_unless_the_attempt_is_on_flash(board):
    (board / "state").write_bytes(b"")  # a file where the state folder should be: writes fail
    with Device(board) as dev:
        reply, _ = dev.control(Initiator(DEVICE_ID, CODE, "acme", new_host_id()).start())
        assert decode_control(reply)[1][1] == "bad_message"
        assert "pairing_exchange" not in dev.modules()
        assert dev.info()["attempts"] == 1  # counted in memory: the back-off holds until reboot


def test_one_owner_account_same_account_adds_bonds_a_fifth_host_drops_the_oldest_unpair_frees(board):
    with Device(board) as dev:
        first, _ = pair(dev, "acme")
        err = decode_control(dev.control(Initiator(DEVICE_ID, CODE, "bob", new_host_id()).start())[0])[1]
        assert err[1] == "bound"
        assert dev.info()["attempts"] == 0  # refused before counting or any scalar multiplication
        for _ in range(4):
            bond, session = pair(dev, "acme")
        reply, _ = dev.control(Resumer(first).start())
        assert decode_control(reply)[1][1] == "unknown_bond"
        # UNPAIR, sealed on the newest session: every bond goes, bob may pair.
        opened = dev.open(session.seal(unpair_payload()))
        done = dev.sealed(opened)
        assert done is not None and decode_control(session.open(dev.seal(done)))[0] == 23
        assert dev.state(0) == 0x10
        reply, _ = dev.control(Resumer(bond).start())
        assert decode_control(reply)[1][1] == "unknown_bond"
        bob, _ = pair(dev, "bob")
        assert bob.account == "bob"


def test_the_same_host_pairing_again_replaces_its_bond(board):
    host_id = new_host_id()
    with Device(board) as dev:
        old, _ = pair(dev, "acme", host_id)
        new, _ = pair(dev, "acme", host_id)
        assert decode_control(dev.control(Resumer(old).start())[0])[1][1] == "unknown_bond"
        assert dev.control(Resumer(new).start())[1]


def test_factory_reset_on_the_device_frees_it_and_the_label_still_pairs(board):
    with Device(board) as dev:
        pair(dev, "acme")
    identity = {k: v for k, v in snapshot(board).items() if k.startswith("identity")}
    from tests.mpy import run
    run("from edgefw import bonds\nbonds.factory_reset('')", cwd=board)
    assert snapshot(board) == identity
    with Device(board) as dev:
        assert pair(dev, "bob")[0].account == "bob"


def test_a_recorded_transcript_does_not_let_anyone_test_a_code_offline(board):
    """A passive attacker records every message of a successful pairing and
    tries codes offline. For each candidate code (the right one among them) it
    does the best it can with public values: the generator g_c of the code,
    and Diffie-Hellman values it can form from Ya, Yb, Ea, D and scalars of its
    own. A check of a code needs the tags' key, which needs K = X(ya, Yb) =
    X(yb, Ya): computing K from Ya, Yb and g is the (s)CDH problem on which
    CPace's proof rests (Abdalla, Haase, Hesse, "Security analysis of CPace",
    AsiaCrypt 2021), and it also needs S = X(ea, D). So every candidate,
    including the right one, gives tags unrelated to the recorded ones: the
    transcript ranks the right code no higher than any other. The test shows
    that no computation we can think of singles it out; it cannot prove that
    none exists (that is the proof's job)."""
    with Device(board) as dev:
        host = Initiator(DEVICE_ID, CODE, "acme", new_host_id(), fingerprint=FINGERPRINT)
        start = host.start()
        reply, _ = dev.control(start)
        confirm = host.reply(reply)
        done, _ = dev.control(confirm)
    s, r, c = cbor2.loads(start), cbor2.loads(reply), cbor2.loads(confirm)
    sid, ya_pub, yb_pub, ea_pub, tag_d, tag_h = s[1], s[2], r[2], s[9], r[6], c[6]
    lv = crypto.prepend_len
    ci = lv(b"edge-ble-pair-1") + lv(DEVICE_ID.encode())
    candidates = [CODE] + [f"{secrets.randbelow(10**8):08d}" for _ in range(20)]
    mine = secrets.token_bytes(32)
    hits = []
    for code in candidates:
        g = crypto.cpace_generator(code.encode(), ci, sid)
        # The attacker's guesses at K and S: its own scalar against each share,
        # and the shares against each other (X(Ya-as-scalar, Yb) is a DH value
        # no party computed).
        for k in (crypto.scalar_mult_vfy(mine, yb_pub), crypto.scalar_mult_vfy(mine, ya_pub),
                  crypto.scalar_mult_vfy(ya_pub, yb_pub), g):
            for s_guess in (crypto.scalar_mult_vfy(mine, D), crypto.scalar_mult_vfy(mine, ea_pub), bytes(32)):
                isk = crypto.isk_ir(sid, k, ya_pub, lv(b"acme") + lv(s[4]) + lv(ea_pub), yb_pub, lv(D))
                ikm = isk + s_guess
                k_dev = crypto.hkdf(sid, ikm, b"edge pair confirm device", 32)
                k_host = crypto.hkdf(sid, ikm, b"edge pair confirm host", 32)
                if (crypto.hmac_sha256(k_dev, ya_pub + yb_pub + D)[:16] == tag_d
                        or crypto.hmac_sha256(k_host, yb_pub + ya_pub + D)[:16] == tag_h):
                    hits.append(code)
        # Ya is ya times g for the right code only, but without ya nothing
        # tells which g it is a multiple of: every point is a multiple of every
        # generator of the group.
    assert hits == []


def test_a_man_in_the_middle_without_the_code_fails_on_both_sides_and_costs_the_device_one_attempt(board):
    with Device(board) as dev:
        host = Initiator(DEVICE_ID, CODE, "acme", new_host_id(), fingerprint=FINGERPRINT)
        start = cbor2.loads(host.start())
        # Toward the device, the attacker is a host with a guessed code and its own Ya'.
        toward_device = Initiator(DEVICE_ID, "99999999", "acme", start[4])
        reply, _ = dev.control(toward_device.start())
        with pytest.raises(PairingError):
            toward_device.reply(reply)  # its tag_d check fails: it learns only "wrong guess"
        forged_confirm = cbor2.dumps({0: 18, 6: secrets.token_bytes(16)})
        assert decode_control(dev.control(forged_confirm)[0])[1][1] == "wrong_code"
        assert dev.info()["attempts"] == 1 and dev.info()["paired"] == 0
        # Toward the host, it answers as a device with the guessed code; with the
        # real D it lacks d (S), with its own key D' the fingerprint fails.
        d_own = clamp(secrets.token_bytes(32))
        d_own_pub = crypto.scalar_mult_vfy(d_own, b"\x09" + bytes(31))
        for dpub in (D, d_own_pub):
            victim = Initiator(DEVICE_ID, CODE, "acme", start[4], fingerprint=FINGERPRINT)
            fake, _ = responder(cbor2.loads(victim.start()), "99999999", DEVICE_ID, d_own, dpub,
                                secrets.token_bytes(32))
            with pytest.raises(PairingError) as e:
                victim.reply(fake)
            assert e.value.reason == ("wrong_code" if dpub == D else "wrong_device")


def test_a_stolen_label_without_the_device_key_cannot_impersonate_the_device(board):
    host = Initiator(DEVICE_ID, CODE, "acme", new_host_id(), fingerprint=FINGERPRINT)
    start = cbor2.loads(host.start())
    impostor_key = clamp(secrets.token_bytes(32))
    # The impostor knows the code and announces the device's real D, but has not d.
    fake, _ = responder(start, CODE, DEVICE_ID, impostor_key, D, secrets.token_bytes(32))
    with pytest.raises(PairingError) as e:
        host.reply(fake)
    assert e.value.reason == "wrong_code"
