"""A made-up rp2 firmware build in a cache folder, as `edge emulator build` leaves one.

Tests that need "the firmware is already built" use it: the files hold no
firmware, only what the cache lookup checks (the folder name is the key of
the versions, manifest and flags recorded in build.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from edge_hil.emulated.build import FORMAT, BuildSpec, cache_key

SOURCES = {"micropython": "1.25.0+ds-1", "pico-sdk-source": "2.1.1-1",
           "tinyusb-source": "0.18.0+dfsg-1", "mbedtls": "3.6.6-0.1~deb13u1"}


def fake_build(root: Path, spec: BuildSpec = BuildSpec(), sources: dict[str, str] = SOURCES,
               built_at: str = "2026-11-30T10:00:00Z") -> Path:
    """Write a cached build for ``spec`` under ``root``; return its folder."""
    folder = root / cache_key(sources, spec)
    folder.mkdir(parents=True)
    files = {"firmware.bin": b"\x00" * 1024, "firmware.uf2": b"UF2\n" + b"\x00" * 1020,
             "mpy-cross": b"#!/bin/false\n"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    info = {"format": FORMAT, "key": folder.name, "board": spec.board, "spec": spec.identity(),
            "sources": sources, "apt": "private (trixie)", "toolchain": {}, "installed": [],
            "micropython": "1.25.0",
            "mpy": {"version": 6, "sub": 3, "arch": "armv6m", "arch_code": 4, "sys_mpy": 6 | 3 << 8 | 4 << 10},
            "sizes": {n: len(d) for n, d in files.items()}, "seconds": {"total": 100.0},
            "built_at": built_at}
    (folder / "build.json").write_text(json.dumps(info))
    return folder
