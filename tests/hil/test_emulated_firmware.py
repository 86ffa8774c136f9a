"""The firmware's port-dependent behaviour, on the real rp2 port of an emulated Pico.

Each test here has a counterpart that runs the same firmware on the Unix
port (tests/firmware/): on the chip, floats are float32, files are littlefs
on a SPI flash that loses power between two flash operations, and
`os.urandom` is the port's (constant on the emulated RP2040). One emulated
Pico serves the module: `edge flash` deploys the agent once, as `.mpy`
compiled by the firmware's own mpy-cross, and provisions it; then the agent
is kept from starting at boot (its watchdog would reset the board under a
long snippet) while snippets import its modules over the raw REPL, and runs
again for the heap test at the end.

These need Node + npm (rp2040js), pip (the boot ROM) and the firmware
(`edge emulator build`): run them with `make test-emulated`.
"""

from __future__ import annotations

import ast
import json
import math
import random
import struct
import time
from pathlib import Path

import cbor2
import pytest
import serial
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.board_link import BoardLink
from tests.firmware.test_cbor import FLOATS
from tests.firmware.test_journal import PAYLOAD_SRC, PRELUDE, History, _driver_function
from tests.hil.emulated_pico import NAME, Pico, flashed_pico
from tests.hil.test_emulated_board import wait_repl

