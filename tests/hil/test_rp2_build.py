"""The emulated Pico's firmware build (`edge emulator build`, edge_hil.emulated.build):
its cache key, its UF2, reuse of a cached build, and the .mpy check `edge flash` makes.

The cold build itself (network, ~1 GB of packages, 1-2 minutes) is the
one test marked `emulated` (`make test-emulated`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.boards import load_board
from edge_agent.errors import DeviceError
from edge_agent.flash import Builds, Target, check_micropython, mpy_header
from edge_hil.emulated import build as rp2
from edge_hil.emulated import debian
from edge_hil.virtual.uf2_drive import FLASH_BASE, RP2040_FAMILY, Uf2Error, parse_uf2, to_uf2
from tests.harness import edge, invoke
from tests.hil.rp2_cache import SOURCES, fake_build


# -- the cache key ------------------------------------------------------------------

def test_the_cache_key_changes_with_every_source_version_the_board_the_manifest_and_the_flags(tmp_path):
    base = rp2.cache_key(SOURCES, rp2.BuildSpec())
    assert base == rp2.cache_key(dict(reversed(list(SOURCES.items()))), rp2.BuildSpec())
    others = set()
    for name in SOURCES:
        others.add(rp2.cache_key({**SOURCES, name: SOURCES[name] + "+b1"}, rp2.BuildSpec()))
    manifest = tmp_path / "manifest.py"
    manifest.write_text(rp2.MANIFEST.read_text() + 'require("neopixel")\n')
    others.add(rp2.cache_key(SOURCES, rp2.BuildSpec(manifest=manifest)))
    others.add(rp2.cache_key(SOURCES, rp2.BuildSpec(board="RPI_PICO2")))
    others.add(rp2.cache_key(SOURCES, rp2.BuildSpec(flags=rp2.FLAGS + ("-DCMAKE_BUILD_TYPE=Debug",))))
    assert len(others) == len(SOURCES) + 3 and base not in others


def test_the_manifest_is_read_by_content_not_by_path(tmp_path):
    copy = tmp_path / "copy.py"
    copy.write_bytes(rp2.MANIFEST.read_bytes())
    assert rp2.cache_key(SOURCES, rp2.BuildSpec(manifest=copy)) == rp2.cache_key(SOURCES, rp2.BuildSpec())


def test_our_manifest_freezes_nothing_from_micropython_lib():
    calls = [line for line in rp2.MANIFEST.read_text().splitlines() if line and not line.startswith("#")]
    assert calls == ['freeze("$(PORT_DIR)/modules")', 'include("$(MPY_DIR)/extmod/asyncio")']


# -- the UF2 writer -------------------------------------------------------------------------

def blocks(uf2: bytes) -> list[tuple[int, ...]]:
    return [struct.unpack_from("<8I", uf2, k) + struct.unpack_from("<I", uf2, k + 508)
            for k in range(0, len(uf2), 512)]


def test_a_uf2_reads_back_as_the_image_in_numbered_256_byte_blocks_from_the_flash_base():
    image = os.urandom(1000)
    uf2 = to_uf2(image)
    assert len(uf2) == 4 * 512
    got = blocks(uf2)
    assert [b[5] for b in got] == [0, 1, 2, 3] and {b[6] for b in got} == {4}
    assert [b[3] for b in got] == [FLASH_BASE + 256 * k for k in range(4)]
    assert {(b[0], b[1], b[8]) for b in got} == {(0x0A324655, 0x9E5D5157, 0x0AB16F30)}
    assert {(b[2], b[4], b[7]) for b in got} == {(0x2000, 256, 0xE48BFF56)}
    assert RP2040_FAMILY == 0xE48BFF56
    parts = parse_uf2(uf2, 2 * 1024 * 1024)
    assert [off for off, _ in parts] == [0, 256, 512, 768]
    data = b"".join(p for _, p in parts)
    assert data == image + b"\xff" * 24          # the last block padded as erased flash


def test_an_image_of_whole_blocks_gets_no_padding_and_an_empty_one_is_refused():
    image = bytes(range(256)) * 3
    assert b"".join(p for _, p in parse_uf2(to_uf2(image), 4096)) == image
    with pytest.raises(Uf2Error, match="empty"):
        to_uf2(b"")


# -- a cached build ------------------------------------------------------------------------

@pytest.fixture
def no_commands(monkeypatch):
    """Any command the build would run (apt, make, cmake, gcc) fails the test."""
    def refuse(*args, **kw):
        raise AssertionError(f"the build ran a command: {args[0] if args else kw}")
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)


def test_a_cached_build_is_reused_without_apt_or_the_toolchain(tmp_path, no_commands):
    folder = fake_build(tmp_path)
    fw = rp2.build(root=tmp_path)
    assert fw.cached and fw.path == folder and fw.bin == folder / "firmware.bin"
    assert fw.mpy == (6, 3, 4) and fw.micropython == "1.25.0"
    assert rp2.cached_firmware(root=tmp_path).path == folder


def test_the_newest_of_several_builds_for_the_spec_is_reused(tmp_path, no_commands):
    fake_build(tmp_path, built_at="2026-11-01T00:00:00Z")
    newer = fake_build(tmp_path, sources={**SOURCES, "mbedtls": "3.6.7-1"}, built_at="2026-11-30T00:00:00Z")
    assert rp2.build(root=tmp_path).path == newer


def test_a_build_for_another_manifest_or_a_partial_folder_is_not_reused(tmp_path):
    manifest = tmp_path / "other.py"
    manifest.write_text("freeze('x')\n")
    fake_build(tmp_path / "a", rp2.BuildSpec(manifest=manifest))
    assert rp2.find_cached(rp2.BuildSpec(), tmp_path / "a") is None
    partial = fake_build(tmp_path / "b")
    (partial / "firmware.uf2").unlink()
    assert rp2.find_cached(rp2.BuildSpec(), tmp_path / "b") is None
    moved = fake_build(tmp_path / "c")
    moved.rename(moved.with_name("0123456789abcdef"))     # a folder whose name is not its key
    assert rp2.find_cached(rp2.BuildSpec(), tmp_path / "c") is None


def test_without_a_cached_build_the_firmware_lookup_says_how_to_build_it(tmp_path):
    with pytest.raises(rp2.EdgeError) as e:
        rp2.cached_firmware(root=tmp_path)
    assert "no MicroPython rp2 firmware for RPI_PICO" in e.value.message
    assert "edge emulator build" in (e.value.hint or "")


def test_edge_emulator_build_prints_cached_and_where_the_files_are(tmp_path, no_commands):
    folder = fake_build(tmp_path / "edge-agent" / "rp2")
    result = invoke("emulator", "build", env={"XDG_CACHE_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "RPI_PICO: MicroPython 1.25.0 (.mpy 6.3 armv6m), cached" in result.output
    assert str(folder / "firmware.uf2") in result.output
    assert "RPI_PICO_W" in result.output and "firmware/manifest.py" in result.output
    out = json.loads(invoke("emulator", "build", "--json", env={"XDG_CACHE_HOME": str(tmp_path)}).output)
    assert out["cached"] is True and out["firmware_bin"] == str(folder / "firmware.bin")
    assert out["sources"] == SOURCES and out["mpy"]["sys_mpy"] == 4870


# -- the .mpy check of `edge flash` -------------------------------------------------------

class Repl:
    """A board's raw REPL as `edge flash`'s check sees it: what its probe prints."""

    def __init__(self, sys_mpy: int, release: str = "1.25.0"):
        self.answer = f"micropython\n{sys_mpy}\n{release}\n"

    def exec(self, code: str) -> str:
        return self.answer


def fake_mpy_cross(tmp_path: Path, version: int) -> str:
    """An mpy-cross that writes .mpy headers of another version (and no code)."""
    exe = tmp_path / "mpy-cross"
    exe.write_text(f"#!{sys.executable}\n"
                   "import sys\n"
                   "a = sys.argv[1:]\n"
                   f"open(a[a.index('-o') + 1], 'wb').write(bytes([77, {version}, 0, 31]))\n")
    exe.chmod(0o755)
    return str(exe)


def test_flash_compiles_with_the_mpy_cross_it_is_given_and_refuses_a_mismatch_by_name(tmp_path):
    picow = load_board("picow")
    target = Target("pico-1", "/dev/pts/9", "picow")
    firmware_mpy = 6 | 3 << 8 | 4 << 10             # MicroPython 1.25 on the RP2040
    with Builds() as builds:
        # The agent is bytecode: its headers carry the version alone (no
        # sub-version or architecture), and only the version must match.
        ours = builds.bundle(picow, "armv6m")
        assert ours.mpy == (6, 0, 0)
        assert check_micropython(Repl(firmware_mpy), target, ours.mpy) == "1.25.0"
        other = builds.bundle(picow, "armv6m", fake_mpy_cross(tmp_path, 5))
        assert other.mpy == (5, 0, 0)
        assert mpy_header(dict(other.files)["edgefw/agent.mpy"]) == (5, 0, 0)
    with pytest.raises(DeviceError) as e:
        check_micropython(Repl(firmware_mpy), target, other.mpy)
    assert "pico-1 runs MicroPython 1.25.0 that loads .mpy version 6.3" in e.value.message
    assert "this mpy-cross writes version 5" in e.value.message
    assert "mpy-cross" in (e.value.hint or "")


# -- the cold build (network, ~1 GB, minutes) --------------------------------------------

@pytest.mark.emulated
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_cold_build_makes_the_firmware_and_its_mpy_cross_then_a_second_run_reuses_it(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    cold = json.loads(edge("emulator", "build", "--json", env=env, timeout=1800).stdout)
    assert cold["cached"] is False and cold["micropython"].startswith("1.25")
    assert set(cold["sources"]) == {"micropython", "pico-sdk-source", "tinyusb-source", "mbedtls"}
    image = Path(cold["firmware_bin"]).read_bytes()
    assert cold["sha256"]["firmware.bin"] == hashlib.sha256(image).hexdigest()
    picow = load_board("picow")
    assert 200_000 < len(image) <= picow["flash"]["firmware_max"]
    parts = parse_uf2(Path(cold["firmware_uf2"]).read_bytes(), picow["flash"]["size"])
    assert b"".join(p for _, p in parts)[:len(image)] == image
    # The agent compiled by the firmware's own mpy-cross passes `edge flash`'s check.
    with Builds() as builds:
        bundle = builds.bundle(picow, "armv6m", cold["mpy_cross"])
    assert check_micropython(Repl(cold["mpy"]["sys_mpy"], cold["micropython"]),
                             Target("pico-1", "/dev/pts/9", "picow"), bundle.mpy) == cold["micropython"]
    warm = json.loads(edge("emulator", "build", "--json", env=env).stdout)
    assert warm["cached"] is True and warm["key"] == cold["key"]


# -- apt, by package name ------------------------------------------------------------------

class Apt:
    """Stands in for the build's command runner: answers dpkg-query and apt-cache, records the rest."""

    def __init__(self, installed: set[str]):
        self.installed = installed
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, argv, *, cwd=None, env=None, what="", check=True, on_line=None) -> str:
        self.calls.append((argv, dict(env or {})))
        if argv[0] == "dpkg-query":
            return "".join(f"{n} {'ii ' if n in self.installed else 'un '}\n" for n in argv[3:])
        if argv[:2] == ["apt-cache", "showsrc"]:
            return f"Package: {argv[-1]}\nVersion: 1.0-1\n"
        return ""


