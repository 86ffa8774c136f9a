"""Load a rig file: YAML, checked against ``schema.json``, then by the rules
a schema cannot state (unique names, relays and channels that exist and
drive one thing each, board types that exist and can be the kind asked).

The YAML is *composed* (PyYAML's node tree, not ``safe_load``) so every key
and value keeps its line: an error reads ``rig.yaml:14:
boards[1].power.channel: 9 is above relay-a's 4 channels`` with its fix.
Duplicate keys, which YAML loaders silently collapse, are errors too.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from edge_agent.boards import known_boards, load_board
from edge_agent.errors import BadInput, NotFound
from edge_hil.drivers.ble import CommandDrop
from edge_hil.rig.model import BleSpec, Kind, PowerSpec, Relay, ResetSpec, Rig, RigBoard, RigError, board_has_radio

SCHEMA = Path(__file__).with_name("schema.json")
_MAX_PROBLEMS = 8       # shown for one file; the rest are counted

Path_ = tuple[str | int, ...]


class _Located:
    """The plain data of a YAML document and the line of each key and value in it."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}      # a value's line (a key's line when it has one)
        self.problems: list[tuple[int, str, str]] = []    # (line, "FILE:LINE: path: what", fix)

    def line(self, path: Path_) -> int:
        """The line of ``path``, else of the nearest enclosing value."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def add(self, path: Path_, what: str, fix: str = "", line: int | None = None) -> None:
        where = _dotted(path)
        line = line if line is not None else self.line(path)
        head = f"{self.file}:{line}:"
        self.problems.append((line, f"{head} {where}: {what}" if where else f"{head} {what}", fix))

    def plain(self, node: yaml.Node, loader: yaml.SafeLoader, path: Path_ = ()) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in node.value:
                key = loader.construct_object(k, deep=True)
                if not isinstance(key, (str, int)):
                    self.add(path, f"a key must be text, not {key!r}", "quote the key",
                             line=k.start_mark.line + 1)
                    continue
                key = str(key)
                if key in out:
                    self.add(path + (key,), f"duplicate key {key!r} (first on line {self.lines[path + (key,)]})",
                             "keep one of them: YAML would silently use the last",
                             line=k.start_mark.line + 1)
                    continue
                self.lines[path + (key,)] = k.start_mark.line + 1
                out[key] = self.plain(v, loader, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(v, loader, path + (i,)) for i, v in enumerate(node.value)]
        return loader.construct_object(node, deep=True)


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _compose(path: Path, text: str) -> tuple[Any, _Located]:
    doc = _Located(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RigError([(f"{path}:1: the file is empty",
                             "start from examples/rig-bench.yaml (rig: 1, boards: [...])")])
        data = doc.plain(node, loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise RigError([(f"{path}:{line}: not valid YAML: {e.problem or e.context}",
                         "fix the YAML syntax at that line (indentation, a missing ':' or quote)")]) from None
    except yaml.YAMLError as e:
        raise RigError([(f"{path}:1: not valid YAML: {e}", "fix the YAML syntax")]) from None
    finally:
        loader.dispose()
    return data, doc


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), "value")


def _branch_misfit(errors: list) -> float:
    """How badly a oneOf branch fits: infinite when the value has another form (type, const, enum),
    else the number of its keys missing or unknown there; the fewest is the form the author meant."""
    top = [e for e in errors if not e.relative_path]
    if any(e.validator in ("type", "const", "enum") for e in top):
        return float("inf")
    return sum(e.validator in ("required", "additionalProperties") for e in top)


def _schema_problem(err, doc: _Located) -> None:
    """Turn one jsonschema error into a located problem; oneOf errors into the fitting branch's."""
    if err.validator in ("oneOf", "anyOf") and err.context:
        branches: dict[int, list] = {}
        for e in err.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        scored = sorted((_branch_misfit(errs), i) for i, errs in branches.items())
        best = scored[0][0]
        if best != float("inf") and [s for s, _ in scored].count(best) == 1:
            for e in branches[scored[0][1]]:
                _schema_problem(e, doc)
            return
        doc.add(tuple(err.absolute_path), f"{err.instance!r} is not one of the accepted forms",
                err.schema.get("description", ""))
        return
    path = tuple(err.absolute_path)
    desc = err.schema.get("description", "") if isinstance(err.schema, dict) else ""
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = next((k for k in err.validator_value if k not in err.instance), None)
        doc.add(path, f"{missing!r} is missing",
                _describe(err.schema, missing) or f"add {missing}: (see {SCHEMA})")
    elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        for key in sorted(k for k in err.instance if k not in allowed and not str(k).startswith("x-")):
            doc.add(path + (key,), f"unknown key {key!r}",
                    "correct its spelling or remove it (a key of your own starts with 'x-'); known keys: "
                    + ", ".join(allowed))
    elif err.validator == "type":
        doc.add(path, f"{err.instance!r} is {_type_name(err.instance)}, not {err.validator_value}", desc)
    elif err.validator in ("pattern", "propertyNames"):
        doc.add(path, f"{err.instance!r} does not have the right form", desc)
    elif err.validator == "const":
        doc.add(path, f"{err.instance!r} is not {err.validator_value!r}", desc)
    else:
        doc.add(path, err.message, desc)


