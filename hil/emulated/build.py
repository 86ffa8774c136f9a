"""The MicroPython rp2 firmware of the emulated Pico, built from Debian's packages and cached.

``build()`` makes, for a board of MicroPython's rp2 port (``RPI_PICO``):
``firmware.bin`` (the flash image from 0x10000000), ``firmware.uf2`` (the
same for a BOOTSEL drive), ``firmware.elf`` (symbols, kept when small),
``mpy-cross`` (the compiler of the same MicroPython release, for ``edge
flash``) and ``build.json`` (what went in, what came out). docs/emulated.md
tells the whole story; in short:

1. the toolchain is installed from the machine's distribution and the
   sources fetched from Debian 13, by package name (:mod:`.debian`);
2. the Debian Pico SDK, TinyUSB and Mbed TLS are linked into MicroPython's
   empty ``lib/`` folders (git submodules upstream), ``mpy-cross`` is built,
   then the port with our freeze manifest (``rp2_manifest.py``: no
   micropython-lib, which Debian does not package) and without picotool
   (``-DPICO_NO_PICOTOOL=1``: it is not packaged either and would be
   downloaded); the UF2 is written here (:func:`edge_hil.virtual.uf2_drive.to_uf2`);
3. the results go to ``${XDG_CACHE_HOME:-~/.cache}/edge-agent/rp2/<key>/``,
   ``key`` a hash of the source package versions, our manifest and the build
   flags (:func:`cache_key`).

Rules it keeps: a build folder appears in the cache whole or not at all
(made under a temporary name, then renamed); a cached build is found
without apt, the network or the toolchain (:func:`find_cached`), so a cache
restored on a fresh machine is used as it is; nothing is written into the
repository.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edge_agent.errors import EdgeError, NotFound
from edge_hil.emulated import debian
from edge_hil.virtual.uf2_drive import FLASH_BASE, RP2040_FAMILY, parse_uf2, to_uf2

# Bump when the build recipe changes in a way that changes the image: it is
# part of every cache key, so old builds are no longer reused.
RECIPE = 2
FORMAT = 1                      # of build.json
DEFAULT_BOARD = "RPI_PICO"
MANIFEST = Path(__file__).with_name("rp2_manifest.py")
# Fixed cmake flags (the paths added at build time do not change the image).
FLAGS = ("-DPICO_NO_PICOTOOL=1", "-DPICO_BUILD_DOCS=0")
# The SDK's C++ operator new/delete (pico_cxx_options) include libstdc++'s
# headers, which come with the 1.5 GB libstdc++-arm-none-eabi-newlib; the
# firmware is C and never calls them, so they are left out. Given as
# CXXFLAGS, which CMake adds to the SDK toolchain's own C++ flags.
CXXFLAGS = "-DPICO_CXX_DISABLE_ALLOCATION_OVERRIDES=1"
ELF_KEEP_MAX = 16 * 1024 * 1024
FLASH_SIZE = 2 * 1024 * 1024    # the Pico's QSPI flash; the UF2 must fit it
RP2_ARCH = "armv6m"             # the RP2040's Cortex-M0+: mpy-cross -march
_ARCH_CODES = {"armv6m": 4}     # MicroPython's MP_NATIVE_ARCH_ARMV6M

FILES = ("firmware.bin", "firmware.uf2", "mpy-cross")

# (step, done, total): total None while a step cannot tell how far it is.
Progress = Callable[[str, float, "float | None"], None]
STEPS = {
    "toolchain": "toolchain (apt)",
    "lists": "Debian lists",
    "sources": "sources",
    "mpy-cross": "mpy-cross",
    "firmware": "rp2 firmware",
    "image": "UF2 + cache",
}


class BuildError(EdgeError):
    """The firmware build failed; the message names the step, the hint the log."""


def _no_progress(step: str, done: float, total: float | None) -> None:
    pass


def cache_root() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/edge-agent/rp2``: every rp2 build, the
    downloaded packages and the private apt state."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edge-agent" / "rp2"


@dataclass(frozen=True)
class BuildSpec:
    """What we choose about a build (the sources are what Debian has)."""

    board: str = DEFAULT_BOARD
    manifest: Path = MANIFEST
    flags: tuple[str, ...] = FLAGS
    cxxflags: str = CXXFLAGS

    def identity(self) -> dict[str, Any]:
        """What of the spec goes into the cache key (the manifest by content)."""
        try:
            text = self.manifest.read_bytes()
        except OSError as e:
            raise NotFound(f"the freeze manifest {self.manifest} cannot be read: {e.strerror}",
                           "restore it from the repository (git checkout hil/emulated/rp2_manifest.py)")
        return {"board": self.board, "manifest_sha256": hashlib.sha256(text).hexdigest(),
                "flags": list(self.flags), "cxxflags": self.cxxflags, "recipe": RECIPE}


def cache_key(sources: Mapping[str, str], spec: BuildSpec) -> str:
    """The build's folder name: a hash of the source package versions, our
    manifest and the build flags (and :data:`RECIPE`)."""
    doc = {"sources": dict(sorted(sources.items())), **spec.identity()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Firmware:
    """One build in the cache."""

    path: Path
    info: dict[str, Any]
    cached: bool = True

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def bin(self) -> Path:
        return self.path / "firmware.bin"

    @property
    def uf2(self) -> Path:
        return self.path / "firmware.uf2"

    @property
    def elf(self) -> Path | None:
        p = self.path / "firmware.elf"
        return p if p.exists() else None

    @property
    def mpy_cross(self) -> Path:
        return self.path / "mpy-cross"

    @property
    def micropython(self) -> str:
        """The MicroPython release the firmware is (``1.25.0``)."""
        return str(self.info["micropython"])

    @property
    def mpy(self) -> tuple[int, int, int]:
        """The ``.mpy`` (version, sub-version, arch code) the firmware loads,
        as :func:`edge_agent.flash.mpy_header` reads a file's."""
        m = self.info["mpy"]
        return int(m["version"]), int(m["sub"]), int(m["arch_code"])

    def as_dict(self) -> dict[str, Any]:
        return {"board": self.info["board"], "key": self.key, "cached": self.cached,
                "folder": str(self.path), "firmware_bin": str(self.bin), "firmware_uf2": str(self.uf2),
                "firmware_elf": str(self.elf) if self.elf else None, "mpy_cross": str(self.mpy_cross),
                "micropython": self.micropython, "mpy": self.info["mpy"],
                "sources": self.info["sources"], "toolchain": self.info.get("toolchain", {}),
                "sizes": self.info["sizes"], "sha256": self.info.get("sha256", {}),
                "seconds": self.info["seconds"]}


