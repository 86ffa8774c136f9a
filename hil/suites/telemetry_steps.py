"""Steps the telemetry and soak suites share: what the host runs and what it reads back.

Everything goes through the product's surface, as on a real bench: the
board's console (its HELLO after a reset says where its journal stands),
``edge telemetry ingest`` on its serial port and ``edge gateway run`` over
BLE (both started as a person starts them, and stopped or killed), ``edge
telemetry show``/``export`` and the run's registry.

Exactly once, over a test's window: every record the device numbered between
two HELLOs (``acked`` of the first up to ``acked`` of the last: each of them
the device freed only after the host's ACK) is in the registry, once, and
the device dropped nothing meanwhile. On a board whose journal never dropped
anything, that is the whole registry: sequence numbers ``0..n-1`` and
``edge telemetry show`` reporting no gap.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from edge_agent.device_fs import BOARD_JSON, CONFIG_JSON
from edge_agent.messages import Hello
from hil.suites.conftest import agent_message, repl

STORE_TIMEOUT_S = 120.0     # a gateway retries after 1, 2, 4 ... 30 s: a bounded wait, not a timing check
STOP_TIMEOUT_S = 30.0
DEFAULT_PERIOD_MS = 5000        # the agent's own default (firmware/edgefw/config.py)

PERIOD_CODE = """import json
b = json.load(open(%r))
try:
    c = json.load(open(%r))
except OSError:
    c = {}
print(c.get("sample_period_ms", b.get("sample_period_ms", %d)))""" % (BOARD_JSON, CONFIG_JSON, DEFAULT_PERIOD_MS)


def sample_period_ms(board: Any) -> int:
    """The period the agent samples at, from the board's own config.json (else its board.json), read
    over the raw REPL; the agent is stopped by it, so it is reset after."""
    said = repl(board.port, PERIOD_CODE)
    board.reset.reset()
    return int(said.splitlines()[-1])


def hello_after_reset(board: Any) -> Hello:
    """Reset the board and read the HELLO its agent starts with: its device id and journal
    (next sequence number, acknowledged-up-to, dropped), as the board itself keeps them."""
    console = board.console
    console.open()
    try:
        board.reset.reset()
        # What the last boot printed up to the reset is not this boot's. Should this boot's first
        # HELLO go with it, the agent sends it again until a host answers (docs/protocol.md 2.4).
        console.read(0)
        deadline = time.monotonic() + STORE_TIMEOUT_S
        while time.monotonic() < deadline:
            message = agent_message(console)
            if isinstance(message, Hello):
                return message
    finally:
        console.close()
    pytest.fail(f"{board.name}: no HELLO within {STORE_TIMEOUT_S:.0f} s of a reset")


class Background:
    """An ``edge`` command running in the background (ingest, gateway): its output collected as it
    comes, stopped as Ctrl-C stops it, or killed. Whatever a test left running is killed by
    :func:`kill_leftovers` (a failed test must not leave a process holding the board's port)."""

    running: set["Background"] = set()

    def __init__(self, host: Any, *args: str) -> None:
        self.args = args
        # Unbuffered: each line (a gateway's event, a board's console) is read as it is printed.
        self.proc = host.start(*args, env={"PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.err_lines: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(pipe, into), daemon=True)
                         for pipe, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err_lines))]
        for r in self._readers:
            r.start()
        Background.running.add(self)

    @staticmethod
    def _read(pipe: Any, into: list[str]) -> None:
        for line in pipe:
            into.append(line)

    @property
    def output(self) -> str:
        """What it printed so far: stdout, then stderr (a board's console text, logs)."""
        return "".join(self.lines) + "".join(self.err_lines)

    def _join(self) -> None:
        for r in self._readers:
            r.join(5)

    def stop(self, sig: int = signal.SIGINT) -> str:
        """Stop it (Ctrl-C by default) and return its output; it must exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(STOP_TIMEOUT_S)
        Background.running.discard(self)
        self._join()
        assert rc == 0, f"edge {' '.join(self.args)} exited {rc} when stopped:\n{self.output[-3000:]}"
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: the host process dies between any two instructions (a crashed ingest, a pulled plug)."""
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)
        self._join()
        Background.running.discard(self)

    def said(self, text: str) -> int:
        """How many lines it printed (stdout or stderr) hold ``text``."""
        return sum(text in line for line in list(self.lines) + list(self.err_lines))


def kill_leftovers() -> None:
    """Kill every background command a test started and did not stop (a test that failed midway),
    printing the last of what each said: the host side's story goes into the failure's report
    next to the board's console."""
    for b in list(Background.running):
        b.kill()
        print(f"---------- edge {' '.join(b.args)} (left running, killed) said ----------\n{b.output[-4000:]}")


def ingest(host: Any, board: Any, *more: str) -> Background:
    """``edge telemetry ingest PORT --json`` on the board's serial port, until stopped."""
    return Background(host, "telemetry", "ingest", board.port, "--json", *more)


def paired(strategy: Any, host: Any, device_id: str) -> None:
    """The board paired to the run's account: paired once per run (a label's setup code is printed
    once), then only its agent checked."""
    rows = json.loads(host.edge("devices", "list", "--json").stdout)
    if any(r.get("device_id") == device_id for r in rows):
        strategy.to("agent-up")
    else:
        strategy.to("paired")