def _describe(schema: dict, key: str | None) -> str:
    node = (schema.get("properties") or {}).get(key) or {}
    if "$ref" in node:
        node = _validator().schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node.get("description", "")


def _check_rules(data: dict, doc: _Located) -> dict[int, dict]:
    """The rules across keys; returns the board file of each board whose type exists."""
    relays: dict = data.get("relays") or {}
    files: dict[int, dict] = {}
    names: dict[str, int] = {}
    users: dict[tuple, Path_] = {}     # a relay channel, a hub port or a serial port -> who uses it
    for name, relay in relays.items():
        users[("port", relay["port"])] = ("relays", name, "port")

    def use(what: tuple, path: Path_, label: str) -> None:
        first = users.setdefault(what, path)
        if first != path:
            doc.add(path, f"{label} is already used by {_dotted(first)} (line {doc.line(first)})",
                    "one relay channel, hub port or serial port drives one thing: give each its own")

    for i, b in enumerate(data["boards"]):
        at: Path_ = ("boards", i)
        kind: Kind = b.get("kind", "usb")
        if b["name"] in names:
            first = names[b["name"]]
            doc.add(at + ("name",), f"{b['name']!r} is already the name of boards[{first}] "
                                    f"(line {doc.line(('boards', first, 'name'))})",
                    "give every board of the rig its own name")
        names.setdefault(b["name"], i)
        try:
            f = load_board(b["board"])
            files[i] = f
        except NotFound:
            doc.add(at + ("board",), f"unknown board type {b['board']!r}: there is no boards/{b['board']}.json",
                    "use one of: " + ", ".join(known_boards()))
            f = None
        except BadInput as e:
            doc.add(at + ("board",), e.message, e.hint or "")
            f = None
        if kind != "usb":
            for key in ("port", "power", "reset", "ble"):
                if key in b:
                    doc.add(at + (key,), f"a {kind} board's {key} comes from the virtual bench",
                            f"remove {key}: from this board (or make it kind: usb)")
            if f is not None and f.get("micropython_port") == "cpython":
                doc.add(at + ("board",), f"board {b['board']!r} runs the agent under CPython on Linux: "
                                         f"there is no {kind} board of it",
                        "use a MicroPython board type, or kind: usb with its port")
            elif f is not None and kind == "emulated":
                from edge_hil.virtual.control import can_be_emulated

                if not can_be_emulated(f):
                    doc.add(at + ("board",), f"board {b['board']!r} cannot be emulated: the emulated chip is "
                                             "an RP2040 running the RPI_PICO firmware",
                            "use board: pico for kind: emulated, or kind: virtual")
            continue
        if "port" not in b:
            doc.add(at, "'port' is missing: a usb board needs its serial port",
                    "add port: /dev/serial/by-id/... (ls -l /dev/serial/by-id), or kind: virtual")
        else:
            use(("port", b["port"]), at + ("port",), f"port {b['port']}")
        for key in ("power", "reset"):
            spec = b.get(key)
            if isinstance(spec, dict) and "relay" in spec:
                rname, ch = spec["relay"], spec["channel"]
                relay = relays.get(rname)
                if relay is None:
                    doc.add(at + (key, "relay"), f"there is no relay named {rname!r}",
                            f"name one under relays: ({', '.join(relays) or 'none yet'})")
                elif ch > relay["channels"]:
                    doc.add(at + (key, "channel"), f"{ch} is above {rname}'s {relay['channels']} channels",
                            f"use a channel from 1 to {relay['channels']}, or correct relays.{rname}.channels")
                else:
                    use(("relay", rname, ch), at + (key, "channel"), f"channel {ch} of {rname}")
            elif isinstance(spec, dict) and "uhubctl" in spec:
                hub = spec["uhubctl"]
                use(("hub", hub["hub"], hub["port"]), at + (key, "uhubctl"), f"port {hub['port']} of hub {hub['hub']}")
        if b.get("reset") == "dtr-rts" and f is not None and f.get("micropython_port") != "esp32":
            doc.add(at + ("reset",), f"dtr-rts is the ESP auto-reset circuit; board {b['board']!r} has none",
                    "use reset: repl (machine.reset()), a relay across its reset line, or none")
        if "ble" in b and f is not None and not board_has_radio(f):
            doc.add(at + ("ble",), f"board {b['board']!r} has no BLE radio", "remove ble: from this board")
        drop = (b.get("ble") or {}).get("drop")
        if drop is not None:
            try:
                CommandDrop(b["name"], b["ble"]["address"], command=drop).argv()
            except (KeyError, IndexError, ValueError) as e:
                doc.add(at + ("ble", "drop"), f"not a command this rig can run: {e!r}",
                        "a command line whose only {...} are {address} and {adapter}, its quotes balanced")
    return files


