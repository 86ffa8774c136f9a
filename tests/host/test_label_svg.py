"""The SVG label holds its whole text: nothing is cut at the label's edge,
whatever monospace font the viewer has."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from edge_agent.label import pairing_payload, render_svg

SVG = "{http://www.w3.org/2000/svg}"
# The widest advance of common monospace fonts, in em (DejaVu Sans Mono and
# Liberation Mono 0.60, Courier New 0.60, Consolas 0.55).
MONO_ADVANCE = 0.60


@pytest.mark.parametrize("device_id", ["esp32-3f9a0c12b7d4", "picow-e66038b7134c5d2f"])
def test_every_text_line_fits_inside_the_svg_label(tmp_path, device_id):
    path = tmp_path / "label.svg"
    payload = pairing_payload(device_id, "56718234", "ab" * 8, "picow")
    render_svg(path, payload, device_id, "picow", "56718234")
    root = ET.fromstring(path.read_text())
    _, _, width, _ = (float(v) for v in root.get("viewBox").split())
    texts = list(root.iter(SVG + "text"))
    assert [t.text for t in texts][0] == "Setup code 5671-8234"
    for t in texts:
        em = float(t.get("font-size"))
        x = float(t.get("x"))
        # Drawn centred at x over its length: the one it is given (glyphs
        # fitted to it, at least a wide font's), or else the font's own.
        if t.get("textLength"):
            length = float(t.get("textLength"))
            assert length >= MONO_ADVANCE * em * len(t.text)
            assert t.get("lengthAdjust") == "spacingAndGlyphs"
        else:
            length = MONO_ADVANCE * em * len(t.text)
        assert 0 <= x - length / 2 and x + length / 2 <= width, (t.text, x, length, width)
