"""Board files: one JSON file per board type in ``boards/`` (chip, MicroPython
port, heap budget, flash layout, USB ids, sensors). A new board is a new file.

Every file is checked against ``boards/schema.json`` (JSON Schema 2020-12)
when it is loaded, so a typo in a board file stops the bench with the file,
the JSON path of the bad key and what the key must hold, before anything is
written to a board. A few rules the schema cannot express are checked here:
the ``name`` inside equals the file's name, and sensor names are unique on a
board (they become SenML names).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from edge_agent.errors import BadInput, NotFound
from edge_agent.paths import BOARDS_DIR

SCHEMA_FILE = "schema.json"

# The one rule for board type names (the schema's ``name`` pattern says the
# same; a test keeps them equal). No '_' and no capitals: a board name starts
# every device id (docs/protocol.md section 2.2 allows a-z 0-9 '-' '.') and is
# carried upper-cased in the QR code's alphanumeric mode, which has no '_'.
BOARD_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")


def is_board_name(text: object) -> bool:
    """True if ``text`` can name a board type: 1-32 of ``a-z 0-9 -``, first a letter or digit."""
    return type(text) is str and BOARD_NAME.match(text) is not None


def board_name(text: object, what: str = "board name") -> str:
    """``text`` if it is a board type name (:func:`is_board_name`), else BadInput naming the rule."""
    if type(text) is not str or not is_board_name(text):
        raise BadInput(f"{what} {text!r} is not a board type name (it starts every device id)",
                       "use a board file whose name is 1-32 lowercase letters, digits and '-'")
    return text
_MAX_ERRORS = 5          # errors listed for one file; the rest are counted


def known_boards(boards_dir: Path = BOARDS_DIR) -> list[str]:
    """The board types, one per file in ``boards/``."""
    return sorted(p.stem for p in Path(boards_dir).glob("*.json") if p.name != SCHEMA_FILE)


def load_board(board: str, boards_dir: Path = BOARDS_DIR) -> dict:
    """The board file ``boards/<board>.json``, checked against the schema.

    Raises NotFound (listing the known boards) for an unknown name and
    BadInput naming the file, the JSON path of each bad key and its fix for a
    file that is not valid.
    """
    path = Path(boards_dir) / f"{board}.json"
    if not isinstance(board, str) or board == Path(SCHEMA_FILE).stem or "/" in board \
            or not path.is_file():
        known = ", ".join(known_boards(boards_dir)) or "(none)"
        raise NotFound(f"unknown board {board!r}: there is no {path}", hint=f"use one of: {known}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise BadInput(f"board file {path} is not UTF-8 text: {e}",
                       hint="save it as UTF-8 JSON") from None
    except ValueError as e:
        raise BadInput(f"board file {path} is not valid JSON: {e}",
                       hint="fix the JSON syntax at that line and column") from None
    check_board(data, path)
    return data


# What ``sys.platform`` says on each MicroPython port a board file names.
PORT_PLATFORMS = {"esp32": "esp32", "rp2": "rp2", "unix": "linux"}


def chip_of(machine: str) -> str:
    """The chip a MicroPython machine string names: "Generic ESP32C3 module
    with ESP32C3" -> "esp32c3" (MicroPython builds it as "<board> with <MCU>")."""
    return machine.rsplit(" with ", 1)[-1].strip().lower().replace("-", "") if " with " in machine else ""


def board_says_it_is(board: dict, platform: str, machine: str) -> bool:
    """Whether a board whose MicroPython says ``platform``/``machine`` (its
    ``sys.platform`` and machine string) can be one of type ``board``: the
    same MicroPython port and the same chip. A custom board file for the same
    chip (a copy of esp32.json) matches as the stock one does."""
    want = PORT_PLATFORMS.get(board.get("micropython_port", ""))
    chip = str(board.get("chip", "")).lower().replace("-", "")
    return want is not None and platform == want and chip_of(machine) == chip


