"""Agent bundles (docs/protocol.md section 7.1): the files of an agent slot in one image.

::

    "EAB1"                          the magic
    for each file: n (1 byte, 1..64) | name (n ASCII bytes) | size (u32be) | data
    0x00                            the end; nothing follows it

A name is a relative path in the slot: segments of ``[a-z0-9_.-]`` joined by
``/``, no segment ``.`` or ``..``, no leading ``/``. At most 128 files, no
name twice. :func:`unpack` reads hostile bytes and raises
:class:`BundleError` (check ``bad-bundle``) naming the first thing wrong and
where; :func:`pack` refuses to write what :func:`unpack` would refuse.
"""

from __future__ import annotations

import re
import struct

from edge_ota.cose import OtaError

MAGIC = b"EAB1"
END = 0
MAX_NAME = 64
MAX_FILES = 128
MAX_SIZE = 0xFFFFFFFF
_SEGMENT = re.compile(rb"[a-z0-9_.-]+")
_U32 = struct.Struct(">I")


class BundleError(OtaError):
    """Bytes that are not an agent bundle of section 7.1."""

    check = "bad-bundle"

    def __init__(self, message: str):
        super().__init__(message, "build the bundle again with `edge ota bundle` and sign it again")


def name_problem(name: bytes) -> str | None:
    """What breaks the name rule of 7.1 in ``name``, or None."""
    if not 1 <= len(name) <= MAX_NAME:
        return f"a name is 1 to {MAX_NAME} bytes, this one {len(name)}"
    for segment in name.split(b"/"):
        if not segment:
            return "a name has no empty segment (a leading, trailing or double '/')"
        if not _SEGMENT.fullmatch(segment):
            return "a name is made of a-z 0-9 _ . - and '/'"
        if segment in (b".", b".."):
            return "a name has no segment '.' or '..'"
    return None


def _admit(raw: bytes, seen: set[bytes], where: str) -> None:
    """Add ``raw`` to the names ``seen`` if it keeps the name rule and is new; else BundleError."""
    problem = name_problem(raw)
    if problem:
        raise BundleError(f"{where} {raw!r}: {problem}")
    if raw in seen:
        raise BundleError(f"{where}: {raw.decode()!r} twice")
    seen.add(raw)


def pack(files: list[tuple[str, bytes]]) -> bytes:
    """The bundle holding ``files`` (name, data) in the order given; :class:`BundleError` if one breaks 7.1."""
    if len(files) > MAX_FILES:
        raise BundleError(f"{len(files)} files: a bundle holds at most {MAX_FILES}")
    out = bytearray(MAGIC)
    seen: set[bytes] = set()
    for name, data in files:
        raw = name.encode("utf-8")
        _admit(raw, seen, f"file {len(seen) + 1}")
        if len(data) > MAX_SIZE:
            raise BundleError(f"file {name!r} of {len(data)} bytes: a file's size is 32 bits")
        out += bytes([len(raw)]) + raw + _U32.pack(len(data)) + data
    out.append(END)
    return bytes(out)


def unpack(data: bytes) -> list[tuple[str, bytes]]:
    """The files of a bundle, in order; :class:`BundleError` naming the first thing wrong."""
    data = bytes(data)
    if data[:4] != MAGIC:
        raise BundleError(f"no bundle magic {MAGIC.decode()!r} at the start (got {data[:4].hex() or 'nothing'})")
    pos = len(MAGIC)
    files: list[tuple[str, bytes]] = []
    seen: set[bytes] = set()
    while True:
        if pos >= len(data):
            raise BundleError(f"the bundle ends at byte {pos} without its end byte 0x00")
        n = data[pos]
        if n == END:
            pos += 1
            break
        if len(files) == MAX_FILES:
            raise BundleError(f"more than {MAX_FILES} files")
        where = f"file {len(files) + 1} (byte {pos})"
        if n > MAX_NAME:
            raise BundleError(f"{where}: a name of {n} bytes; at most {MAX_NAME}")
        raw = data[pos + 1:pos + 1 + n]
        if len(raw) < n or pos + 1 + n + 4 > len(data):
            raise BundleError(f"{where}: the bundle ends inside its name or size")
        _admit(raw, seen, where)
        pos += 1 + n
        (size,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + size > len(data):
            raise BundleError(f"{where} {raw.decode()!r}: {size} bytes said, {len(data) - pos} left")
        files.append((raw.decode("ascii"), data[pos:pos + size]))
        pos += size
    if pos != len(data):
        raise BundleError(f"{len(data) - pos} bytes follow the end byte")
    return files
