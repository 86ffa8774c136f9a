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


# -- edge ota bundle (protocol.md 7.1, 7.8) -------------------------------------

def esp_app_image(chip_id: int, size: int = 4096) -> bytes:
    """The head of an ESP application image: magic 0xE9, then the chip id at offset 12."""
    head = bytes([0xE9, 3, 2, 0x20]) + bytes(8) + chip_id.to_bytes(2, "little") + bytes(10)
    return head + bytes(range(256)) * ((size - len(head)) // 256 + 1)


def bundled(home, *args):
    r = home.invoke("ota", "bundle", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_an_agent_bundle_holds_edgefw_compiled_and_the_stamped_version_not_main(edge_home, tmp_path):
    import hashlib

    from edge_agent.firmware import agent_version
    from edge_agent.paths import FIRMWARE_DIR
    from edge_ota.bundle import unpack

    source_init = (FIRMWARE_DIR / "edgefw" / "__init__.py").read_bytes()
    out = tmp_path / "agent.bundle"
    made = bundled(edge_home, "--board", "esp32", "--version", "7.8.9", "-o", str(out))
    data = out.read_bytes()
    files = dict(unpack(data))
    sources = {p.relative_to(FIRMWARE_DIR).with_suffix(".mpy").as_posix()
               for p in (FIRMWARE_DIR / "edgefw").rglob("*.py") if "__pycache__" not in p.parts}
    assert set(files) == sources and "main.py" not in files and "main.mpy" not in files
    assert all(body[:1] == b"M" for body in files.values())               # .mpy, not source
    assert b"7.8.9" in files["edgefw/__init__.mpy"]
    assert made["component"] == "agent" and made["version"] == "7.8.9" and made["mpy_arch"] == "xtensawin"
    assert made["bytes"] == len(data) and made["sha256"] == hashlib.sha256(data).hexdigest()
    assert [f["name"] for f in made["files"]] == sorted(files)
    # The source tree is never edited: the stamp went into a temporary copy.
    assert (FIRMWARE_DIR / "edgefw" / "__init__.py").read_bytes() == source_init
    assert agent_version() != "7.8.9"


def test_without_version_the_bundle_says_the_sources_version_and_names_itself(edge_home, tmp_path, monkeypatch):
    from edge_agent.firmware import agent_version

    monkeypatch.chdir(tmp_path)
    made = bundled(edge_home, "--board", "picow")
    assert made["version"] == agent_version() and made["mpy_arch"] == "armv6m"
    assert (tmp_path / f"agent-picow-{agent_version()}.bundle").exists()
    text = edge_home.invoke("ota", "bundle", "--board", "picow", "-o", str(tmp_path / "b"))
    assert text.exit_code == 0 and "edgefw/__init__.mpy" in text.stdout and "sha256" in text.stdout
    assert "edge ota sign" in text.stdout


def test_a_firmware_image_for_an_esp32_board_is_checked_and_copied_byte_for_byte(edge_home, tmp_path):
    image = tmp_path / "micropython.bin"
    image.write_bytes(esp_app_image(chip_id=9))
    out = tmp_path / "fw.bin"
    made = bundled(edge_home, "--board", "esp32s3", "--firmware", str(image), "-o", str(out))
    assert out.read_bytes() == image.read_bytes()
    assert made["component"] == "firmware" and made["files"] is None and made["bytes"] == len(image.read_bytes())


@pytest.mark.parametrize("board, image, words", [
    ("picow", esp_app_image(0), "ota_method is 'files'"),
    ("rpi", esp_app_image(0), "ota_method is 'files'"),
    ("virtual", esp_app_image(0), "has no OTA partition"),
    ("esp32", b"\x00" + esp_app_image(0)[1:], "does not start with 0xE9"),
    ("esp32", esp_app_image(chip_id=5), "chip id 5, not esp32"),
    ("esp32c3", esp_app_image(chip_id=0), "chip id 0, not esp32c3"),
])
def test_a_firmware_image_the_board_cannot_take_over_the_air_is_refused(edge_home, tmp_path, board, image, words):
    path = tmp_path / "micropython.bin"
    path.write_bytes(image)
    out = tmp_path / "fw.bin"
    r = edge_home.invoke("ota", "bundle", "--board", board, "--firmware", str(path), "-o", str(out), "--json")
    assert r.exit_code == 5, r.output
    err = json.loads(r.stderr)
    assert words in err["error"] and err["fix"] and not out.exists()


@pytest.mark.parametrize("version", ["1.2", "01.2.3", "1.2.3-rc1", "v1.2.3"])
def test_a_version_that_is_not_x_y_z_is_refused_before_building(edge_home, tmp_path, version):
    r = edge_home.invoke("ota", "bundle", "--board", "esp32", "--version", version, "-o", str(tmp_path / "b"))
    assert r.exit_code == 5 and "is not X.Y.Z" in r.stderr and not (tmp_path / "b").exists()


def test_edge_ota_bundle_runs_as_a_user_runs_it_and_the_bundle_signs_and_verifies(edge_home, tmp_path):
    out = tmp_path / "agent.bundle"
    made = json.loads(edge_home.edge("ota", "bundle", "--board", "esp32", "--version", "1.0.1",
                                     "-o", str(out), "--json").stdout)
    assert made["output"] == str(out) and made["bytes"] == out.stat().st_size
    assert edge_home.edge("ota", "keygen", "--json").returncode == 0
    manifest = tmp_path / "agent.manifest"
    edge_home.edge("ota", "sign", str(out), "--board", "esp32", "--component", "agent", "--version", "1.0.1",
                   "--sequence", "1", "-o", str(manifest))
    checks = json.loads(edge_home.edge("ota", "verify", str(manifest), "--image", str(out), "--json").stdout)
    assert checks[-1] == {"check": "digest", "ok": True, "detail": f"sha256 {made['sha256']}"}


def test_rotate_root_signs_the_next_root_with_the_current_one_and_re_signs_the_key_list(release, monkeypatch):
    from edge_ota.keys import key_dir, root_epoch, root_public_key
    from edge_ota.manifest import TrustedState

    home, image, manifest = release
    monkeypatch.setenv("EDGE_HOME", str(home.root))
    old_root = root_public_key(create=False)
    r = home.invoke("ota", "keygen", "--rotate-root", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    new_root = root_public_key(create=False)
    assert new_root != old_root and out["root_rotation"]["root"] == new_root.hex()
    assert root_epoch() == 1 and (key_dir() / "ota-root-epoch-0.pem").exists()
    # A device trusting the old root takes the rotation, then the re-signed
    # key list, then a manifest signed before the rotation by a listed key.
    device = TrustedState(old_root)
    device.rotate_root((key_dir() / "ota-root-rotation-1.cose").read_bytes())
    assert device.root == new_root and device.epoch == 1
    device.update_key_list((key_dir() / "ota-keys.cose").read_bytes())
    assert verify(home, manifest, "--image", str(image))[0].exit_code == 0
    # The rotation cannot be replayed on the rotated device, and a second
    # rotation chains from the new root.
    with pytest.raises(Exception, match="not-root"):
        device.rotate_root((key_dir() / "ota-root-rotation-1.cose").read_bytes())
    assert home.invoke("ota", "keygen", "--rotate-root").exit_code == 0
    device.rotate_root((key_dir() / "ota-root-rotation-2.cose").read_bytes())
    assert device.root == root_public_key(create=False) and root_epoch() == 2
    # Mixing the two steps is refused.
    r = home.invoke("ota", "keygen", "--rotate-root", "--revoke", "ota-signing")
    assert r.exit_code != 0 and "two steps" in r.output
