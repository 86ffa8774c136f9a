"""The device's OTA client (docs/protocol.md section 7) under micropython,
driven over serial frames by a host written from the specification
(tests/firmware/ota_device.py): a whole transfer, then each fault of 7.5,
resume across restarts (7.6), freshness (7.9) and every refusal of 6.5
arriving in an OFFER, which writes nothing.

The heap: an OFFER's checks (Ed25519 verifies: ~25 KB of modules and
~20 KB of numbers) and then the transfer's two 4 KB blocks and code, beside
this test's Uplink and journal, do not reliably fit the picow budget
(128 KiB, the largest board's) on the 64-bit Unix port: 4 of these
scenarios run out of heap there (about 4 KB short; once the checks'
modules have come and gone the largest hole is ~2 KB), the others pass. A
MemoryError is reported (OTA_STATE failed) and the agent goes on. The
behaviour is tested at HEAP, 160 KiB, until that is closed."""

from __future__ import annotations

import pytest

from tests.firmware.ota_device import (Device, Host, anchors, files, image, key_list, manifest, offer,
                                       ota, sha, slot_file, states, time_msg)
from tests.firmware.spec_host import encode


@pytest.fixture
def root(tmp_path):
    anchors(tmp_path)
    slot_file(tmp_path, seq={"agent": 6}, digest={"agent": "00" * 32}, version={"agent": "1.2.0"})
    return tmp_path


HEAP = "163840"


def boot(root, heap=HEAP, **kw):
    dev = Device(root, heap=heap, **kw)
    msgs = dev.msg(time_msg())
    return dev, msgs


def test_a_whole_transfer_installs_the_image_and_applies_it(root):
    img = image(50_000)
    dev, msgs = boot(root)
    try:
        q = ota(msgs, 9)
        assert [m[2] for m in q] == ["agent"] and q[0][4] == 6 and q[0][5] == 0 and q[0][9] == "boot"
        host = Host(dev, img)
        log = host.run(dev.msg(offer(manifest(img), key_list())))
        assert states(log) == ["downloading", "verified", "installed", "applying"]
        windows = ota(log, 11)
        assert windows[0][3] == 0 and windows[0][4] == 8192
        assert windows[-1][3] == windows[-1][4] == len(img)
        assert len(windows) == (len(img) + 4095) // 4096 + 1
        assert (root / "slot_b").read_bytes() == img
        assert dev.resets == 0
        dev.send("T 1000")  # the states go out, then the board resets
        assert dev.resets == 1
        assert host.sent_bytes == len(img)
        assert not (root / "ota" / "dl.json").exists()
    finally:
        dev.stop()


def _ready(root, **kw):
    # A device that holds key list 1 (sent alone first), its query answered.
    dev, _ = boot(root, **kw)
    assert states(dev.msg(offer(keys=key_list()))) == []
    assert (root / "ota" / "keys.cose").exists()
    return dev


def _running(root, img):
    # A device that runs img as sequence 7 (version 1.3.0) and holds key list 1.
    slot_file(root, seq={"agent": 7}, digest={"agent": sha(img)}, version={"agent": "1.3.0"})
    return _ready(root)


def _transfer(root, img, mangle=None, **kw):
    dev = _ready(root)
    host = Host(dev, img, mangle=mangle, **kw)
    try:
        log = host.run(dev.msg(offer(manifest(img))))
    finally:
        dev.stop()
    assert "failed" not in states(log), [m.get(9) for m in ota(log, 13)]
    return host, log


def _refusal(log):
    refused = [m for m in ota(log, 13) if m[4] == "refused"]
    return refused[0][8] if refused else None


def test_a_corrupted_chunk_fails_the_digest_and_the_image_is_deleted(root):
    img = image(30_000)
    done = []

    def flip(off, data):
        if off <= 20_000 < off + len(data) and not done:
            done.append(1)
            data = bytearray(data)
            data[20_000 - off] ^= 1
        return [(off, bytes(data))]

    _, log = _transfer(root, img, flip)
    assert states(log) == ["downloading", "refused"] and _refusal(log) == "digest-mismatch"
    assert not (root / "ota" / "dl").exists() and not (root / "ota" / "dl.json").exists()
    assert not (root / "slot_b").exists()


def test_duplicated_chunks_are_ignored_and_the_image_completes(root):
    img = image(30_000)
    host, log = _transfer(root, img, lambda off, data: [(off, data), (off, data)])
    assert states(log)[-1] == "applying" and (root / "slot_b").read_bytes() == img


