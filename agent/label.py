"""Pairing labels: the QR payload (docs/protocol.md section 4) and its rendering.

A label shows a QR code carrying the pairing payload, the setup code in
digits (``1234-5678``) and the device id and board in text. It is written as
PNG (for label printers; composed with Pillow, since segno draws only the
code) and SVG (scalable; text as ``<text>`` elements), and can be shown in a
terminal with segno's own renderer.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable, NamedTuple

from edge_agent.errors import BadInput
from edge_agent.paths import private_dir

PREFIX = "EA1"
MAX_PAYLOAD = 128
_ID = re.compile(r"[A-Z0-9.-]{1,64}")
_CODE = re.compile(r"[0-9]{8}")
_FP = re.compile(r"[0-9A-F]{16}")

MODULE_PX = 8          # PNG pixels per QR module
BORDER = 4             # quiet zone, in modules (ISO/IEC 18004 asks for 4)
_MONO_ADVANCE = 0.6    # a monospace glyph's advance, in em (DejaVu/Liberation Mono, Courier)
ERROR_LEVEL = "m"      # ~15 % of the code may be damaged


class Pairing(NamedTuple):
    """What a pairing label tells an owner's app."""

    device_id: str      # lowercase, as in the registry
    setup_code: str     # 8 digits
    fingerprint: str    # 16 lowercase hex digits
    board: str          # lowercase board type


def pairing_payload(device_id: str, setup_code: str, fingerprint: str, board: str) -> str:
    """The QR text: ``EA1:<DEVICE ID>:<CODE>:<FINGERPRINT>:<BOARD>`` in upper case.

    Upper case keeps it in QR's alphanumeric mode (5.5 bits a character, not
    8). Ids and board names are lowercase by construction; anything else
    cannot be carried and raises :class:`BadInput`.
    """
    from edge_agent.boards import is_board_name

    if not is_board_name(board):
        raise BadInput(f"the board {board!r} cannot go into a pairing payload",
                       "use a board file whose name is lowercase letters, digits and '-'")
    for what, value, pattern in (("device id", device_id, r"[a-z0-9.-]{1,64}"),
                                 ("setup code", setup_code, r"[0-9]{8}"),
                                 ("key fingerprint", fingerprint, r"[0-9a-f]{16}")):
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise BadInput(f"the {what} {value!r} cannot go into a pairing payload",
                           "mint the identity with `edge provision` (it makes ids that fit)")
    return ":".join((PREFIX, device_id.upper(), setup_code, fingerprint.upper(), board.upper()))


def parse_pairing_payload(text: str) -> Pairing:
    """Parse a scanned payload; raises :class:`BadInput` naming the bad field."""
    fix = "scan the label again, or type the setup code printed under the QR"
    if not isinstance(text, str):
        raise BadInput("a pairing payload is text", fix)
    if len(text) > MAX_PAYLOAD:
        raise BadInput(f"the pairing payload is {len(text)} characters, over {MAX_PAYLOAD}", fix)
    fields = text.split(":")
    if fields[0] != PREFIX:
        raise BadInput(f"not an Edge pairing payload (it must start with {PREFIX}:)", fix)
    if len(fields) != 5:
        raise BadInput(f"a pairing payload has 5 fields separated by ':', this one has {len(fields)}",
                       fix)
    _, device_id, code, fp, board = fields
    from edge_agent.boards import is_board_name

    for what, value, pattern in (("device id", device_id, _ID), ("setup code", code, _CODE),
                                 ("key fingerprint", fp, _FP)):
        if not pattern.fullmatch(value):
            raise BadInput(f"the pairing payload's {what} {value!r} is malformed "
                           f"(expected {pattern.pattern})", fix)
    if board != board.upper() or not is_board_name(board.lower()):
        raise BadInput(f"the pairing payload's board {board!r} is malformed "
                       "(expected 1-32 of A-Z 0-9 '-')", fix)
    return Pairing(device_id.lower(), code, fp.lower(), board.lower())


def format_code(code: str) -> str:
    """``12345678`` -> ``1234-5678`` (easier to read and type)."""
    return f"{code[:4]}-{code[4:]}"


def make_qr(payload: str):
    """The segno QR code of ``payload`` (alphanumeric mode when it fits)."""
    import segno

    return segno.make_qr(payload, error=ERROR_LEVEL, boost_error=False)


def _lines(device_id: str, board: str, code: str) -> list[tuple[str, int]]:
    # (text, size in px): the code big, the id and board smaller.
    return [(f"Setup code {format_code(code)}", 40), (device_id, 24), (f"board: {board}", 24)]


