"""`edge ota rollout` and `edge ota status`: a release engineer grows, pauses,
resumes and halts a rollout, and reads per release and per device where the
fleet stands, as text and as --json."""

from __future__ import annotations

import json

import pytest

from edge_agent.store import Store
from edge_ota.rollout import eligible
from tests.host.ota_release import Releases

IMAGE = bytes(range(256)) * 40
DEVICES = [f"esp32-{i:012x}" for i in range(20)]


@pytest.fixture
def rel(edge_home, tmp_path):
    r = Releases(edge_home, tmp_path)
    with Store(edge_home.db) as s:
        for d in DEVICES + ["picow-000000000001"]:
            s.device_number(d)
            s._db.execute("UPDATE devices SET board = ? WHERE device_id = ?", (d.split("-")[0], d))
    return r


def status(rel, *args: str) -> dict:
    r = rel.home.invoke("ota", "status", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def rollout(rel, *args: str) -> dict:
    r = rel.home.invoke("ota", "rollout", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_status_counts_each_release_by_state_with_its_eligible_devices(rel):
    out = rel.publish(*rel.sign(IMAGE), "--fraction", "0.5", "--halt-at", "0.5")
    with Store(rel.home.db) as s:
        s.note_ota_state(DEVICES[0], "agent", 7, "confirmed", release_id=out["id"])
        s.note_ota_state(DEVICES[1], "agent", 7, "downloading", release_id=out["id"], held=2048, size=10240)
        s.note_ota_state(DEVICES[2], "agent", 7, "rolled-back", release_id=out["id"], reason="crashed at boot")
        s.note_ota_state(DEVICES[3], "agent", 7, "offered", release_id=out["id"])
    shown = status(rel)
    assert set(shown) == {"releases", "devices", "history"} and shown["devices"] == shown["history"] == []
    [row] = shown["releases"]
    key = "esp32/agent/7"
    expected = {d for d in DEVICES if eligible(d, key, 0.5)} | set(DEVICES[:3])
    assert row["devices"] == len(DEVICES) and row["eligible"] == len(expected)
    assert (row["offered"], row["downloading"], row["confirmed"], row["rolled_back"], row["failed"],
            row["refused"]) == (1, 1, 1, 1, 0, 0)
    assert (row["state"], row["fraction"], row["halt_reason"], row["version"]) == ("active", 0.5, None, "1.3.0")
    text = rel.home.invoke("ota", "status")
    assert text.exit_code == 0 and "esp32" in text.stdout and "1.3.0" in text.stdout


def test_status_of_a_device_shows_its_percent_and_history(rel):
    out = rel.publish(*rel.sign(IMAGE))
    with Store(rel.home.db) as s:
        s.note_ota_state(DEVICES[0], "agent", 7, "offered", release_id=out["id"], size=len(IMAGE))
        s.note_ota_state(DEVICES[0], "agent", 7, "downloading", release_id=out["id"], held=0, size=len(IMAGE))
        s.note_ota_progress(DEVICES[0], out["id"], 4096, len(IMAGE))
    shown = status(rel, "--device", DEVICES[0])
    [mine] = shown["devices"]
    assert (mine["device_id"], mine["release"], mine["state"], mine["percent"]) == (DEVICES[0], out["id"],
                                                                                  "downloading", 40)
    assert [h["state"] for h in shown["history"]] == ["offered", "downloading"]
    assert [r["board"] for r in shown["releases"]] == ["esp32"]
    text = rel.home.invoke("ota", "status", "--device", DEVICES[0])
    assert "40 %" in text.stdout and "downloading" in text.stdout
    missing = rel.home.invoke("ota", "status", "--device", "esp32-ffffffffffff")
    assert missing.exit_code == 3 and "no device" in missing.stderr


def test_rollout_grows_pauses_resumes_and_halts_with_history(rel):
    out = rel.publish(*rel.sign(IMAGE), "--fraction", "0.1")
    assert rollout(rel, str(out["id"]), "--fraction", "0.4")["fraction"] == 0.4
    assert rollout(rel, "esp32/agent/7", "--pause")["state"] == "paused"
    assert rollout(rel, str(out["id"]), "--resume")["state"] == "active"
    halted = rollout(rel, str(out["id"]), "--halt", "--reason", "battery drain in the field")
    assert halted["state"] == "halted" and halted["halt_reason"] == "battery drain in the field"
    row = status(rel)["releases"][0]
    assert row["state"] == "halted" and row["halt_reason"] == "battery drain in the field"
    text = rel.home.invoke("ota", "status")
    assert "halted: battery drain in the field" in text.stdout
    resumed = rollout(rel, str(out["id"]), "--resume")
    assert resumed["state"] == "active" and resumed["halt_reason"] is None
    history = status(rel, "--release", str(out["id"]))["history"]
    assert [(h["state"], h["reason"]) for h in history] == [
        ("published", "1.3.0, fraction 0.1"), ("fraction", "0.1 -> 0.4"), ("paused", None), ("active", None),
        ("halted", "battery drain in the field"), ("active", None)]


def test_a_full_rollout_makes_older_releases_done(rel):
    old = rel.publish(*rel.sign(IMAGE, sequence=7))
    new = rel.publish(*rel.sign(IMAGE[::-1], sequence=8, version="1.4.0"), "--fraction", "0.2")
    rollout(rel, str(new["id"]), "--fraction", "1")
    states = {r["id"]: r["state"] for r in status(rel)["releases"]}
    assert states == {old["id"]: "done", new["id"]: "active"}
    r = rel.home.invoke("ota", "rollout", str(old["id"]), "--resume")
    assert r.exit_code == 5 and "done" in r.stderr


def test_rollout_names_a_missing_release_and_wants_an_action(rel):
    r = rel.home.invoke("ota", "rollout", "12", "--pause")
    assert r.exit_code == 3 and "no release '12'" in r.stderr and "edge ota status" in r.stderr
    rel.publish(*rel.sign(IMAGE))
    r = rel.home.invoke("ota", "rollout", "1")
    assert r.exit_code == 2 and "--fraction" in r.output


def test_the_schedule_grows_the_fraction_when_its_period_has_passed(rel):
    out = rel.publish(*rel.sign(IMAGE), "--fraction", "0.1", "--grow", "0.3/1h")
    with Store(rel.home.db) as s:
        t0 = s.release(out["id"]).grown_at
        assert s.grow_rollouts(t0 + 3599) == []
        [(grown, before)] = s.grow_rollouts(t0 + 3600)
        assert (before, grown.fraction) == (0.1, 0.4)
        s.grow_rollouts(t0 + 7200)
        s.grow_rollouts(t0 + 10800)
        assert s.release(out["id"]).fraction == 1.0
        assert s.grow_rollouts(t0 + 99999) == [], "full: nothing more"


def test_a_bad_growth_is_a_usage_error(rel):
    image, manifest = rel.sign(IMAGE)
    for bad in ("0.1", "2/1h", "0.1/1s", "x/1h"):
        r = rel.home.invoke("ota", "publish", str(image), str(manifest), "--grow", bad)
        assert r.exit_code == 2, (bad, r.output)


def test_the_gateway_grows_a_due_rollout_and_logs_it(rel):
    import asyncio
    import io

    from edge_agent.gateway import EventLog, Gateway

    out = rel.publish(*rel.sign(IMAGE), "--fraction", "0.2", "--grow", "0.5/1h")
    with Store(rel.home.db) as s:       # published two hours ago: one growth is due
        s._db.execute("UPDATE releases SET grown_at = grown_at - 7200 WHERE id = ?", (out["id"],))
    log = io.StringIO()
    asyncio.run(Gateway(str(rel.home.db), "home", EventLog(json_lines=True, out=log)).run(duration=1.0))
    grown = [json.loads(line) for line in log.getvalue().splitlines() if '"rollout_grown"' in line]
    assert [(e["release"], e["before"], e["fraction"]) for e in grown] == [(out["id"], 0.2, 0.7)]
    assert status(rel)["releases"][0]["fraction"] == 0.7
