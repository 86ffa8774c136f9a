"""`edge ota push` over serial, end to end: the real command against a device
on a pseudo-terminal that speaks telemetry (tests/host/fake_device.py) and
the OTA exchange (tests/host/ota_device.py), resets into the new image and
confirms, rolls back, refuses, or says nothing."""

from __future__ import annotations

import json
import os
import pty
import select
import threading
import time

import pytest

from edge_agent.frames import Frame, FrameDecoder, encode_frame
from edge_agent.store import Store
from tests.host.fake_device import FakeDevice
from tests.host.ota_device import OtaDevice
from tests.host.ota_release import Releases

IMAGE = bytes(range(256)) * 48 + b"!"          # 12289 bytes: three blocks and one byte


class Board:
    """A device on a pty: telemetry, and OTA unless ``ota`` is False; ``confirm`` after its reset."""

    def __init__(self, *, ota: bool = True, confirm: bool = True):
        self.master, self.slave = pty.openpty()
        self.port = os.ttyname(self.slave)
        self.tele = FakeDevice(device_id="esp32-0a0b0c0d0e0f", per_batch=4)
        for i in range(10):
            self.tele.sample((1, 1000 * i))
        self.ota = OtaDevice(self.tele.device_id, keys_sequence=1) if ota else None
        self.confirm = confirm
        self.resets = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        decoder = FrameDecoder()
        self.tele.start()
        reset_at = None
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.02)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                for ev in decoder.feed(data):
                    if not isinstance(ev, Frame):
                        continue
                    try:
                        self.tele.receive(ev.payload)
                        if self.ota is not None:
                            self.ota.receive(ev.payload)
                    except ValueError:      # our own frames echoed back by the pty
                        pass
            if self.ota is not None and self.ota.states[-1:] == ["applying"] and reset_at is None:
                reset_at = time.monotonic() + 0.3           # the reset into the new image
            if reset_at is not None and time.monotonic() > reset_at:
                reset_at = None
                self.resets += 1
                self.tele.boot += 1
                self.tele.start()
                self.ota.boot_new(confirm=self.confirm)
            out = self.tele.take() + (self.ota.out if self.ota is not None else [])
            if self.ota is not None:
                self.ota.out = []
            for payload in out:
                os.write(self.master, encode_frame(payload))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def rel(edge_home, tmp_path):
    return Releases(edge_home, tmp_path)


@pytest.fixture
def boards():
    made: list[Board] = []

    def make(**kw) -> Board:
        made.append(Board(**kw))
        return made[-1]
    yield make
    for b in made:
        b.close()


def push(rel, board: Board, *args: str):
    image, manifest = rel.sign(IMAGE)
    r = rel.home.invoke("ota", "push", board.port, str(image), str(manifest), "--json", *args)
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_push_serves_the_image_waits_for_the_confirm_after_the_reset_and_keeps_ingesting(rel, boards):
    board = boards()
    r, out = push(rel, board)
    assert r.exit_code == 0, r.output
    assert bytes(board.ota.held) == b"" and board.ota.counter == 7 and board.resets == 1
    assert [s["state"] for s in out["states"]] == ["downloading", "verified", "installed", "applying", "trial",
                                                   "confirmed"]
    assert (out["state"], out["held"], out["size"], out["link"]) == ("confirmed", len(IMAGE), len(IMAGE),
                                                                    f"serial:{board.port}")
    with Store(rel.home.db) as s:
        release = s.release(out["release"])
        assert release.state == "paused" and release.fraction == 0, "a push starts no rollout"
        assert s.ota_device(board.tele.device_id, release.id)["state"] == "confirmed"
        assert [h["state"] for h in s.ota_history(device_id=board.tele.device_id)][-1] == "confirmed"
        assert s.count(board.tele.device_id) == 10, "telemetry stored while the update ran"


def test_push_until_installed_stops_there(rel, boards):
    board = boards()
    r, out = push(rel, board, "--until", "installed")
    assert r.exit_code == 0, r.output
    assert out["state"] == "installed"


def test_a_refusal_exits_3_naming_the_check(rel, boards):
    board = boards()
    board.ota.rolled_back.add(7)
    r, out = push(rel, board)
    assert r.exit_code == 3, r.output
    err = json.loads(r.stderr)
    assert "refused" in err["error"] and "rolled-back" in err["error"] and "higher --sequence" in err["fix"]
    assert out["state"] == "refused"


def test_a_rollback_after_the_reset_exits_4_with_its_reason(rel, boards):
    board = boards(confirm=False)
    r, out = push(rel, board)
    assert r.exit_code == 4, r.output
    assert "rolled-back" in json.loads(r.stderr)["error"] and "no health check" in r.stderr
    with Store(rel.home.db) as s:
        assert s.ota_device(board.tele.device_id, out["release"])["state"] == "rolled-back"


def test_a_device_without_ota_times_out_with_exit_5(rel, boards):
    board = boards(ota=False)
    r, out = push(rel, board, "--timeout", "2s")
    assert r.exit_code == 5, r.output
    err = json.loads(r.stderr)
    assert "did not reach confirmed within 2 s" in err["error"] and "no state" in err["error"]
    assert out["state"] is None


def test_push_refuses_a_manifest_that_does_not_verify_before_touching_the_port(rel, boards, tmp_path):
    board = boards()
    image, manifest = rel.sign(IMAGE)
    image.write_bytes(IMAGE + b"x")
    r = rel.home.invoke("ota", "push", board.port, str(image), str(manifest))
    assert r.exit_code == 5 and "size-mismatch" in r.stderr
    assert board.ota.offers == []