pytestmark = [pytest.mark.emulated, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def pico(module_bench):
    """One emulated Pico with the agent deployed and provisioned by `edge flash`."""
    return flashed_pico(module_bench)


@pytest.fixture
def repl(pico):
    """The Pico booting to its REPL, the agent's modules on its filesystem."""
    pico.park()
    return pico


# -- CBOR floats: float32 on the chip ------------------------------------------------------


def float32(x: float) -> float:
    """``x`` rounded to the nearest binary32, as the RP2040's float library holds it: overflow to
    an infinity, and subnormal results flushed to zero with their sign (the pico-sdk's float
    functions do not make subnormals)."""
    try:
        r = struct.unpack(">f", struct.pack(">f", x))[0]
    except OverflowError:
        r = math.copysign(math.inf, x)
    return math.copysign(0.0, r) if 0 < abs(r) < 2.0 ** -126 else r


def bits32(x: float) -> str:
    return struct.pack(">f", x).hex()


# The chip decodes each value's CBOR float64 form with the device codec (cbor.loads), then
# says the float32 it holds and what the device encoder (cbor.dumps) writes for it.
FLOATS_ON_CHIP = """
import struct
from binascii import hexlify, unhexlify
from edgefw import cbor
for h in %r:
    x = cbor.loads(unhexlify(h))
    print(hexlify(struct.pack('>f', x)).decode(), hexlify(cbor.dumps(x)).decode())
"""


def test_a_cbor_float64_decodes_to_its_float32_rounding_and_encodes_shortest_like_cbor2(repl):
    blobs = ["fb" + struct.pack(">d", x).hex() for x in FLOATS]      # each sent as a float64
    lines = repl.exec(FLOATS_ON_CHIP % (blobs,)).split()
    held, encoded = lines[0::2], lines[1::2]
    chip = [struct.unpack(">f", bytes.fromhex(h))[0] for h in held]
    # The binary32 rounding, bit for bit; a NaN stays a NaN (its payload is not kept).
    assert ["nan" if math.isnan(c) else h for c, h in zip(chip, held)] == [
        "nan" if math.isnan(x) else bits32(float32(x)) for x in FLOATS]
    # What the chip holds, it encodes as the shortest exact width, as cbor2 canonical does.
    assert encoded == [cbor2.dumps(c, canonical=True).hex() for c in chip]
    assert {e[:2] for e in encoded} == {"f9", "fa"}     # a float32 never needs a float64


# -- the journal on littlefs, power cut at random instants ---------------------------------

JOURNAL_ROOT = "/jcut"
JOURNAL_MB, JOURNAL_SB = 65536, 4096   # the agent's journal on a Pico (config's journal_bytes)

# journal_driver.py's loop (appends, and acks of a prefix now and then, a line
# after each call returned) on the chip, on littlefs, until the power goes.
DRIVER = ("from edgefw import journal\n"
          f"ROOT, MAX_BYTES, SEG_BYTES = {JOURNAL_ROOT!r}, {JOURNAL_MB}, {JOURNAL_SB}\n"
          "ACKS, APPENDS = True, 1 << 30\n"
          "def say(*args):\n    print(*args)\n"
          + PAYLOAD_SRC + _driver_function("main")
          + "\ndef run(seed):\n    global SEED\n    SEED = seed\n    main()\n")

# The journal reopened after a cut: its state, then one line per pending entry.
REOPEN = (PRELUDE % (JOURNAL_ROOT, JOURNAL_MB, JOURNAL_SB)
          + "j = J()\nprint(repr(info(j)))\n"
          "for e in j.iter_pending():\n    print(repr(e))\n")


def drive_until_cut(pico: Pico, seed: int, after_s: float) -> str:
    """Start the driver at the REPL, cut the power ``after_s`` later; every line the chip sent."""
    with serial.Serial(pico.port, timeout=0.05) as s:
        s.write(b"\r\x03\x02")
        s.read_until(b">>> ")
        s.reset_input_buffer()
        s.write(b"import jdriver; jdriver.run(%d)\r" % seed)
        text = b""
        deadline = time.monotonic() + after_s
        while time.monotonic() < deadline:
            text += s.read(4096)
        pico.home.control.power_off(NAME)
        text += s.read(65536)       # what reached the port before the cut
    # The driver's whole lines (a line cut short by the power proves nothing), not the REPL's.
    lines = text.decode(errors="replace").replace("\r", "").split("\n")[:-1]
    return "".join(line + "\n" for line in lines if line[:2] in ("O ", "A ", "K "))


def test_power_cuts_at_random_instants_never_lose_duplicate_or_resurrect_journal_records(repl):
    seed = 20261130
    rng = random.Random(seed)
    print(f"seed {seed}")
    with BoardLink(repl.port) as link:
        link.put("jdriver.py", DRIVER.encode())
        link.exec(f"import os\ntry:\n    os.stat({JOURNAL_ROOT!r})\nexcept OSError:\n    os.mkdir({JOURNAL_ROOT!r})")
    h = History(Path(JOURNAL_ROOT), JOURNAL_MB, JOURNAL_SB, drops=False)
    cuts = []
    for k in range(5):
        after = rng.uniform(0.5, 8.0)
        cuts.append(round(after, 2))
        text = drive_until_cut(repl, k, after)
        h.absorb(text)
        repl.home.control.power_on(NAME)
        wait_repl(repl.port)
        lines = [ast.literal_eval(line) for line in repl.exec(REOPEN).splitlines() if line.strip()]
        h.verify(lines[0], lines[1:])
    print(f"cuts after (s): {cuts}; appends {h.appends}, acked up to {h.acked}")
    assert h.appends >= 20 and h.acked > 0, (h.appends, h.acked, cuts)


# -- identity keys ---------------------------------------------------------------------------

IDENTITY_ROOT = "/idtest"      # not the provisioned identity at /identity


def clamped(key: bytes) -> bytes:
    """RFC 7748 5: the X25519 scalar a private key stands for."""
    k = bytearray(key)
    k[0] &= 248
    k[31] = (k[31] & 127) | 64
    return bytes(k)


def test_a_key_sent_by_the_host_is_stored_clamped_and_its_public_key_matches_cryptography(repl):
    key = bytes(random.Random(7).randrange(256) for _ in range(32))
    key = bytes([key[0] | 7]) + key[1:31] + bytes([key[31] | 128])    # every clamped bit set
    out = repl.exec(f"""
import os
from binascii import hexlify, unhexlify
from edgefw import identity
try:
    os.mkdir({IDENTITY_ROOT!r})
except OSError:
    pass
pub = identity.generate({IDENTITY_ROOT!r}, unhexlify({key.hex()!r}))
print(hexlify(pub).decode(), hexlify(identity.private_key({IDENTITY_ROOT!r})).decode())
""", timeout=300).split()
    pub, stored = bytes.fromhex(out[0]), bytes.fromhex(out[1])
    assert pub == X25519PrivateKey.from_private_bytes(key).public_key().public_bytes_raw()
    assert stored == clamped(key) != key


def test_without_a_key_the_chips_constant_urandom_is_refused_naming_the_rng(repl):
    out = repl.exec(f"""
import os
from binascii import hexlify
from edgefw import identity
print(os.urandom(8), identity.rng_ok())
before = identity.private_key({IDENTITY_ROOT!r})
try:
    identity.generate({IDENTITY_ROOT!r})
    print('made a key')
except OSError as e:
    print('refused:', e)
print('kept' if identity.private_key({IDENTITY_ROOT!r}) == before else 'changed')
""", timeout=300)
    assert "b'********' False" in out
    assert "refused: identity: os.urandom is missing or repeats itself" in out
    assert out.split()[-1] == "kept"


# -- the watchdog ----------------------------------------------------------------------------


def test_a_watchdog_not_fed_resets_the_chip(repl):
    with serial.Serial(repl.port, timeout=30) as s:
        s.write(b"\r\x03\x02")
        s.read_until(b">>> ")
        s.write(b"import machine; marker = 1; w = machine.WDT(timeout=1000)\r")
        s.read_until(b"\r\n>>> ")
        # Nothing feeds it: the chip boots again, to its REPL's banner.
        assert b"MicroPython v" in s.read_until(b"MicroPython v")
    wait_repl(repl.port)
    out = repl.exec(HANG)
    assert out.split() == ["True", "False", "True"]


# machine.reset_cause(), whether the REPL's globals survived, and the agent's port's say on a hang.
HANG = ("import machine\nfrom edgefw.port_rp2 import Rp2\n"
        "print(machine.reset_cause() == machine.WDT_RESET, 'marker' in globals(), Rp2().watchdog_reset())")


def test_machine_reset_is_not_taken_for_a_hang(repl):
    # The rp2 port's machine.reset() is a watchdog trigger (reset_cause says WDT_RESET):
    # the agent's OTA switch and rollback resets must not count as crashes.
    with serial.Serial(repl.port, timeout=30) as s:
        s.write(b"\r\x03\x02")
        s.read_until(b">>> ")
        s.write(b"import machine; marker = 1; machine.reset()\r")
        assert b"MicroPython v" in s.read_until(b"MicroPython v")
    wait_repl(repl.port)
    assert repl.exec(HANG).split() == ["True", "False", "False"]


# -- the agent's heap -----------------------------------------------------------------------


def test_the_agents_live_heap_stays_within_the_pico_board_budget(pico):
    budget = json.loads(Path(__file__).resolve().parents[2].joinpath("boards/pico.json").read_text())["heap_bytes"]
    pico.park()
    total = int(pico.exec("import gc\nprint(gc.mem_free() + gc.mem_alloc())"))
    pico.unpark()
    # The agent's heap_free sensor (gc.mem_free() after a collection) in the telemetry it sends.
    ingest = pico.home.json("telemetry", "ingest", NAME, "--for", "45", timeout=120)
    assert ingest, ingest
    rows = pico.home.json("telemetry", "export", "--format", "json", "-n", "heap_free")
    free = [r["value"] for r in rows]
    assert len(free) >= 10, rows
    used = [total - f for f in free]
    print(f"gc heap {total} B; agent's live heap {min(used)}..{max(used)} B over {len(used)} ticks; "
          f"budget {budget} B")
    assert max(used) <= budget
