"""The counting of bench/bench_ota_transfer.py (not timed): efficiency and round trips from a trace of ATT
values, on exchanges whose figures are known, and the live instrumentation of `edge ota push` on the
virtual air against what the stand-in device of tests/host/test_ota_ble.py received, so the bench cannot
rot unnoticed."""

from __future__ import annotations

import json

from bench.bench_ota_transfer import Trace, count, instrument, modelled
from edge_agent.links import ble
from edge_agent.messages import OtaOffer, OtaState, OtaWindow, encode_message
from edge_agent.store import Store
from edge_ota.transfer import BLOCK, Sender, bulk_value, chunk_size_for_mtu
from tests.host.ota_release import Releases
from tests.host.test_ota_ble import CODE, ESP, air  # noqa: F401 (air: the fixture)

DEV = "picow-0a0b0c0d0e0f"
CHUNK = chunk_size_for_mtu(247)             # 240 image bytes in a 244-byte value


def window(ack: int, limit: int, rewind: bool = False) -> bytes:
    return encode_message(OtaWindow(DEV, 1, ack, limit, rewind))


def send(trace: Trace, sender: Sender, ack: int, limit: int, rewind: bool = False) -> None:
    """The device's window (20 ATT bytes) reaches the host, which writes every chunk it allows."""
    trace.message("in", window(ack, limit, rewind), 20)
    sender.on_window(ack, limit, rewind)
    for offset, data in sender.next_chunks():
        trace.bulk(bulk_value(offset, data))


def opened(trace: Trace) -> None:
    trace.message("out", encode_message(OtaOffer(DEV, "agent", manifest=bytes(300))), 330)
    trace.message("in", encode_message(OtaState(DEV, "agent", 1, "downloading", held=0, size=3 * BLOCK)), 50)


def test_a_window_that_comes_only_once_the_credit_is_spent_is_one_round_trip():
    trace, sender = Trace(), Sender(bytes(3 * BLOCK), 1, CHUNK)
    opened(trace)
    send(trace, sender, 0, 2 * BLOCK)            # wait 1: the offer's answer
    send(trace, sender, BLOCK, 3 * BLOCK)        # wait 2: credit spent at 8192
    send(trace, sender, 2 * BLOCK, 3 * BLOCK)    # nothing left to send: no wait
    send(trace, sender, 3 * BLOCK, 3 * BLOCK)
    f = count(trace, 3 * BLOCK)
    # 17 chunks of 240 and one of 16 per block (no chunk crosses a block), 4 offset bytes each.
    assert (f.bulk_values, f.bulk_att, f.image_bytes, f.resent) == (54, 3 * BLOCK + 54 * 4, 3 * BLOCK, 0)
    assert f.ota_msgs == {"offer": [1, 330], "state": [1, 50], "window": [4, 80]}
    assert f.ota_att == 3 * BLOCK + 54 * 4 + 330 + 50 + 80
    assert f.efficiency == 3 * BLOCK / f.ota_att
    assert f.efficiency_with_headers == 3 * BLOCK / (f.ota_att + 3 * (54 + 6))
    assert (f.round_trips, f.rewinds) == (2, 0) and f.per_64k == 2 * 65536 / (3 * BLOCK)


def test_a_window_that_comes_while_the_host_still_has_credit_costs_no_wait():
    trace, sender = Trace(), Sender(bytes(3 * BLOCK), 1, CHUNK)
    opened(trace)
    trace.message("in", window(0, 2 * BLOCK), 20)
    sender.on_window(0, 2 * BLOCK)
    first = sender.next_chunks()
    for offset, data in first[:20]:              # the device's next window overtakes the last chunks
        trace.bulk(bulk_value(offset, data))
    send(trace, sender, BLOCK, 3 * BLOCK)
    for offset, data in first[20:]:
        trace.bulk(bulk_value(offset, data))
    f = count(trace, 3 * BLOCK)
    assert f.round_trips == 1 and f.image_bytes == 3 * BLOCK


def test_a_rewind_counts_its_bytes_again_in_att_but_once_as_image():
    trace, sender = Trace(), Sender(bytes(BLOCK), 1, CHUNK)
    opened(trace)
    send(trace, sender, 0, BLOCK)
    send(trace, sender, 0, BLOCK, rewind=True)   # a chunk was missing: the whole block again
    f = count(trace, BLOCK)
    assert (f.image_bytes, f.resent, f.rewinds, f.bulk_values) == (BLOCK, BLOCK, 1, 36)
    assert f.round_trips == 2


def test_telemetry_and_control_values_are_not_the_otas():
    trace = Trace()
    trace.other("out", 34)
    trace.message("in", b"\xa1\x00\x07", 168)    # a BATCH's type: telemetry sharing the connection
    f = count(trace, BLOCK)
    assert (f.other_att, f.ota_att, f.ota_msgs, f.round_trips) == (202, 0, {}, 0)


def test_the_modelled_exchange_of_64_kb_meets_the_issues_goals_at_mtu_247():
    offer = (bytes(200), bytes(150))       # a manifest and a key list of about their signed size
    worst = count(modelled(65536, 247, DEV, 1, offer, pipelined=False), 65536)
    best = count(modelled(65536, 247, DEV, 1, offer, pipelined=True), 65536)
    # One window per 4 KB block plus the first; the host waits for the first and then for each
    # window that grants a block it has not been granted (the last two grant none).
    assert worst.ota_msgs["window"][0] == best.ota_msgs["window"][0] == 17
    assert (worst.round_trips, best.round_trips) == (15, 1)
    assert worst.image_bytes == 65536 and worst.bulk_values == 16 * 18 and worst.resent == 0
    assert worst.efficiency >= 0.95 and worst.efficiency == best.efficiency


def test_a_push_on_the_virtual_air_is_counted_as_the_device_received_it(air, edge_home, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    env = {"EDGE_BLE": "sim", "EDGE_BLE_HCI": air.spec}
    assert edge_home.invoke("pair", ESP, "--code", CODE, "--account", "home", env=env).exit_code == 0
    with Store(edge_home.db) as s:
        s.device_number(ESP)
        s._db.execute("UPDATE devices SET board = 'esp32' WHERE device_id = ?", (ESP,))
    image = bytes(range(256)) * 40 + b"tail"          # 10,244 bytes: two whole blocks and a short one
    signed, manifest = Releases(edge_home, tmp_path).sign(image, board="esp32")
    monkeypatch.setattr(ble, "BleConnection", ble.BleConnection)   # restored after the test
    monkeypatch.setattr(ble, "TelemetryPump", ble.TelemetryPump)
    monkeypatch.setenv("EDGE_BLE_MTU", "247")
    trace = Trace()
    instrument(trace)
    r = edge_home.invoke("ota", "push", ESP, str(signed), str(manifest), "--until", "installed", "--json",
                         "--timeout", "60s", env=env)
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "installed", r.output
    device = air.peripherals[ESP]
    f = count(trace, len(image))
    assert (f.image_bytes, f.resent) == (len(image), 0)
    assert f.bulk_values == len(device.bulk_sizes) and f.bulk_att == sum(device.bulk_sizes)
    assert max(device.bulk_sizes) == 244                # MTU 247: 240 image bytes behind the offset
    assert f.ota_msgs["offer"][0] == len(device.ota.offers)
    assert f.ota_msgs["window"][0] == len(device.ota.windows) == 4     # the first, then one per block
    assert f.ota_msgs["state"][0] == len(device.ota.states)
    assert 1 <= f.round_trips <= 2 and f.other_att > 0   # the offer's, and at most one for the credit
