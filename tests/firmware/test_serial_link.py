"""The serial link (firmware/edgefw/link_serial.py) on the real interpreter:
frame lines reach the Uplink, other console text and noise do not, its line
buffer is allocated once, and the console rule of docs/protocol.md section
2.11 decides what a 0x03 byte is."""

from __future__ import annotations

import json

from edge_agent.frames import encode_frame
from tests.mpy import run

# A stand-in Uplink and port, and a stream that plays a script of console
# input: bytes, or ("silence", ms) which advances the port's clock.
_HARNESS = r"""
import asyncio, gc, json, sys
from edgefw import frame
from edgefw.link_serial import SerialLink, LINE, INTERRUPT, NOTHING

class FakeUplink:
    def __init__(self):
        self.got = []
        self.out = []
    def receive(self, payload, now_ms):
        if payload == b"bad":
            raise ValueError("bad message")
        if payload == b"full":
            raise OSError(28)
        self.got.append(bytes(payload))
    def poll(self, now_ms):
        if self.out:
            return self.out.pop(0), 0
        return None, 1000

class FakePort:
    repl = True
    def __init__(self):
        self.now = 0
        self.written = []
        self.kbd = []
        self.script = []
        self.pos = 0  # read position in script[0]
        self.turns = 0  # passes of the event loop: awaits for input, sleeps of 0
    def ticks_ms(self):
        self.now += 5
        return self.now
    def ticks_diff(self, a, b):
        return a - b
    def write(self, data):
        self.written.append(bytes(data))
    def kbd_intr(self, c):
        self.kbd.append(c)
    def watchdog_stop(self):
        self.kbd.append("watchdog stopped")
    def ready_byte(self):
        # The next byte if one is waiting, else -1: none while the script
        # holds a silence; a silence of ms becomes a deadline when it is
        # first reached.
        while self.script and isinstance(self.script[0], tuple):
            kind, t = self.script[0]
            if kind == "silence":
                self.script[0] = ("until", self.now + t)
            elif self.now >= t:
                self.script.pop(0)
            else:
                return -1
        if not self.script:
            return -1
        return self._take()
    def _take(self):
        data = self.script[0]
        c = ord(data[self.pos])
        self.pos += 1
        if self.pos == len(data):
            self.script.pop(0)
            self.pos = 0
        return c
    def unread(self):
        # What is left on the console (for the REPL), silences left out.
        rest = [p for p in self.script if not isinstance(p, tuple)]
        if rest:
            rest[0] = rest[0][self.pos:]
        return "".join(rest)
    def reader(self):
        port = self
        class R:
            async def readinto(self, buf):
                port.turns += 1
                while port.script and isinstance(port.script[0], tuple):
                    kind, t = port.script.pop(0)
                    port.now = port.now + t if kind == "silence" else max(port.now, t)
                if not port.script:
                    return 0
                buf[0] = port._take()
                return 1
        return R()

class Clock:
    def __init__(self, port):
        self.port = port
    def uptime_ms(self):
        return self.port.now

class FakeAgent:
    def __init__(self, port):
        self.clock = Clock(port)
        self.wake = asyncio.Event()
        self.fs_errors = []
    def fs_error(self, e):
        self.fs_errors.append(e.args[0])

async def fake_sleep(ms):
    port.now += ms
    port.turns += ms == 0

"""


def device(code: str) -> dict:
    """Run ``code`` after the harness; it prints one JSON object as its last line."""
    out = run(_HARNESS + code, heap="esp32").stdout.decode().strip().splitlines()
    return json.loads(out[-1])


def script_to_code(parts: list) -> str:
    items = []
    for p in parts:
        if isinstance(p, int):
            items.append(f"('silence', {p})")
        else:
            items.append(repr(p))
    return "[" + ", ".join(items) + "]"


def play(parts: list) -> dict:
    """Feed console input through SerialLink.run; silences are (ms) ints."""
    # A silence of N ms: the port's clock jumps N ms ahead of the moment the
    # silence is reached, and no byte is waiting until then.
    code = f"""
script = {script_to_code(parts)}
port = FakePort()
up = FakeUplink()
link = SerialLink(port, up)
agent = FakeAgent(port)
port.script = script
stopped = False
async def main():
    await link.run(agent, fake_sleep)
try:
    asyncio.run(main())
except KeyboardInterrupt:
    stopped = True
print(json.dumps({{"stopped": stopped, "got": [g.decode() for g in up.got], "kbd": port.kbd,
                  "bad_frames": link.bad_frames, "ignored": link.interrupts_ignored,
                  "written": b"".join(port.written).decode(), "fs_errors": agent.fs_errors,
                  "turns": port.turns, "unread": port.unread()}}))
"""
    return device(code)


