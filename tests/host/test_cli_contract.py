"""Every `edge` command teaches its use and is exercised by a test."""

from __future__ import annotations

import re

import click
import pytest

from edge_agent.cli import main
from tests.harness import invoke
from tests.mpy import REPO


def commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    for name, cmd in sorted(group.commands.items()):
        path = prefix + (name,)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path)


ALL = list(commands())
TESTS = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py")
                  if p.name != "test_cli_contract.py")


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_that_explains_it(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    cmd = dict(ALL)[path]
    assert cmd.help and len(cmd.help.split()) >= 5, f"edge {' '.join(path)} needs a real docstring"


@pytest.mark.parametrize("path", [p for p, c in ALL if not isinstance(c, click.Group)],
                         ids=[" ".join(p) for p, c in ALL if not isinstance(c, click.Group)])
def test_every_command_is_run_by_some_test(path):
    # The command's words in order, as a test passes them to the CLI, or the
    # subcommand given to a helper bound to its group (`simbench.cli("ls")`).
    pattern = r"[\"']" + r"[\"'],\s*[\"']".join(map(re.escape, path)) + r"[\"']"
    bound = r"\.cli\(\s*[\"']" + re.escape(path[-1]) + r"[\"']"
    assert re.search(pattern, TESTS) or (len(path) == 2 and re.search(bound, TESTS)), \
        f"no test runs `edge {' '.join(path)}`"