def gateway(host: Any) -> Background:
    """``edge gateway run`` for the run's account (the one the strategy paired with), telemetry only."""
    return Background(host, "gateway", "run", "--json-log", "--no-updates")


def stored(host: Any, device_id: str) -> list[int]:
    """The sequence numbers the registry holds for the device, in order."""
    with host.registry() as store:
        return sorted(r.seq for r in store.query(device=device_id))


def wait_stored(host: Any, device_id: str, more_than: int, what: str,
                timeout: float = STORE_TIMEOUT_S, alive: Background | None = None) -> int:
    """Wait until the registry holds more than ``more_than`` records of the device (bounded: a wait,
    not a timing assertion); the count."""
    deadline = time.monotonic() + timeout
    while True:
        with host.registry() as store:
            n = store.count(device_id)
        if n > more_than:
            return n
        if alive is not None and alive.proc.poll() is not None:
            pytest.fail(f"{what}: edge {' '.join(alive.args)} exited {alive.proc.returncode}:\n"
                        f"{alive.output[-3000:]}")
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: the registry still holds {n} records of {device_id} after {timeout:.0f} s "
                        f"(waiting for more than {more_than})")
        time.sleep(0.2)


def wait_boot_stored(host: Any, device_id: str, after_boot: int, what: str,
                     alive: Background | None = None) -> None:
    """Wait until a record of a boot later than ``after_boot`` is stored: the board came back and its link with it."""
    deadline = time.monotonic() + STORE_TIMEOUT_S
    while True:
        with host.registry() as store:
            boots = {r.boot for r in store.query(device=device_id, limit=50, newest_first=True)}
        if any(b > after_boot for b in boots):
            return
        if alive is not None and alive.proc.poll() is not None:
            pytest.fail(f"{what}: edge {' '.join(alive.args)} exited {alive.proc.returncode}")
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: no record of a boot after {after_boot} stored within {STORE_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


@dataclass
class Tally:
    """What a window of telemetry came to, by the device's own numbers and the registry's."""

    device_id: str
    sent: int                   # the device's next sequence number at the end: records it numbered
    acked: int                  # ... of which the host acknowledged all below this
    stored: int                 # distinct sequence numbers the registry holds
    lost: int                   # numbered in the window, acknowledged or dropped, and not stored
    duplicated: int             # exported more than once, or stored with a conflict
    dropped: int                # dropped by the device's journal during the window (full)
    gaps: int                   # `edge telemetry show`'s gaps for the device
    missing: list[int] = field(default_factory=list)

    def properties(self) -> dict[str, int]:
        return {"records_sent": self.sent, "records_stored": self.stored, "records_lost": self.lost,
                "records_duplicated": self.duplicated, "records_dropped": self.dropped}

    def line(self) -> str:
        return (f"{self.device_id}: sent {self.sent}, stored {self.stored}, lost {self.lost}, "
                f"duplicated {self.duplicated} (dropped {self.dropped}, gaps {self.gaps}, acked {self.acked})")


def tally(host: Any, before: Hello, after: Hello) -> Tally:
    """Count the window between two HELLOs of one device (see the module's docstring)."""
    device = after.device_id
    assert before.device_id == device, f"the board changed identity: {before.device_id} -> {device}"
    seqs = stored(host, device)
    have = set(seqs)
    missing = [s for s in range(before.acked, after.acked) if s not in have]
    exported = host.edge("telemetry", "export", "--device", device, "--format", "jsonl").stdout.splitlines()
    exported_seqs = [json.loads(line)["seq"] for line in exported if line.strip()]
    with host.registry() as store:
        conflicts = len(store.conflicts(device))
    shown = json.loads(host.edge("telemetry", "show", "--device", device, "--json").stdout)
    rows = shown["devices"] if isinstance(shown, dict) else shown
    gaps = sum(int(r.get("gaps") or 0) for r in rows if r.get("device_id") == device)
    dropped = after.dropped - before.dropped
    return Tally(device, after.next_seq, after.acked, len(have), len(missing) + dropped,
                 len(exported_seqs) - len(set(exported_seqs)) + conflicts, dropped, gaps, missing[:20])


def check_exactly_once(t: Tally, before: Hello) -> None:
    """Nothing lost, nothing twice; and on a device that never dropped a record, the whole registry
    is ``0..n-1`` and shows no gap."""
    assert t.lost == 0, f"records lost: {t.line()}; first missing: {t.missing}"
    assert t.duplicated == 0, f"records duplicated: {t.line()}"
    assert t.stored >= t.acked, f"the device holds an ACK for a record the registry lacks: {t.line()}"
    if before.dropped == 0:
        assert t.gaps == 0, f"`edge telemetry show` reports gaps: {t.line()}"


def exactly_once_window(host: Any, board: Any, record: Callable[[str, object], None],
                        scenario: Callable[[Hello], None]) -> Tally:
    """Run ``scenario(first HELLO)`` between two HELLOs and check that every record of the window
    was stored exactly once; the tally is recorded as JUnit properties and printed."""
    before = hello_after_reset(board)
    try:
        scenario(before)
    finally:
        kill_leftovers()
    after = hello_after_reset(board)
    t = tally(host, before, after)
    for name, value in t.properties().items():
        record(name, value)
    print(t.line())
    check_exactly_once(t, before)
    return t
