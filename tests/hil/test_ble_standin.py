"""The `bluetooth` stand-in of a virtual board: firmware written against
MicroPython's documented `bluetooth` API, run by the real Unix-port
interpreter through the board's runner, is a real BLE peripheral to a Bumble
central on the same emulated link.

Each test builds its own small air: a LocalLink with two emulated
controllers, the board's served on a unix socket (as the virtual air serves
it) and the central's in this process; the bridge attaches to the board's
controller exactly as it does on the bench."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from edge_hil.virtual.ble_bridge import DEFAULT_BUFFER, Value
from tests.mpy import board_heap, micropython_exe


from bumble.att import ATT_Error, ErrorCode  # noqa: E402
from bumble.controller import Controller  # noqa: E402
from bumble.core import UUID, AdvertisingData  # noqa: E402
from bumble.device import Device, Peer  # noqa: E402
from bumble.hci import Address  # noqa: E402
from bumble.host import Host  # noqa: E402
from bumble.link import LocalLink  # noqa: E402
from bumble.transport import open_transport  # noqa: E402
from bumble.transport.common import AsyncPipeSink  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "hil" / "virtual" / "runner.py"
SERVICE = "7e0a0001-5eed-4ed5-a8b4-3f0c2d9e6a10"
TX = "7e0a0002-5eed-4ed5-a8b4-3f0c2d9e6a10"     # read + notify + indicate
RX = "7e0a0003-5eed-4ed5-a8b4-3f0c2d9e6a10"     # write
LOG = "7e0a0004-5eed-4ed5-a8b4-3f0c2d9e6a10"    # write, appended into a 32-byte buffer
NAME = "edge-vb"

# The board's firmware: plain MicroPython `bluetooth` code. It prints each
# event; the central steers it with what it writes to RX.
FIRMWARE = f"""
import bluetooth, time
ble = bluetooth.BLE()
ble.active(True)
ble.config(gap_name={NAME!r}, mtu=200)
SVC = bluetooth.UUID({SERVICE!r})
TX = (bluetooth.UUID({TX!r}), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY | bluetooth.FLAG_INDICATE)
RX = (bluetooth.UUID({RX!r}), bluetooth.FLAG_WRITE)
LOG = (bluetooth.UUID({LOG!r}), bluetooth.FLAG_WRITE | bluetooth.FLAG_WRITE_NO_RESPONSE)
((tx, rx, lg),) = ble.gatts_register_services(((SVC, (TX, RX, LOG)),))
ble.gatts_set_buffer(lg, 32, True)
ble.gatts_write(tx, b"ready")
state = {{"done": False}}

def irq(event, data):
    if event == 1:
        print("connect", data[0], data[1], bytes(data[2]).hex())
    elif event == 2:
        print("disconnect", data[0], data[1], bytes(data[2]).hex())
        state["done"] = True
    elif event == 3:
        conn, h = data
        if h == rx:
            v = ble.gatts_read(rx)
            print("write", conn, v.hex())
            if v == b"go":
                state["go"] = conn
            elif v == b"bye":
                print("gap_disconnect", ble.gap_disconnect(conn))
            elif v == b"log?":
                ble.gatts_notify(conn, tx, ble.gatts_read(lg))
            elif v == b"ind":
                ble.gatts_write(tx, b"indicated")
                ble.gatts_indicate(conn, tx)
            elif v.startswith(b"upd:"):
                ble.gatts_write(tx, v[4:], True)
            else:
                ble.gatts_notify(conn, tx, b"echo:" + v)
        elif h == lg:
            print("write-log", conn)
    elif event == 20:
        print("indicate-done", data[0], data[1], data[2])
    elif event == 21:
        print("mtu", data[0], data[1])

ble.irq(irq)
name = {NAME!r}.encode()
ble.gap_advertise(50000, b"\\x02\\x01\\x06" + bytes((len(name) + 1, 9)) + name)
print("ready", tx, rx, lg, ble.config("mac")[1].hex(), ble.config("gap_name").decode())
while not state["done"]:
    time.sleep_ms(5)
print("end")
"""


class Board:
    """The board's interpreter (runner.py on a folder holding main.py) and its printed events."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.lines: list[str] = []

    async def expect(self, word: str, timeout: float = 10) -> list[str]:
        while True:
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            except asyncio.TimeoutError:
                raise AssertionError(f"board printed no {word!r} in {timeout} s; printed {self.lines}") from None
            if not raw:
                err = (await self.proc.stderr.read()).decode(errors="replace")
                raise AssertionError(f"board ended before {word!r}; printed {self.lines}\n{err}")
            line = raw.decode().strip()
            self.lines.append(line)
            fields = line.split()
            if fields and fields[0] == word:
                return fields[1:]


