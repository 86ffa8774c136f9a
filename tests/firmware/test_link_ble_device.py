"""The device's BLE link (edgefw/link_ble.py) on MicroPython, driven through
a recording `bluetooth` module and test-only stand-ins for Pairing, Session
and the Uplink (defined here, never in firmware/): the advertising bytes of
docs/protocol.md 5.1, the service of 5.2, segments both ways (5.3), and that
hostile writes are counted and change nothing."""

from __future__ import annotations

import json

from tests.mpy import run

DEVICE = "esp32-7c9e3a0b1d2f"

# A `bluetooth` module that records calls; the test calls the IRQ handler as
# the stack would.
_PRELUDE = r"""
import sys, json, binascii
class UUID:
    def __init__(self, s): self.s = s
class _BLE:
    def __init__(self):
        self.calls = []; self.values = {}; self.notified = []; self.enomem = 0
    def active(self, on): self.calls.append(("active", on))
    def config(self, **kw): self.calls.append(("config", kw))
    def irq(self, h): self.h = h; self.calls.append(("irq", h is not None))
    def gatts_register_services(self, svcs):
        ((u, chars),) = svcs
        self.calls.append(("reg", u.s, [(c[0].s, c[1]) for c in chars]))
        return ((21, 24, 27),)
    def gatts_set_buffer(self, h, n, append=False): self.calls.append(("buf", h, n, append))
    def gap_advertise(self, us, data): self.calls.append(("adv", us, binascii.hexlify(data).decode()))
    def gatts_read(self, h): return self.values[h]
    def gatts_notify(self, c, h, data):
        if self.enomem:
            self.enomem -= 1
            raise OSError(12)
        self.notified.append((h, bytes(data)))
    def gap_disconnect(self, c): self.calls.append(("disc", c))
_ble = _BLE()
class bt:
    UUID = UUID
    BLE = staticmethod(lambda: _ble)

class Session:
    # Test-only: "sealing" prefixes S; a message opens when it starts with S.
    def __init__(self): self.proven = False; self.bad_sealed = 0
    def seal(self, m): return b"S" + bytes(m)
    def seal_into(self, m, out):
        out[0] = 0x53
        out[1:1 + len(m)] = m
        return 1 + len(m)
    def open(self, m):
        if m[:1] != b"S": return None
        self.proven = True
        return m[1:]
class Pairing:
    def __init__(self): self.state = 0; self.seen = []; self.gone = 0
    def state_byte(self, now): return self.state
    def control(self, m, now):
        self.seen.append(bytes(m))
        if m == b"PAIR": return b"R" * 30, Session()
        return b"E", None
    def sealed(self, m): return b"DONE" if m == b"\xa1\x00\x16" else None
    def disconnected(self): self.gone += 1
class Uplink:
    ota = None
    def __init__(self): self.got = []; self.out = [b"HELLO" * 60]; self.re = 0
    def receive(self, m, now):
        if m == b"BAD": raise ValueError("bad")
        self.got.append(bytes(m))
    def poll(self, now): return (self.out.pop(0), 0) if self.out else (None, 1000)
    def reconnected(self): self.re += 1

from edgefw.link_ble import BleLink, adv_payload
from edgefw.segments import split
up = Uplink(); p = Pairing()
class Clock:
    def uptime_ms(self): return 7
link = BleLink(bt, up, p, %r, Clock())
link.start()
def write(h, value):
    _ble.values[h] = bytes(value)
    _ble.h(3, (1, h))
def write_msg(h, msg, size=20):
    for s in split(msg, size, 0, bytearray(244)):
        write(h, s)
def out(x): print(json.dumps(x))
""" % DEVICE


def _run(code: str) -> list:
    return [json.loads(line) for line in run(_PRELUDE + code, heap="esp32").stdout.decode().splitlines()]


def test_advertising_payload_is_byte_exact():
    code = r"""
out(binascii.hexlify(adv_payload("esp32-7c9e3a0b1d2f", 0x10)).decode())
out(binascii.hexlify(adv_payload("picow-000000000001", 0x13)).decode())
long = "a-very-long-device-id-of-30-chr"
out([binascii.hexlify(adv_payload(long, 0x11)).decode(), len(adv_payload("x" * 20, 0x10))])
"""
    a, b, (c, n20) = _run(code)
    name = DEVICE.encode().hex()
    assert a == "020106" + "05ffffffea10" + "1309" + name
    assert b == "020106" + "05ffffffea13" + "1309" + b"picow-000000000001".hex()
    assert c == "020106" + "05ffffffea11" + "1708" + b"a-very-long-device-id-"[:22].hex()
    assert n20 == 31


def test_start_registers_the_service_of_5_2_and_advertises_every_100_ms():
    calls = _run("out(_ble.calls)")[0]
    assert calls[0] == ["active", True]
    assert calls[1] == ["config", {"mtu": 247}]
    assert calls[2] == ["irq", True]
    calls = calls[:2] + calls[3:]
    assert calls[2] == ["reg", "9ba40001-ec51-4948-832f-fdedb1cbf4a1", [
        ["9ba40002-ec51-4948-832f-fdedb1cbf4a1", 0x08 | 0x10],
        ["9ba40003-ec51-4948-832f-fdedb1cbf4a1", 0x04 | 0x10],
        ["9ba40004-ec51-4948-832f-fdedb1cbf4a1", 0x04 | 0x10]]]
    assert calls[3:6] == [["buf", h, 255, False] for h in (21, 24, 27)]
    assert calls[6] == ["adv", 100000, "02010605ffffffea101309" + DEVICE.encode().hex()]


