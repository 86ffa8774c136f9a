"""Board files (boards/*.json) and their schema: every file validates, a broken
file is refused with the file, the JSON path of the bad key and the fix, and a
firmware image that does not fit the flash is refused before anything is written."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from edge_agent.boards import check_image_fits, known_boards, load_board
from edge_agent.errors import EXIT_BAD_INPUT, BadInput, NotFound
from edge_agent.paths import BOARDS_DIR

SCHEMA = json.loads((BOARDS_DIR / "schema.json").read_text())
FILES = sorted(p.stem for p in BOARDS_DIR.glob("*.json") if p.name != "schema.json")
# What the firmware reads from board.json (firmware/edgefw/config.py, sensors.py, boot.py).
FIRMWARE_KEYS = ("name", "sensors", "virtual_sensors", "sample_period_ms", "watchdog_ms", "heap_bytes")


def test_the_schema_is_valid_draft_2020_12():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


def test_every_top_level_key_is_documented():
    props = SCHEMA["properties"]
    assert {k for k, v in props.items() if not v.get("description")} == set()
    assert {k for k, v in props["flash"]["properties"].items() if not v.get("description")} == set()
    assert {k for k, v in SCHEMA["$defs"]["sensor"]["properties"].items()
            if not v.get("description")} == set()


def test_known_boards_are_the_seven_board_files():
    assert known_boards() == FILES
    assert set(FILES) == {"esp32", "esp32s3", "esp32c3", "pico", "picow", "rpi", "virtual"}


@pytest.mark.parametrize("name", FILES)
def test_every_board_file_validates(name):
    board = load_board(name)
    assert board["name"] == name
    for key in FIRMWARE_KEYS:
        assert key in board


@pytest.mark.parametrize("name", FILES)
def test_every_board_file_passes_the_firmware_own_checks(name, tmp_path):
    """The firmware's config loader (run under CPython here) accepts each board file as-is."""
    import sys

    from tests.mpy import CPYTHON_SHIM, FIRMWARE

    board = load_board(name)
    (tmp_path / "board.json").write_text(json.dumps(board))
    (tmp_path / "config.json").write_text(json.dumps({"device_id": "dev-1"}))
    sys.path[:0] = [str(FIRMWARE), str(CPYTHON_SHIM)]
    try:
        from edgefw import config

        loaded, cfg = config.load(str(tmp_path))
    finally:
        del sys.path[:2]
    assert loaded["name"] == name
    assert cfg["sample_period_ms"] == board["sample_period_ms"]