class Air:
    """Two emulated controllers on one link: the board's served to the bridge, a central here."""

    def __init__(self, root: Path):
        self.root = root
        self.hci = root / "board.hci"
        self.socket = root / "board.ble"
        self.procs: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Air:
        link = LocalLink()
        self.transport = await open_transport(f"unix-server:{self.hci}")
        Controller("board", host_source=self.transport.source, host_sink=self.transport.sink, link=link)
        central_controller = Controller("central", link=link)
        host = Host(central_controller, AsyncPipeSink(central_controller))
        self.central = Device(name="central", address=Address("F0:11:22:33:44:55"), host=host)
        await self.central.power_on()
        return self

    async def start_bridge(self, *extra: str) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge_hil.virtual.ble_bridge", "--hci", f"unix:{self.hci}",
            "--socket", str(self.socket), *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        self.procs.append(proc)
        first = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert first.startswith(b"ble-bridge "), first + await proc.stderr.read()
        self.address = first.split()[1].decode()
        return proc

    async def start_board(self, firmware: str = FIRMWARE) -> Board:
        fs = self.root / "fs"
        fs.mkdir(exist_ok=True)
        (fs / "main.py").write_text(firmware)
        env = {**os.environ, "EDGE_BLE_SOCKET": str(self.socket), "MICROPYPATH": ".frozen"}
        proc = await asyncio.create_subprocess_exec(
            micropython_exe(), "-X", f"heapsize={board_heap('esp32')}", str(RUNNER), str(fs), "boot",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        self.procs.append(proc)
        return Board(proc)

    async def find(self, name: str, timeout: float = 5):
        found = asyncio.get_running_loop().create_future()

        def on_advertisement(adv):
            if adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME) == name and not found.done():
                found.set_result(adv)

        self.central.on("advertisement", on_advertisement)
        await self.central.start_scanning()
        try:
            return await asyncio.wait_for(found, timeout)
        finally:
            self.central.remove_listener("advertisement", on_advertisement)
            await self.central.stop_scanning()

    async def __aexit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await self.transport.close()


@pytest.fixture
def short_dir():
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="ble", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def connect(air: Air):
    adv = await air.find(NAME)
    connection = await air.central.connect(adv.address, timeout=5)
    peer = Peer(connection)
    await peer.discover_services()
    await peer.discover_characteristics()
    chars = {str(c.uuid).lower(): c for s in peer.services for c in s.characteristics}
    return connection, peer, chars[TX], chars[RX], chars[LOG]


async def test_a_central_finds_the_board_connects_writes_is_notified_exchanges_mtu_and_disconnects(short_dir):
    async def scenario():
        async with Air(short_dir) as air:
            await air.start_bridge("--once")
            board = await air.start_board()
            tx_h, rx_h, _, mac, gap_name = await board.expect("ready")
            assert gap_name == NAME
            assert mac == air.address.replace(":", "").lower()

            connection, peer, tx, rx, _ = await connect(air)
            conn, addr_type, addr = await board.expect("connect")
            assert int(conn) == connection.handle
            assert (addr_type, addr) == ("1", "f01122334455")
            assert (tx.handle, rx.handle) == (int(tx_h), int(rx_h))
            assert await peer.read_value(tx) == b"ready"

            notified = asyncio.Queue()
            await peer.subscribe(tx, notified.put_nowait)
            await peer.write_value(rx, b"hi", with_response=True)
            assert await board.expect("write") == [conn, b"hi".hex()]
            assert await asyncio.wait_for(notified.get(), 5) == b"echo:hi"

            assert await peer.request_mtu(185) == 185  # min(185, the board's 200)
            assert await board.expect("mtu") == [conn, "185"]
            # A value buffer holds 20 bytes unless the firmware grows it.
            await peer.write_value(rx, bytes(range(30)), with_response=True)
            assert await board.expect("write") == [conn, bytes(range(DEFAULT_BUFFER)).hex()]
            assert await asyncio.wait_for(notified.get(), 5) == b"echo:" + bytes(range(DEFAULT_BUFFER))

            await connection.disconnect()
            assert await board.expect("disconnect") == [conn, "1", "f01122334455"]
            await board.expect("end")
            assert await asyncio.wait_for(board.proc.wait(), 5) == 0

    await asyncio.wait_for(scenario(), 15)


