"""Every claim in docs/security.md names tests that exist: a renamed or
deleted test cannot leave a claim standing on nothing."""

from __future__ import annotations

import re

from tests.mpy import REPO

DOC = (REPO / "docs" / "security.md").read_text()


def cited_tests() -> list[tuple[str, str]]:
    """(file, test) for each `file::test` and each `::test` that follows a file."""
    found, current = [], None
    for m in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", DOC):
        if m.group(1):
            current, name = m.group(1), m.group(2)
        else:
            name = m.group(3)
        if name:
            assert current, f"::{name} names no file"
            found.append((current, name))
    return found


def test_every_test_the_security_document_cites_exists():
    cited = cited_tests()
    assert len(cited) > 50
    missing = [f"{f}::{t}" for f, t in cited
               if not (REPO / f).exists() or not re.search(rf"def {t}\b", (REPO / f).read_text())]
    assert missing == []
