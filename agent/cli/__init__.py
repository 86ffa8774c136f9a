"""The ``edge`` command line: a thin click layer over the library.

Each job (sim, telemetry, monitor, ...) lives in its own module and is added
here; modules import their heavy dependencies inside the commands so that
``edge --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from edge_agent import __version__
from edge_agent.errors import EdgeError


class EdgeGroup(click.Group):
    """Turns an :class:`EdgeError` into ``error:``/``fix:`` lines and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeError as e:
            click.secho(f"error: {e.message}", fg="red", err=True)
            if e.hint:
                click.echo(f"  fix: {e.hint}", err=True)
            sys.exit(e.exit_code)


@click.group(cls=EdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge")
def main() -> None:
    """Edge Agent: flash, monitor, pair and update MicroPython boards, real or virtual.

    \b
    Start here:
      edge sim up --board esp32 --board esp32c3 --board picow
      edge telemetry ingest --sim --for 20
      edge telemetry show
      edge sim down

    The registry is a SQLite file: --db, $EDGE_DB, or ~/.local/share/edge/registry.db.
    """


def _register() -> None:
    """The composition root: the one place the host meets the virtual bench
    (its ``edge sim`` commands and its boards, a source of
    :mod:`edge_agent.drivers`)."""
    from edge_agent.cli import ingest, monitor, telemetry
    from edge_agent.drivers import register_source
    from edge_hil.virtual import cli as sim

    def virtual_boards():
        from edge_hil.virtual.drivers import VirtualBoards
        return VirtualBoards()

    register_source("virtual", virtual_boards)

    main.add_command(sim.sim)
    telemetry.telemetry.add_command(ingest.ingest)
    main.add_command(telemetry.telemetry)
    main.add_command(monitor.monitor)
    from edge_agent.cli import flash; main.add_command(flash.flash)  # noqa: E702
    from edge_agent.cli import provision; main.add_command(provision.provision); main.add_command(provision.label)  # noqa: E702


_register()


def table_console(**kwargs):
    """A rich Console for tables: the terminal's width, or 120 columns when
    output goes to a file or pipe (rich would otherwise squeeze it into 80)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120, **kwargs)