def _write_private(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write`` as a new 0600 file renamed into place.

    A label carries the setup code: it is never readable by other users, not
    even while it is written, and a reader never sees half of one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def render_png(path: Path, payload: str, device_id: str, board: str, code: str) -> None:
    """Write the PNG label: the QR (``MODULE_PX`` px a module) with the text below."""
    from PIL import Image, ImageDraw, ImageFont

    qr = make_qr(payload)
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix)
    side = (n + 2 * BORDER) * MODULE_PX
    lines = _lines(device_id, board, code)
    fonts = [ImageFont.load_default(size=size) for _, size in lines]
    widths = [int(f.getlength(t)) for (t, _), f in zip(lines, fonts)]
    width = max(side, max(widths) + 2 * BORDER * MODULE_PX)
    height = side + sum(int(size * 1.4) for _, size in lines) + BORDER * MODULE_PX
    img = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(img)
    x0 = (width - side) // 2 + BORDER * MODULE_PX
    y0 = BORDER * MODULE_PX
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                x, y = x0 + c * MODULE_PX, y0 + r * MODULE_PX
                draw.rectangle((x, y, x + MODULE_PX - 1, y + MODULE_PX - 1), fill=0)
    y = side
    for (text, size), font, w in zip(lines, fonts, widths):
        draw.text(((width - w) // 2, y), text, fill=0, font=font)
        y += int(size * 1.4)
    _write_private(Path(path), lambda f: img.save(f, format="PNG"))


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def render_svg(path: Path, payload: str, device_id: str, board: str, code: str) -> None:
    """Write the SVG label: the QR as one path (1 unit a module), text elements below."""
    qr = make_qr(payload)
    matrix = [list(row) for row in qr.matrix]
    n = len(matrix)
    side = n + 2 * BORDER
    lines = _lines(device_id, board, code)
    # Each line is given its length (textLength, glyphs and spacing fitted to
    # it): the advance of a wide monospace font, so it reads the same in any
    # viewer's font and never runs past the edge. The label is as wide as its
    # widest line, the QR centred.
    lengths = [_MONO_ADVANCE * size / MODULE_PX * len(text) for text, size in lines]
    width = max(side, max(lengths) + 2 * BORDER)
    qx = (width - side) / 2
    cells = "".join(f"M{c + BORDER + qx:g} {r + BORDER}h1v1h-1z"
                    for r, row in enumerate(matrix) for c, dark in enumerate(row) if dark)
    height = side + sum(size / MODULE_PX * 1.4 for _, size in lines) + BORDER
    texts = []
    y = float(side)
    for (text, size), length in zip(lines, lengths):
        em = size / MODULE_PX
        y += em
        texts.append(f'<text x="{width / 2:g}" y="{y:.2f}" font-size="{em:g}" '
                     f'textLength="{length:.2f}" lengthAdjust="spacingAndGlyphs" '
                     f'font-family="monospace" text-anchor="middle">{_xml(text)}</text>')
        y += em * 0.4
    svg = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
           f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:.2f}" '
           f'width="{width * MODULE_PX:.0f}" height="{height * MODULE_PX:.0f}">\n'
           f'<title>{_xml(device_id)} pairing label</title>\n'
           f'<desc>{_xml(payload)}</desc>\n'
           f'<rect width="100%" height="100%" fill="#fff"/>\n'
           f'<path fill="#000" d="{cells}"/>\n' + "\n".join(texts) + "\n</svg>\n")
    _write_private(Path(path), lambda f: f.write(svg.encode()))


def render(out_dir: Path, device_id: str, board: str, code: str, fingerprint: str,
           *, terminal: IO[str] | None = None) -> tuple[Path, Path]:
    """Write ``<device>.png`` and ``<device>.svg`` (mode 0600) into ``out_dir``; show the QR on ``terminal``.

    ``out_dir`` is created 0700 if missing. Both files hold the setup code:
    delete them once the label is printed (docs/security.md).
    """
    payload = pairing_payload(device_id, code, fingerprint, board)
    out_dir = Path(out_dir)
    try:
        private_dir(out_dir)
    except OSError as e:
        raise BadInput(f"cannot create the label folder {out_dir} ({e.strerror})",
                       "pass --out with a folder you can write") from None
    png, svg = out_dir / f"{device_id}.png", out_dir / f"{device_id}.svg"
    try:
        render_png(png, payload, device_id, board, code)
        render_svg(svg, payload, device_id, board, code)
    except OSError as e:
        raise BadInput(f"cannot write the label into {out_dir} ({e.strerror})",
                       "pass --out with a folder you can write") from None
    if terminal is not None:
        make_qr(payload).terminal(out=terminal, border=2, compact=True)
    return png, svg
