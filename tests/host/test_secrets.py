"""Secrets on the host: what the registry may show, and who may read the files holding them.

A registry row of a provisioned device holds its public key, a verifier of
its setup code and, until the label is made, the plain code; a label holds
the code. None of that may reach a command's output, and the files holding it
are readable only by their owner.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from edge_agent.identity import fingerprint, setup_verifier
from edge_agent.label import render
from edge_agent.paths import private_dir
from edge_agent.store import DEVICE_COLUMNS, Store
from tests.harness import invoke

CODE = "48213907"
PUB = bytes(range(100, 132))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def provisioned_registry(path: Path) -> str:
    """A registry holding one minted, unlabelled identity; its verifier."""
    verifier = setup_verifier(CODE)
    with Store(path) as s:
        s.record_identity("esp32-0a0b0c0d0e0f", "esp32", PUB, fingerprint(PUB), verifier, CODE, "tech@bench")
        s.complete_identity("esp32-0a0b0c0d0e0f")
        s.mark_provisioned("esp32-0a0b0c0d0e0f", "1.29.0", "0.1.0")
    return verifier


def test_show_json_of_a_registry_with_provisioned_devices_prints_no_key_verifier_or_code(tmp_path):
    db = tmp_path / "registry.db"
    verifier = provisioned_registry(db)
    r = invoke("telemetry", "show", "--json", "--db", str(db))
    assert r.exit_code == 0, r.output
    (device,) = json.loads(r.stdout)["devices"]
    assert device["device_id"] == "esp32-0a0b0c0d0e0f" and device["key_fingerprint"] == fingerprint(PUB)
    for secret in (CODE, verifier, verifier.split("$")[-1], verifier.split("$")[-2], PUB.hex()):
        assert secret not in r.output
    assert not {"public_key", "setup_verifier", "setup_code_pending"} & set(device)


def test_every_device_reader_selects_only_the_columns_that_may_be_shown(tmp_path):
    db = tmp_path / "registry.db"
    provisioned_registry(db)
    with Store(db) as s:
        rows = [s.device("esp32-0a0b0c0d0e0f"), *s.devices(), *s.summary()]
    for row in rows:
        assert set(DEVICE_COLUMNS) <= set(row)
        assert not {"public_key", "setup_verifier", "setup_code_pending"} & set(row)
        assert all(not isinstance(v, bytes) for v in row.values())


def test_a_new_registry_is_0600_with_its_wal_and_shm_in_a_0700_state_folder(tmp_path, monkeypatch):
    home = tmp_path / "share" / "edge"
    monkeypatch.setenv("EDGE_HOME", str(home))
    monkeypatch.delenv("EDGE_DB", raising=False)
    os.umask(0o022)
    with Store(home / "registry.db") as s:
        s.record_identity("d-1", "esp32", PUB, fingerprint(PUB), setup_verifier(CODE), CODE, "t")
        files = [home / n for n in ("registry.db", "registry.db-wal", "registry.db-shm")]
        assert all(f.exists() for f in files)
        assert [mode(f) for f in files] == [0o600] * 3
    assert mode(home) == 0o700


def test_a_registry_made_world_readable_by_an_older_version_is_tightened_when_opened_for_writing(
        tmp_path, monkeypatch):
    home = tmp_path / "edge"
    monkeypatch.setenv("EDGE_HOME", str(home))
    with Store(home / "registry.db") as s:
        s.record_identity("d-1", "esp32", PUB, fingerprint(PUB), setup_verifier(CODE), CODE, "t")
    os.chmod(home, 0o755)
    os.chmod(home / "registry.db", 0o644)
    with Store(home / "registry.db", create=False):
        assert mode(home / "registry.db") == 0o644, "a reader changes nothing"
    with Store(home / "registry.db"):
        assert mode(home / "registry.db") == 0o600
        assert mode(home / "registry.db-wal") == 0o600
    assert mode(home) == 0o700


def test_a_folder_outside_the_state_folder_is_created_private_but_an_existing_one_left_alone(
        tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with Store(shared / "new" / "registry.db"):
        pass
    assert mode(shared) == 0o755 and mode(shared / "new") == 0o700
    assert mode(shared / "new" / "registry.db") == 0o600
    private_dir(shared)
    assert mode(shared) == 0o755


def test_labels_are_written_0600_in_a_0700_folder_and_no_temporary_file_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HOME", str(tmp_path / "home"))
    os.umask(0o022)
    out = tmp_path / "home" / "labels"
    png, svg = render(out, "esp32-0a0b0c0d0e0f", "esp32", CODE, fingerprint(PUB))
    assert mode(out) == 0o700 and mode(png) == 0o600 and mode(svg) == 0o600
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and CODE in svg.read_text()
    assert sorted(p.name for p in out.iterdir()) == [png.name, svg.name]


def test_edge_label_refuses_an_identity_whose_provisioning_was_cut_short_and_prints_no_code(tmp_path):
    db = tmp_path / "registry.db"
    with Store(db) as s:
        s.record_identity("esp32-0a0b0c0d0e0f", "esp32", PUB, fingerprint(PUB), setup_verifier(CODE),
                          CODE, "t")         # the board never got its files: an orphan
        assert s.orphans() == ["esp32-0a0b0c0d0e0f"]
    r = invoke("label", "esp32-0a0b0c0d0e0f", "--db", str(db),
                                  "--out", str(tmp_path / "labels"))
    assert r.exit_code == 3, r.output
    assert "cut short" in r.output and "provision the board again" in r.output
    assert CODE not in r.output and CODE[:4] + "-" + CODE[4:] not in r.output
    assert not (tmp_path / "labels").exists() or not list((tmp_path / "labels").iterdir())


def test_dropping_an_orphan_erases_its_code_and_keeps_telemetry_of_the_same_id(tmp_path):
    from edge_agent.store import Record

    db = tmp_path / "registry.db"
    with Store(db) as s:
        for n, d in enumerate(("esp32-aaaaaaaaaaaa", "esp32-bbbbbbbbbbbb")):
            s.record_identity(d, "esp32", bytes([n]) * 32, "00" * 8, setup_verifier(CODE), CODE, "t")
        s.add_batch("esp32-bbbbbbbbbbbb", [Record(0, "temp", "Cel", 21.5, 1_700_000_000_000, False, 1)], 1.0)
        assert s.drop_orphan("esp32-aaaaaaaaaaaa") and s.drop_orphan("esp32-bbbbbbbbbbbb")
        assert s.device("esp32-aaaaaaaaaaaa") is None
        assert s.identity("esp32-bbbbbbbbbbbb") is None and s.count("esp32-bbbbbbbbbbbb") == 1
        assert not s.drop_orphan("esp32-bbbbbbbbbbbb") and s.orphans() == []
        s.record_identity("esp32-cccccccccccc", "esp32", PUB, "00" * 8, setup_verifier("13572468"),
                          "13572468", "t")
        s.complete_identity("esp32-cccccccccccc")
        assert not s.drop_orphan("esp32-cccccccccccc"), "a complete identity is never dropped"
        assert s.identity("esp32-cccccccccccc")["setup_code_pending"] == "13572468"
    held = b"".join(p.read_bytes() for p in tmp_path.glob("registry.db*"))
    assert CODE.encode() not in held, "the orphans' plain code is erased from the file"