def _load(folder: Path, spec: BuildSpec | None = None) -> Firmware | None:
    """The build in ``folder`` when it is whole (and made for ``spec``), else None."""
    try:
        info = json.loads((folder / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return None
    if any(not (folder / f).is_file() for f in FILES):
        return None
    if spec is not None:
        if info.get("spec") != spec.identity() or cache_key(info.get("sources", {}), spec) != folder.name:
            return None
    return Firmware(folder, info)


def find_cached(spec: BuildSpec = BuildSpec(), root: Path | None = None) -> Firmware | None:
    """The newest whole build in the cache made for ``spec``, found without
    apt or the network; None when there is none."""
    root = cache_root() if root is None else root
    try:
        folders = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{16}", p.name)]
    except OSError:
        return None
    found = [fw for fw in (_load(p, spec) for p in folders) if fw is not None]
    return max(found, key=lambda fw: str(fw.info.get("built_at", ""))) if found else None


def cached_firmware(board: str = DEFAULT_BOARD, root: Path | None = None) -> Firmware:
    """The cached build for ``board`` (our manifest and flags), or NotFound
    saying how to make it: for the runner and ``edge flash``."""
    fw = find_cached(BuildSpec(board=board), root)
    if fw is None:
        raise NotFound(f"no MicroPython rp2 firmware for {board} in {cache_root() if root is None else root}",
                       f"build it once: edge emulator build --board {board} (1-2 minutes and about 1 GB "
                       "of packages the first time)")
    return fw


# -- running the build's commands ---------------------------------------------------

class _Commands:
    """Runs the build's commands with their output in one log file; a
    failure becomes a :class:`BuildError` with the command's last lines."""

    def __init__(self, log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(log, "w", encoding="utf-8")

    def close(self) -> None:
        self._f.close()

    def __call__(self, argv: list[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None,
                 what: str = "", check: bool = True, on_line: Callable[[str], None] | None = None) -> str:
        self._f.write(f"\n$ {' '.join(argv)}\n")
        self._f.flush()
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace")
        except FileNotFoundError:
            raise BuildError(f"cannot {what or 'run ' + argv[0]}: {argv[0]} is not installed",
                             "this build needs a Debian (or Debian-based) machine with apt; see docs/emulated.md")
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            self._f.write(line)
            lines.append(line)
            if on_line is not None:
                on_line(line)
        rc = proc.wait()
        self._f.flush()
        if check and rc != 0:
            tail = "".join(lines[-12:]).rstrip()
            raise BuildError(f"could not {what or 'run ' + argv[0]} (`{' '.join(argv[:3])} ...` exited "
                             f"with {rc}):\n{tail}",
                             f"the whole output is in {self.log}; fix what it names and run "
                             "`edge emulator build` again (downloads are kept)")
        return "".join(lines)


# -- the build ---------------------------------------------------------------------------

@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.monotonic)

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = round(self.seconds.get(step, 0.0) + now - self._t, 2)
        self._t = now


def build(spec: BuildSpec = BuildSpec(), *, force: bool = False, root: Path | None = None,
          progress: Progress = _no_progress, jobs: int | None = None,
          keep_work: bool = False) -> Firmware:
    """The firmware for ``spec``: from the cache when there (``cached``
    True), else built (see the module's docstring). ``force`` fetches the
    package lists again and rebuilds even when a build is cached."""
    root = cache_root() if root is None else root
    if not force:
        hit = find_cached(spec, root)
        if hit is not None:
            return hit
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        # One cold build at a time per cache: a second waits, then finds
        # the first one's result.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            hit = find_cached(spec, root)
            if hit is not None:
                return hit
        return _cold(spec, root, force, progress, jobs or os.cpu_count() or 1, keep_work)


def _cold(spec: BuildSpec, root: Path, force: bool, progress: Progress, jobs: int,
          keep_work: bool) -> Firmware:
    # Under the lock, one build per board at a time: a failed build's tree
    # and log stay for a look until the next build of that board.
    work = root / "work" / spec.board
    run = _Commands(root / "work" / f"{spec.board}.log")
    try:
        fw = _steps(spec, root, force, progress, jobs, work, run)
    finally:
        run.close()
    if fw.cached:
        run.log.unlink(missing_ok=True)
    else:
        shutil.move(str(run.log), str(fw.path / "build.log"))
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return fw


def _steps(spec: BuildSpec, root: Path, force: bool, progress: Progress, jobs: int, work: Path,
           run: "_Commands") -> Firmware:
    started = time.monotonic()
    timer = _Timer()
    progress("toolchain", 0, 1)
    installed = debian.install_toolchain(run)
    toolchain = _toolchain_versions(run)
    progress("toolchain", 1, 1)
    timer.lap("toolchain")

    progress("lists", 0, 1)
    apt = debian.SourceApt.for_machine(root / "apt", run)
    apt.update(force=force)
    versions = apt.resolve()
    progress("lists", 1, 1)
    timer.lap("lists")
    key = cache_key(versions, spec)
    if not force:
        hit = _load(root / key, spec)
        if hit is not None:
            return hit

    if work.exists():
        shutil.rmtree(work)
    mp = _sources(apt, versions, root / "downloads", work, run, progress)
    _check_board(mp, spec.board)
    timer.lap("sources")

    env = _reproducible_env(mp, run)
    cross = _build_mpy_cross(mp, run, jobs, progress, env)
    timer.lap("mpy-cross")
    out = _build_port(mp, work, spec, cross, run, jobs, progress, env)
    timer.lap("firmware")

    progress("image", 0, 1)
    fw = _publish(root, key, spec, out, cross, versions, toolchain, installed,
                  apt.private, timer, started, run)
    progress("image", 1, 1)
    return fw


def _toolchain_versions(run: debian.Run) -> dict[str, str]:
    out = run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "gcc-arm-none-eabi",
               "libnewlib-arm-none-eabi", "cmake"], what="ask dpkg for the toolchain's versions", check=False)
    versions: dict[str, str] = {}
    for line in out.splitlines():
        name, _, version = line.partition(" ")
        if version and not name.endswith(":"):      # not dpkg-query's own complaints
            versions[name] = version
    return versions


def _sources(apt: debian.SourceApt, versions: Mapping[str, str], downloads: Path, work: Path,
             run: debian.Run, progress: Progress) -> Path:
    """Download and unpack the sources into ``work``; return MicroPython's tree
    with the Pico SDK, TinyUSB and Mbed TLS linked into its ``lib/``."""
    pkgs = {p.name: p for p in debian.SOURCES}
    total = 2 * len(pkgs)
    files = {}
    for i, p in enumerate(debian.SOURCES):
        files[p.name] = apt.download(p, versions[p.name], downloads)
        progress("sources", i + 1, total)
    mp = debian.unpack(pkgs["micropython"], files["micropython"], work / "micropython", run)
    progress("sources", len(pkgs) + 1, total)
    mbedtls = debian.unpack(pkgs["mbedtls"], files["mbedtls"], work / "mbedtls", run)
    progress("sources", len(pkgs) + 2, total)
    # Both .debs into one tree: the SDK's lib/tinyusb is a relative link to
    # ../../tinyusb, as installed under /usr/src.
    pkgroot = work / "debs"
    for i, name in enumerate(("pico-sdk-source", "tinyusb-source")):
        debian.unpack(pkgs[name], files[name], pkgroot, run)
        progress("sources", len(pkgs) + 3 + i, total)
    links = {"pico-sdk": pkgroot / "usr/src/pico-sdk", "tinyusb": pkgroot / "usr/src/tinyusb",
             "mbedtls": mbedtls}
    for name, target in links.items():
        if not (target / "CMakeLists.txt").exists() and not (target / "src").is_dir():
            raise BuildError(f"the unpacked {name} in {target} is not the source tree the build expects",
                             "Debian may have moved its files: run `edge emulator build --force`, "
                             "and report it if it persists")
        lib = mp / "lib" / name
        if lib.is_symlink() or lib.is_file():
            lib.unlink()
        elif lib.is_dir():
            if any(lib.iterdir()):
                raise BuildError(f"{lib} is not empty: this MicroPython source ships its own {name}",
                                 "the recipe expects Debian's '+ds' source with empty submodules")
            lib.rmdir()
        lib.symlink_to(target)
    return mp


def _check_board(mp: Path, board: str) -> None:
    boards = mp / "ports" / "rp2" / "boards"
    folder = boards / board
    if not folder.is_dir():
        names = sorted(p.name for p in boards.iterdir() if p.is_dir())
        raise NotFound(f"MicroPython's rp2 port has no board {board}", f"pick one of: {', '.join(names)}")
    cfg = (folder / "mpconfigboard.cmake").read_text(errors="replace")
    if "CYW43" in cfg or "NETWORK" in cfg:
        raise BuildError(f"{board} needs the CYW43 Wi-Fi/Bluetooth driver, lwIP and BTstack, "
                         "which Debian does not package",
                         "build it from a MicroPython git checkout (see `edge emulator build`'s closing "
                         "note and docs/firmware-build.md); the emulator has no CYW43 anyway")


def _reproducible_env(mp: Path, run: debian.Run) -> dict[str, str]:
    """The environment that makes the same sources give the same image
    whatever the day or the build folder: the build date is the Debian
    package's (``SOURCE_DATE_EPOCH``, read by GCC's ``__DATE__`` and
    MicroPython's version header), and Python's string hashing, which
    orders the generated tables, is fixed."""
    stamp = run(["dpkg-parsechangelog", "-l", str(mp / "debian" / "changelog"), "-S", "Timestamp"],
                what="read the date of MicroPython's Debian changelog").strip()
    return {"SOURCE_DATE_EPOCH": stamp, "PYTHONHASHSEED": "0"}


def _build_mpy_cross(mp: Path, run: debian.Run, jobs: int, progress: Progress, env: Mapping[str, str]) -> Path:
    """MicroPython's own ``mpy-cross`` (the one the port freezes with, and the
    one ``edge flash`` compiles the agent with for this firmware)."""
    total = len(list((mp / "py").glob("*.c"))) + len(list((mp / "mpy-cross").glob("*.c")))
    done = [0]

    def count(line: str) -> None:
        if line.startswith("CC "):
            done[0] += 1
            progress("mpy-cross", min(done[0], total), total)

    progress("mpy-cross", 0, total)
    run(["make", "-C", str(mp / "mpy-cross"), f"-j{jobs}"], env=env, what="build mpy-cross",
        on_line=count)
    exe = mp / "mpy-cross" / "build" / "mpy-cross"
    if not exe.is_file():
        raise BuildError(f"the mpy-cross build made no {exe}", f"see the build log under {mp.parent.parent}")
    progress("mpy-cross", total, total)
    return exe


def _stdcxx_stub(work: Path, run: debian.Run) -> Path | None:
    """A folder with an empty ``libstdc++.a`` when the cross toolchain has none.

    Debian's ``libstdc++-arm-none-eabi-newlib`` (1.5 GB) is the real one; the
    firmware is C, and the SDK's C++ runtime hooks pull nothing from it, so
    an empty archive satisfies the link's ``-lstdc++``."""
    found = run(["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-print-file-name=libstdc++.a"],
                what="ask the cross compiler for libstdc++.a").strip()
    if os.path.isabs(found) and os.path.exists(found):
        return None
    stub = work / "stdcxx-stub"
    stub.mkdir(parents=True, exist_ok=True)
    (stub / "libstdc++.a").write_bytes(b"!<arch>\n")     # an ar archive with no members
    return stub


def _build_port(mp: Path, work: Path, spec: BuildSpec, cross: Path, run: debian.Run, jobs: int,
                progress: Progress, base_env: Mapping[str, str]) -> Path:
    """Configure and build the rp2 port; return its build folder."""
    out = work / f"build-{spec.board}"
    # makemanifest.py insists on a micropython-lib checkout even when the
    # manifest requires nothing from it: an empty one of ours says so.
    nolib = work / "no-micropython-lib"
    nolib.mkdir(parents=True, exist_ok=True)
    (nolib / "README.md").write_text("Empty: the emulated Pico's manifest freezes nothing from micropython-lib.\n")
    args = ["cmake", "-S", str(mp / "ports" / "rp2"), "-B", str(out),
            f"-DMICROPY_BOARD={spec.board}", f"-DMICROPY_FROZEN_MANIFEST={spec.manifest}",
            f"-DMICROPY_LIB_DIR={nolib}", *spec.flags]
    stub = _stdcxx_stub(work, run)
    if stub is not None:
        args.append(f"-DCMAKE_EXE_LINKER_FLAGS=-L{stub}")
    env = {**base_env, "MICROPY_MPYCROSS": str(cross), "CXXFLAGS": spec.cxxflags}
    progress("firmware", 0, 100)
    run(args, env=env, what=f"configure the rp2 port for {spec.board} (cmake)")

    def percent(line: str) -> None:
        m = re.match(r"\[\s*(\d+)%\]", line)
        if m:
            progress("firmware", int(m.group(1)), 100)

    run(["cmake", "--build", str(out), "-j", str(jobs)], env=env, what=f"build the rp2 port for {spec.board}",
        on_line=percent)
    if not (out / "firmware.bin").is_file():
        raise BuildError(f"the rp2 build made no {out / 'firmware.bin'}", "see the build log")
    progress("firmware", 100, 100)
    return out


def _mpy_of(cross: Path, tmp: Path, run: debian.Run) -> tuple[str, dict[str, Any]]:
    """The MicroPython release and the ``.mpy`` the firmware loads, as its
    own mpy-cross says (``--version``, and the header of a file it writes
    for the RP2040: with native code, as only then does a header carry the
    sub-version and architecture)."""
    text = run([str(cross), "--version"], what="ask mpy-cross its version")
    m = re.search(r"MicroPython v(\d+\.\d+\.\d+)", text)
    if m is None:
        raise BuildError(f"mpy-cross --version said {text.strip()!r}, not a MicroPython version",
                         "see the build log")
    src = tmp / "probe.py"
    src.write_text("@micropython.native\ndef f():\n    return 1\n")
    run([str(cross), f"-march={RP2_ARCH}", "-o", str(tmp / "probe.mpy"), str(src)],
        what="compile a probe with mpy-cross")
    head = (tmp / "probe.mpy").read_bytes()[:4]
    version, sub, arch = head[1], head[2] & 3, head[2] >> 2
    if arch != _ARCH_CODES[RP2_ARCH]:
        raise BuildError(f"mpy-cross wrote arch code {arch} for {RP2_ARCH}, not {_ARCH_CODES[RP2_ARCH]}",
                         "see the build log")
    return m.group(1), {"version": version, "sub": sub, "arch": RP2_ARCH, "arch_code": arch,
                        # what the firmware's sys.implementation._mpy says
                        "sys_mpy": version | sub << 8 | arch << 10}


def _publish(root: Path, key: str, spec: BuildSpec, out: Path, cross: Path, versions: Mapping[str, str],
             toolchain: Mapping[str, str], installed: list[str], private: bool, timer: _Timer,
             started: float, run: debian.Run) -> Firmware:
    """Write the build into ``root/key`` whole: made under a temporary name, then renamed."""
    tmp = root / f".{key}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    image = (out / "firmware.bin").read_bytes()
    uf2 = to_uf2(image, FLASH_BASE, RP2040_FAMILY)
    if b"".join(p for _, p in parse_uf2(uf2, FLASH_SIZE))[:len(image)] != image:
        raise BuildError("the UF2 written does not read back as firmware.bin", "report this as a bug")
    (tmp / "firmware.bin").write_bytes(image)
    (tmp / "firmware.uf2").write_bytes(uf2)
    elf = out / "firmware.elf"
    if elf.is_file() and elf.stat().st_size <= ELF_KEEP_MAX:
        shutil.copy(elf, tmp / "firmware.elf")
    shutil.copy(cross, tmp / "mpy-cross")
    os.chmod(tmp / "mpy-cross", 0o755)
    micropython, mpy = _mpy_of(tmp / "mpy-cross", out, run)
    timer.lap("image")
    made = [f for f in sorted(tmp.iterdir()) if f.is_file()]
    sizes = {f.name: f.stat().st_size for f in made}
    # The same sources give the same image, byte for byte, in any folder on
    # any day (_reproducible_env): the digests let two builds be compared.
    digests = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in made}
    info = {
        "format": FORMAT, "key": key, "board": spec.board, "spec": spec.identity(),
        "sources": dict(versions), "apt": f"private ({debian.SUITE})" if private else "the machine's",
        "toolchain": dict(toolchain), "installed": list(installed),
        "micropython": micropython, "mpy": mpy, "sizes": sizes, "sha256": digests,
        "seconds": {**timer.seconds, "total": round(time.monotonic() - started, 2)},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    final = root / key
    if final.exists():
        old = root / f".{key}.{os.getpid()}.old"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    return Firmware(final, info, cached=False)


def pico_w_note(fw: Firmware | None = None) -> str:
    """How to build the same image for a real Pico W with the agent frozen in."""
    from edge_agent.paths import FIRMWARE_DIR

    version = fw.micropython if fw is not None else "1.25.0"
    return (f"For a real Pico W, build MicroPython {version} the same way but for RPI_PICO_W and with the\n"
            "agent frozen in. Debian lacks the Pico W's CYW43 driver, lwIP, BTstack and micropython-lib,\n"
            "so use a git checkout (docs/firmware-build.md):\n"
            f"  git clone --branch v{version} https://github.com/micropython/micropython && cd micropython\n"
            "  make -C mpy-cross\n"
            "  make -C ports/rp2 BOARD=RPI_PICO_W submodules\n"
            f"  make -C ports/rp2 BOARD=RPI_PICO_W FROZEN_MANIFEST={FIRMWARE_DIR / 'manifest.py'}\n"
            "  edge flash --board picow --port /dev/ttyACM0 --firmware ports/rp2/build-RPI_PICO_W/firmware.uf2")
