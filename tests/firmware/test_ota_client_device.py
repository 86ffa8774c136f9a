"""The device's OTA client (docs/protocol.md section 7) under micropython
with the ESP32's heap, driven over serial frames by a host written from the
specification (tests/firmware/ota_device.py): a whole transfer, then each
fault of 7.5, resume across restarts (7.6), freshness (7.9) and every
refusal of 6.5 arriving in an OFFER, which writes nothing."""

from __future__ import annotations

import os

import pytest

from tests.firmware.ota_device import (DEVICE_ID, Device, Host, anchors, files, image, key_list,
                                       manifest, offer, ota, sha, slot_file, states, time_msg)


@pytest.fixture
def root(tmp_path):
    anchors(tmp_path)
    slot_file(tmp_path, seq={"agent": 6}, digest={"agent": "00" * 32}, version={"agent": "1.2.0"})
    return tmp_path


def boot(root, heap=os.environ.get("OTA_HEAP", "picow"), **kw):
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
