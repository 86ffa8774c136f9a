# The board file (board.json) and the device's config (config.json), read at
# boot and checked before anything runs; a bad file raises ConfigError with
# the file, the problem and the fix, and boot falls back to safe mode.
import json

from edgefw import messages
from edgefw.messages import valid_name, valid_unit


class ConfigError(Exception):
    pass


def _load(path, fix):
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError:
        raise ConfigError("%s is missing; %s" % (path, fix))
    except ValueError:
        raise ConfigError("%s is not valid JSON; %s" % (path, fix))
    if not isinstance(data, dict):
        raise ConfigError("%s must hold a JSON object; %s" % (path, fix))
    return data


def _int(d, key, lo, hi, default, where):
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ConfigError("%s: %s must be an integer in %d..%d" % (where, key, lo, hi))
    return v


def _check_sensors(specs):
    # The board file's sensors against docs/protocol.md 2.2: names and units
    # valid, names unique, 1 to 64 sensors (a tick holds at most 64 pairs).
    # ValueError naming the first bad entry.
    seen = []
    for spec in specs:
        name = spec.get("name")
        unit = spec.get("unit", "")
        if not valid_name(name):
            raise ValueError("sensor name %r must be 1-32 of A-Z a-z 0-9 _ - . starting with a "
                             "letter or a digit" % (name,))
        if not valid_unit(unit):
            raise ValueError("sensor %s: unit %r must be 0-16 printable ASCII characters, no space"
                             % (name, unit))
        if name in seen:
            raise ValueError("sensor name %s appears twice" % name)
        seen.append(name)
    if len(seen) > 64:
        raise ValueError("%d sensors, at most 64" % len(seen))


def load(root):
    prefix = root + "/" if root else ""
    fix_board = "copy the board file with `edge flash`"
    fix_cfg = "re-provision the board with `edge provision`"
    board = _load(prefix + "board.json", fix_board)
    cfg = _load(prefix + "config.json", fix_cfg)
    if not isinstance(board.get("name"), str):
        raise ConfigError("board.json: name missing; " + fix_board)
    sensors = board.get("sensors", [])
    vsensors = board.get("virtual_sensors", [])
    if not isinstance(sensors, list) or not isinstance(vsensors, list):
        raise ConfigError("board.json: sensors must be a list; " + fix_board)
    for s in sensors + vsensors:
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("kind"), str):
            raise ConfigError("board.json: each sensor needs a name and a kind; " + fix_board)
    try:
        _check_sensors(sensors + vsensors)
    except ValueError as e:
        raise ConfigError("board.json: %s; %s" % (e, fix_board))
    dev = cfg.get("device_id")
    if dev is None:
        # A board that has the agent but no identity yet (as `edge sim up
        # --unprovisioned` leaves it, or a copy made by hand): waiting, not broken.
        raise ConfigError("not provisioned yet (config.json has no device_id); run `edge flash` "
                          "or `edge provision` on its port")
    if not messages.valid_id(dev):
        raise ConfigError("config.json: device_id must be 1-64 of a-z 0-9 - . starting with a letter "
                          "or a digit (docs/protocol.md 2.2); " + fix_cfg)
    period = board.get("sample_period_ms", 5000)
    cfg["sample_period_ms"] = _int(cfg, "sample_period_ms", 100, 86400000, period, "config.json")
    cfg["journal_bytes"] = _int(cfg, "journal_bytes", 8192, 16777216,
                                board.get("journal_bytes", 65536), "config.json")
    board["watchdog_ms"] = _int(board, "watchdog_ms", 0, 3600000, 0, "board.json")
    return board, cfg
