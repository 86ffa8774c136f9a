"""The Debian packages the rp2 firmware build needs, got by name through apt.

Two sets (docs/emulated.md):

* the toolchain, installed on the machine from its own distribution
  (bookworm has them): :data:`TOOLCHAIN`;
* the sources, from Debian 13 (trixie), where MicroPython 1.25, the Pico SDK
  and TinyUSB are packaged: :data:`SOURCES`. They are only downloaded and
  unpacked into the build's cache folder, never installed into the system.

On a machine that is not on trixie the sources come through a private apt
configuration (``APT_CONFIG``) whose sources list names trixie, with its own
lists and download cache under the build cache: the system's apt
configuration and package state are untouched. A machine on trixie uses its
own apt when it has the source lists (``deb-src``), else the same private
configuration.

Every command goes through a ``run`` callable (``run(argv, env=...) ->
stdout``) so the build logs it and tests can stand in for apt.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

from edge_agent.errors import EdgeError

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
LISTS_MAX_AGE_S = 24 * 3600     # private lists older than this are refreshed before a cold build

# The cross compiler and its C library, cmake and make for the build, the
# host compiler for mpy-cross, dpkg-source (in build-essential's dpkg-dev)
# to unpack the source packages, python3 for MicroPython's build scripts.
TOOLCHAIN = ("gcc-arm-none-eabi", "libnewlib-arm-none-eabi", "cmake", "build-essential", "python3")


@dataclass(frozen=True)
class Package:
    """One source of the build: a Debian source package (``source``: unpacked
    with dpkg-source) or a binary ``.deb`` that ships source (``binary``:
    unpacked with dpkg-deb)."""

    name: str
    kind: str           # "source" or "binary"
    role: str           # what the build uses it for (docs, build.json)


SOURCES = (
    Package("micropython", "source", "MicroPython: ports/rp2, mpy-cross, littlefs, oofatfs, libm"),
    Package("pico-sdk-source", "binary", "Raspberry Pi Pico SDK (lib/pico-sdk)"),
    Package("tinyusb-source", "binary", "TinyUSB, the USB device stack (lib/tinyusb)"),
    Package("mbedtls", "source", "Mbed TLS (lib/mbedtls)"),
)


class Run(Protocol):
    def __call__(self, argv: list[str], *, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None, what: str = "", check: bool = True,
                 on_line: Callable[[str], None] | None = None) -> str: ...


class AptError(EdgeError):
    """apt could not give the build a package it needs."""


def os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    """The machine's ``/etc/os-release`` as a dict (empty when it has none)."""
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip().strip('"')
    return out


def on_suite(release: Mapping[str, str] | None = None) -> bool:
    """Whether this machine runs Debian :data:`SUITE` itself."""
    r = os_release() if release is None else release
    return r.get("ID") == "debian" and r.get("VERSION_CODENAME") == SUITE


# -- the toolchain, installed on the machine -------------------------------------

def missing_packages(names: tuple[str, ...], run: Run) -> list[str]:
    """Which of ``names`` dpkg does not hold as installed."""
    out = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n", *names],
              what="ask dpkg which packages are installed", check=False)
    ok = {line.split()[0] for line in out.splitlines() if len(line.split()) > 1 and line.split()[1] == "ii"}
    return [n for n in names if n not in ok]