def frame_text(payload: bytes) -> str:
    return encode_frame(payload).decode()


def test_frame_lines_reach_the_uplink_and_console_text_does_not():
    r = play(["hello there\r\n", frame_text(b"one"), "print(1)\n", frame_text(b"two")])
    assert r["got"] == ["one", "two"] and r["bad_frames"] == 0 and not r["stopped"]


def test_bad_frames_and_bad_messages_are_counted_and_the_next_frame_still_arrives():
    r = play([
        "#EA:AAAA:00000000\r\n",                    # bad CRC
        "#EA:" + "A" * 5000 + ":00000000\n",         # too long: dropped as it arrives
        frame_text(b"bad"),                         # the uplink refuses the message
        frame_text(b"after"),
    ])
    assert r["got"] == ["after"] and r["bad_frames"] == 3


def test_a_full_flash_while_receiving_is_handed_to_the_agent_not_raised():
    r = play([frame_text(b"full"), frame_text(b"after")])
    assert r["fs_errors"] == [28] and r["got"] == ["after"]


def test_a_0x03_inside_a_frame_line_is_ignored_counted_and_the_frame_still_arrives():
    line = frame_text(b"payload")
    r = play([line[:10] + "\x03" + line[10:], "text\x03more\n", frame_text(b"next")])
    assert r["got"] == ["payload", "next"]
    assert r["ignored"] == 2 and not r["stopped"] and r["kbd"] == []


def test_a_lone_0x03_at_a_line_start_followed_by_silence_is_ignored_and_counted():
    r = play([frame_text(b"a"), "\x03", 800, frame_text(b"b")])
    assert r["got"] == ["a", "b"] and r["ignored"] == 1 and not r["stopped"]


def test_a_0x03_at_a_line_start_followed_by_a_hosts_next_frame_is_stray():
    # Line noise just before a host's ACK must not stop a streaming agent.
    r = play([frame_text(b"a"), "\x03", frame_text(b"b")])
    assert r["got"] == ["a", "b"] and r["ignored"] == 1 and not r["stopped"]


def test_mpremotes_interrupt_request_stops_the_agent_and_gives_the_keyboard_interrupt_back():
    # mpremote: "\r\x03" then "\r\x01" at once (enter_raw_repl).
    r = play([frame_text(b"a"), "\r\x03\r\x01"])
    # Nobody feeds the watchdog at the REPL: the agent stops it where the chip can.
    assert r["stopped"] and r["kbd"] == [3, "watchdog stopped"]
    assert "agent stopped by Ctrl-C" in r["written"]


def test_ctrl_c_pressed_twice_by_a_person_stops_the_agent():
    r = play(["\x03\x03"])
    assert r["stopped"] and r["kbd"] == [3, "watchdog stopped"]


def test_a_second_ctrl_c_after_half_a_second_is_another_stray_byte():
    r = play(["\x03", 600, "\x03", 600, frame_text(b"x")])
    assert not r["stopped"] and r["ignored"] == 2 and r["got"] == ["x"]


def test_a_port_without_a_repl_never_stops_on_0x03():
    code = r"""
port = FakePort(); port.repl = False
up = FakeUplink(); link = SerialLink(port, up); agent = FakeAgent(port)
port.script = ["\x03\r\x01\n"]
asyncio.run(link.run(agent, fake_sleep))
print(json.dumps({"ignored": link.interrupts_ignored, "kbd": port.kbd}))
"""
    r = device(code)
    assert r == {"ignored": 1, "kbd": []}


def test_the_line_buffer_is_allocated_once_and_noise_allocates_nothing():
    code = r"""
port = FakePort(); up = FakeUplink(); link = SerialLink(port, up)
noise = bytes((i * 7 + 11) % 256 for i in range(4000)).replace(b"\x03", b"")
toolong = b"\n#EA:" + b"A" * 3000 + b"\n"
gc.collect()
before = gc.mem_alloc()
for c in noise:
    link.feed(c)
for c in toolong:
    link.feed(c)
after = gc.mem_alloc()
print(json.dumps({"grew": after - before, "bad": link.bad_frames, "buf": len(link._buf)}))
"""
    r = device(code)
    assert r["grew"] == 0, r
    assert r["bad"] == 1 and r["buf"] == 1383


