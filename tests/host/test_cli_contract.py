"""Every `edge` command teaches its use, and every leaf command is run, as a
user runs it, by one scenario on a fresh virtual bench (STEPS below): a
command added without a step there fails the tests, naming it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

import click
import pytest

from edge_agent.cli import main
from tests.harness import Home, edge, invoke
from tests.hil.rp2_cache import fake_build


def commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        path = prefix + (name,)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path)


ALL = list(commands())
LEAVES = [p for p, c in ALL if not isinstance(c, click.Group)]


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_that_explains_it(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    cmd = dict(ALL)[path]
    assert cmd.help and len(cmd.help.split()) >= 5, f"edge {' '.join(path)} needs a real docstring"


def command_path(args: tuple[str, ...]) -> tuple[str, ...]:
    """The command words at the head of ``args`` (``("sim", "power")`` of ``sim power esp32-1 off``)."""
    cmd, path = main, []
    for word in args:
        cmd = cmd.commands.get(word) if isinstance(cmd, click.Group) else None
        if cmd is None:
            break
        path.append(word)
    return tuple(path)


# -- the scenario -------------------------------------------------------------
#
# Each step is `edge ARGS` and what a user relies on from it. ARGS may name
# what earlier steps learnt, as {esp_port}, {picow_id}, {out}, ...; a check
# gets the finished process and the Scenario, and may record more of it.

class Scenario:
    def __init__(self, home: Home, out: Path):
        self.home = home
        self.known: dict[str, str] = {"out": str(out)}
        self.ran: set[tuple[str, ...]] = set()
        # The emulated Pico's firmware as an earlier `edge emulator build`
        # left it (the cold build takes minutes: tests/hil/test_rp2_build.py).
        self.cache = out.parent / "cache"
        fake_build(self.cache / "edge-agent" / "rp2")

    def run(self, args: tuple[str, ...], check: Callable) -> None:
        args = tuple(a.format(**self.known) for a in args)
        env = self.home.env
        if command_path(args)[:1] in BLE_COMMANDS:
            env = {**env, "EDGE_BLE": "sim"}    # the bench's air: a free host controller of it
        if command_path(args)[:1] == ("emulator",):
            env = {**env, "XDG_CACHE_HOME": str(self.cache)}
        proc = edge(*args, timeout=120, env=env, check=not hasattr(check, "exit_code"))
        want = getattr(check, "exit_code", 0)
        assert proc.returncode in (want if isinstance(want, tuple) else (want,)), (proc.stdout, proc.stderr)
        self.ran.add(command_path(args))
        check(proc, self)

    def modes(self) -> dict[str, str]:
        return {b["name"]: b["mode"] for b in json.loads(self.home.edge("sim", "ls", "--json").stdout)}


def up(proc, s):
    boards = json.loads(proc.stdout)
    assert [(b["name"], b["board"]) for b in boards] == [("esp32-1", "esp32"), ("picow-1", "picow")]
    for b, key in zip(boards, ("esp", "picow")):
        assert Path(b["port"]).exists() and b["device_id"].startswith(b["board"] + "-"), b
        s.known.update({f"{key}_port": b["port"], f"{key}_id": b["device_id"]})
    # The same boards, as QA's rig file names them (the running bench, in order).
    rig = s.home.root / "rig.yaml"
    rig.write_text("rig: 1\nname: contract\nboards:\n"
                   "  - {name: sim-esp32, board: esp32, kind: virtual}\n"
                   "  - {name: sim-picow, board: picow, kind: virtual}\n"
                   f"bench: {{sim_dir: {s.home.sim_dir}}}\n")
    s.known["rig"] = str(rig)


def listed_running(proc, s):
    rows = {b["name"]: b for b in json.loads(proc.stdout)}
    assert sorted(rows) == ["esp32-1", "picow-1"]
    assert all(b["alive"] and b["state"] == "running" and b["mode"] == "micropython" for b in rows.values()), rows


def flashed(proc, s):
    results = json.loads(proc.stdout)
    assert [r["name"] for r in results] == ["esp32-1", "picow-1"]
    assert all(r["ok"] for r in results), results
    # The identity `sim up` minted is kept.
    assert [r["device_id"] for r in results] == [s.known["esp_id"], s.known["picow_id"]]


def labelled(proc, s):
    label = json.loads(proc.stdout)
    assert label
    s.known["esp_qr"] = label["payload"]
    files = list(Path(s.known["out"]).iterdir())
    assert {p.suffix for p in files} >= {".png", ".svg"}, files


def provisioned(proc, s):
    assert json.loads(proc.stdout)["device_id"] == s.known["picow_id"]


def ingested(proc, s):
    ports = json.loads(proc.stdout)["ports"]
    assert len(ports) == 2 and all(p["records"] > 0 and not p["bad_frames"] for p in ports), ports


def shown(proc, s):
    shown = json.loads(proc.stdout)
    devices = {d["device_id"]: d for d in shown["devices"]}
    assert set(devices) == {s.known["esp_id"], s.known["picow_id"]}
    assert all(d["records"] > 0 for d in devices.values()), devices


def exported(proc, s):
    table = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert {r["device_id"] for r in table} == {s.known["esp_id"], s.known["picow_id"]}


def live(proc, s):
    assert s.known["esp_id"] in proc.stdout and s.known["picow_id"] in proc.stdout, proc.stdout


def monitored(proc, s):
    assert "BATCH " + s.known["esp_id"] in proc.stdout or "HELLO " + s.known["esp_id"] in proc.stdout, \
        proc.stdout[-500:]
    assert "#EA:" not in proc.stdout


def mode(name: str, want: str):
    def check(proc, s):
        s.home.wait_mode(name, want)
        assert s.modes()[name] == want
    return check


def bootsel(proc, s):
    assert "BOOTSEL" in proc.stdout
    mode("picow-1", "bootsel")(proc, s)


def devs(proc, s):
    rows = {r["name"]: r for r in json.loads(proc.stdout) if r.get("name") in ("esp32-1", "picow-1")}
    assert {r["device_id"] for r in rows.values()} == {s.known["esp_id"], s.known["picow_id"]}, rows
    assert all(r["provisioned"] for r in rows.values()), rows


def logged(proc, s):
    # What the board printed: the banner of its interpreter and its agent's frames.
    assert "MicroPython" in proc.stdout and "#EA:" in proc.stdout, proc.stdout[-500:]


def completion(proc, s):
    assert "_EDGE_COMPLETE" in proc.stdout and "complete" in proc.stdout, proc.stdout[:300]


BLE_COMMANDS = {("scan",), ("pair",), ("devices",), ("gateway",)}


def scanned(proc, s):
    rows = {r["device_id"]: r for r in json.loads(proc.stdout)}
    assert {s.known["esp_id"], s.known["picow_id"]} <= set(rows), rows
    assert rows[s.known["esp_id"]]["board"] == "esp32" and not rows[s.known["esp_id"]]["paired"]


def paired(proc, s):
    bond = json.loads(proc.stdout)
    assert bond["device_id"] == s.known["esp_id"] and bond["account"] == "home" and "bond_key" not in bond


def listed_paired(proc, s):
    assert [d["device_id"] for d in json.loads(proc.stdout)] == [s.known["esp_id"]]


def shown_paired(proc, s):
    shown = json.loads(proc.stdout)
    assert shown["bond"]["account"] == "home" and [a["action"] for a in shown["audit"]] == ["paired"]


def gateway_ran(proc, s):
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(e["event"] == "connected" and e.get("device") == s.known["esp_id"] for e in events), events
    assert events[-1]["event"] == "stopped"


def unpaired(proc, s):
    assert json.loads(proc.stdout)["unpaired"] is True


def factory_reset(proc, s):
    assert json.loads(proc.stdout)["device_id"] == s.known["esp_id"]


def keygen(proc, s):
    made = json.loads(proc.stdout)
    assert made["key_list"]["sequence"] == 1 and made["key_list"]["keys"][0]["kid"] == made["key"]["kid"]
    image = s.home.root / "agent.bin"
    image.write_bytes(bytes(range(256)) * 4)
    s.known.update(image=str(image), manifest=str(s.home.root / "agent.manifest"))


def signed(proc, s):
    assert json.loads(proc.stdout)["size"] == 1024 and Path(s.known["manifest"]).exists()


def verified(proc, s):
    checks = json.loads(proc.stdout)
    assert all(c["ok"] for c in checks) and checks[-1]["check"] == "digest", checks


def published(proc, s):
    release = json.loads(proc.stdout)
    assert release["new"] and release["state"] == "active" and release["fraction"] == 0.5, release
    s.known["release"] = str(release["id"])


def rolled_out(proc, s):
    assert json.loads(proc.stdout)["fraction"] == 1.0


def ota_status(proc, s):
    [row] = json.loads(proc.stdout)["releases"]
    assert row["id"] == int(s.known["release"]) and row["state"] == "active"


def push_refused(proc, s):
    # The virtual esp32 takes the 1 KB image, checks its digest, and refuses
    # to install it: it is not an agent bundle (exit 3, the check and the fix
    # named). While it catches up its telemetry it may answer `busy` (no heap
    # for the checks just now) and ask again every 10 s first.
    out = json.loads(proc.stdout)
    assert [st["state"] for st in out["states"]] == ["downloading", "verified", "refused"], out
    err = json.loads(proc.stderr.strip().splitlines()[-1])
    assert err["exit_code"] == 3 and "bad-bundle" in err["error"] and "edge ota bundle" in err["fix"], err


push_refused.exit_code = 3  # type: ignore[attr-defined]


def bundled(proc, s):
    made = json.loads(proc.stdout)
    assert made["component"] == "agent" and made["version"] == "1.0.1" and made["files"], made
    assert Path(made["output"]).stat().st_size == made["bytes"]


def emulator_firmware(proc, s):
    fw = json.loads(proc.stdout)
    assert fw["cached"] is True and fw["board"] == "RPI_PICO" and Path(fw["firmware_uf2"]).is_file(), fw


def rig_checked(proc, s):
    rows = json.loads(proc.stdout)
    assert [(r["board"], r["ok"]) for r in rows] == [("sim-esp32", True), ("sim-picow", True)], rows
    assert rows[0]["port"] == s.known["esp_port"]


def stopped(proc, s):
    assert json.loads(s.home.edge("sim", "ls", "--json").stdout) == []


STEPS: list[tuple[tuple[str, ...], Callable]] = [
    (("sim", "up", "--board", "esp32", "--board", "picow", "--json"), up),
    (("sim", "ls", "--json"), listed_running),
    (("flash", "--all", "--json"), flashed),
    (("label", "{esp_id}", "--out", "{out}", "--json"), labelled),
    (("provision", "--port", "{picow_port}", "--json"), provisioned),
    (("telemetry", "ingest", "--sim", "--for", "4", "--json"), ingested),
    (("telemetry", "show", "--json"), shown),
    (("telemetry", "export", "--format", "csv"), exported),
    (("telemetry", "live", "--once"), live),
    (("monitor", "{esp_port}", "--for", "3"), monitored),
    (("devs", "--json"), devs),
    (("scan", "--for", "3s", "--json"), scanned),
    (("pair", "--qr", "{esp_qr}", "--account", "home", "--json"), paired),
    (("devices", "list", "--account", "home", "--json"), listed_paired),
    (("devices", "show", "{esp_id}", "--json"), shown_paired),
    (("gateway", "run", "--account", "home", "--for", "8s", "--json-log"), gateway_ran),
    (("devices", "unpair", "{esp_id}", "--json"), unpaired),
    (("devices", "factory-reset", "esp32-1", "--json"), factory_reset),
    (("sim", "logs", "esp32-1", "-n", "200"), logged),
    (("completion", "bash"), completion),
    (("emulator", "build", "--json"), emulator_firmware),
    (("ota", "keygen", "--json"), keygen),
    (("ota", "sign", "{image}", "--board", "esp32", "--component", "agent", "--version", "1.0.0",
      "--sequence", "1", "-o", "{manifest}", "--json"), signed),
    (("ota", "verify", "{manifest}", "--image", "{image}", "--board", "esp32", "--json"), verified),
    (("ota", "publish", "{image}", "{manifest}", "--fraction", "0.5", "--json"), published),
    (("ota", "rollout", "{release}", "--fraction", "1", "--json"), rolled_out),
    (("ota", "status", "--json"), ota_status),
    (("ota", "push", "esp32-1", "{image}", "{manifest}", "--timeout", "100s", "--json"), push_refused),
    (("ota", "bundle", "--board", "esp32", "--version", "1.0.1", "-o", "{out}/agent.bundle", "--json"), bundled),
    (("hil", "check", "{rig}", "--json"), rig_checked),
    (("sim", "power", "esp32-1", "off"), mode("esp32-1", "off")),
    (("sim", "power", "esp32-1", "on"), mode("esp32-1", "micropython")),
    (("sim", "download", "esp32-1"), mode("esp32-1", "download")),
    (("sim", "reset", "esp32-1"), mode("esp32-1", "micropython")),
    (("sim", "bootsel", "picow-1"), bootsel),
    (("sim", "reset", "picow-1"), mode("picow-1", "micropython")),
    (("sim", "down"), stopped),
]


def missing(ran) -> list[str]:
    return [f"`edge {' '.join(p)}`" for p in LEAVES if p not in ran]


def test_the_scenario_has_a_step_for_every_command():
    absent = missing({command_path(args) for args, _ in STEPS})
    assert not absent, f"add a step that runs {', '.join(absent)} to STEPS"


@pytest.mark.slow
def test_every_command_runs_as_a_user_runs_it_on_a_fresh_bench(bench, tmp_path):
    scenario = Scenario(bench, tmp_path / "labels")
    for args, check in STEPS:
        scenario.run(args, check)
    assert not missing(scenario.ran), f"no step ran {', '.join(missing(scenario.ran))}"
