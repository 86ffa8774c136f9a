"""Board files: one JSON file per board type in ``boards/`` (chip, MicroPython
port, heap budget, flash layout, USB ids, sensors). A new board is a new file."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.errors import BadInput, NotFound
from edge_agent.paths import BOARDS_DIR


def known_boards(boards_dir: Path = BOARDS_DIR) -> list[str]:
    """The board types, one per file in ``boards/``."""
    return sorted(p.stem for p in Path(boards_dir).glob("*.json") if p.stem != "schema")


def load_board(board: str, boards_dir: Path = BOARDS_DIR) -> dict:
    """The board file ``boards/<board>.json``; an unknown name lists the known ones."""
    path = Path(boards_dir) / f"{board}.json"
    if board == "schema" or not path.is_file():
        known = ", ".join(known_boards(boards_dir)) or "(none)"
        raise NotFound(f"unknown board {board!r}: there is no {path}", hint=f"use one of: {known}")
    try:
        data = json.loads(path.read_text())
        int(data["heap_bytes"])
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"board file {path} is not valid: {e}",
                       hint="it must be a JSON object with an integer heap_bytes") from None
    return data