def test_the_frame_limit_comes_from_the_message_limit():
    r = device(r"""
from edgefw import messages
print(json.dumps({"line": frame.MAX_LINE, "msg": messages.MAX_MESSAGE}))
""")
    assert r == {"line": 1381, "msg": 1024}


def test_send_writes_what_the_uplinks_poll_gives_as_one_frame():
    r = device(r"""
port = FakePort(); up = FakeUplink(); link = SerialLink(port, up)
up.out.append(b"\xa1\x00\x05")
w1 = link.send(0)
w2 = link.send(0)
print(json.dumps({"w": [w1, w2], "written": b"".join(port.written).decode()}))
""")
    assert r["w"] == [0, 1000]
    assert r["written"] == encode_frame(b"\xa1\x00\x05").decode()


def test_sending_a_largest_frame_allocates_no_block_larger_than_a_small_chunk():
    # A line-sized allocation fails on a fragmented heap after days of running.
    r = device(r"""
import micropython
port = FakePort(); up = FakeUplink(); link = SerialLink(port, up)
big = bytes(range(256)) * 4
out = []
port.write = lambda b: out.append(len(b))
up.out.append(big)
link.send(0)
print(json.dumps({"largest": max(out), "total": sum(out)}))
""")
    assert r["total"] == 1383 and r["largest"] <= 160


def test_a_burst_of_frames_is_read_with_a_pass_of_the_event_loop_per_2_kb_not_per_byte():
    # A pass of the event loop costs about a millisecond on the Unix port
    # while the BLE link waits on a ThreadSafeFlag and the sampler sleeps: a
    # pass per byte held an OTA over serial to some 700 B/s.
    burst = "".join(frame_text(b"chunk %d of an image" % i) for i in range(30))
    r = play([burst])
    assert len(r["got"]) == 30 and r["bad_frames"] == 0
    assert r["turns"] <= 2 + len(burst) // 2048, (r["turns"], len(burst))


def test_a_long_burst_still_gives_the_other_tasks_a_turn():
    r = play(["x" * 5000 + "\n", frame_text(b"after")])
    assert r["got"] == ["after"]
    assert r["turns"] >= 5000 // 2048


def test_an_interrupt_request_at_the_end_of_a_burst_leaves_what_follows_it_to_the_repl():
    # mpremote writes "\r\x03" then "\r\x01" and its raw-REPL command at
    # once: the agent reads up to the byte after the 0x03, never further.
    frames = "".join(frame_text(b"block %d" % i) for i in range(20))
    r = play([frames + "\r\x03\r\x01print(1)\x04"])
    assert r["stopped"] and r["kbd"] == [3, "watchdog stopped"] and len(r["got"]) == 20
    assert r["unread"] == "\x01print(1)\x04"


def test_a_persons_double_ctrl_c_in_a_burst_of_text_leaves_the_rest_unread():
    r = play(["boot text\r\n\x03\x03help()\r\n" + frame_text(b"late")])
    assert r["stopped"] and r["got"] == []
    assert r["unread"] == "help()\r\n" + frame_text(b"late")


def test_the_ports_ready_byte_reads_only_what_is_waiting_and_allocates_nothing():
    # The real Unix port's stdin (a pipe here): a byte at a time, -1 once
    # nothing is waiting; after its first calls (the poll object and its
    # result tuple are made once), reading allocates nothing.
    out = run(r"""
import gc, json, sys
from edgefw.port import Unix
port = Unix()
got = [0] * 11
for i in range(5):
    got[i] = port.ready_byte()
gc.collect()
before = gc.mem_alloc()
for i in range(5, 11):
    got[i] = port.ready_byte()
after = gc.mem_alloc()
print(json.dumps({"got": got, "grew": after - before}))
""", heap="esp32", stdin=b"ab\x03cdefghi").stdout.decode().strip().splitlines()
    r = json.loads(out[-1])
    assert r["got"] == list(b"ab\x03cdefghi") + [-1] and r["grew"] == 0, r