def check_board(data: object, path: Path | str = "<board file>") -> None:
    """Check a board file's content; raise BadInput naming ``path``, each bad key and the fix."""
    problems = _schema_problems(data)
    if not problems and isinstance(data, dict):
        problems = _extra_problems(data, Path(path))
    if not problems:
        return
    shown = problems[:_MAX_ERRORS]
    more = len(problems) - len(shown)
    lines = [f"{where}: {what}" for where, what, _ in shown]
    if more:
        lines.append(f"... and {more} more")
    fixes = [f"{where}: {fix}" for where, _, fix in shown if fix]
    raise BadInput(f"board file {path} is not valid: " + "; ".join(lines),
                   hint=("; ".join(fixes) + f" (see {BOARDS_DIR / SCHEMA_FILE})") if fixes
                   else f"compare it with {BOARDS_DIR / SCHEMA_FILE}")


def check_image_fits(board: dict, image_size: int, offset: int | None = None) -> None:
    """Refuse a firmware image that does not fit the board's flash.

    ``image_size`` is the number of bytes written to flash (for a .uf2 file:
    256 bytes per block, not the file's size); ``offset`` defaults to the
    board's ``flash.firmware_offset``. An image that starts inside the
    firmware area must end before the filesystem (``firmware_max``), or it
    would overwrite the board's files; any image must end inside the flash.
    Raises BadInput naming the sizes, the offsets and the fix.
    """
    name = board.get("name", "?")
    flash = board.get("flash") or {}
    size = flash.get("size")
    if board.get("flash_method") == "pip" or not isinstance(size, int):
        raise BadInput(f"board {name} takes no firmware image: its flash is not written by the bench",
                       hint="install the agent on it with pip (see `edge flash --board rpi --help`)")
    fw_offset = int(flash.get("firmware_offset", 0))
    fw_max = int(flash.get("firmware_max", size - fw_offset))
    if offset is None:
        offset = fw_offset
    build = board.get("micropython_board")
    get = (f"the MicroPython build {build} (https://micropython.org/download/{build}/)"
           if build else f"a MicroPython build made for {name}")
    if not isinstance(image_size, int) or image_size <= 0:
        raise BadInput(f"the firmware image for board {name} is empty ({image_size!r} bytes)",
                       hint=f"download {get} again")
    if not 0 <= offset < size:
        raise BadInput(f"flash offset {offset:#x} is outside the {_size(size)} flash of board {name} "
                       f"(0x0..{size - 1:#x})",
                       hint=f"write the MicroPython image at {fw_offset:#x}, the board's firmware_offset")
    end = offset + image_size
    if end > size:
        raise BadInput(f"the image of {image_size} bytes at {offset:#x} does not fit the "
                       f"{_size(size)} flash of board {name}: it would end at {end:#x}, past "
                       f"the end of flash at {size:#x} ({end - size} bytes too many)",
                       hint=f"use {get}, or a board file whose flash.size matches the chip")
    fw_end = fw_offset + fw_max
    if fw_offset <= offset < fw_end and end > fw_end:
        raise BadInput(f"the image of {image_size} bytes at {offset:#x} is too large for board {name}: "
                       f"at most {fw_end - offset} bytes fit there (firmware_max {fw_max} from "
                       f"{fw_offset:#x}); the filesystem starts at {fw_end:#x} and would be "
                       f"overwritten ({end - fw_end} bytes too many)",
                       hint=f"use {get}; an image with more built in needs a board file "
                            "with a matching partition layout")


def _size(n: int) -> str:
    return f"{n // 1048576} MB" if n % 1048576 == 0 else f"{n} bytes"