def test_the_toolchain_install_asks_apt_for_the_missing_packages_only_by_name(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4").touch()
    apt = Apt(installed={"cmake", "build-essential", "python3"})
    assert debian.install_toolchain(apt, lists) == ["gcc-arm-none-eabi", "libnewlib-arm-none-eabi"]
    asked = [argv for argv, _ in apt.calls if "apt-get" in argv]
    assert len(asked) == 1 and asked[0][asked[0].index("apt-get"):] == [
        "apt-get", "install", "-y", "--no-install-recommends", "gcc-arm-none-eabi", "libnewlib-arm-none-eabi"]
    fresh = Apt(installed=set())                    # a container without package lists
    debian.install_toolchain(fresh, tmp_path / "empty")
    assert [argv[argv.index("apt-get") + 1] for argv, _ in fresh.calls if "apt-get" in argv] == ["update", "install"]
    everything = Apt(installed=set(debian.TOOLCHAIN))
    assert debian.install_toolchain(everything, lists) == []
    assert [argv[0] for argv, _ in everything.calls] == ["dpkg-query"]


def test_the_sources_come_through_a_private_apt_configuration_naming_trixie(tmp_path):
    apt = Apt(installed=set())
    src = debian.SourceApt(tmp_path / "apt", apt, private=True)
    assert src.update() is True and src.update() is False      # fetched once, then fresh
    argv, env = apt.calls[0]
    assert argv[:2] == ["apt-get", "update"] and env == {"APT_CONFIG": str(tmp_path / "apt" / "apt.conf")}
    conf = (tmp_path / "apt" / "apt.conf").read_text()
    for setting in ("Dir::Etc::sourcelist", "Dir::Etc::sourceparts", "Dir::Etc::preferencesparts",
                    "Dir::State::lists", "Dir::Cache::archives"):
        paths = re.findall(rf'^{setting} "([^"]+)";', conf, re.M)
        assert paths and Path(paths[0]).is_relative_to(tmp_path), setting
    lines = (tmp_path / "apt" / "sources.list").read_text().splitlines()
    assert [ln.split()[0] for ln in lines] == ["deb", "deb-src"] and all(" trixie main" in ln for ln in lines)
    assert src.version(debian.SOURCES[0]) == "1.0-1"
    assert all(env == {"APT_CONFIG": str(tmp_path / "apt" / "apt.conf")} for _, env in apt.calls)
