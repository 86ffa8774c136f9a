"""A release engineer's bench for the OTA host tests: a fresh EDGE_HOME with a
signing key listed by the root, and images signed with `edge ota sign`."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Home


class Releases:
    """Signs and publishes images in ``home`` (in process, through `edge`)."""

    def __init__(self, home: Home, folder: Path):
        self.home = home
        self.folder = folder
        r = home.invoke("ota", "keygen")
        assert r.exit_code == 0, r.output

    def sign(self, image: bytes, *, board: str = "esp32", component: str = "agent", version: str = "1.3.0",
             sequence: int = 7, expires: str = "90d", name: str | None = None) -> tuple[Path, Path]:
        """(image file, manifest file) of ``image`` signed by the listed key."""
        name = name or f"{board}-{component}-{sequence}"
        path, manifest = self.folder / f"{name}.bin", self.folder / f"{name}.manifest"
        path.write_bytes(image)
        r = self.home.invoke("ota", "sign", str(path), "--board", board, "--component", component,
                             "--version", version, "--sequence", str(sequence), "--expires", expires,
                             "-o", str(manifest))
        assert r.exit_code == 0, r.output
        return path, manifest

    def publish(self, image: Path, manifest: Path, *args: str) -> dict:
        r = self.home.invoke("ota", "publish", str(image), str(manifest), *args, "--json")
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def refused(self, image: Path, manifest: Path) -> dict:
        """The JSON error of a publish that must fail with exit 5."""
        r = self.home.invoke("ota", "publish", str(image), str(manifest), "--json")
        assert r.exit_code == 5, r.output
        assert r.stdout == ""
        return json.loads(r.stderr)
