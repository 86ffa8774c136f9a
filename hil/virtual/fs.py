"""A virtual board's filesystem: a host folder, and what flashing puts in it."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from edge_agent import device_fs
from edge_agent.boards import load_board
from edge_agent.errors import BadInput, NotFound
from edge_agent.paths import BOARDS_DIR, FIRMWARE_DIR


def install_firmware(fs_dir: Path, board_name: str, device_id: str | None = None, *, reflash: bool = False,
                     firmware_dir: Path = FIRMWARE_DIR, boards_dir: Path = BOARDS_DIR) -> str | None:
    """Put the Edge Agent on the board whose filesystem is ``fs_dir``; return its device id.

    ``board_name`` is the board type (a file in ``boards/``). Writes
    ``main.py``, the ``edgefw`` package compiled to ``.mpy`` (as on a real
    board: see :mod:`edge_agent.firmware`), ``board.json``
    (the board file) and ``config.json`` (``board`` and the bench's
    settings, plus ``device_id`` when one is given: a board's identity is
    normally minted on it by :func:`edge_agent.identity.provision`, which
    ``edge sim up`` runs next; until then the agent waits in safe mode,
    saying its config has no device id).

    A board that already has a ``main.py`` keeps its firmware, and a board
    that has a ``config.json`` always keeps its identity (``device_id`` is
    then ignored), so a board survives ``sim down`` / ``sim up`` as a real one
    survives a power cycle; its other files (journal, state) are never
    touched. ``reflash=True`` replaces ``main.py``, ``edgefw/`` and
    ``board.json`` with the current ones, keeping identity and data.
    """
    fs_dir = Path(fs_dir)
    firmware_dir = Path(firmware_dir)
    main_py = firmware_dir / device_fs.MAIN_PY
    package = firmware_dir / device_fs.PACKAGE_DIR
    if not main_py.is_file() or not package.is_dir():
        raise NotFound(f"no firmware to install: {main_py} or {package}/ is missing",
                       hint="build the firmware first, or start blank boards with --blank")
    board = load_board(board_name, boards_dir)
    fs_dir.mkdir(parents=True, exist_ok=True)
    if reflash or not (fs_dir / device_fs.MAIN_PY).exists():
        if (fs_dir / device_fs.PACKAGE_DIR).is_dir():
            shutil.rmtree(fs_dir / device_fs.PACKAGE_DIR)
        # Bytecode only (no native code), so it runs on the host's
        # interpreter whatever the board's own architecture.
        with tempfile.TemporaryDirectory(prefix="edge-sim-") as tmp:
            device_fs.write_files(fs_dir, device_fs.agent_files(Path(tmp), None, firmware_dir))
    if reflash or not (fs_dir / device_fs.BOARD_JSON).exists():
        device_fs.write_files(fs_dir, [(device_fs.BOARD_JSON, device_fs.board_json(board))])
    config = fs_dir / device_fs.CONFIG_JSON
    try:
        existing = json.loads(config.read_text())
        if not isinstance(existing, dict):
            raise TypeError
        return existing.get("device_id")
    except FileNotFoundError:
        pass
    except (ValueError, TypeError):
        raise BadInput(f"{config} is not a valid board config",
                       hint="fix it, or delete it to give the board a new identity") from None
    config_data = {"board": board_name, **device_fs.BENCH_CONFIG}
    if device_id is not None:
        config_data = {"device_id": device_id, **config_data}
    device_fs.write_files(fs_dir, [(device_fs.CONFIG_JSON, device_fs.config_json(config_data))])
    return device_id


def device_id_of(fs_dir: Path | str) -> str | None:
    """The device id in the ``config.json`` of the filesystem ``fs_dir``, or
    None (no identity yet, or a file that is not a config)."""
    try:
        device_id = json.loads((Path(fs_dir) / device_fs.CONFIG_JSON).read_text()).get("device_id")
    except (OSError, ValueError, AttributeError):
        return None
    return device_id if isinstance(device_id, str) else None