def test_esp_family_files_carry_what_esptool_needs():
    expected = {"esp32": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
    for name, offset in expected.items():
        board = load_board(name)
        assert board["flash_method"] == "esptool"
        assert board["chip"] == name     # esptool's --chip name
        flash = board["flash"]
        assert flash["firmware_offset"] == offset
        assert flash["mode"] and flash["freq"] and flash["baud"] >= 115200
        assert flash["firmware_offset"] + flash["firmware_max"] <= flash["size"]


def test_pico_w_file_describes_a_2_mb_rp2040_uf2_board():
    board = load_board("picow")
    flash = board["flash"]
    assert board["flash_method"] == "uf2" and board["reset_method"] == "uf2-bootsel"
    assert flash["size"] == 2 * 1024 * 1024
    assert flash["uf2_family_id"] == "0xe48bff56"   # RP2040's UF2 family
    # The image and MicroPython's filesystem share the flash without overlap.
    assert flash["firmware_offset"] + flash["firmware_max"] + flash["fs_size"] == flash["size"]
    assert ["2e8a", "0005"] in board["usb_ids"]


def test_every_usb_id_is_a_lowercase_hex_pair():
    for name in FILES:
        for pair in load_board(name)["usb_ids"]:
            assert len(pair) == 2 and all(len(x) == 4 and int(x, 16) >= 0 and x == x.lower() for x in pair)


# --- broken board files ---------------------------------------------------

def _drop(key):
    return lambda b: b.pop(key)


def _set(path, value):
    def mutate(board):
        node = board
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


def _del(path):
    def mutate(board):
        node = board
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return mutate


BROKEN = [
    # (case, base board, mutation, JSON path named, words the message or fix must hold)
    ("missing heap_bytes", "esp32", _drop("heap_bytes"), "$.heap_bytes", "missing"),
    ("heap_bytes of the wrong type", "esp32", _set(["heap_bytes"], "112640"), "$.heap_bytes", "integer"),
    ("unknown flash_method", "esp32", _set(["flash_method"], "jtag"), "$.flash_method", "esptool"),
    ("sensor without kind", "picow", _del(["sensors", 2, "kind"]), "$.sensors[2].kind", "missing"),
    ("sensor of an unknown kind", "esp32", _set(["virtual_sensors", 0, "kind"]  , "lux"),
     "$.virtual_sensors[0].kind", "uptime"),
    ("usb id in upper case", "esp32", _set(["usb_ids", 0, 1], "EA60"), "$.usb_ids[0][1]", "hex"),
    ("usb id of three parts", "esp32s3", _set(["usb_ids", 1], ["303a", "4001", "0"]), "$.usb_ids[1]",
     "long"),
    ("usb id with 0x", "picow", _set(["usb_ids", 0, 0], "0x2e8a"), "$.usb_ids[0][0]", "hex"),
    ("esptool board without a flash offset", "esp32c3", _del(["flash", "firmware_offset"]),
     "$.flash.firmware_offset", "0x1000"),
    ("esptool board with a chip esptool does not know", "esp32", _set(["chip"], "esp8266"), "$.chip",
     "--chip"),
    ("bad flash mode", "esp32", _set(["flash", "mode"], "quad"), "$.flash.mode", "dio"),
    ("uf2 board without its family id", "picow", _del(["flash", "uf2_family_id"]),
     "$.flash.uf2_family_id", "0xe48bff56"),
    ("misspelt key", "esp32", lambda b: b.update(sample_period=1000), "$.sample_period", "spelling"),
    ("sample period the firmware refuses", "esp32", _set(["sample_period_ms"], 50),
     "$.sample_period_ms", "100"),
    ("watchdog as a boolean", "esp32", _set(["watchdog_ms"], True), "$.watchdog_ms", "integer"),
    ("two sensors of one name", "esp32",
     lambda b: b["virtual_sensors"].append({"name": "uptime", "kind": "uptime"}),
     "$.virtual_sensors[3].name", "already used"),
    ("name that is not the file's", "esp32", _set(["name"], "esp32dev"), "$.name", "file"),
    ("apply policy on a battery the board file lists nowhere", "pico",
     lambda b: b["virtual_sensors"].pop(2), "$.ota.apply.battery_min_v", "never apply"),
    ("apply policy on a parked sensor the board file lists nowhere", "esp32",
     _set(["ota", "apply", "parked"], True), "$.ota.apply.parked", "add a sensor named 'parked'"),
    ("flash size that is not whole MiB", "esp32", _set(["flash", "size"], 4000000), "$.flash.size",
     "MB"),
]


@pytest.mark.parametrize("case,base,mutate,where,words", BROKEN, ids=[c[0] for c in BROKEN])
def test_a_broken_board_file_is_refused_naming_the_file_key_and_fix(tmp_path, case, base, mutate,
                                                                     where, words):
    board = copy.deepcopy(load_board(base))
    mutate(board)
    path = tmp_path / f"{base}.json"
    path.write_text(json.dumps(board, indent=2))
    with pytest.raises(BadInput) as info:
        load_board(base, tmp_path)
    err = info.value
    assert err.exit_code == EXIT_BAD_INPUT
    assert str(path) in err.message
    assert where + ":" in err.message
    assert err.hint and where in err.hint
    assert words in err.message + " " + err.hint


def test_a_board_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "esp32.json"
    path.write_text('{"name": "esp32",')
    with pytest.raises(BadInput, match="not valid JSON") as info:
        load_board("esp32", tmp_path)
    assert str(path) in info.value.message


def test_a_board_file_that_is_a_list_is_refused(tmp_path):
    (tmp_path / "esp32.json").write_text("[]")
    with pytest.raises(BadInput, match=r"\$: \[\] is not of type 'object'"):
        load_board("esp32", tmp_path)


def test_many_problems_are_listed_up_to_a_bound(tmp_path):
    board = copy.deepcopy(load_board("esp32"))
    for key in ("heap_bytes", "chip", "pins", "title", "ota_method", "console", "usb_ids"):
        board.pop(key)
    (tmp_path / "esp32.json").write_text(json.dumps(board))
    with pytest.raises(BadInput) as info:
        load_board("esp32", tmp_path)
    assert "$.chip:" in info.value.message and "... and 2 more" in info.value.message


def test_partner_keys_with_x_prefix_are_allowed(tmp_path):
    board = copy.deepcopy(load_board("esp32"))
    board["x-acme-enclosure"] = {"ip": 67}
    (tmp_path / "esp32.json").write_text(json.dumps(board))
    assert load_board("esp32", tmp_path)["x-acme-enclosure"] == {"ip": 67}


@pytest.mark.parametrize("name", ["esp33", "schema", "../boards/esp32", ""])
def test_an_unknown_board_name_lists_the_known_ones(name):
    with pytest.raises(NotFound) as info:
        load_board(name)
    assert repr(name) in info.value.message
    for known in FILES:
        assert known in info.value.hint
    assert "schema" not in info.value.hint


# --- images that do not fit the flash -------------------------------------

def test_an_image_that_fits_passes():
    for name in ("esp32", "esp32s3", "esp32c3", "picow"):
        board = load_board(name)
        check_image_fits(board, 800_000)      # about the size of a MicroPython image
        check_image_fits(board, board["flash"]["firmware_max"])   # exactly full


def test_an_image_over_the_firmware_area_names_sizes_and_the_fix():
    board = load_board("esp32")
    fw_max = board["flash"]["firmware_max"]
    with pytest.raises(BadInput) as info:
        check_image_fits(board, fw_max + 1)
    msg = info.value.message
    assert f"{fw_max + 1} bytes" in msg and f"at most {fw_max} bytes" in msg
    assert "0x1000" in msg and "filesystem starts at 0x200000" in msg
    assert "ESP32_GENERIC" in info.value.hint


def test_an_image_past_the_end_of_flash_names_the_flash_size():
    board = load_board("picow")
    with pytest.raises(BadInput) as info:
        check_image_fits(board, 4096, offset=2 * 1024 * 1024 - 100)
    assert "2 MB flash of board picow" in info.value.message
    assert "3996 bytes too many" in info.value.message
    assert "RPI_PICO_W" in info.value.hint


def test_an_image_at_its_own_offset_past_the_firmware_area_only_needs_to_fit_the_flash():
    board = load_board("esp32s3")      # 8 MB: e.g. a filesystem image written at 0x200000
    check_image_fits(board, 4 * 1024 * 1024, offset=0x200000)
    with pytest.raises(BadInput, match="past the end of flash"):
        check_image_fits(board, 6 * 1024 * 1024 + 1, offset=0x200000)


@pytest.mark.parametrize("size", [0, -5])
def test_an_empty_image_is_refused(size):
    with pytest.raises(BadInput, match="empty"):
        check_image_fits(load_board("esp32c3"), size)


def test_an_offset_outside_the_flash_is_refused():
    with pytest.raises(BadInput, match="outside the 4 MB flash") as info:
        check_image_fits(load_board("esp32"), 10, offset=0x400000)
    assert "0x1000" in info.value.hint


def test_the_raspberry_pi_takes_no_image():
    with pytest.raises(BadInput, match="no firmware image") as info:
        check_image_fits(load_board("rpi"), 1000)
    assert "pip" in info.value.hint


def test_board_files_are_unchanged_by_loading():
    before = {p: p.read_bytes() for p in BOARDS_DIR.glob("*.json")}
    for name in FILES:
        load_board(name)["sensors"].clear()       # the caller's copy only
    assert before == {p: p.read_bytes() for p in Path(BOARDS_DIR).glob("*.json")}


# -- one rule for board type names ---------------------------------------------------

NAMES = ["esp32", "my-board", "a", "x" * 32, "2nd-rev",          # fit
         "my_board", "My-board", "-lead", "x" * 33, "", "a.b", "esp32 ", "ésp32", "a/b"]


@pytest.mark.parametrize("name", NAMES)
def test_the_schema_provisioning_and_labels_agree_on_every_board_name(name):
    from edge_agent.boards import is_board_name
    from edge_agent.label import pairing_payload, parse_pairing_payload

    schema = json.loads((BOARDS_DIR / "schema.json").read_text())
    name_rule = schema["properties"]["name"]
    by_schema = not list(Draft202012Validator(name_rule).iter_errors(name))
    assert by_schema == is_board_name(name)
    try:
        payload = pairing_payload("dev-0123456789ab", "48151623", "0123456789abcdef", name)
        by_label = parse_pairing_payload(payload).board == name
    except BadInput:
        by_label = False
    assert by_label == is_board_name(name)


def test_a_board_file_named_with_an_underscore_is_refused_by_the_schema_with_the_fix(tmp_path):
    data = json.loads((BOARDS_DIR / "esp32.json").read_text())
    data["name"] = "my_board"
    (tmp_path / "my_board.json").write_text(json.dumps(data))
    with pytest.raises(BadInput) as e:
        load_board("my_board", tmp_path)
    assert "my_board.json" in e.value.message and "$.name" in e.value.message
    assert "'_'" in e.value.hint and "my-board" in e.value.hint


def test_a_board_file_named_with_a_hyphen_loads_and_can_be_provisioned(tmp_path):
    from edge_agent.identity import device_id_for
    from edge_agent.names import is_device_id

    data = json.loads((BOARDS_DIR / "esp32.json").read_text())
    data["name"] = "my-board"
    (tmp_path / "my-board.json").write_text(json.dumps(data))
    assert load_board("my-board", tmp_path)["name"] == "my-board"
    assert is_device_id(device_id_for("my-board", bytes(32)))