async def test_a_write_to_a_characteristic_without_a_write_flag_is_refused_and_never_reaches_the_board(short_dir):
    async def scenario():
        async with Air(short_dir) as air:
            await air.start_bridge("--once")
            board = await air.start_board()
            await board.expect("ready")
            connection, peer, tx, rx, log = await connect(air)
            conn, *_ = await board.expect("connect")
            with pytest.raises(ATT_Error) as refused:
                await peer.write_value(tx, b"nope", with_response=True)
            assert refused.value.error_code == ErrorCode.WRITE_NOT_PERMITTED
            assert await peer.read_value(tx) == b"ready"
            with pytest.raises(ATT_Error) as unreadable:
                await peer.read_value(rx)
            assert unreadable.value.error_code == ErrorCode.READ_NOT_PERMITTED

            # Append mode: writes accumulate up to the buffer; gatts_read empties it.
            await peer.write_value(log, b"a" * 20, with_response=True)
            await peer.write_value(log, b"b" * 20, with_response=True)
            notified = asyncio.Queue()
            await peer.subscribe(tx, notified.put_nowait)
            await peer.request_mtu(185)
            await peer.write_value(rx, b"log?", with_response=True)
            assert await asyncio.wait_for(notified.get(), 5) == b"a" * 20 + b"b" * 12
            await peer.write_value(rx, b"log?", with_response=True)
            assert await asyncio.wait_for(notified.get(), 5) == b""
            await connection.disconnect()
            await board.expect("end")
            # The refused write never reached the board's handler.
            assert [line.split()[0] for line in board.lines if line.startswith("write")] == [
                "write-log", "write-log", "write", "write"]

    await asyncio.wait_for(scenario(), 15)


async def test_the_board_disconnects_the_central_and_the_bridge_ends_with_the_board_session(short_dir):
    async def scenario():
        async with Air(short_dir) as air:
            bridge = await air.start_bridge("--once")
            board = await air.start_board()
            await board.expect("ready")
            connection, peer, _, rx, _ = await connect(air)
            conn, *_ = await board.expect("connect")
            gone = asyncio.get_running_loop().create_future()
            connection.on("disconnection", lambda reason: gone.set_result(reason))
            await peer.write_value(rx, b"bye", with_response=True)
            assert await board.expect("gap_disconnect") == ["True"]
            await asyncio.wait_for(gone, 5)
            assert (await board.expect("disconnect"))[0] == conn
            assert await asyncio.wait_for(board.proc.wait(), 5) == 0
            assert await asyncio.wait_for(bridge.wait(), 5) == 0
            assert not air.socket.exists()

    await asyncio.wait_for(scenario(), 15)


async def test_a_bridge_that_dies_drops_its_central_first_the_boards_radio_calls_then_fail_until_a_new_bridge_comes(short_dir):
    firmware = FIRMWARE.replace('print("end")', """
try:
    ble.gap_advertise(100000, b"")
except OSError as e:
    print("refused", e.errno)
print("active", ble.active())
while not ble.active():
    try:
        ble.active(True)
    except OSError:
        time.sleep_ms(20)
print("back", ble.config("mac")[1].hex())""")

    async def scenario():
        async with Air(short_dir) as air:
            bridge = await air.start_bridge()
            board = await air.start_board(firmware)
            await board.expect("ready")
            connection, *_ = await connect(air)
            conn, *_ = await board.expect("connect")
            gone = asyncio.get_running_loop().create_future()
            connection.on("disconnection", lambda reason: gone.set_result(reason))
            bridge.terminate()
            await asyncio.wait_for(gone, 5)  # no stale link left on the air
            assert await asyncio.wait_for(bridge.wait(), 5) == 0
            assert (await board.expect("disconnect"))[0] == conn
            assert await board.expect("refused") == ["19"]  # ENODEV: no radio any more
            assert await board.expect("active") == ["False"]
            # A new radio on the same socket: the board can make it active again.
            await air.start_bridge()
            assert await board.expect("back") == [air.address.replace(":", "").lower()]
            assert await asyncio.wait_for(board.proc.wait(), 5) == 0

    await asyncio.wait_for(scenario(), 15)


async def test_indications_are_confirmed_to_the_board_and_a_local_write_can_update_subscribers(short_dir):
    async def scenario():
        async with Air(short_dir) as air:
            await air.start_bridge("--once")
            board = await air.start_board()
            tx_h, *_ = await board.expect("ready")
            connection, peer, tx, rx, _ = await connect(air)
            conn, *_ = await board.expect("connect")
            indicated = asyncio.Queue()
            await peer.subscribe(tx, indicated.put_nowait, prefer_notify=False)
            await peer.write_value(rx, b"ind", with_response=True)
            assert await asyncio.wait_for(indicated.get(), 5) == b"indicated"
            assert await board.expect("indicate-done") == [conn, tx_h, "0"]
            await peer.write_value(rx, b"upd:fresh", with_response=True)
            assert await asyncio.wait_for(indicated.get(), 5) == b"fresh"
            assert await peer.read_value(tx) == b"fresh"
            await connection.disconnect()
            await board.expect("end")

    await asyncio.wait_for(scenario(), 15)


