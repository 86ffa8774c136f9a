"""One id and name rule (docs/protocol.md section 2.2) for the device's
config and board file: every case of tests/vectors/names.json, under
micropython, through config.load as a board boots."""

from __future__ import annotations

import ast
import json

from tests.firmware.compiled import prelude
from tests.mpy import REPO, run

NAMES = json.loads((REPO / "tests" / "vectors" / "names.json").read_text())

_LOAD = r"""
import json, os
from edgefw import config
cases = json.loads(sys.stdin.read())
root = sys.argv[1]
def attempt(dev, name, unit):
    board = {"name": "virtual", "sensors": [{"name": name, "kind": "uptime", "unit": unit}]}
    with open(root + "/board.json", "w") as f:
        json.dump(board, f)
    with open(root + "/config.json", "w") as f:
        json.dump({"device_id": dev}, f)
    try:
        config.load(root)
        return True
    except config.ConfigError:
        return False
for kind in ("device_id", "sensor_name", "unit"):
    for ok in ("valid", "invalid"):
        for s in cases[kind][ok]:
            dev, name, unit = "virtual-1", "temp", "Cel"
            if kind == "device_id":
                dev = s
            elif kind == "sensor_name":
                name = s
            else:
                unit = s
            print(repr([kind, s, ok == "valid", attempt(dev, name, unit)]))
"""


def test_config_and_board_file_accept_exactly_the_shared_valid_ids_names_and_units(tmp_path):
    out = run(prelude() + _LOAD, heap="esp32", stdin=json.dumps(NAMES).encode(),
              args=[str(tmp_path)]).stdout.decode()
    rows = [ast.literal_eval(line) for line in out.splitlines()]
    assert len(rows) == sum(len(NAMES[k][v]) for k in ("device_id", "sensor_name", "unit")
                            for v in ("valid", "invalid"))
    assert [r for r in rows if r[2] != r[3]] == []
