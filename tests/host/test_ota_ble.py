"""An update served by the gateway over BLE: the OTA server on each
TelemetryPump answers the device's OTA_QUERY sealed on telemetry and writes
the image as raw values on the bulk characteristic (docs/protocol.md 7.4),
on the virtual air (Bumble controllers) with the link's stand-in devices."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import sys

import cbor2
import pytest

from edge_agent.links.ble import TELEMETRY
from edge_agent.messages import OtaChunk, OtaQuery
from edge_agent.store import Store
from tests.host import edge_air, pairing_standin
from tests.host.ota_device import OtaDevice
from tests.host.ota_release import Releases

ESP = "esp32-0a0b0c0d0e0f"
CODE = "12345678"
IMAGE = bytes(range(251)) * 100 + b"end"        # 25103 bytes


class OtaPeripheral(edge_air.EdgePeripheral):
    """The stand-in device, with an OTA receiver: asks once a host has sent TIME; after
    ``applying`` it drops the link (its reset) and, on the next session, boots the new image."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.ota = OtaDevice(self.device_id, keys_sequence=1)
        self.bulk_sizes: list[int] = []
        self.reset_pending = False
        self.resets = 0

    def _flush(self) -> None:
        for payload in self.ota.out:
            self._send(TELEMETRY, self.session.seal(payload))
        self.ota.out.clear()
        if self.ota.states[-1:] == ["applying"] and not self.reset_pending:
            self.reset_pending = True
            self._send("disconnect", b"")

    def _bulk(self, value: bytes) -> None:
        self.bulk_sizes.append(len(value))
        offset, = struct.unpack(">I", value[:4])
        m = self.ota.manifest
        if m is not None and self.session is not None:
            self.ota._chunk(OtaChunk(self.device_id, m.sequence, offset, value[4:]))
            self._flush()

    def _telemetry(self, sealed: bytes) -> None:
        plain = self.session.open(sealed) if self.session else None
        kind = cbor2.loads(plain).get(0) if plain is not None else None
        if kind == 10:                        # OTA_OFFER
            self.ota.receive(plain)
            self._flush()
            return
        super()._telemetry(sealed)
        if kind == 2 and self.reset_pending:      # TIME on the session after the reset
            self.reset_pending = False
            self.resets += 1
            self.ota.boot_new()
            self._flush()
        elif kind == 2 and not self.ota.states:     # TIME: a host listens; ask once
            self.ota.query()
            self._flush()


@pytest.fixture
def air(monkeypatch):
    monkeypatch.setitem(sys.modules, "edge_agent.pairing", pairing_standin)
    monkeypatch.setattr(edge_air, "EdgePeripheral", OtaPeripheral)
    with edge_air.AirThread([(ESP, "C0:00:00:00:00:01", CODE)]) as a:
        monkeypatch.setenv("EDGE_BLE", "sim")
        monkeypatch.setenv("EDGE_BLE_HCI", a.spec)
        yield a


def test_the_gateway_serves_a_published_release_on_the_bulk_characteristic(air, edge_home, tmp_path,
                                                                           monkeypatch):
    from edge_agent.gateway import EventLog, Gateway

    env = {"EDGE_BLE": "sim", "EDGE_BLE_HCI": air.spec}
    assert edge_home.invoke("pair", ESP, "--code", CODE, "--account", "home", env=env).exit_code == 0
    rel = Releases(edge_home, tmp_path)
    release = rel.publish(*rel.sign(IMAGE, board="esp32"), "--fraction", "1")
    with Store(edge_home.db) as s:
        s.device_number(ESP)
        s._db.execute("UPDATE devices SET board = 'esp32' WHERE device_id = ?", (ESP,))
    monkeypatch.setenv("EDGE_HOME", str(edge_home.root))
    out = io.StringIO()
    gw = Gateway(str(edge_home.db), "home", EventLog(json_lines=True, out=out), scan_window=1.0)
    asyncio.run(gw.run(duration=10))
    device = air.peripherals[ESP]
    assert device.ota.states[-1] == "confirmed" and device.resets == 1 and device.ota.ignored == 0
    # MTU 517 on this air: a value is at most what an ATT value holds (512), and no byte went twice.
    assert max(device.bulk_sizes) == 512 and sum(n - 4 for n in device.bulk_sizes) == len(IMAGE)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    offered = [e for e in events if e["event"] == "ota_offered"]
    assert offered and offered[0]["release"] == release["id"] and offered[0]["device"] == ESP
    assert [e["state"] for e in events if e["event"] == "ota_state"] == ["downloading", "verified", "installed",
                                                                      "applying", "trial", "confirmed"]
    assert len([e for e in events if e["event"] == "connected"]) == 2, "reconnected after its reset"
    with Store(edge_home.db) as s:
        assert s.ota_device(ESP, release["id"])["state"] == "confirmed"


def test_push_over_ble_reconnects_after_the_reset_and_waits_for_the_confirm(air, edge_home, tmp_path):
    env = {"EDGE_BLE": "sim", "EDGE_BLE_HCI": air.spec}
    assert edge_home.invoke("pair", ESP, "--code", CODE, "--account", "home", env=env).exit_code == 0
    with Store(edge_home.db) as s:
        s.device_number(ESP)
        s._db.execute("UPDATE devices SET board = 'esp32' WHERE device_id = ?", (ESP,))
    rel = Releases(edge_home, tmp_path)
    image, manifest = rel.sign(IMAGE, board="esp32")
    r = edge_home.invoke("ota", "push", ESP, str(image), str(manifest), "--timeout", "60s", "--json", env=env)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert (out["link"], out["state"], out["held"]) == ("ble", "confirmed", len(IMAGE))
    device = air.peripherals[ESP]
    assert device.resets == 1 and device.ota.counter == 7 and max(device.bulk_sizes) <= 512
