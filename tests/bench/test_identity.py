"""Identity minting, the registry's identity records and pairing labels.

The end-to-end tests provision virtual boards started with `edge sim up` in a
temporary EDGE_HOME, through the real BoardLink (mpremote's raw REPL); the
bench is always stopped by the fixture.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from Crypto.PublicKey import ECC
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.board_link import BoardLink
from edge_agent.boards import load_board
from edge_agent.errors import BadInput, DeviceError, NotFound
from edge_agent.identity import (check_setup_code, device_id_for, fingerprint, is_weak_code,
                                 new_setup_code, provision, setup_verifier)
from edge_agent.label import make_qr, pairing_payload, parse_pairing_payload, MODULE_PX, BORDER
from edge_agent.messages import Hello
from edge_agent.store import Store


# -- setup codes and their verifier

@pytest.mark.parametrize("code", ["00000000", "99999999", "12345678", "87654321", "01234567",
                                  "90123456", "12121212", "98765432"])
def test_weak_setup_codes_are_recognised(code):
    assert is_weak_code(code)


@pytest.mark.parametrize("code", ["48213907", "12345679", "11111112", "13572468"])
def test_ordinary_setup_codes_are_not_weak(code):
    assert not is_weak_code(code)


def test_new_setup_codes_are_8_digits_random_and_never_weak():
    codes = [new_setup_code() for _ in range(300)]
    assert all(re.fullmatch(r"[0-9]{8}", c) and not is_weak_code(c) for c in codes)
    assert len(set(codes)) > 295


def test_the_verifier_is_salted_scrypt_and_accepts_only_its_code():
    v1, v2 = setup_verifier("48213907"), setup_verifier("48213907")
    kind, n, r, p, salt, digest = v1.split("$")
    assert (kind, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert v1 != v2                                    # a fresh salt each time
    assert "48213907" not in v1
    assert check_setup_code(v1, "48213907") and check_setup_code(v2, "48213907")
    assert not check_setup_code(v1, "48213908")


@pytest.mark.parametrize("verifier", ["", "scrypt$16384$8$1$00", "bcrypt$16384$8$1$" + "00" * 16 + "$" + "00" * 32,
                                      "scrypt$1000$8$1$" + "00" * 16 + "$" + "00" * 32,
                                      "scrypt$1073741824$8$1$" + "00" * 16 + "$" + "00" * 32,
                                      "scrypt$16384$8$1$zz$" + "00" * 32])
def test_a_malformed_or_costly_verifier_is_refused(verifier):
    with pytest.raises(BadInput):
        check_setup_code(verifier, "48213907")


# -- the pairing payload

def test_pairing_payload_example_of_the_protocol_document():
    text = pairing_payload("esp32-3f9a0c12b7d4", "48213907", "3f9a0c12b7d4e5a1", "esp32")
    assert text == "EA1:ESP32-3F9A0C12B7D4:48213907:3F9A0C12B7D4E5A1:ESP32"
    assert text in (Path(__file__).parents[2] / "docs" / "protocol.md").read_text()
    assert make_qr(text).mode == "alphanumeric"
    assert parse_pairing_payload(text) == ("esp32-3f9a0c12b7d4", "48213907", "3f9a0c12b7d4e5a1", "esp32")


@settings(max_examples=200)
@given(st.from_regex(r"[a-z0-9.-]{1,64}", fullmatch=True), st.from_regex(r"[0-9]{8}", fullmatch=True),
       st.binary(min_size=8, max_size=8), st.from_regex(r"[a-z0-9][a-z0-9-]{0,31}", fullmatch=True))  # edge_agent.boards.BOARD_NAME
def test_pairing_payload_round_trips(device_id, code, fp, board):
    text = pairing_payload(device_id, code, fp.hex(), board)
    assert parse_pairing_payload(text) == (device_id, code, fp.hex(), board)
    assert len(text) <= 128


@pytest.mark.parametrize("text,word", [
    ("", "EA1"),
    ("EA2:ESP32-1:48213907:3F9A0C12B7D4E5A1:ESP32", "EA1"),
    ("EA1:ESP32-1:48213907:3F9A0C12B7D4E5A1", "5 fields"),
    ("EA1:ESP32-1:48213907:3F9A0C12B7D4E5A1:ESP32:X", "5 fields"),
    ("EA1::48213907:3F9A0C12B7D4E5A1:ESP32", "device id"),
    ("EA1:esp32-1:48213907:3F9A0C12B7D4E5A1:ESP32", "device id"),
    ("EA1:ESP32_1:48213907:3F9A0C12B7D4E5A1:ESP32", "device id"),
    ("EA1:ESP32-1:4821390:3F9A0C12B7D4E5A1:ESP32", "setup code"),
    ("EA1:ESP32-1:4821-3907:3F9A0C12B7D4E5A1:ESP32", "setup code"),
    ("EA1:ESP32-1:482139O7:3F9A0C12B7D4E5A1:ESP32", "setup code"),
    ("EA1:ESP32-1:48213907:3F9A0C12B7D4E5A:ESP32", "fingerprint"),
    ("EA1:ESP32-1:48213907:3f9a0c12b7d4e5a1:ESP32", "fingerprint"),
    ("EA1:ESP32-1:48213907:3F9A0C12B7D4E5A1:", "board"),
    ("EA1:" + "A" * 200 + ":48213907:3F9A0C12B7D4E5A1:ESP32", "over 128"),
])
def test_bad_pairing_payloads_are_refused_naming_the_field(text, word):
    with pytest.raises(BadInput) as e:
        parse_pairing_payload(text)
    assert word in e.value.message


def test_ids_outside_the_payload_alphabet_cannot_be_labelled():
    with pytest.raises(BadInput, match="device id"):
        pairing_payload("Board_1", "48213907", "00" * 8, "esp32")


# -- the registry

def test_ingest_before_provisioning_and_provisioning_before_ingest_share_one_row(tmp_path):
    pub = bytes(range(32))
    with Store(tmp_path / "r.db") as s:
        s.note_device(Hello("dev-a", "esp32", "0.1.0", 3, 5000, 10, 10, 0), seen=100.0)
        s.record_identity("dev-a", "esp32", pub, fingerprint(pub), setup_verifier("48213907"),
                          "48213907", "tester", at=200.0)
        s.record_identity("dev-b", "picow", bytes(32), "00" * 8, "v", "11223344", "tester", at=300.0)
        s.note_device(Hello("dev-b", "picow", "0.1.0", 1, 1000, 0, 0, 0), seen=400.0)
        a, b = ({**s.device(d), **s.identity(d)} for d in ("dev-a", "dev-b"))
        assert (a["boot"], a["first_seen"], a["public_key"], a["provisioned_by"]) == (3, 100.0, pub, "tester")
        assert (b["version"], b["boot"], b["key_fingerprint"], b["setup_code_pending"]) == \
            ("0.1.0", 1, "00" * 8, "11223344")
        assert s.identity("dev-a")["provisioned"] is False
        s.mark_provisioned("dev-a", "1.24.1", "0.1.0")
        assert s.identity("dev-a")["provisioned"] is True
        assert s.identity("dev-a")["firmware_version"] == "1.24.1"
        assert s.take_setup_code("dev-a") == "48213907"
        assert s.take_setup_code("dev-a") is None
        assert s.identity("dev-a")["label_printed_at"] is not None


def test_an_identity_is_only_for_provisioned_rows_and_marking_an_unknown_device_fails(tmp_path):
    with Store(tmp_path / "r.db") as s:
        s.note_device(Hello("seen-only", "esp32", "0.1.0", 1, 0, 0, 0, 0), seen=1.0)
        assert s.identity("seen-only") is None and s.identity("nothing") is None
        with pytest.raises(NotFound) as e:
            s.mark_provisioned("seen-only", "1", "1")
        assert "seen-only" in e.value.message and "edge provision" in e.value.hint
        assert s.device("seen-only")["provisioned"] == 0


def test_two_devices_cannot_share_a_public_key(tmp_path):
    with Store(tmp_path / "r.db") as s:
        s.record_identity("a", "esp32", bytes(32), "00" * 8, "v", None, None)
        with pytest.raises(sqlite3.IntegrityError):
            s.record_identity("b", "esp32", bytes(32), "00" * 8, "v", None, None)


# -- the OTA root key

def test_the_ota_root_key_is_created_once_private_and_announced(tmp_path, monkeypatch, capsys):
    from edge_ota.keys import key_dir, root_public_key

    monkeypatch.setenv("EDGE_HOME", str(tmp_path))
    with pytest.raises(NotFound, match="no OTA root key"):
        root_public_key(create=False)
    pub = root_public_key()
    assert "created the OTA root key" in capsys.readouterr().err
    pem = key_dir() / "ota-root.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    key = ECC.import_key(pem.read_text())
    assert key.curve == "Ed25519" and key.public_key().export_key(format="raw") == pub
    assert root_public_key() == root_public_key(create=False) == pub
    assert capsys.readouterr().err == ""
    (key_dir() / "ota-root.pub").unlink()           # the public half is made again
    assert root_public_key(create=False) == pub


# -- end to end on virtual boards

@pytest.fixture(scope="module")
def bench(module_bench):
    saved = os.environ.get("EDGE_HOME")
    os.environ["EDGE_HOME"] = str(module_bench.root)     # the library reads the OTA key from here
    try:
        module_bench.up("esp32", "picow", "virtual", extra=("--unprovisioned",))
        yield module_bench
    finally:
        if saved is None:
            os.environ.pop("EDGE_HOME", None)
        else:
            os.environ["EDGE_HOME"] = saved


def key_on_board(fs: str) -> bytes:
    raw = (Path(fs) / "identity" / "key").read_bytes()
    return raw[:-4]


def host_files(home: Path):
    """Every file the bench keeps on the host (the virtual boards' flash excluded)."""
    for p in home.rglob("*"):
        if p.is_file() and "sim" not in p.relative_to(home).parts:
            yield p


def wait_for_agent(board: dict, since: int, timeout: float = 20) -> None:
    """Wait until the agent, restarted by `edge provision`'s soft reset, prints a frame.

    Connecting while the board reboots can lose the Ctrl-C that stops the
    agent (mpremote then waits for the raw REPL while the agent keeps talking).
    """
    log = Path(board["console_log"])
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with log.open("rb") as f:
            f.seek(since)
            if b"\n#EA:" in f.read():
                return
        time.sleep(0.05)
    raise AssertionError(f"{board['name']} did not restart its agent within {timeout} s")


def provision_board(bench, name: str, **kw):
    b = bench.board(name)
    with BoardLink(b["port"]) as link, Store(bench.db) as store:
        return provision(link, store, load_board(b["board"]), **kw)


def test_provision_mints_the_identity_on_the_board_and_records_it(bench):
    from edge_ota.keys import root_public_key

    before = time.time()
    ident = provision_board(bench, "esp32-1", operator="tech@bench-3")
    fs = Path(bench.board("esp32-1")["fs"])
    assert ident.created and re.fullmatch(r"[0-9]{8}", ident.setup_code)
    key = key_on_board(str(fs))
    pub = ECC.construct(curve="curve25519", seed=key).public_key().export_key(format="raw")
    assert ident.public_key == pub
    assert ident.device_id == device_id_for("esp32", pub) and ident.fingerprint == fingerprint(pub)
    assert re.fullmatch(r"esp32-[0-9a-f]{12}", ident.device_id)
    config = json.loads((fs / "config.json").read_text())
    assert config["device_id"] == ident.device_id and config["board"] == "esp32"
    assert config["sample_period_ms"] == 1000                    # other settings kept
    assert (fs / "identity" / "setup").read_bytes()[:-4] == ident.setup_code.encode()
    anchors = json.loads((fs / "identity" / "anchors.json").read_bytes()[:-4])
    assert anchors == {"v": 1, "ota_root": root_public_key(create=False).hex()}
    with Store(bench.db) as store:
        row = store.identity(ident.device_id)
    assert row["board"] == "esp32" and row["public_key"] == pub
    assert row["key_fingerprint"] == ident.fingerprint
    assert check_setup_code(row["setup_verifier"], ident.setup_code)
    assert row["setup_code_pending"] == ident.setup_code         # until the label is made
    assert row["provisioned"] is False                          # `edge flash` marks it after the self-test
    assert row["provisioned_by"] == "tech@bench-3" and before <= row["provisioned_at"] <= time.time()
    # The bench never holds the device's private key, in any form.
    for path in host_files(bench.root):
        data = path.read_bytes()
        assert key not in data and key.hex().encode() not in data, path


def test_provisioning_again_keeps_the_identity(bench):
    first = provision_board(bench, "virtual-1")
    key = key_on_board(bench.board("virtual-1")["fs"])
    again = provision_board(bench, "virtual-1")
    assert not again.created and again.setup_code is None
    assert (again.device_id, again.public_key) == (first.device_id, first.public_key)
    assert key_on_board(bench.board("virtual-1")["fs"]) == key


def test_reprovision_mints_a_new_identity_and_retires_the_old_code(bench):
    b = bench.board("virtual-1")
    old = provision_board(bench, "virtual-1").device_id
    since = Path(b["console_log"]).stat().st_size
    r = bench.invoke("provision", "--port", b["port"], "--reprovision", "--json")
    assert r.exit_code == 0, r.output
    wait_for_agent(b, since)                   # the agent runs again under its new id
    out = json.loads(r.stdout)
    assert out["created"] and out["label_pending"] and out["device_id"] != old
    assert out["board"] == "virtual"                       # read from the board's board.json
    with Store(bench.db) as store:
        assert store.identity(old)["setup_code_pending"] is None
        assert store.identity(out["device_id"])["public_key"].hex() == out["public_key"]


def test_label_renders_png_and_svg_with_the_payload_then_forgets_the_code(bench, tmp_path):
    b = bench.board("picow-1")
    r = bench.invoke("provision", "--port", b["port"])
    assert r.exit_code == 0, r.output
    device = re.search(r"(picow-[0-9a-f]{12}): identity minted", r.stdout).group(1)
    assert f"edge label {device}" in r.stdout
    with Store(bench.db) as store:
        ident = store.identity(device)
    code, fp = ident["setup_code_pending"], ident["key_fingerprint"]

    r = bench.invoke("label", device, "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert f"{code[:4]}-{code[4:]}" in r.stdout and "█" in r.stdout      # QR drawn in the terminal
    payload = pairing_payload(device, code, fp, "picow")
    png, svg = tmp_path / f"{device}.png", tmp_path / f"{device}.svg"

    # PNG: a real PNG whose QR modules are exactly the QR of the payload.
    from PIL import Image

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(png).convert("L")
    matrix = [list(row) for row in make_qr(payload).matrix]
    side = (len(matrix) + 2 * BORDER) * MODULE_PX
    x0 = (img.width - side) // 2 + BORDER * MODULE_PX
    seen = [[img.getpixel((x0 + c * MODULE_PX + MODULE_PX // 2, BORDER * MODULE_PX + r * MODULE_PX
                            + MODULE_PX // 2)) < 128 for c in range(len(matrix))]
            for r in range(len(matrix))]
    assert seen == [[bool(v) for v in row] for row in matrix]
    assert img.height > side                     # room for the text below the code

    # SVG: well-formed, with the code in digits, the device id and the payload.
    root = ET.fromstring(svg.read_text())
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == [f"Setup code {code[:4]}-{code[4:]}", device, "board: picow"]
    assert root.find("{http://www.w3.org/2000/svg}desc").text == payload

    with Store(bench.db) as store:
        after = store.identity(device)
    assert after["setup_code_pending"] is None and after["label_printed_at"] is not None
    assert check_setup_code(after["setup_verifier"], code)
    # The plain code is gone from the registry's files too (WAL included).
    for path in bench.db.parent.glob("registry.db*"):
        assert code.encode() not in path.read_bytes(), path

    again = bench.invoke("label", device, "--out", str(tmp_path))
    assert again.exit_code == 3
    assert "already printed" in again.output and "--reprovision" in again.output


def test_label_json_lists_files_and_payload(bench, tmp_path):
    ident = provision_board(bench, "virtual-1", reprovision=True)
    r = bench.invoke("label", ident.device_id, "--out", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert parse_pairing_payload(out["payload"]).setup_code == ident.setup_code
    assert Path(out["png"]).is_file() and Path(out["svg"]).is_file()
    assert out["setup_code"] == f"{ident.setup_code[:4]}-{ident.setup_code[4:]}"


def test_label_for_an_unknown_device_is_refused(bench):
    Store(bench.db).close()  # a registry without that device
    r = bench.invoke("label", "esp32-000000000000", "--no-terminal")
    assert r.exit_code == 3 and "no identity" in r.output and "edge provision" in r.output


def test_provision_on_a_port_that_does_not_exist_is_not_found(bench, tmp_path):
    r = bench.invoke("provision", "--port", str(tmp_path / "ttyUSB9"), "--board", "esp32")
    assert r.exit_code == 3 and f"{tmp_path / 'ttyUSB9'} does not exist" in r.output


def test_a_corrupt_key_is_reported_and_replaced_only_with_reprovision(bench):
    b = bench.board("esp32-1")
    provision_board(bench, "esp32-1")
    path = Path(b["fs"]) / "identity" / "key"
    raw = bytearray(path.read_bytes())
    raw[7] ^= 0x40                                  # a bit flipped in flash: the CRC fails
    path.write_bytes(bytes(raw))
    with pytest.raises(DeviceError, match="corrupt"):
        provision_board(bench, "esp32-1")
    assert path.read_bytes() == bytes(raw)          # nothing replaced without --reprovision
    r = bench.invoke("provision", "--port", b["port"])
    assert r.exit_code == 6 and "--reprovision" in r.output
    since = Path(b["console_log"]).stat().st_size
    r = bench.invoke("provision", "--port", b["port"], "--reprovision")
    assert r.exit_code == 0, r.output
    assert path.read_bytes() != bytes(raw)
    wait_for_agent(b, since)
    assert provision_board(bench, "esp32-1").created is False   # now complete and known


def test_a_key_left_by_an_interrupted_run_is_replaced_without_reprovision(bench):
    # The key is written first and config.json last: a key whose config does
    # not name it was never completed, so nobody can have paired with it.
    first = provision_board(bench, "esp32-1", reprovision=True)
    fs = Path(bench.board("esp32-1")["fs"])
    config = json.loads((fs / "config.json").read_text())
    (fs / "config.json").write_text(json.dumps({**config, "device_id": "esp32-1-old"}))
    again = provision_board(bench, "esp32-1")
    assert again.created and again.device_id != first.device_id


def test_an_identity_the_registry_does_not_know_is_kept_until_reprovision(bench, tmp_path):
    known = provision_board(bench, "esp32-1")
    b = bench.board("esp32-1")
    with BoardLink(b["port"]) as link, Store(tmp_path / "other.db") as other:
        with pytest.raises(DeviceError, match="does not know"):
            provision(link, other, load_board("esp32"))
        fresh = provision(link, other, load_board("esp32"), reprovision=True)
    assert fresh.created and fresh.device_id != known.device_id


def test_a_board_without_urandom_gets_a_bench_made_key_sent_once(bench):
    from edge_agent.identity import _generate_on_board

    b = bench.board("picow-1")
    with BoardLink(b["port"]) as link:
        pub = _generate_on_board(link, urandom=False)
    key = key_on_board(b["fs"])
    assert key[0] & 7 == 0 and key[31] & 0xC0 == 0x40          # clamped like a board-made key
    assert ECC.construct(curve="curve25519", seed=key).public_key().export_key(format="raw") == pub


def test_a_registry_of_schema_2_gains_the_identity_columns_and_keeps_its_devices(tmp_path):
    from edge_agent.store import APPLICATION_ID, MIGRATIONS

    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    for step in MIGRATIONS[:2]:
        for statement in step:
            db.execute(statement)
    db.execute("INSERT INTO devices (device_id, board, first_seen, last_seen) VALUES ('old', 'esp32', 1, 2)")
    db.execute("PRAGMA user_version = 2")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.commit()
    db.close()
    with Store(path) as s:
        row = s.device("old")
        assert (row["board"], row["last_seen"], row["provisioned"], row["key_fingerprint"]) == ("esp32", 2, 0, None)
        assert s.identity("old") is None
        s.record_identity("old", "esp32", bytes(range(32)), "00" * 8, "v", "48213907", "t", at=5.0)
        assert s.identity("old")["provisioned_at"] == 5.0 and s.device("old")["first_seen"] == 1
