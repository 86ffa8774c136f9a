"""`edge ota keygen`, `sign` and `verify`: the release side of signed updates,
in process (CliRunner) on a fresh EDGE_HOME."""

from __future__ import annotations

import json
import stat

import pytest

IMAGE = bytes(range(256)) * 40


@pytest.fixture
def release(edge_home, tmp_path):
    """A home with a signing key listed by the root, an image and its manifest."""
    image = tmp_path / "agent.bin"
    image.write_bytes(IMAGE)
    manifest = tmp_path / "agent.manifest"
    assert edge_home.invoke("ota", "keygen").exit_code == 0
    r = edge_home.invoke("ota", "sign", str(image), "--board", "esp32", "--component", "agent",
                         "--version", "1.3.0", "--sequence", "7", "--min-version", "1.0.0",
                         "-o", str(manifest), "--json")
    assert r.exit_code == 0, r.output
    signed = json.loads(r.stdout)
    assert signed["size"] == len(IMAGE) and signed["target"] == "agent-slot"
    return edge_home, image, manifest


def verify(home, manifest, *args):
    r = home.invoke("ota", "verify", str(manifest), *args, "--json")
    checks = json.loads(r.stdout)
    return r, checks


def failed(home, manifest, *args) -> str:
    r, checks = verify(home, manifest, *args)
    assert r.exit_code == 5, r.output
    assert not checks[-1]["ok"] and all(c["ok"] for c in checks[:-1]), checks
    err = json.loads(r.stderr)
    assert checks[-1]["failed"] in err["error"] and err["fix"], err
    return checks[-1]["failed"]


def test_keygen_then_sign_then_verify_passes_every_check_in_order(release):
    home, image, manifest = release
    r, checks = verify(home, manifest, "--image", str(image), "--board", "esp32",
                       "--installed-sequence", "6")
    assert r.exit_code == 0, r.output
    assert [c["check"] for c in checks] == ["shape", "signature", "payload", "board", "counter",
                                            "expiry", "size", "digest"]
    assert all(c["ok"] for c in checks)
    text = home.invoke("ota", "verify", str(manifest), "--image", str(image))
    assert text.exit_code == 0 and "every check passed" in text.stdout and "ok   digest" in text.stdout


def test_a_tampered_manifest_fails_the_signature(release):
    home, _, manifest = release
    data = bytearray(manifest.read_bytes())
    data[-1] ^= 1
    manifest.write_bytes(bytes(data))
    assert failed(home, manifest) == "bad-signature"


def test_a_wrong_board_or_a_replayed_sequence_fails(release):
    home, _, manifest = release
    assert failed(home, manifest, "--board", "picow") == "wrong-board"
    assert failed(home, manifest, "--installed-sequence", "7") == "rollback"


def test_an_image_that_differs_fails_size_or_digest(release, tmp_path):
    home, image, manifest = release
    other = tmp_path / "other.bin"
    other.write_bytes(IMAGE[:-1] + b"\0")
    assert failed(home, manifest, "--image", str(other)) == "digest-mismatch"
    other.write_bytes(IMAGE[:-1])
    assert failed(home, manifest, "--image", str(other)) == "size-mismatch"


def test_a_revoked_key_fails_as_unknown_and_can_no_longer_sign(release, tmp_path):
    home, image, manifest = release
    r = home.invoke("ota", "keygen", "--revoke", "ota-signing", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["key_list"]["sequence"] == 2 and out["key_list"]["keys"] == []
    assert failed(home, manifest) == "unknown-key"
    again = home.invoke("ota", "sign", str(image), "--board", "esp32", "--component", "agent",
                        "--version", "1.3.0", "--sequence", "8", "-o", str(tmp_path / "m2"))
    assert again.exit_code == 5 and "not in key list" in again.stderr


def test_an_expired_manifest_fails(release, tmp_path):
    home, image, _ = release
    old = tmp_path / "old.manifest"
    r = home.invoke("ota", "sign", str(image), "--board", "esp32", "--component", "firmware",
                    "--version", "1.0.0", "--sequence", "1", "--expires", "0s", "-o", str(old))
    assert r.exit_code == 0, r.output
    assert failed(home, old) == "expired"


def test_keygen_lists_every_key_one_sequence_up_and_refuses_to_overwrite(release):
    home, _, _ = release
    pem = home.root / "keys" / "ota-signing.pem"
    before = pem.read_bytes()
    r = home.invoke("ota", "keygen")
    assert r.exit_code == 5 and "exists already" in r.stderr and "fix:" in r.stderr
    assert pem.read_bytes() == before
    r = home.invoke("ota", "keygen", "--signing", "next", "--expires", "30d", "--json")
    out = json.loads(r.stdout)
    assert out["key"]["name"] == "next" and out["key_list"]["sequence"] == 2
    assert {k["name"] for k in out["key_list"]["keys"]} == {"ota-signing", "next"}


def test_private_keys_are_0600_in_a_0700_folder(release):
    home, _, manifest = release
    keys = home.root / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for name in ("ota-root.pem", "ota-signing.pem"):
        assert stat.S_IMODE((keys / name).stat().st_mode) == 0o600, name
    assert not list(manifest.parent.glob(".*.tmp"))


def test_verify_without_a_root_key_says_how_to_get_one(edge_home, tmp_path):
    m = tmp_path / "m"
    m.write_bytes(b"\xd2")
    r = edge_home.invoke("ota", "verify", str(m))
    assert r.exit_code == 3 and "no OTA root key" in r.stderr


@pytest.mark.parametrize("command", ["keygen", "sign", "verify"])
def test_help_shows_an_example(edge_home, command):
    r = edge_home.invoke("ota", command, "--help")
    assert r.exit_code == 0 and "Example:" in r.stdout and f"edge ota {command}" in r.stdout
