"""`edge ota publish` and the update store: a release is accepted only once its
manifest passes the device's checks against the current key list and the image
matches it; images are kept whole under their digest, and damage is named."""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.errors import BadInput, NotFound
from edge_agent.store import Store
from edge_agent.update_store import UpdateStore
from tests.host.ota_release import Releases

IMAGE = bytes(range(256)) * 40


@pytest.fixture
def rel(edge_home, tmp_path):
    return Releases(edge_home, tmp_path)


def test_publish_keeps_the_image_under_its_digest_and_records_the_release(rel):
    image, manifest = rel.sign(IMAGE)
    out = rel.publish(image, manifest, "--fraction", "0.25", "--halt-at", "0.3", "--min-devices", "5",
                      "--grow", "0.1/6h")
    digest = hashlib.sha256(IMAGE).hexdigest()
    assert out["new"] and out["digest"] == digest and out["size"] == len(IMAGE)
    assert (out["board"], out["component"], out["version"], out["sequence"]) == ("esp32", "agent", "1.3.0", 7)
    assert (out["fraction"], out["halt_at"], out["min_devices"]) == (0.25, 0.3, 5)
    assert (out["grow_step"], out["grow_period"], out["state"]) == (0.1, 6 * 3600, "active")
    kept = rel.home.root / "updates" / digest
    assert out["path"] == str(kept) and kept.read_bytes() == IMAGE
    assert not list(kept.parent.glob(".*.tmp")), "written under a new name, then renamed"
    with Store(rel.home.db) as s:
        r = s.release(out["id"])
        assert r is not None and r.manifest == manifest.read_bytes()
        assert [h["state"] for h in s.ota_history(release_id=r.id)] == ["published"]


def test_publishing_the_same_release_again_keeps_one_image_and_takes_a_re_signed_manifest(rel):
    image, manifest = rel.sign(IMAGE, expires="30d")
    first = rel.publish(image, manifest, "--fraction", "0.5")
    _, resigned = rel.sign(IMAGE, expires="90d", name="again")
    again = rel.publish(image, resigned, "--fraction", "0.1")
    assert not again["new"] and again["id"] == first["id"]
    assert again["fraction"] == 0.5, "the rollout is kept"
    assert again["expires"] > first["expires"]
    with Store(rel.home.db) as s:
        assert s.release(first["id"]).manifest == resigned.read_bytes()
    assert len(list((rel.home.root / "updates").iterdir())) == 1


def test_another_image_under_a_published_sequence_is_refused(rel):
    image, manifest = rel.sign(IMAGE)
    rel.publish(image, manifest)
    other, other_manifest = rel.sign(IMAGE[::-1], name="other")
    err = rel.refused(other, other_manifest)
    assert "sequence 7" in err["error"] and "higher --sequence" in err["fix"]


@pytest.mark.parametrize("change, check", [
    (lambda data: data[:-1], "size-mismatch"),
    (lambda data: data[:-1] + b"\x00", "digest-mismatch"),
    (lambda data: data + b"\x00", "size-mismatch"),
])
def test_an_image_that_is_not_the_manifests_is_refused_and_nothing_is_stored(rel, change, check):
    image, manifest = rel.sign(IMAGE)
    image.write_bytes(change(IMAGE))
    err = rel.refused(image, manifest)
    assert err["error"].startswith(f"{manifest} fails check {check}") or check in err["error"], err
    assert err["fix"]
    assert not (rel.home.root / "updates").exists() or not list((rel.home.root / "updates").iterdir())
    with Store(rel.home.db) as s:
        assert s.releases() == []


def test_a_manifest_of_a_revoked_key_an_expired_one_and_a_tampered_one_are_refused(rel):
    image, manifest = rel.sign(IMAGE)
    _, expired = rel.sign(IMAGE, expires="0s", name="expired", sequence=8)
    assert "expired" in rel.refused(image, expired)["error"]
    data = bytearray(manifest.read_bytes())
    data[-1] ^= 1
    tampered = manifest.with_name("tampered.manifest")
    tampered.write_bytes(bytes(data))
    assert "bad-signature" in rel.refused(image, tampered)["error"]
    garbage = manifest.with_name("garbage.manifest")
    garbage.write_bytes(manifest.read_bytes() + b"\x00")
    assert "trailing-bytes" in rel.refused(image, garbage)["error"]
    garbage.write_bytes(manifest.read_bytes() + bytes(400))
    assert "at most 512" in rel.refused(image, garbage)["error"]
    assert rel.home.invoke("ota", "keygen", "--revoke", "ota-signing").exit_code == 0
    err = rel.refused(image, manifest)
    assert "unknown-key" in err["error"] and "keygen" in err["fix"]


def test_publish_without_a_root_key_says_how_to_get_one(edge_home, tmp_path):
    image, manifest = tmp_path / "i", tmp_path / "m"
    image.write_bytes(IMAGE)
    manifest.write_bytes(b"\xd2")
    r = edge_home.invoke("ota", "publish", str(image), str(manifest))
    assert r.exit_code == 3 and "no OTA root key" in r.stderr


def published(rel) -> tuple[UpdateStore, object]:
    image, manifest = rel.sign(IMAGE)
    out = rel.publish(image, manifest)
    with Store(rel.home.db) as s:
        release = s.release(out["id"])
    return UpdateStore(rel.home.root / "updates"), release


def test_an_image_read_back_is_checked_and_damage_names_the_release_and_the_fix(rel):
    updates, release = published(rel)
    assert updates.load(release) == IMAGE
    path = updates.path_of(release.digest)
    path.write_bytes(IMAGE[:-1] + b"\x01")
    with pytest.raises(BadInput) as e:
        updates.load(release)
    assert "damaged" in e.value.message and f"release {release.id}" in e.value.message
    assert "edge ota publish" in e.value.hint
    path.write_bytes(IMAGE[:100])
    with pytest.raises(BadInput, match="damaged"):
        updates.load(release)
    path.unlink()
    with pytest.raises(NotFound) as e:
        updates.load(release)
    assert "missing" in e.value.message and "edge ota publish" in e.value.hint


def test_an_update_store_that_is_a_file_is_named_by_serving_and_by_publish(rel):
    updates, release = published(rel)
    folder = updates.root
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.write_bytes(b"not a folder")
    with pytest.raises(BadInput, match="not a folder"):
        updates.load(release)
    image, manifest = rel.sign(IMAGE, sequence=9, name="nine")
    err = rel.refused(image, manifest)
    assert "not a folder" in err["error"]
