"""The host BLE link (agent/links/ble.py), the registry's bonds and the pairing commands.

The devices are scripted Bumble peripherals on a virtual air in this
process (tests/host/edge_air.py) speaking docs/protocol.md 5.1-5.3 for real
(advertisement, GATT, segments over bleak and the Bumble backend) and the
pairing messages of 5.4-5.6 through a stand-in of ``edge_agent.pairing``
without cryptography. The interop with the device's firmware and the real
pairing core is tests/host/test_pair_cli.py and tests/test_gateway.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from edge_agent.links.ble import (BleConnection, Seen, TelemetryPump, find, looks_like_address,
                                  parse_advertisement, scan)
from edge_agent.store import BOND_COLUMNS, DEVICE_COLUMNS, Store
from tests.host import pairing_standin

ESP = "esp32-0a0b0c0d0e0f"
PICO = "picow-1a2b3c4d5e6f"
C3 = "esp32c3-aabbccddeeff"
CODE = "12345678"
BOARDS = [(ESP, "C0:00:00:00:00:01", CODE), (PICO, "C0:00:00:00:00:02", "87654321"),
          (C3, "C0:00:00:00:00:03", "11112222")]


@pytest.fixture
def standins(monkeypatch):
    """The pairing stand-in: the scripted devices speak it."""
    monkeypatch.setitem(sys.modules, "edge_agent.pairing", pairing_standin)


@pytest.fixture
def air(standins, monkeypatch):
    from tests.host.edge_air import AirThread

    with AirThread(BOARDS) as a:
        monkeypatch.setenv("EDGE_BLE", "sim")
        monkeypatch.setenv("EDGE_BLE_HCI", a.spec)
        yield a


# -- the advertisement (5.1) ----------------------------------------------------

def test_an_edge_advertisement_gives_id_board_paired_and_paused():
    assert parse_advertisement(ESP, {0xFFFF: b"\xea\x10"}) == (ESP, "esp32", False, False)
    assert parse_advertisement(ESP, {0xFFFF: b"\xea\x13"}) == (ESP, "esp32", True, True)
    assert parse_advertisement("node.7", {0xFFFF: b"\xea\x11"}) == ("node.7", None, True, False)


@pytest.mark.parametrize("name, data", [
    (ESP, {}),                                   # no manufacturer data: not ours
    (ESP, {0x004C: b"\xea\x10"}),                # another company
    (ESP, {0xFFFF: b"\xeb\x10"}),                # another magic
    (ESP, {0xFFFF: b"\xea\x20"}),                # format version 2
    (ESP, {0xFFFF: b"\xea\x14"}),                # an unknown state bit
    (ESP, {0xFFFF: b"\xea\x10\x00"}),            # one byte too many
    (ESP, {0xFFFF: b"\xea"}),                    # no state byte
    (None, {0xFFFF: b"\xea\x10"}),               # no name
    ("ESP32-0A0B", {0xFFFF: b"\xea\x10"}),       # not the device-id alphabet
    ("-esp", {0xFFFF: b"\xea\x10"}),
])
def test_anything_else_is_another_device_and_ignored(name, data):
    assert parse_advertisement(name, data) is None


def test_an_address_is_told_from_a_device_id():
    assert looks_like_address("C0:11:22:33:44:55") and looks_like_address("c0:11:22:33:44:55/P")
    assert not looks_like_address(ESP) and not looks_like_address("C0:11:22:33:44")


# -- the registry (schema step 6) -------------------------------------------------

def test_a_bond_binds_a_device_to_one_account_and_its_key_is_never_listed(tmp_path):
    with Store(tmp_path / "r.db") as s:
        host = s.host_id()
        assert len(host) == 16 and s.host_id() == host          # made once
        s.save_bond(ESP, "home", host, b"B" * 8, b"K" * 32, b"D" * 32)
        assert s.account_of(ESP) == "home" and s.account_devices("home") == {ESP}
        (row,) = s.bonds()
        assert set(BOND_COLUMNS) <= set(row) and not {"bond_key", "host_id", "device_key"} & set(row)
        assert b"K" * 32 not in json.dumps(row).encode()
        assert s.bonds("work") == []
        with pytest.raises(Exception) as e:
            s.save_bond(ESP, "work", host, b"C" * 8, b"L" * 32, b"D" * 32)
        assert "home" in str(e.value) and s.account_of(ESP) == "home"
        assert s.bond_secret(ESP)["bond_key"] == b"K" * 32
        assert s.drop_bond(ESP, "unpaired") == "home" and s.account_of(ESP) is None
        assert [a["action"] for a in s.audit_log(ESP)] == ["paired", "unpaired"]
        assert "bond_key" not in DEVICE_COLUMNS
    with Store(tmp_path / "r.db") as s:
        assert s.host_id() == host                               # kept across opens


def test_an_audit_action_outside_the_list_is_a_bug(tmp_path):
    with Store(tmp_path / "r.db") as s, pytest.raises(ValueError):
        s.audit(ESP, "home", "stolen")


# -- the link, through bleak on the virtual air ----------------------------------

def test_a_scan_lists_the_edge_devices_with_board_address_and_state(air):
    seen = asyncio.run(scan(1.5))
    assert [(s.device_id, s.board, s.paired, s.paused) for s in seen] == [
        (ESP, "esp32", False, False), (C3, "esp32c3", False, False), (PICO, "picow", False, False)]
    assert {s.address for s in seen} == {a for _, a, _ in BOARDS} and all(isinstance(s, Seen) for s in seen)


def test_find_ends_as_soon_as_the_device_is_heard_and_names_edge_scan_when_it_is_not(air):
    started = time.monotonic()
    assert asyncio.run(find(PICO, 10)).address == "C0:00:00:00:00:02"
    assert time.monotonic() - started < 5
    from edge_agent.errors import NotFound
    with pytest.raises(NotFound) as e:
        asyncio.run(find("esp32-ffffffffffff", 0.5))
    assert "edge scan" in e.value.hint


async def _pair(address: str, device_id: str, code: str, account: str = "home"):
    async with BleConnection(address, device_id) as conn:
        return await conn.pair(code, account, b"H" * 16)


def test_pairing_gives_a_bond_and_the_device_then_advertises_paired(air):
    bond, session = asyncio.run(_pair("C0:00:00:00:00:01", ESP, CODE))
    assert bond.device_id == ESP and bond.account == "home" and len(bond.bond_id) == 8
    assert air.peripherals[ESP].owner == "home"
    (esp,) = [s for s in asyncio.run(scan(1.0)) if s.device_id == ESP]
    assert esp.paired


def test_a_wrong_code_is_a_pairing_error_and_the_third_one_pauses_the_device(air):
    from edge_agent.links.ble import pairing_failure

    from tests.host.edge_air import HeldClock

    # The device's uptime stands still: the 2 s back-off holds however slow the machine is.
    clock = air.peripherals[ESP].uptime = HeldClock()
    for _ in range(3):
        with pytest.raises(pairing_standin.PairingError) as e:
            asyncio.run(_pair("C0:00:00:00:00:01", ESP, "00000000"))
        assert e.value.reason == "wrong_code"
    with pytest.raises(pairing_standin.PairingError) as e:
        asyncio.run(_pair("C0:00:00:00:00:01", ESP, CODE))
    err = pairing_failure(ESP, e.value)
    assert e.value.reason == "paused" and "next attempt in" in err.message and err.exit_code == 4
    assert e.value.wait_ms == 2000
    clock.at += 2.0                                   # the back-off is over: the right code pairs
    bond, _ = asyncio.run(_pair("C0:00:00:00:00:01", ESP, CODE))
    assert bond.device_id == ESP and air.peripherals[ESP].owner == "home"


def test_a_resumed_session_carries_sealed_telemetry_into_the_registry_once(air, tmp_path):
    from edge_agent.telemetry.ingest import IngestCore
    from edge_agent.telemetry.writer import RegistryWriter

    bond, _ = asyncio.run(_pair("C0:00:00:00:00:01", ESP, CODE))
    device = air.peripherals[ESP]
    air.call(device.sample, 30)
    db = tmp_path / "r.db"
    Store(db).close()
    writer = RegistryWriter(db)
    registry = Store(db, shared=True)
    core = IngestCore(writer, registry)

    async def run():
        async with BleConnection("C0:00:00:00:00:01", ESP) as conn:
            session = await conn.resume(bond)
            pump = TelemetryPump(conn, session, core)
            task = asyncio.ensure_future(pump.run())
            for _ in range(100):
                await asyncio.sleep(0.1)
                if device.fake.acked == 30:
                    break
            # A forged message is dropped and counted; the link goes on.
            await conn.write_telemetry(b"\x00\x00\x00\x63\x01" + b"junk")
            await asyncio.sleep(0.3)
            task.cancel()
            return pump
    pump = asyncio.run(run())
    writer.close()
    assert device.fake.acked == 30 and device.bad_sealed == 1
    assert registry.count(ESP) == 30
    assert pump.link.stats.records == 30 and pump.link.bound == ESP
    registry.close()


def test_resume_with_a_bond_the_device_dropped_is_unknown_bond(air):
    bond, _ = asyncio.run(_pair("C0:00:00:00:00:01", ESP, CODE))
    air.call(air.peripherals[ESP].factory_reset)

    async def run():
        async with BleConnection("C0:00:00:00:00:01", ESP) as conn:
            await conn.resume(bond)
    with pytest.raises(pairing_standin.PairingError) as e:
        asyncio.run(run())
    assert e.value.reason == "unknown_bond"


# -- the commands ----------------------------------------------------------------

def sim_env(air) -> dict:
    return {"EDGE_BLE": "sim", "EDGE_BLE_HCI": air.spec}


def test_edge_scan_prints_the_table_and_json(air, edge_home):
    r = edge_home.invoke("scan", "--for", "1.5s", "--json", env=sim_env(air))
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {row["device_id"] for row in rows} == {ESP, PICO, C3}
    assert set(rows[0]) >= {"device_id", "board", "address", "rssi", "paired", "paused", "account"}
    r = edge_home.invoke("scan", "--for", "1s", env=sim_env(air))
    assert r.exit_code == 0 and ESP in r.stdout and "RSSI" in r.stdout


def test_pair_binds_an_account_and_another_account_is_refused_here_and_by_the_device(air, edge_home):
    env = sim_env(air)
    r = edge_home.invoke("pair", ESP, "--code", "1234-5678", "--account", "alice", "--json", env=env)
    assert r.exit_code == 0, r.output
    bond = json.loads(r.stdout)
    assert bond["device_id"] == ESP and bond["account"] == "alice" and "bond_key" not in bond
    # The host refuses before any radio traffic.
    r = edge_home.invoke("pair", ESP, "--code", CODE, "--account", "bob", env=env)
    assert r.exit_code == 4 and "alice" in r.stderr and "edge devices unpair" in r.stderr
    # Forgotten here, the device still refuses: it is bound to alice.
    r = edge_home.invoke("devices", "unpair", ESP, "--forget", env=env)
    assert r.exit_code == 0 and "stays bound" in r.stderr
    r = edge_home.invoke("pair", ESP, "--code", CODE, "--account", "bob", env=env)
    assert r.exit_code == 4 and "another owner" in r.stderr and "factory" in r.stderr
    with Store(edge_home.env["EDGE_DB"]) as s:
        assert [a["action"] for a in s.audit_log(ESP)] == ["paired", "pair_refused", "forgotten", "pair_refused"]


def test_a_wrong_code_names_the_fix_and_the_back_off_is_shown(air, edge_home):
    from tests.host.edge_air import HeldClock

    air.peripherals[PICO].uptime = HeldClock()       # the back-off outlasts a slow machine
    env = sim_env(air)
    for _ in range(3):
        r = edge_home.invoke("pair", PICO, "--code", "0000-0000", env=env)
        assert r.exit_code == 5 and "wrong code" in r.stderr and "label" in r.stderr
    r = edge_home.invoke("pair", PICO, "--code", "8765-4321", "--json", env=env)
    assert r.exit_code == 4
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert "next attempt in" in err["error"] and err["exit_code"] == 4


def test_unpair_tells_the_device_and_then_another_account_may_pair(air, edge_home):
    env = sim_env(air)
    assert edge_home.invoke("pair", C3, "--code", "11112222", "--account", "alice", env=env).exit_code == 0
    r = edge_home.invoke("devices", "unpair", C3, "--account", "bob", env=env)
    assert r.exit_code == 4                    # not bob's to unpair
    r = edge_home.invoke("devices", "unpair", C3, "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["device_told"] is True
    assert not air.peripherals[C3].bonds
    r = edge_home.invoke("pair", C3, "--code", "11112222", "--account", "bob", env=env)
    assert r.exit_code == 0, r.output


def test_pair_by_qr_payload_checks_the_key_fingerprint(air, edge_home):
    import hashlib

    from edge_agent.label import pairing_payload
    from tests.host.edge_air import key_of

    env = sim_env(air)
    wrong = pairing_payload(ESP, CODE, "0" * 16, "esp32")
    r = edge_home.invoke("pair", "--qr", wrong, env=env)
    assert r.exit_code == 6 and "not its registered one" in r.stderr
    right = pairing_payload(ESP, CODE, hashlib.sha256(key_of(ESP)).hexdigest()[:16], "esp32")
    r = edge_home.invoke("pair", "--qr", right, "--account", "home", env=env)
    assert r.exit_code == 0, r.output


def test_pair_names_edge_scan_for_a_device_out_of_range_and_refuses_bad_input(air, edge_home):
    env = sim_env(air)
    r = edge_home.invoke("pair", "esp32-ffffffffffff", "--code", CODE, "--scan-for", "1", env=env)
    assert r.exit_code == 3 and "edge scan" in r.stderr
    assert edge_home.invoke("pair", ESP, "--code", "123", env=env).exit_code == 5
    assert edge_home.invoke("pair", ESP, "--code", CODE, "--account", "Bad Name", env=env).exit_code == 5
    assert edge_home.invoke("pair", ESP, env=env).exit_code == 2


def test_devices_lists_by_account_and_show_has_the_audit_log_but_no_key(air, edge_home):
    env = sim_env(air)
    assert edge_home.invoke("pair", ESP, "--code", CODE, "--account", "alice", env=env).exit_code == 0
    assert edge_home.invoke("pair", PICO, "--code", "87654321", "--account", "bob", env=env).exit_code == 0
    everyone = json.loads(edge_home.invoke("devices", "--json").stdout)
    assert [(d["device_id"], d["account"]) for d in everyone] == [(ESP, "alice"), (PICO, "bob")]
    bobs = json.loads(edge_home.invoke("devices", "list", "--account", "bob", "--json").stdout)
    assert [d["device_id"] for d in bobs] == [PICO]
    r = edge_home.invoke("devices", "show", ESP, "--json")
    shown = json.loads(r.stdout)
    assert shown["bond"]["account"] == "alice" and [a["action"] for a in shown["audit"]] == ["paired"]
    with Store(edge_home.env["EDGE_DB"]) as s:
        key = s.bond_secret(ESP)["bond_key"]
    for out in (r.stdout, edge_home.invoke("devices").stdout, edge_home.invoke("devices", "show", ESP).stdout):
        assert key.hex() not in out and key.hex().upper() not in out
    assert edge_home.invoke("devices", "show", "esp32-ffffffffffff").exit_code == 3


def test_the_gateway_keeps_the_accounts_devices_connected_and_stores_each_record_once(air, edge_home):
    from edge_agent.gateway import EventLog, Gateway

    env = sim_env(air)
    for device_id, _, code in BOARDS[:2]:
        assert edge_home.invoke("pair", device_id, "--code", code, "--account", "home", env=env).exit_code == 0
    assert edge_home.invoke("pair", C3, "--code", "11112222", "--account", "work", env=env).exit_code == 0
    for device_id, _, _ in BOARDS:
        air.call(air.peripherals[device_id].sample, 25)
    import io
    out = io.StringIO()
    gw = Gateway(edge_home.env["EDGE_DB"], "home", EventLog(json_lines=True, out=out), scan_window=1.0)
    devices = asyncio.run(gw.run(duration=8))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {e["device"] for e in events if e["event"] == "connected"} == {ESP, PICO}
    assert events[-1]["event"] == "stopped"
    with Store(edge_home.env["EDGE_DB"]) as s:
        assert s.count(ESP) == 25 and s.count(PICO) == 25 and s.count(C3) == 0
        assert all(b["last_connected"] for b in s.bonds("home"))
    assert air.peripherals[ESP].fake.acked == 25 and sum(d.records for d in devices.values()) == 50
    # Only home's devices, by account.
    shown = json.loads(edge_home.invoke("telemetry", "show", "--account", "home", "--json").stdout)
    assert {d["device_id"] for d in shown["devices"]} == {ESP, PICO}
    r = edge_home.invoke("telemetry", "export", "--account", "work", "--format", "jsonl")
    assert r.exit_code == 0 and r.stdout == ""
    live = edge_home.invoke("telemetry", "live", "--once", "--account", "home").stdout
    assert ESP in live and PICO in live
    work = edge_home.invoke("telemetry", "live", "--once", "--account", "work").stdout
    assert ESP not in work and PICO not in work


def test_the_gateway_reconnects_a_device_that_dropped_the_link(air, edge_home):
    from edge_agent.gateway import EventLog, Gateway

    env = sim_env(air)
    assert edge_home.invoke("pair", ESP, "--code", CODE, env=env).exit_code == 0
    device = air.peripherals[ESP]
    air.call(device.sample, 10)
    import io
    out = io.StringIO()
    gw = Gateway(edge_home.env["EDGE_DB"], "default", EventLog(json_lines=True, out=out), scan_window=1.0)

    async def run():
        task = asyncio.ensure_future(gw.run(duration=12))
        for _ in range(60):
            await asyncio.sleep(0.1)
            if device.fake.acked == 10:
                break
        air.call(device.sample, 10)
        air.call(lambda: device.connection.disconnect())       # the device drops the link
        return await task
    asyncio.run(run())
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events].count("connected") >= 2, events
    with Store(edge_home.env["EDGE_DB"]) as s:
        assert s.count(ESP) == 20


def test_edge_gateway_run_logs_one_line_per_event_and_stops_after_for(air, edge_home):
    env = sim_env(air)
    assert edge_home.invoke("pair", ESP, "--code", CODE, env=env).exit_code == 0
    air.call(air.peripherals[ESP].sample, 5)
    r = edge_home.invoke("gateway", "run", "--for", "4s", env=env)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert any(" connected " in line and ESP in line for line in lines), lines
    assert any(" stopping" in line for line in lines)
    assert " stopped " in lines[-1] and "records=5" in lines[-1]
    assert edge_home.invoke("gateway", "run", "--account", "No Such", env=env).exit_code == 5


def test_completion_offers_paired_devices_and_accounts(tmp_path, monkeypatch):
    from edge_agent.cli import complete

    db = tmp_path / "r.db"
    monkeypatch.setenv("EDGE_DB", str(db))
    with Store(db) as s:
        s.save_bond(ESP, "home", s.host_id(), b"B" * 8, b"K" * 32, b"D" * 32)
        s.save_bond(PICO, "work", s.host_id(), b"C" * 8, b"L" * 32, b"E" * 32)
    assert [i.value for i in complete.paired_devices(None, None, "esp")] == [ESP]
    assert [i.value for i in complete.accounts(None, None, "")] == ["home", "work"]
    monkeypatch.setenv("EDGE_DB", str(tmp_path / "none.db"))
    assert complete.paired_devices(None, None, "") == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_gateway_process_cleanly_with_exit_0(air, edge_home, sig):
    import signal
    import subprocess

    from tests.harness import EDGE

    with Store(edge_home.env["EDGE_DB"]) as s:    # a bond the device does not hold: it retries
        s.save_bond(ESP, "default", s.host_id(), b"B" * 8, b"K" * 32, b"D" * 32)
    gw = subprocess.Popen([EDGE, "gateway", "run", "--json-log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, stdin=subprocess.DEVNULL, env={**edge_home.env, **sim_env(air)})
    time.sleep(4)
    gw.send_signal(getattr(signal, sig))
    out, err = gw.communicate(timeout=20)
    assert gw.returncode == 0, err
    names = [json.loads(line)["event"] for line in out.splitlines()]
    assert names[0] == "start" and "stopping" in names and names[-1] == "stopped", names
    assert "Traceback" not in err


def test_the_gateway_goes_on_when_its_log_reader_goes_away():
    from edge_agent.gateway import EventLog

    class Gone:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    event = EventLog(out=Gone())
    event("connected", ESP, address="C0:00:00:00:00:01")
    event("stopped", records=0)
    assert event.out is None and [e["event"] for e in event.events] == ["connected", "stopped"]


def test_events_from_several_threads_stay_one_json_object_per_line():
    # The OTA servers report from the store's writer thread while the event loop logs
    # connections: a line must never be split by another thread's line (CI saw two
    # objects on one line of `edge gateway run --json-log`).
    import threading

    from edge_agent.gateway import EventLog

    class Slow:
        """A pipe whose writes give other threads the chance to run in between."""
        def __init__(self):
            self.parts: list[str] = []

        def write(self, text):
            self.parts.append(text)
            time.sleep(0.0002)
            return len(text)

        def flush(self):
            pass

    out = Slow()
    event = EventLog(json_lines=True, out=out)

    def burst(n):
        for i in range(60):
            event("ota_state", f"dev-{n}", sequence=i, state="receiving")

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = "".join(out.parts).splitlines()
    assert len(lines) == 240 and len(event.events) == 240
    assert sorted((e["device"], e["sequence"]) for e in map(json.loads, lines)) == sorted(
        (f"dev-{n}", i) for n in range(4) for i in range(60))


def test_pair_asks_again_when_the_device_ran_out_of_memory(monkeypatch):
    # ERROR no_memory means nothing left the device and the attempt was given
    # back (5.4): the host asks again on the same connection, then pairs.
    from edge_agent import pairing as hp
    from edge_agent.links import ble

    class Device(ble.BleConnection):
        def __init__(self):
            super().__init__("F1:C8:83:2F:84:D3", "esp32-3f9a0c12b7d4")
            self.starts = 0

        async def request(self, payload, timeout=1.0):
            kind, f = hp.decode_control(payload)
            if kind == hp.PAIR_START:
                self.starts += 1
                if self.starts == 1:
                    return hp._encode(hp.ERROR, {1: "no_memory", 3: "device: out of memory"})
                raise RuntimeError("answered")     # the retry reached the device
            raise AssertionError(kind)

    async def no_wait(_):
        return None

    monkeypatch.setattr(ble.asyncio, "sleep", no_wait)
    dev = Device()
    with pytest.raises(RuntimeError, match="answered"):
        asyncio.run(dev.pair("48213907", "home", hp.new_host_id()))
    assert dev.starts == 2
    err = ble.pairing_failure(dev.device_id, hp.PairingError("no_memory"))
    assert "not counted" in err.message and err.exit_code == 4


def test_a_connect_that_fails_once_is_tried_again_and_one_that_keeps_failing_names_its_error(air, monkeypatch):
    """A connection attempt that fails (a busy controller, the peripheral still ending the last link)
    is made once more, as BLE hosts do; one that fails every time is an error that says what failed."""
    from bleak import BleakClient

    real = BleakClient.connect
    calls = []

    async def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1 or fail_always:
            raise asyncio.TimeoutError()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(BleakClient, "connect", flaky)
    fail_always = False

    async def connect_once():
        async with BleConnection("C0:00:00:00:00:01", ESP, connect_timeout=3) as conn:
            return conn.client.is_connected

    assert asyncio.run(connect_once()) is True and len(calls) == 2
    calls.clear()
    fail_always = True
    from edge_agent.errors import DeviceError
    with pytest.raises(DeviceError) as e:
        asyncio.run(connect_once())
    assert len(calls) == 2
    assert e.value.message == f"could not connect to {ESP} at C0:00:00:00:00:01: TimeoutError (2 attempts)"
