"""Build ``tests/vectors/bundle.json``: agent bundles (docs/protocol.md section 7.1).

Run ``python tests/host/build_bundle_vectors.py`` to rewrite it. The bundles
are written byte by byte here from the format in 7.1; nothing imports
``edge_ota``, so the vectors test the host's unpacker and the device's alike.

``valid``: ``{name, hex, files: [{name, hex}]}``; ``bad``: ``{name, hex, why}``
(every unpacker refuses them with check ``bad-bundle``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

OUT = Path(__file__).parents[1] / "vectors" / "bundle.json"
MAGIC = b"EAB1"


def entry(name: bytes, data: bytes, size: int | None = None) -> bytes:
    return bytes([len(name)]) + name + struct.pack(">I", len(data) if size is None else size) + data


def bundle(*entries: bytes, end: bytes = b"\x00") -> bytes:
    return MAGIC + b"".join(entries) + end


INIT = b'M\x06\x00\x1f\x02\x00\x0eedgefw/__init__.py\x00\x0f\x0eVERSION\x10\x050.3.0'
FILES = [(b"edgefw/__init__.mpy", INIT), (b"edgefw/agent.mpy", bytes(range(256)) * 3),
         (b"edgefw/drivers/bme280.mpy", b"M\x06"), (b"edgefw/empty.mpy", b"")]
GOOD = bundle(*(entry(n, d) for n, d in FILES))


def valid() -> list[dict]:
    cases = [
        ("an agent slot: four files, one in a sub-folder, one empty", GOOD, FILES),
        ("no files (the end byte right after the magic)", bundle(), []),
        ("a name of 64 bytes, every allowed character", bundle(entry(b"a" * 40 + b"/z-9_.x" + b"b" * 17, b"1")),
         [(b"a" * 40 + b"/z-9_.x" + b"b" * 17, b"1")]),
        ("128 files (the most)", bundle(*(entry(b"f%d" % i, bytes([i])) for i in range(128))),
         [(b"f%d" % i, bytes([i])) for i in range(128)]),
        ("names with dots that are not . or ..", bundle(entry(b"...", b"x"), entry(b".a/..b", b"y")),
         [(b"...", b"x"), (b".a/..b", b"y")]),
    ]
    return [{"name": n, "hex": h.hex(), "files": [{"name": f.decode(), "hex": d.hex()} for f, d in fs]}
            for n, h, fs in cases]


def bad() -> list[dict]:
    one = entry(b"edgefw/a.mpy", b"abc")
    cases = [
        ("empty", b"", "no magic"),
        ("the magic only, no end byte", MAGIC, "ends without its end byte"),
        ("wrong magic EAB2", b"EAB2" + GOOD[4:], "no magic"),
        ("magic in lower case", b"eab1" + GOOD[4:], "no magic"),
        ("trailing byte after the end", GOOD + b"\x00", "bytes follow the end byte"),
        ("a second bundle after the end", GOOD + GOOD, "bytes follow the end byte"),
        ("no end byte", GOOD[:-1], "ends without its end byte"),
        ("ends inside a name", MAGIC + one[:5], "ends inside a name"),
        ("ends inside a size", MAGIC + one[:1 + 12 + 2], "ends inside a size"),
        ("ends inside data", MAGIC + one[:-1], "size past the end"),
        ("size past the end by one (the end byte counted as data)", bundle(entry(b"a", b"abc", size=5)), "size past the end"),
        ("size 2**32-1", bundle(entry(b"a", b"abc", size=0xFFFFFFFF)), "size past the end"),
        ("name of 65 bytes", bundle(entry(b"a" * 65, b"x")), "a name is 1..64 bytes"),
        ("name length 255", MAGIC + b"\xff" + b"a" * 255 + b"\x00\x00\x00\x00\x00", "a name is 1..64 bytes"),
        ("name with an upper-case letter", bundle(entry(b"edgefw/A.mpy", b"x")), "characters of a name"),
        ("name with a space", bundle(entry(b"edgefw/a b.mpy", b"x")), "characters of a name"),
        ("name with a backslash", bundle(entry(b"edgefw\\a.mpy", b"x")), "characters of a name"),
        ("name with a NUL", bundle(entry(b"a\x00b", b"x")), "characters of a name"),
        ("name not ASCII (UTF-8 e-acute)", bundle(entry("caf\u00e9".encode(), b"x")), "characters of a name"),
        ("name with a byte 0xff", bundle(entry(b"a\xff", b"x")), "characters of a name"),
        ("name with a colon", bundle(entry(b"c:x", b"x")), "characters of a name"),
        ("name with a leading /", bundle(entry(b"/main.py", b"x")), "no leading /"),
        ("name with a trailing /", bundle(entry(b"edgefw/", b"x")), "no empty segment"),
        ("name with a double /", bundle(entry(b"edgefw//a.mpy", b"x")), "no empty segment"),
        ("name ..", bundle(entry(b"..", b"x")), "no segment .."),
        ("name ../main.py", bundle(entry(b"../main.py", b"x")), "no segment .."),
        ("name edgefw/../../x", bundle(entry(b"edgefw/../../x", b"x")), "no segment .."),
        ("name .", bundle(entry(b".", b"x")), "no segment ."),
        ("name edgefw/./a.mpy", bundle(entry(b"edgefw/./a.mpy", b"x")), "no segment ."),
        ("the same name twice", bundle(one, entry(b"edgefw/a.mpy", b"other")), "no name twice"),
        ("129 files", bundle(*(entry(b"f%d" % i, b"") for i in range(129))), "at most 128 files"),
    ]
    return [{"name": n, "hex": h.hex(), "why": w} for n, h, w in cases]


def main() -> None:
    OUT.write_text(json.dumps({"valid": valid(), "bad": bad()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
