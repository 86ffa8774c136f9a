"""`edge hil check` and the rig's targets on virtual boards: what a person sees, end to end."""

from __future__ import annotations

import json
import re

import pytest

from edge_agent.errors import EXIT_BAD_INPUT, EXIT_DEVICE
from edge_hil.rig import load_rig
from edge_hil.rig.strategy import Strategy
from edge_hil.rig.target import open_target, start_bench

pytestmark = pytest.mark.slow

TWO_VIRTUAL = """\
rig: 1
name: ci
boards:
  - name: sim-esp32
    board: esp32
    kind: virtual
  - name: sim-pico
    board: pico
    kind: virtual
"""


def test_check_starts_the_bench_probes_each_board_and_prints_a_table(edge_home, tmp_path):
    rig = tmp_path / "rig.yaml"
    rig.write_text(TWO_VIRTUAL)
    proc = edge_home.edge("hil", "check", str(rig), timeout=240)
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("board"))
    assert header.split() == ["board", "kind", "type", "port", "console", "power", "reset", "ble", "notes"]
    esp = next(line for line in lines if line.startswith("sim-esp32")).split()
    pico = next(line for line in lines if line.startswith("sim-pico")).split()
    assert esp[:2] == ["sim-esp32", "virtual"] and esp[4:8] == ["ok", "ok", "ok", "ok"]
    # A Pico has no radio: no BLE probe, and that is no failure.
    assert pico[4:8] == ["ok", "ok", "ok", "-"]
    # The bench it started is gone, and no identity went into the user's registry.
    assert not edge_home.db.exists()


@pytest.fixture(scope="module")
def running(module_bench, tmp_path_factory):
    """A rig file naming a running bench of an esp32 and a pico (the user's own `edge sim up`)."""
    module_bench.up("esp32", "pico")
    rig = tmp_path_factory.mktemp("rig") / "rig.yaml"
    rig.write_text(TWO_VIRTUAL + f"bench: {{sim_dir: {module_bench.sim_dir}}}\n")
    return module_bench, rig


def test_check_json_on_a_running_bench_reports_every_probe(running):
    home, rig = running
    rows = json.loads(home.edge("hil", "check", str(rig), "--json", timeout=240).stdout)
    assert [(r["board"], r["kind"], r["type"], r["ok"]) for r in rows] == \
        [("sim-esp32", "virtual", "esp32", True), ("sim-pico", "virtual", "pico", True)]
    assert rows[0]["port"] == home.port("esp32-1")
    assert {k: rows[0][k] for k in ("console", "power", "reset", "ble")} == \
        {"console": "ok", "power": "ok", "reset": "ok", "ble": "ok"}
    assert rows[1]["ble"] == "-"
    # A bench the rig file names is the user's: still running.
    assert home.control.is_running()


def test_a_virtual_boards_console_comes_back_after_a_power_cycle(running):
    home, rig_file = running
    rig = load_rig(rig_file)
    bench = start_bench(rig, home.sim_dir, home.env)
    target = open_target(rig, "sim-esp32", bench=bench)
    assert target.bench_name == "esp32-1"
    target.console.open()
    target.power.off()
    target.power.on()
    target.console.reopen(timeout=30)
    target.console.write(b"\r\n")
    assert target.console.expect(re.compile(rb">>> |#EA:"), timeout=30)
    target.close()
    assert b"#EA:" in target.console.log or b">>> " in target.console.log


def test_the_strategy_finds_the_agent_up_without_flashing(running):
    home, rig_file = running
    rig = load_rig(rig_file)
    target = open_target(rig, "sim-esp32", bench=start_bench(rig, home.sim_dir, home.env))

    class Host:
        env = home.env
        calls: list[tuple] = []

        def edge(self, *args):
            self.calls.append(args)
            return home.edge(*args)

    host = Host()
    s = Strategy(target, host)
    s.to("agent-up")
    assert s.state == "agent-up" and host.calls == [], "the agent already ran: nothing to flash"
    assert set(s.times) == {"agent-up"} and s.times["agent-up"] >= 0
    s.to("off")
    assert home.control.mode("esp32-1") == "off"
    with pytest.raises(ValueError):
        s.to("flying")


def test_check_on_a_bad_rig_file_exits_5_naming_the_line(edge_home, tmp_path):
    rig = tmp_path / "rig.yaml"
    rig.write_text(TWO_VIRTUAL.replace("    kind: virtual\n  - name: sim-pico", "    kind: virtual\n"
                                       "    port: /dev/ttyUSB0\n  - name: sim-pico"))
    proc = edge_home.edge("hil", "check", str(rig), check=False)
    assert proc.returncode == EXIT_BAD_INPUT
    assert f"{rig}:7: boards[0].port: a virtual board's port comes from the virtual bench" in proc.stderr
    assert "fix:" in proc.stderr
    proc = edge_home.edge("hil", "check", str(rig), "--json", check=False)
    err = json.loads(proc.stderr)
    assert err["exit_code"] == EXIT_BAD_INPUT and ":7: " in err["error"]


def test_check_on_a_usb_board_that_is_not_there_exits_6(edge_home, tmp_path):
    rig = tmp_path / "rig.yaml"
    rig.write_text(f"rig: 1\nboards:\n  - {{name: esp32-a, board: esp32, port: {tmp_path}/ttyUSB9}}\n")
    proc = edge_home.edge("hil", "check", str(rig), "--json", check=False)
    assert proc.returncode == EXIT_DEVICE
    row, = json.loads(proc.stdout)
    assert row["console"] == "FAIL" and "ttyUSB9" in row["notes"][0] and row["ok"] is False
    assert "esp32-a" in json.loads(proc.stderr)["error"]


def test_help_shows_examples():
    from tests.harness import edge

    out = edge("hil", "check", "--help").stdout
    assert "edge hil check examples/rig-bench.yaml" in out and "Exit codes" in out


def test_each_strategy_state_counts_only_its_own_time_not_the_states_it_walked_through(monkeypatch):
    """agent-up from off flashes first: the flash's seconds are flashed's, not agent-up's too."""
    import hil.rig.strategy as strategy_module

    clock = [0.0]
    monkeypatch.setattr(strategy_module.time, "monotonic", lambda: clock[0])

    class Walked(Strategy):
        answers = False

        def _flashed(self):
            clock[0] += 20.0                # writing the agent
            self.answers = True

        def _agent_answers(self):
            clock[0] += 5.0                 # a reset, then the agent's first frame (or a probe's timeout)
            return self.answers

    s = Walked(target=None, host=None)
    s.to("agent-up")            # a board in an unknown state: probed, flashed, probed again
    # The two probes (5 + 5) are agent-up's; the 20 s of writing are flashed's alone.
    assert s.times == {"flashed": 20.0, "agent-up": 10.0}
    assert sum(s.times.values()) == clock[0], "the states' times add up to the walk's"