@lru_cache(maxsize=1)
def _validator():
    """The schema's validator, built once (the schema itself is checked first)."""
    from jsonschema import Draft202012Validator

    path = BOARDS_DIR / SCHEMA_FILE
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _schema_problems(data: object) -> list[tuple[str, str, str]]:
    """(JSON path, what is wrong, fix) for each schema violation, in path order."""
    validator = _validator()
    root = validator.schema
    out = []
    for err in validator.iter_errors(data):
        where, what, path = err.json_path, err.message, list(err.path)
        if err.validator == "required":
            # One error per missing key; its message starts with the key's repr.
            missing = [k for k in err.validator_value
                       if isinstance(err.instance, dict) and k not in err.instance
                       and err.message.startswith(repr(k))]
            if missing:
                where, what = _join(where, missing[0]), f"{missing[0]!r} is missing"
                path.append(missing[0])
        elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in allowed and not k.startswith("x-"))
            if extra:
                what = (f"unknown key {extra[0]!r}" if len(extra) == 1
                        else "unknown keys " + ", ".join(map(repr, extra)))
                out.append((_join(where, extra[0]), what,
                            "remove it, correct its spelling, or prefix a key of your own with 'x-'; "
                            "known keys: " + ", ".join(sorted(allowed))))
                continue
        # A conditional's subschema rarely repeats the description: prefer the
        # failing subschema's own, else the key's in the base schema.
        own = None
        if err.validator != "required" and isinstance(err.schema, dict):
            own = err.schema.get("description")
        out.append((where, what, own or _schema_at(root, path).get("description", "")))
    # The same key can fail under a conditional and its base rule: report it once.
    seen, unique = set(), []
    for p in sorted(out, key=lambda p: p[0]):
        if p[0] not in seen:
            seen.add(p[0])
            unique.append(p)
    return unique


# The apply conditions of a board file's ``ota`` object and the sensor each names
# (docs/protocol.md 7.10). The device keeps the same table (firmware/edgefw/sensors_build.py):
# a condition binds a board that has its sensor (``sensors``, and ``virtual_sensors`` on a
# virtual board), so one on a sensor listed only in ``virtual_sensors`` binds virtual boards
# alone, and one on a sensor listed nowhere would hold every board's updates for good.
OTA_CONDITIONS = (("battery_min_v", "battery"), ("parked", "parked"))


def _extra_problems(data: dict, path: Path) -> list[tuple[str, str, str]]:
    """Rules across keys that JSON Schema cannot state."""
    problems = []
    if path.suffix == ".json" and data.get("name") != path.stem:
        problems.append(("$.name", f"{data.get('name')!r} differs from the file name {path.name!r}",
                         f"set name to {path.stem!r} or rename the file to {data.get('name')}.json"))
    seen: dict[str, str] = {}
    for key in ("sensors", "virtual_sensors"):
        for i, sensor in enumerate(data.get(key, [])):
            where = f"$.{key}[{i}].name"
            name = sensor["name"]
            if name in seen:
                problems.append((where, f"sensor name {name!r} is already used at {seen[name]}",
                                 "give each sensor its own name (it becomes the SenML name)"))
            else:
                seen[name] = where
    apply = (data.get("ota") or {}).get("apply") or {}
    for key, sensor in OTA_CONDITIONS:
        if apply.get(key) not in (None, False) and sensor not in seen:
            problems.append((f"$.ota.apply.{key}",
                             f"names the sensor {sensor!r}, which the board file lists in neither sensors "
                             f"nor virtual_sensors: the device would never apply an update",
                             f"add a sensor named {sensor!r} (to sensors if the board has it, to "
                             f"virtual_sensors if only the bench simulates it) or set {key} to "
                             f"{'null' if key == 'battery_min_v' else 'false'}"))
    return problems


def _join(json_path: str, key: str) -> str:
    return f"{json_path}.{key}" if key.isidentifier() else f"{json_path}[{key!r}]"


def _schema_at(root: dict, path: list) -> dict:
    """The base schema that describes the value at instance ``path`` ({} if none does)."""
    node = root
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part) or node.get("additionalProperties") or {}
        if not isinstance(node, dict):
            return {}
        if "$ref" in node:
            node = _resolve(root, node["$ref"])
    return node


def _resolve(root: dict, ref: str) -> dict:
    node = root
    for part in ref.lstrip("#/").split("/"):
        node = node.get(part, {})
    return node
