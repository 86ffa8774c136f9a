"""Protocol version 2 across the two implementations, by property: whatever a
board samples, the batches the device's core builds under the real
MicroPython decode on the host to exactly those records; whatever the host
sends, the device decodes to the same fields."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.messages import Ack, Batch, Refuse, Sensors, Time, decode_message, encode_message
from edge_agent.telemetry.ingest import resolve
from tests.firmware.compiled import prelude
from tests.firmware.fakes import DEVICE_FAKES
from tests.mpy import run

DEVICE = "esp32-3f9a0c12b7d4"
T0 = 1_763_906_430_123
TABLE = [("temp", "Cel"), ("count", ""), ("door", ""), ("mode", "")]

DEVICE_SIDE = r"""
import json, os
from binascii import hexlify
from edgefw import messages
from edgefw.clock import Clock
from edgefw.journal import Journal
from edgefw.ticks import TickWriter
from edgefw.uplink import Uplink

ROOT = sys.argv[1]
plan = json.load(open(sys.argv[2]))
os.mkdir(ROOT + "/state")

class Planned:
    # One sensor of the plan: its reading at tick i, or None (no reading).
    def __init__(self, k, name, unit):
        self.k = k
        self.name = name
        self.unit = unit

    def read(self):
        return plan["ticks"][state[0]][self.k]

state = [0]
port = Port()
clock = Clock(port, ROOT + "/state/clock")
clock.start()
j = Journal(ROOT + "/journal", max_bytes=65536, seg_bytes=4096)
j.open()
tw = TickWriter(j, [Planned(k, n, u) for k, (n, u) in enumerate(plan["table"])])
up = Uplink(plan["device"], "esp32", "0.2.0", clock, j, tw.table)
for i, dt in enumerate(plan["dts"]):
    state[0] = i
    port.t += dt
    tw.append(clock.boot, clock.uptime_ms())
up.receive(messages.encode(messages.T_TIME, {1: plan["time"]}), port.t)
while True:
    payload, wait = up.poll(port.t)
    if payload is None:
        break
    print(hexlify(payload).decode())
    kind, f = messages.decode(payload)
    if kind == messages.T_BATCH:
        n = 0
        for t in f[9]:
            n += len(t) // 2
        up.receive(messages.encode(messages.T_ACK, {1: plan["device"], 2: f[2] + n}), port.t)
for line in plan["from_host"]:
    kind, f = messages.decode(bytes.fromhex(line))
    print(json.dumps([kind, sorted([k, v] for k, v in f.items())]))
"""

values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)
ticks = st.lists(st.lists(values, min_size=len(TABLE), max_size=len(TABLE)), min_size=1, max_size=40)
dts = st.integers(min_value=0, max_value=70_000)
from_host = st.one_of(
    st.builds(lambda n: Time(unix_ms=n), st.integers(min_value=1_577_836_800_000, max_value=4_102_444_799_999)),
    st.builds(lambda n, h: Time(unix_ms=n, hello=h), st.integers(min_value=1_577_836_800_000,
                                                                 max_value=4_102_444_799_999), st.booleans()),
    st.builds(lambda n: Ack(device_id=DEVICE, next_seq=n), st.integers(min_value=0, max_value=2**63 - 1)),
    st.builds(lambda a, k, r: Refuse(device_id=DEVICE, first_seq=a, end_seq=a + k, reason=r),
              st.integers(min_value=0, max_value=2**62), st.integers(min_value=1, max_value=2**20),
              st.sampled_from(["bad_value", "time_range", "bad_index"])),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks=ticks, dt=st.lists(dts, min_size=40, max_size=40), sent=st.lists(from_host, max_size=6))
def test_what_the_device_samples_reaches_the_host_exactly_and_what_the_host_sends_reaches_the_device(
        tmp_path_factory, ticks, dt, sent):
    tmp = tmp_path_factory.mktemp("wire")
    plan = {"device": DEVICE, "table": TABLE, "ticks": ticks, "dts": dt[:len(ticks)], "time": T0,
            "from_host": [encode_message(m).hex() for m in sent]}
    (tmp / "plan.json").write_text(json.dumps(plan))
    (tmp / "fs").mkdir()
    out = run(prelude() + DEVICE_FAKES + DEVICE_SIDE, heap="esp32",
              args=[str(tmp / "fs"), str(tmp / "plan.json")], timeout=120).stdout.decode().splitlines()
    payloads = [bytes.fromhex(line) for line in out[:len(out) - len(sent)]]
    decoded = [json.loads(line) for line in out[len(out) - len(sent):]]

    # Device -> host: every reading, in order, numbered from 0, at epoch + uptime.
    msgs = [decode_message(p) for p in payloads]
    tables = {m.table_id: m.sensors for m in msgs if isinstance(m, Sensors)}
    got = []
    for m in msgs:
        if isinstance(m, Batch):
            # Rows carry the sensor indexes when given the indexes as series ids.
            got += [(seq, k, t, v) for _, seq, k, t, v, _ in resolve(m, range(len(tables[m.table_id])))]
    want = [(k, v) for tick in ticks for k, v in enumerate(tick) if v is not None]
    assert [(s, k, v) for s, k, _, v in got] == [(s, k, v) for s, (k, v) in enumerate(want)]
    assert all(type(g[3]) is type(w[1]) for g, w in zip(got, want)), "integers stay integers, floats floats"
    times = [t for _, _, t, _ in got]
    assert times == sorted(times)
    # The TIME arrived at the last tick's uptime: the epoch is T0 minus that.
    epoch = T0 - sum(dt[:len(ticks)])
    up = 0
    expect_t = []
    for i, tick in enumerate(ticks):
        up += dt[i]
        expect_t += [epoch + up] * sum(v is not None for v in tick)
    assert times == expect_t

    # Host -> device: the device decodes every message to the fields the host encoded.
    for m, (kind, fields) in zip(sent, decoded):
        want_fields = {1: m.unix_ms} if isinstance(m, Time) else {}
        if isinstance(m, Time) and m.hello is not None:
            want_fields[2] = m.hello
        if isinstance(m, Ack):
            want_fields = {1: m.device_id, 2: m.next_seq}
        if isinstance(m, Refuse):
            want_fields = {1: m.device_id, 2: m.first_seq, 3: m.end_seq, 4: m.reason}
        assert dict((k, v) for k, v in fields if k != 0) == want_fields