async def test_a_main_program_streaming_notifications_and_a_handler_answering_writes_interleave_without_mixing_answers(short_dir):
    # The main program streams notifications (one radio call after another)
    # while the central's writes make the handler call gatts_read and
    # gatts_notify: each call must get its own answer.
    firmware = FIRMWARE.replace('while not state["done"]:', """while "go" not in state:
    time.sleep_ms(5)
for i in range(N):
    ble.gatts_notify(state["go"], tx, b"n%d" % i)
print("streamed")
while not state["done"]:""", 1).replace("import bluetooth, time", "import bluetooth, time\nN = 1000")

    async def scenario():
        async with Air(short_dir) as air:
            await air.start_bridge("--once")
            board = await air.start_board(firmware)
            await board.expect("ready")
            connection, peer, tx, rx, _ = await connect(air)
            await board.expect("connect")
            notified = asyncio.Queue()
            await peer.subscribe(tx, notified.put_nowait)
            await peer.write_value(rx, b"go", with_response=True)
            await board.expect("write")
            stream: list[bytes] = []
            for k in range(20):
                # Each write waits for its echo: a value written over before
                # the handler reads it is the API's rule, not what this tests.
                await peer.write_value(rx, b"w%d" % k, with_response=True)
                while (n := await asyncio.wait_for(notified.get(), 5)) != b"echo:w%d" % k:
                    stream.append(n)
            await board.expect("streamed")
            while len(stream) < 1000:
                stream.append(await asyncio.wait_for(notified.get(), 5))
            assert stream == [b"n%d" % i for i in range(1000)]
            await connection.disconnect()
            await board.expect("end")
            writes = [line.split()[2] for line in board.lines if line.startswith("write ")]
            assert writes == [b"go".hex()] + [(b"w%d" % k).hex() for k in range(20)]

    await asyncio.wait_for(scenario(), 15)


async def test_a_rebooted_board_finds_a_fresh_radio_on_the_same_bridge(short_dir):
    async def scenario():
        async with Air(short_dir) as air:
            await air.start_bridge()
            for boot in range(2):
                board = await air.start_board()
                ready = await board.expect("ready")
                connection, peer, tx, rx, _ = await connect(air)
                # The same services at the same handles: the last boot's are forgotten.
                assert (tx.handle, rx.handle) == (int(ready[0]), int(ready[1]))
                assert len([s for s in peer.services if str(s.uuid).lower() == SERVICE]) == 1
                await board.expect("connect")
                await peer.write_value(rx, b"bye", with_response=True)
                await board.expect("end")
                assert await asyncio.wait_for(board.proc.wait(), 5) == 0

    await asyncio.wait_for(scenario(), 15)


async def test_a_bridge_killed_outright_is_reported_to_the_board_as_the_end_of_its_connections(short_dir):
    async def scenario():
        async with Air(short_dir) as air:
            bridge = await air.start_bridge()
            board = await air.start_board()
            await board.expect("ready")
            await connect(air)
            conn, addr_type, addr = await board.expect("connect")
            bridge.kill()  # no reset: the stand-in alone sees the radio go
            assert await board.expect("disconnect") == [conn, addr_type, addr]
            await board.expect("end")

    await asyncio.wait_for(scenario(), 15)


def test_a_value_buffer_keeps_the_ports_rules():
    v = Value(flags=0x08)
    v.remote_write(bytes(30))
    assert len(v.data) == DEFAULT_BUFFER
    v.local_write(bytes(50))
    assert v.size == 50                     # a longer local write grows the buffer
    v.remote_write(b"x" * 60)
    assert bytes(v.data) == b"x" * 50
    v.size, v.append, v.data = 8, True, bytearray()
    v.remote_write(b"abcde")
    v.remote_write(b"fghij")
    assert v.local_read() == b"abcdefgh"    # appended up to the buffer, then emptied
    assert v.local_read() == b""


def test_an_event_queued_while_the_scheduler_runs_the_drain_early_is_still_handled():
    """The reader thread queues an event and asks the scheduler for a drain; the scheduler may run that
    drain on the main thread before the reader's next statement (a busy machine switches threads
    anywhere). Every later event must still reach the handler: a board that stops hearing its central
    for good (its OTA chunks, its ACKs) while it still sends is the stall this once caused."""
    from tests.mpy import run

    code = f"""
sys.path.insert(0, {str(REPO / "hil" / "virtual")!r})
import vbluetooth
heard = []
ble = vbluetooth._BLE()
ble.irq(lambda code, data: heard.append(data[1]))
# The worst interleaving, made certain: the scheduled drain runs at once, inside the kick.
vbluetooth._schedule = lambda fn, arg: fn(arg)
for n in range(5):
    ble._queue(3, [0, n, None])
print(heard)
"""
    out = run(code, heap="picow").stdout.decode().strip()
    assert out == "[0, 1, 2, 3, 4]", out