def test_pairing_then_sealed_telemetry_both_ways_in_segments_of_mtu_minus_3():
    code = r"""
_ble.h(1, (1, 0, memoryview(b"\0" * 6)))
write_msg(21, b"PAIR")
link.handle(0)
out([p.seen[0].decode(), link.session is not None, up.re])
link.send(0)
out([[h, binascii.hexlify(s).decode()] for h, s in _ble.notified]); del _ble.notified[:]
# Not proven yet: no telemetry.
out([link.send(0), _ble.notified])
_ble.h(21, (1, 247))
write_msg(24, b"S" + b"ACK" * 100, 244)
link.handle(0)
out([up.got[0][:6].decode(), link.session.proven])
link.send(0)
out([[h, len(s)] for h, s in _ble.notified])
"""
    seen, ctl, idle, got, tel = _run(code)
    assert seen == ["PAIR", True, 1]
    # 30-byte reply at MTU 23: 17 bytes in the first segment, 13 after.
    assert ctl == [[21, "80001e" + "52" * 17], [21, "01" + "52" * 13]]
    assert idle == [30000, []]
    assert got == ["ACKACK", True]
    # HELLO*60 sealed = 301 bytes at MTU 247: 241 + 60.
    assert tel == [[24, 244], [24, 61]]


def test_hostile_writes_are_counted_and_change_nothing():
    code = r"""
_ble.h(1, (1, 0, memoryview(b"\0" * 6)))
write(24, b"\xff\xff\xff garbage")          # length above 1036
write(24, b"\x80\x00\x05ab"); write(24, b"\x05cd")   # wrong continuation index
write(24, b"\x07zz")                          # continuation with nothing in progress
write(24, b"")                                # empty
write_msg(24, b"plain TIME")                  # a plain message before any session
write(27, b"\x00\x00\x00\x00x")               # bulk with no OTA transfer open: ignored
write(24, b"\x80\x02\x58" + b"x" * 597)       # 600 bytes: longer than MTU - 3
write(21, b"\x80\x00\x02")                    # control: unfinished, then the link drops
link.handle(0)
out([link.bad_segments, link.bad_sealed, link.bad_writes, up.got, p.seen])
link.send(0)
out([[h, binascii.hexlify(s).decode()] for h, s in _ble.notified])
_ble.h(2, (1, 0, memoryview(b"\0" * 6)))
p.state = 1
link.handle(5)
out([link.connected, link.session, p.gone, _ble.calls[-1]])
write(21, b"\x01x")
out(link.bad_writes)
"""
    counts, ctl, after, bad_after = _run(code)
    assert counts == [4, 1, 2, [], []]
    assert ctl == []   # bulk is not answered: the host learns from OTA_WINDOW and OTA_STATE
    assert after == [False, None, 1, ["adv", 100000, "02010605ffffffea111309" + DEVICE.encode().hex()]]
    assert bad_after == 3   # a write with no central connected


def test_bulk_writes_go_to_the_ota_transfer_open_on_this_link_as_they_are():
    code = r"""
class Xfer:
    link = up
class Ota:
    def __init__(self): self.xfer = None; self.got = []; self.paused = 0
    def bulk(self, value, link, now): self.got.append([binascii.hexlify(value).decode(), link is up, now])
    def closed(self, link): self.paused += 1
up.ota = Ota()
_ble.h(1, (1, 0, memoryview(b"\0" * 6)))
write(27, b"\x00\x00\x10\x00ab")            # no transfer open: ignored, counted
up.ota.xfer = Xfer()
write(27, b"\x00\x00\x10\x00cd")
out([link.bad_writes, up.ota.got])
_ble.h(2, (1, 0, memoryview(b"\0" * 6)))      # the central goes: the transfer pauses
out(up.ota.paused)
"""
    counted, closed = _run(code)
    assert counted == [1, [["00001000" + b"cd".hex(), True, 7]]]
    assert closed == 1


def test_unpair_is_answered_sealed_and_closes_the_link():
    code = r"""
_ble.h(1, (1, 0, memoryview(b"\0" * 6)))
write_msg(21, b"PAIR"); link.handle(0); link.send(0); del _ble.notified[:]
write_msg(24, b"S\xa1\x00\x16"); link.handle(0)
link.send(0)
out([[h, binascii.hexlify(s).decode()] for h, s in _ble.notified])
link.send(0)
out(_ble.calls[-1])
"""
    notified, last = _run(code)
    assert notified == [[24, "800005" + b"SDONE".hex()]]
    assert last == ["disc", 1]


def test_a_stack_out_of_buffers_is_retried_where_it_stopped():
    code = r"""
_ble.h(1, (1, 0, memoryview(b"\0" * 6)))
write_msg(21, b"PAIR"); link.handle(0)
_ble.enomem = 1
out([link.send(0), len(_ble.notified)])
out([link.send(0), len(_ble.notified)])
"""
    a, b = _run(code)
    assert a == [20, 0]
    assert b == [30000, 2]


def test_close_releases_the_handler_and_turns_the_radio_off():
    code = r"""
link.close()
out(_ble.calls[-2:])
link.close()
out(len(_ble.calls))
"""
    last, n = _run(code)
    assert last == [["irq", False], ["active", False]]
    assert n == 10   # the second close() does nothing