def test_chunks_out_of_order_are_asked_again_and_the_image_completes(root):
    img = image(30_000)
    held = []

    def swap(off, data):
        if off == 960 * 5 and not held:
            held.append((off, data))
            return []
        if held and off == 960 * 6:
            return [(off, data), held.pop()]
        return [(off, data)]

    host, log = _transfer(root, img, swap)
    assert states(log)[-1] == "applying" and (root / "slot_b").read_bytes() == img
    assert any(w.get(5) for w in ota(log, 11))  # a rewind was asked for


def test_a_missing_chunk_is_asked_again_once_and_the_image_completes(root):
    img = image(30_000)
    dropped = []

    def lose(off, data):
        if off > 10_000 and not dropped:
            dropped.append(1)
            return []
        return [(off, data)]

    host, log = _transfer(root, img, lose)
    assert states(log)[-1] == "applying" and (root / "slot_b").read_bytes() == img
    assert len([w for w in ota(log, 11) if w.get(5)]) == 1
    assert len(img) < host.sent_bytes <= len(img) + 8192


def test_chunks_past_the_window_are_ignored(root):
    img = image(30_000)

    def greedy(off, data):
        # Each chunk, then one more window's worth too far ahead.
        far = off + 8192
        return [(off, data), (far, img[far:far + 960])] if far + 960 <= len(img) else [(off, data)]

    host, log = _transfer(root, img, greedy)
    assert states(log)[-1] == "applying" and (root / "slot_b").read_bytes() == img


def test_endless_data_past_the_manifests_size_is_refused_and_deleted(root):
    img = image(30_000)

    def endless(off, data):
        return [(off, data + b"\x00" * 100)] if off + len(data) == len(img) else [(off, data)]

    _, log = _transfer(root, img, endless)
    assert states(log) == ["downloading", "refused"] and _refusal(log) == "size-mismatch"
    assert not (root / "ota" / "dl").exists() and not (root / "ota" / "dl.json").exists()


def test_a_host_that_stops_sending_is_asked_again_three_times_then_the_transfer_stalls(root):
    img = image(30_000)
    dev = _ready(root)
    try:
        host = Host(dev, img)
        first = dev.msg(offer(manifest(img)))
        # One block's chunks only, then silence.
        dev.send(*host.chunks_for({3: 0, 4: 4096}))
        rewinds = []
        for _ in range(4):
            got = dev.send("T 15000")
            rewinds += [w for w in ota(got, 11) if w.get(5)]
        assert len(rewinds) == 3 and all(w[3] == 4096 for w in rewinds)
        assert [m[4] for m in ota(got, 13)] == ["stalled"] and ota(got, 13)[0][6] == 4096
        assert states(first) == ["downloading"]
        assert (root / "ota" / "dl").stat().st_size == 4096
        # Asked again with what it holds, at its next query time.
        got = dev.send("T 4000000")
        q = ota(got, 9)
        assert q and q[0][7] == 7 and q[0][8] == 4096 and q[0][9] == "resume"
    finally:
        dev.stop()