def install_toolchain(run: Run, lists: Path = Path("/var/lib/apt/lists")) -> list[str]:
    """Install the :data:`TOOLCHAIN` packages that are missing (the
    machine's package ``lists`` fetched first when it has none); return
    their names."""
    missing = missing_packages(TOOLCHAIN, run)
    if not missing:
        return []
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise AptError(f"the firmware build needs {', '.join(missing)}, and installing them needs root",
                           f"run: sudo apt-get install --no-install-recommends {' '.join(missing)}")
        sudo = ["sudo", "-n"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if not any(lists.glob("*_Packages*")):
        # A fresh container ships without package lists.
        run([*sudo, "apt-get", "update"], env=env, what="fetch the machine's package lists")
    run([*sudo, "apt-get", "install", "-y", "--no-install-recommends", *missing], env=env,
        what=f"install {', '.join(missing)}")
    return missing


# -- the sources, downloaded and unpacked -----------------------------------------

class SourceApt:
    """apt as the sources come through it: private (``root`` holds its
    configuration, lists and downloads) or the machine's own."""

    def __init__(self, root: Path, run: Run, private: bool, mirror: str = MIRROR) -> None:
        self.root = root
        self.run = run
        self.private = private
        self.mirror = mirror

    @classmethod
    def for_machine(cls, root: Path, run: Run) -> "SourceApt":
        """The machine's apt when it runs trixie and lists its sources, else a private one."""
        if on_suite():
            own = cls(root, run, private=False)
            if own.knows_source("micropython"):
                return own
        return cls(root, run, private=True, mirror=os.environ.get("EDGE_DEBIAN_MIRROR", MIRROR))

    @property
    def config(self) -> Path:
        return self.root / "apt.conf"

    def env(self) -> dict[str, str]:
        return {"APT_CONFIG": str(self.config)} if self.private else {}

    def write_config(self) -> None:
        """The private configuration: its own sources list, lists, cache and
        preferences (so no pin of the machine's applies), nothing else changed."""
        r = self.root
        for d in ("lists/partial", "archives/partial", "sources.list.d", "preferences.d"):
            (r / d).mkdir(parents=True, exist_ok=True)
        signed = f"[signed-by={KEYRING}] " if Path(KEYRING).exists() else ""
        (r / "sources.list").write_text(
            f"deb {signed}{self.mirror} {SUITE} main\n"
            f"deb-src {signed}{self.mirror} {SUITE} main\n")
        (r / "status").touch()
        self.config.write_text("\n".join([
            f'Dir::Etc::sourcelist "{r / "sources.list"}";',
            f'Dir::Etc::sourceparts "{r / "sources.list.d"}";',
            f'Dir::Etc::preferences "{r / "preferences"}";',
            f'Dir::Etc::preferencesparts "{r / "preferences.d"}";',
            f'Dir::State::lists "{r / "lists"}";',
            f'Dir::Cache "{r}";',
            f'Dir::Cache::archives "{r / "archives"}";',
            'Dir::Cache::pkgcache "";',
            'Dir::Cache::srcpkgcache "";',
            # Only what the sources need: no translations; downloads as the
            # user running the build (its cache folder is its own).
            'Acquire::Languages "none";',
            'APT::Sandbox::User "root";' if os.geteuid() == 0 else "",
            "",
        ]))

    def lists_age(self) -> float | None:
        """Seconds since the private lists were fetched; None when there are none."""
        stamp = self.root / "lists" / ".updated"
        try:
            return time.time() - stamp.stat().st_mtime
        except OSError:
            return None

    def update(self, force: bool = False) -> bool:
        """Fetch the package lists (private apt only, when missing, old or
        ``force``); return whether it fetched."""
        if not self.private:
            return False
        age = self.lists_age()
        if not force and age is not None and age < LISTS_MAX_AGE_S:
            return False
        self.write_config()
        self.run(["apt-get", "update", "-o", "Debug::NoLocking=1"], env=self.env(),
                 what=f"fetch Debian {SUITE}'s package lists from {self.mirror}")
        (self.root / "lists" / ".updated").touch()
        return True

    def knows_source(self, name: str) -> bool:
        out = self.run(["apt-cache", "showsrc", "--only-source", name], env=self.env(),
                       what=f"look up source package {name}", check=False)
        return "Version:" in out

    def version(self, pkg: Package) -> str:
        """The version apt would fetch of ``pkg`` (the highest it lists)."""
        if pkg.kind == "source":
            out = self.run(["apt-cache", "showsrc", "--only-source", pkg.name], env=self.env(),
                           what=f"look up source package {pkg.name}", check=False)
            versions = re.findall(r"^Version: (\S+)$", out, re.M)
        else:
            out = self.run(["apt-cache", "show", "--no-all-versions", pkg.name], env=self.env(),
                           what=f"look up package {pkg.name}", check=False)
            versions = re.findall(r"^Version: (\S+)$", out, re.M)
        if not versions:
            raise AptError(f"Debian {SUITE} lists no {'source ' if pkg.kind == 'source' else ''}package "
                           f"{pkg.name} (apt-cache found none)",
                           "check the network reaches the Debian mirror, then run "
                           "`edge emulator build --force` to fetch the lists again "
                           "(EDGE_DEBIAN_MIRROR names another mirror)")
        return self._highest(versions)

    def _highest(self, versions: list[str]) -> str:
        best = versions[0]
        for v in versions[1:]:
            # dpkg's own order (epochs, '~'): exit status 0 when v > best.
            if self.run(["sh", "-c", 'dpkg --compare-versions "$0" gt "$1" && echo gt', v, best],
                        what="compare Debian versions", check=False).strip() == "gt":
                best = v
        return best

    def resolve(self) -> dict[str, str]:
        """{package: version} for every package of :data:`SOURCES`."""
        return {p.name: self.version(p) for p in SOURCES}

    def download(self, pkg: Package, version: str, dest: Path) -> Path:
        """The package's files in ``dest`` (kept across builds: skipped when
        there); returns the ``.dsc`` or the ``.deb``."""
        dest.mkdir(parents=True, exist_ok=True)
        plain = version.split(":", 1)[-1]
        if pkg.kind == "source":
            want = dest / f"{pkg.name}_{plain}.dsc"
            if not want.exists():
                self.run(["apt-get", "source", "--download-only", "--only-source",
                          f"{pkg.name}={version}"], cwd=dest, env=self.env(),
                         what=f"download source package {pkg.name} {version}")
        else:
            found = sorted(dest.glob(f"{pkg.name}_{_quote(plain)}_*.deb"))
            if not found:
                self.run(["apt-get", "download", f"{pkg.name}={version}"], cwd=dest, env=self.env(),
                         what=f"download {pkg.name} {version}")
                found = sorted(dest.glob(f"{pkg.name}_{_quote(plain)}_*.deb"))
            if not found:
                raise AptError(f"apt downloaded no .deb of {pkg.name} {version} into {dest}",
                               "run `edge emulator build --force` to fetch the lists again")
            want = found[0]
        if not want.exists():
            raise AptError(f"apt downloaded no {want.name} into {dest}",
                           "run `edge emulator build --force` to fetch the lists again")
        return want


def unpack(pkg: Package, file: Path, dest: Path, run: Run) -> Path:
    """Unpack a downloaded package into ``dest``; return it.

    A source package is unpacked with its Debian patches applied into a
    fresh ``dest`` (the ``+ds`` tarball is Debian's, and its patches are what
    Debian builds); a ``.deb`` is unpacked as it would install, under
    ``dest`` (``dest/usr/src/...``), beside what is there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if pkg.kind == "source":
        if dest.exists():
            shutil.rmtree(dest)
        run(["dpkg-source", "--no-check", "-x", str(file), str(dest)], cwd=dest.parent,
            what=f"unpack {file.name}")
    else:
        run(["dpkg-deb", "-x", str(file), str(dest)], what=f"unpack {file.name}")
    return dest


def _quote(version: str) -> str:
    # apt names a downloaded file with ':' written as '%3a'; glob-safe.
    return version.replace(":", "%3a").replace("[", "[[]")

