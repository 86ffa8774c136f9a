"""edge_ota.bundle: the agent bundle of protocol.md 7.1, against tests/vectors/bundle.json
(which the device's unpacker reads too) and hypothesis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import BadInput
from edge_ota.bundle import MAX_FILES, BundleError, pack, unpack
from edge_ota.cose import OtaError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "bundle.json").read_text())


def files_of(case: dict) -> list[tuple[str, bytes]]:
    return [(f["name"], bytes.fromhex(f["hex"])) for f in case["files"]]


@pytest.mark.parametrize("case", VECTORS["valid"], ids=[c["name"] for c in VECTORS["valid"]])
def test_a_valid_bundle_unpacks_to_its_files_and_packs_to_its_bytes(case):
    assert unpack(bytes.fromhex(case["hex"])) == files_of(case)
    assert pack(files_of(case)).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["bad"], ids=[c["name"] for c in VECTORS["bad"]])
def test_a_malformed_bundle_is_refused_as_bad_bundle(case):
    with pytest.raises(BundleError) as info:
        unpack(bytes.fromhex(case["hex"]))
    error = info.value
    assert isinstance(error, OtaError) and isinstance(error, BadInput)
    assert error.check == "bad-bundle" and error.message.startswith("bad-bundle: ") and error.hint


@pytest.mark.parametrize("name, words", [
    ("empty", "no bundle magic"),
    ("no end byte", "without its end byte"),
    ("trailing byte after the end", "1 bytes follow the end byte"),
    ("ends inside a name", "ends inside its name"),
    ("size past the end by one (the end byte counted as data)", "5 bytes said, 4 left"),
    ("name of 65 bytes", "a name of 65 bytes"),
    ("name with a leading /", "no empty segment"),
    ("name ../main.py", "no segment '.' or '..'"),
    ("name with an upper-case letter", "a-z 0-9"),
    ("the same name twice", "'edgefw/a.mpy' twice"),
    ("129 files", "more than 128 files"),
])
def test_the_refusal_names_what_is_wrong(name, words):
    case = next(c for c in VECTORS["bad"] if c["name"] == name)
    with pytest.raises(BundleError, match=None) as info:
        unpack(bytes.fromhex(case["hex"]))
    assert words in info.value.message


def test_the_refusal_says_which_file_and_where():
    good = bytes.fromhex(VECTORS["valid"][0]["hex"])
    bad = pack([("a", b"1"), ("b", b"2")]).replace(b"\x01b", b"\x01B")
    with pytest.raises(BundleError, match=r"file 2 \(byte 11\) b'B'"):
        unpack(bad)
    assert unpack(bytearray(good)) == unpack(memoryview(good))


@pytest.mark.parametrize("files, words", [
    ([("edgefw/../x", b"")], "'.' or '..'"),
    ([("Main.py", b"")], "a-z 0-9"),
    ([("", b"")], "1 to 64 bytes"),
    ([("é", b"")], "a-z 0-9"),
    ([("a", b""), ("a", b"")], "'a' twice"),
    ([(f"f{i}", b"") for i in range(MAX_FILES + 1)], "at most 128"),
])
def test_pack_refuses_what_unpack_would_refuse(files, words):
    with pytest.raises(BundleError) as info:
        pack(files)
    assert words in info.value.message


_segment = st.from_regex(r"[a-z0-9_.\-]{1,12}", fullmatch=True).filter(lambda s: s not in (".", ".."))
_name = st.lists(_segment, min_size=1, max_size=4).map("/".join).filter(lambda n: len(n) <= 64)
_files = st.lists(st.tuples(_name, st.binary(max_size=300)), max_size=20, unique_by=lambda f: f[0])


@settings(max_examples=300, deadline=None)
@given(_files)
def test_every_bundle_round_trips(files):
    assert unpack(pack(files)) == files


@settings(max_examples=300, deadline=None)
@given(_files, st.data())
def test_a_cut_or_a_flipped_byte_is_refused_or_still_reads_as_some_valid_bundle(files, data):
    packed = pack(files)
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(BundleError):
        unpack(packed[:cut])
    i = data.draw(st.integers(0, len(packed) - 1))
    flipped = bytearray(packed)
    flipped[i] ^= data.draw(st.integers(1, 255))
    try:
        got = unpack(bytes(flipped))
    except BundleError:
        return
    assert pack(got) == bytes(flipped)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_unpack_or_raise_bundle_error_only(data):
    try:
        unpack(b"EAB1" + data)
    except BundleError:
        pass