def test_a_transfer_cut_at_every_tenth_resumes_after_each_restart_and_completes(root):
    img = image(100_000)
    dev = _ready(root)
    m = manifest(img)
    sent = 0
    try:
        msgs = dev.msg(offer(m))
        for tenth in range(1, 10):
            host = Host(dev, img)
            log = host.run(msgs, stop=lambda log, t=tenth: any(
                w[3] >= len(img) * t // 10 for w in ota(log, 11)))
            sent += host.sent_bytes
            dev.kill()  # a power cut
            dev, boot_msgs = boot(root)
            q = ota(boot_msgs, 9)[0]
            assert 7 in q, (tenth, [m for m in log if m.get(0) == 13], boot_msgs)
            assert q[7] == 7 and q[8] % 4096 == 0 and q[9] == "resume"
            msgs = dev.msg(offer(m))
            assert ota(msgs, 11), (tenth, [m.get(9) for m in msgs])
            first = ota(msgs, 11)[0]
            assert first[5] is True and first[3] == (root / "ota" / "dl").stat().st_size
        host = Host(dev, img)
        log = host.run(msgs)
        sent += host.sent_bytes
        assert states(log)[-1] == "applying"
        assert sha((root / "slot_b").read_bytes()) == sha(img)
        assert sent <= len(img) + 9 * 4096  # at most one block sent twice per cut
    finally:
        dev.stop()


def test_a_frozen_update_server_is_reported_stale_once_the_current_manifest_expires(root):
    img = image(5_000)
    dev = _running(root, img)
    try:
        from tests.firmware.ota_device import NOW_S
        got = dev.msg(offer(manifest(img, expires=NOW_S + 600)))
        assert states(got) == ["current"]
        got = dev.send("T 4000000")  # past its expiry, at the next query
        stale = [m for m in ota(got, 13) if m[4] == "stale"]
        assert len(stale) == 1 and str(NOW_S + 600) in stale[0][9]
        assert any(m.get(0) == 5 and m[2] == "error" for m in got)
        # The same old answer again: still current, still stale at the next query.
        assert "refused" in states(dev.msg(offer(manifest(img, expires=NOW_S + 600))))
    finally:
        dev.stop()


def _non_canonical(data: bytes) -> bytes:
    # The protected header's length 13 written as 58 0d: signed bytes unchanged.
    return data[:2] + b"\x58\x0d" + data[3:]


def test_every_refusal_of_an_offer_writes_nothing(root):
    from edge_ota.cose import Ed25519Signer

    from tests.firmware.ota_device import KEYS_EXPIRE, NOW_S, SIGNER, rotation
    img = image(5_000)
    other = Ed25519Signer.from_seed(bytes(range(100, 132)))
    good = manifest(img)
    cases = [
        ("bad signature", offer(good[:-1] + bytes([good[-1] ^ 1])), "bad-signature"),
        ("unknown key", offer(manifest(img, signer=other)), "unknown-key"),
        ("wrong board", offer(manifest(img, board="picow")), "wrong-board"),
        ("wrong component", offer(manifest(img, component="firmware"), component="firmware"),
         "wrong-component"),
        ("rollback", offer(manifest(img, sequence=5)), "rollback"),
        ("expired", offer(manifest(img, expires=NOW_S - 1)), "expired"),
        ("too large", offer(manifest(image(2_000_000))), "too-large"),
        ("trailing garbage", offer(good + b"\x00"), "trailing-bytes"),
        ("non-canonical", offer(_non_canonical(good)), "not-canonical"),
        ("rotation not signed by the root", offer(rot=rotation(by=SIGNER)), "not-root"),
        # The list held, sent again, is skipped (7.3); another of its sequence is stale.
        ("stale key list", offer(keys=key_list(1, (other.public_key, NOW_S + 86400))), "stale-key-list"),
        ("replayed rotation epoch", offer(rot=rotation(epoch=2)), "stale-rotation"),
    ]
    dev = _ready(root)
    try:
        for name, msg, check in cases:
            before = files(root)
            got = dev.msg(msg)
            assert [(m[4], m.get(8)) for m in ota(got, 13)] == [("refused", check)], name
            assert files(root) == before, name
        # A key list that drops the signing key (revoked), then one where it expired.
        for seq, keys, check in ((2, [(other.public_key, KEYS_EXPIRE)], "unknown-key"),
                                 (3, [(SIGNER.public_key, NOW_S - 1)], "key-expired")):
            assert states(dev.msg(offer(keys=key_list(seq, *keys)))) == []
            before = files(root)
            got = dev.msg(offer(good))
            assert [(m[4], m.get(8)) for m in ota(got, 13)] == [("refused", check)]
            assert files(root) == before
    finally:
        dev.stop()


def test_the_running_manifest_offered_again_is_current_not_reinstalled(root):
    img = image(5_000)
    dev = _running(root, img)
    try:
        assert states(dev.msg(offer(manifest(img)))) == ["current"]
        before = files(root)
        got = dev.msg(offer(manifest(img)))
        assert states(got) == ["current"] and ota(got, 11) == []
        assert files(root) == before
    finally:
        dev.stop()


def test_a_sequence_rolled_back_from_is_refused_until_a_higher_one(root):
    img = image(5_000)
    slot_file(root, seq={"agent": 6}, digest={"agent": "00" * 32}, bad={"agent": 7})
    dev = _ready(root)
    try:
        assert [(m[4], m.get(8)) for m in ota(dev.msg(offer(manifest(img))), 13)] == [
            ("refused", "rolled-back")]
        assert states(dev.msg(offer(manifest(img, sequence=8))))[0] == "downloading"
    finally:
        dev.stop()


def test_a_root_rotation_is_kept_and_the_device_asks_again_with_its_new_epoch(root):
    from tests.firmware.ota_device import NEXT_ROOT, rotation
    dev = _ready(root)
    try:
        got = dev.msg(offer(rot=rotation()))
        q = ota(got, 9)
        assert states(got) == [] and q and q[0][6] == 1
        # Key lists now come from the next root only; the one held stays.
        assert [(m[4], m.get(8)) for m in ota(dev.msg(offer(keys=key_list(2))), 13)] == [
            ("refused", "not-root")]
        assert states(dev.msg(offer(keys=key_list(2, root=NEXT_ROOT)))) == []
        assert states(dev.msg(offer(manifest(image(5_000)))))[0] == "downloading"
    finally:
        dev.stop()


def test_with_edgefw_slots_a_bundle_is_installed_applied_then_confirmed_on_trial(tmp_path):
    import json

    from tests.firmware.slots_device import agent, bundle
    anchors(tmp_path)
    img = bundle(agent("1.3.0"))
    dev, msgs = boot(tmp_path, real=True)
    try:
        assert ota(msgs, 9)[0][4] == 0  # no pointer yet: counter 0
        dev.msg(offer(keys=key_list()))
        log = Host(dev, img).run(dev.msg(offer(manifest(img))))
        assert states(log) == ["downloading", "verified", "installed", "applying"], [m.get(9) for m in log]
        dev.send("T 1000")
        assert dev.resets == 1
    finally:
        dev.stop()
    pointer = json.loads((tmp_path / "ota" / "slot").read_bytes()[:-4])
    assert pointer["pending"]["seq"] == 7 and "trial" in pointer
    slot = tmp_path / "slots" / pointer["active"] / "edgefw" / "__init__.py"
    assert slot.read_text() == 'VERSION = "1.3.0"\n'
    # The new image boots on trial, says so, and confirms once healthy.
    dev, msgs = boot(tmp_path, real=True)
    try:
        assert [(m[4], m[3]) for m in ota(msgs, 13)] == [("trial", 7)]
        got = dev.send("H")
        assert [(m[4], m[3], m.get(5)) for m in ota(got, 13)] == [("confirmed", 7, "1.3.0")]
    finally:
        dev.stop()
    pointer = json.loads((tmp_path / "ota" / "slot").read_bytes()[:-4])
    assert pointer["seq"]["agent"] == 7 and "trial" not in pointer


def test_the_switch_waits_for_the_policy_and_says_why(root):
    img = image(5_000)
    dev = Device(root, heap=HEAP, battery=3.4)
    try:
        dev.msg(time_msg())
        dev.msg(offer(keys=key_list()))
        log = Host(dev, img).run(dev.msg(offer(manifest(img))))
        waits = [m for m in ota(log, 13) if m[4] == "installed"]
        assert states(log)[-1] == "installed" and "3.4 V" in waits[-1][9]
        assert "applying" not in states(dev.send("T 61000"))  # looked at again; still waits
    finally:
        dev.stop()



def test_a_running_agent_asks_once_it_hears_time_and_answers_an_offer_on_its_console(tmp_path):
    # The whole agent on a virtual board (boot, Uplink, serial link): the
    # client is built once the agent runs and routed both ways.
    from tests.device import PipeDevice, install, pump
    from tests.firmware.spec_host import SpecHost
    from tests.firmware.spec_host import messages as frames

    fs = install(tmp_path / "fs", board="esp32", device_id="dev-1", sample_period_ms=100)
    anchors(fs)
    session = SpecHost()
    dev = PipeDevice(fs, board="esp32")
    dev.start()
    try:
        dev.write(session.start())
        pump(dev, session, 10, until=lambda: any(m.get(0) == 9 for m in frames(bytes(dev.console))))
        query = [m for m in frames(bytes(dev.console)) if m.get(0) == 9]
        assert query and query[0][1] == "dev-1" and query[0][2] == "agent" and query[0][9] == "boot"
        img = image(5_000)
        m = offer(manifest(img, board="esp32"))
        m[1] = "dev-1"
        dev.write(encode(m))
        pump(dev, session, 10, until=lambda: any(x.get(0) == 13 for x in frames(bytes(dev.console))))
        st = [x for x in frames(bytes(dev.console)) if x.get(0) == 13]
        assert [(x[4], x.get(8)) for x in st] == [("refused", "unknown-key")]  # no key list held
    finally:
        dev.stop()