def _ble(spec: dict | None) -> BleSpec | None:
    if spec is None:
        return None
    return BleSpec(spec["address"].upper(), spec.get("adapter", "hci0"), spec.get("drop"))


def _power(b: dict) -> PowerSpec:
    spec = b.get("power", "manual")
    if b.get("kind", "usb") != "usb":
        return PowerSpec("bench")
    if spec == "manual":
        return PowerSpec("manual")
    if "relay" in spec:
        return PowerSpec("relay", relay=spec["relay"], channel=spec["channel"])
    return PowerSpec("uhubctl", hub=spec["uhubctl"]["hub"], hub_port=spec["uhubctl"]["port"])


def _reset(b: dict) -> ResetSpec:
    spec = b.get("reset", "repl")
    if b.get("kind", "usb") != "usb":
        return ResetSpec("bench")
    if isinstance(spec, dict):
        return ResetSpec("relay", relay=spec["relay"], channel=spec["channel"])
    return ResetSpec(spec)


def load_rig(path: Path | str, *, person: bool = False) -> Rig:
    """The rig file at ``path``, checked; :class:`RigError` lists each problem as ``FILE:LINE: key: what``.

    ``person``: the run has a person to answer questions (a terminal or an
    answers file), so ``power: manual`` counts as the ``power`` capability.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"rig file {path} does not exist",
                       "give the path of your rig file; examples/rig-bench.yaml is one to start from") from None
    except UnicodeDecodeError as e:
        raise RigError([(f"{path}:1: not UTF-8 text ({e.reason} at byte {e.start})", "save it as UTF-8")]) from None
    except OSError as e:
        raise NotFound(f"cannot read rig file {path}: {e.strerror}", "check the path and its permissions") from None
    data, doc = _compose(path, text)
    if not doc.problems:
        for err in sorted(_validator().iter_errors(data), key=lambda e: doc.line(tuple(e.absolute_path))):
            _schema_problem(err, doc)
    files = _check_rules(data, doc) if not doc.problems else {}
    if doc.problems:
        shown = [(text, fix) for _, text, fix in sorted(doc.problems, key=lambda p: p[0])]
        more = len(shown) - _MAX_PROBLEMS
        shown = shown[:_MAX_PROBLEMS]
        if more > 0:
            shown.append((f"{path}: ... and {more} more", ""))
        raise RigError(shown)
    relays = {n: Relay(n, r["port"], r["channels"], r.get("protocol", "lcus"), doc.line(("relays", n)))
              for n, r in (data.get("relays") or {}).items()}
    boards = tuple(
        RigBoard(name=b["name"], board=b["board"], kind=b.get("kind", "usb"), port=b.get("port"),
                 power=_power(b), reset=_reset(b),
                 ble=_ble(b.get("ble")),
                 line=doc.line(("boards", i)), board_file=files[i], person=person)
        for i, b in enumerate(data["boards"]))
    bench = data.get("bench")
    bench_dir = (path.parent / Path(bench["sim_dir"]).expanduser()) if bench else None
    return Rig(path=path, name=data.get("name") or path.stem, relays=relays, boards=boards,
               bench_dir=bench_dir, person=person)

