"""What users of mpremote, esptool and PlatformIO expect of the `edge`
command line (issue 7): names for boards, one spelling per option,
completion, tables that fit a pipe's 120 columns."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.table import Table

import edge_agent.cli as cli
from edge_agent.cli.ingest import _print_table

HEADERS = ("port", "devices", "batches", "records", "dupes", "conflicts", "refused", "failed", "bad",
           "connects", "quiet")


def _summary(monkeypatch, rows) -> str:
    out = io.StringIO()
    monkeypatch.setattr(cli, "table_console", lambda **k: Console(file=out, width=120))
    _print_table(rows, 20.0, Table)
    return out.getvalue()


def _row(port, devices, bad=None, n=3400):
    return {"port": port, "devices": devices, "batches": 120, "records": n, "duplicates": 7,
            "conflicts": 0, "refused": 1, "failed": 0, "bad_frames": bad or {}, "connects": 2, "quiet": 1}


@pytest.mark.parametrize("rows", [
    [_row("/dev/pts/12", ["esp32c3-3f9a0c12b7d4"], {"bad_crc": 2})],
    [_row("rfc2217://127.0.0.1:40001", ["esp32c3-3f9a0c12b7d4", "esp32s3-0b1c2d3e4f50"],
          {"bad_crc": 2, "too_long": 1, "bad_cbor": 12}, n=1234567)],
], ids=["pty", "long port, two devices, three kinds of bad frame"])
def test_the_ingest_summary_fits_120_columns_with_no_header_or_cell_cut(monkeypatch, rows):
    text = _summary(monkeypatch, rows)
    assert "…" not in text, text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if line.lstrip().startswith("port"))
    assert header.split() == list(HEADERS)
    for r in rows:
        for cell in (r["port"], *r["devices"], *(f"{k}={v}" for k, v in r["bad_frames"].items()),
                     str(r["records"])):
            assert cell in text, f"{cell!r} is cut or folded:\n{text}"
