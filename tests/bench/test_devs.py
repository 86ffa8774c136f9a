"""What is attached, by name (issue 7): `edge devs`, board names and device
ids wherever a port goes, `edge sim logs`, and completion, on a virtual bench."""

from __future__ import annotations

import json
import os
import subprocess
import time

from tests.harness import EDGE


def test_devs_lists_the_running_virtual_boards_with_type_port_and_identity(bench):
    boards = bench.up("esp32", "picow")
    rows = bench.json("devs")
    assert [(r["name"], r["kind"], r["board"], r["port"]) for r in rows] == \
        [(b["name"], "virtual", b["board"], b["port"]) for b in boards]
    for r, b in zip(rows, boards):
        # sim up mints the identity as `edge flash` does; only flash's self-test marks it provisioned.
        assert r["device_id"] == b["device_id"] and r["device_id"].startswith(b["board"] + "-")
        assert r["registered"] is True and r["provisioned"] is False
    table = bench.edge("devs").stdout
    assert "esp32-1" in table and "picow-1" in table and "not self-tested" in table


def test_devs_says_provisioned_once_flash_passed_and_no_identity_for_a_blank_board(bench):
    bench.up("esp32c3", blank=True)
    assert bench.json("devs")[0]["device_id"] is None
    assert "no identity" in bench.edge("devs").stdout
    bench.edge("flash", "-p", "esp32c3-1")
    (row,) = bench.json("devs")
    assert row["device_id"].startswith("esp32c3-") and row["provisioned"] is True


def test_a_board_name_or_device_id_works_wherever_a_port_does(bench):
    esp, pico = bench.up("esp32", "picow")
    out = bench.edge("monitor", "esp32-1", "--for", "2").stdout
    assert esp["device_id"] in out
    out = bench.edge("monitor", pico["device_id"], "--for", "2").stdout
    assert pico["device_id"] in out
    summary = bench.json("telemetry", "ingest", "esp32-1", "picow-1", "--for", "3")
    assert [p["port"] for p in summary["ports"]] == [esp["port"], pico["port"]]
    assert all(p["records"] > 0 for p in summary["ports"])
    ident = bench.json("provision", "--port", "picow-1")
    assert ident["device_id"] == pico["device_id"] and not ident["label_pending"]
    (result,) = bench.json("flash", "-p", "esp32-1")
    assert result["ok"] and result["name"] == "esp32-1" and result["device_id"] == esp["device_id"]


def test_a_device_id_the_registry_heard_on_a_port_names_that_port_after_its_board_is_gone(bench):
    from edge_agent.board_names import resolve_port

    esp, = bench.up("esp32")
    bench.json("telemetry", "ingest", "esp32-1", "--for", "2")
    bench.down()
    # No bench now; the registry still says where the board's telemetry came from.
    assert resolve_port(esp["device_id"], bench.sim_dir, bench.db, ports=[]) == esp["port"]
    assert resolve_port("/dev/ttyUSB7", bench.sim_dir, bench.db, ports=[]) == "/dev/ttyUSB7"


def test_an_unknown_name_exits_3_naming_it_and_the_known_names(bench):
    bench.up("esp32")
    r = bench.edge("monitor", "esp33-1", check=False)
    assert r.returncode == 3 and "'esp33-1'" in r.stderr and "esp32-1" in r.stderr, r.stderr
    for args in (["telemetry", "ingest", "esp32-1", "esp33-1", "--for", "1"],
                 ["provision", "--port", "esp33-1"], ["flash", "--port", "esp33-1"]):
        r = bench.edge(*args, "--json", check=False)
        assert r.returncode == 3, (args, r.stderr)
        err = json.loads(r.stderr.strip().splitlines()[-1])
        assert "'esp33-1'" in err["error"] and "esp32-1" in err["fix"], err


def test_sim_logs_prints_follows_and_tails_a_boards_console(bench):
    bench.up("esp32")
    log = bench.sim_dir / "esp32-1" / "console.log"
    def shown():    # as the command shows it: the raw REPL's control bytes escaped
        from edge_agent.cli.monitor import raw_text
        return raw_text(log.read_bytes()).replace("\r\n", "\n")

    whole = bench.edge("sim", "logs", "esp32-1").stdout
    assert "#EA:" in whole and shown().startswith(whole)
    tail = bench.edge("sim", "logs", "esp32-1", "-n", "2", "--sim-dir", str(bench.sim_dir)).stdout
    assert len(tail.splitlines()) == 2 and tail in shown()
    # -f goes on past what was there: the agent keeps printing its telemetry frames.
    start = time.monotonic()
    followed = bench.edge("sim", "logs", "esp32-1", "-f", "--for", "3").stdout
    assert time.monotonic() - start >= 3
    assert len(followed) > len(whole) and followed.startswith(whole)
    r = bench.edge("sim", "logs", "esp33-1", check=False)
    assert r.returncode == 3 and "esp33-1" in r.stderr and "esp32-1" in r.stderr
    # The log stays readable once the bench is down.
    bench.down()
    assert bench.edge("sim", "logs", "esp32-1", "--dir", str(bench.sim_dir), "-n", "1").stdout


def complete(env: dict, *words: str) -> list[str]:
    """What bash completion offers after ``edge WORDS`` (the last word is
    the one being completed), through click's own completion protocol."""
    env = {**env, "_EDGE_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(["edge", *words]),
           "COMP_CWORD": str(len(words))}
    out = subprocess.run([EDGE], env=env, capture_output=True, text=True, timeout=30, check=True).stdout
    return [line.split(",", 1)[1] for line in out.splitlines() if line.startswith("plain,")]


def test_completion_offers_board_names_device_ids_and_board_types(bench):
    esp, pico = bench.up("esp32", "picow")
    env = bench.env
    assert complete(env, "sim", "reset", "") == ["esp32-1", "picow-1"]
    assert complete(env, "sim", "logs", "pi") == ["picow-1"]
    assert complete(env, "monitor", "esp") == sorted(["esp32-1", esp["device_id"]])
    assert complete(env, "flash", "--port", "pic") == sorted(["picow-1", pico["device_id"]])
    assert complete(env, "telemetry", "ingest", "esp32-1", "p") == sorted(["picow-1", pico["device_id"]])
    assert "esp32c3" in complete(env, "flash", "--board", "esp32")
    assert complete(env, "sim", "up", "--board", "pic") == ["pico", "picow"]
    assert complete(env, "label", "") == sorted([esp["device_id"], pico["device_id"]])
    assert complete(env, "telemetry", "show", "--device", "pi") == [pico["device_id"]]
    # A bench in another folder: the names of that one.
    assert complete({**env, "EDGE_SIM_DIR": os.devnull + "-none"}, "sim", "reset", "") == []
