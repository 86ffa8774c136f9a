"""The ``edge`` command line: a thin click layer over the library.

Each job (sim, telemetry, monitor, ...) lives in its own module and is added
here; modules import their heavy dependencies inside the commands so that
``edge --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys

import click

from edge_agent import __version__
from edge_agent.errors import EdgeError, from_os_error


def no_color() -> bool:
    """Whether the user asked for no colour (https://no-color.org: set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


class EdgeGroup(click.Group):
    """Reports every error of its commands the same way, once for all of them.

    An :class:`EdgeError` (and an OS error about a path no command handled)
    becomes ``error:``/``  fix:`` lines on stderr and its kind's exit code.
    With ``--json`` anywhere on the command line, the error (click's usage
    errors too) is instead one line of JSON on stderr, ``{"error", "fix",
    "exit_code"}``: stdout keeps only results. ``NO_COLOR`` turns click's
    colours off (rich reads it by itself).
    """

    def make_context(self, info_name, args, parent=None, **extra):
        if parent is None:
            # ctx.meta is shared by every sub-context: the leaf command's
            # error reaches us after its context is gone.
            words = list(args)
            words = words[:words.index("--")] if "--" in words else words
            ctx = super().make_context(info_name, args, parent=parent, **extra)
            ctx.meta["edge.json"] = "--json" in words
            if no_color():
                ctx.color = False
            return ctx
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgeError as e:
            report(ctx, e.message, e.hint, e.exit_code)
        except click.ClickException as e:
            if not ctx.meta.get("edge.json"):
                raise
            hint = None
            if isinstance(e, click.UsageError) and e.ctx is not None:
                hint = f"see `{e.ctx.command_path} --help`"
            report(ctx, e.format_message(), hint, e.exit_code)
        except OSError as e:
            if e.filename is None:
                raise
            err = from_os_error(e)
            report(ctx, err.message, err.hint, err.exit_code)


def report(ctx: click.Context, message: str, hint: str | None, code: int) -> None:
    """Print an error as the user asked (text or JSON, see :class:`EdgeGroup`) and exit with ``code``."""
    if ctx.meta.get("edge.json"):
        click.echo(json.dumps({"error": message, "fix": hint, "exit_code": code}), err=True)
    else:
        click.secho(f"error: {message}", fg="red", err=True)
        if hint:
            click.echo(f"  fix: {hint}", err=True)
    sys.exit(code)


@click.group(cls=EdgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge")
def main() -> None:
    """Edge Agent: flash, monitor, pair and update MicroPython boards, real or virtual.

    \b
    Start here:
      edge sim up --board esp32 --board esp32c3 --board picow
      edge devs                      # what is attached; its names work as ports
      edge telemetry ingest --sim --for 20
      edge label esp32-3f9a0c12b7d4 --json     # the pairing label (its QR payload)
      export EDGE_BLE=sim                      # BLE on the bench's virtual air
      edge scan
      edge pair --qr 'EA1:...' --account home
      edge gateway run --account home --for 30s
      edge telemetry show
      edge ota keygen                          # signed updates: keys, manifests
      edge sim down

    The registry is a SQLite file: --db, $EDGE_DB, or ~/.local/share/edge/registry.db.

    Errors are `error:` and `  fix:` lines on stderr; with --json they are one
    line of JSON on stderr instead ({"error": ..., "fix": ..., "exit_code": N})
    and stdout carries only results. Exit codes: 2 usage, 3 not found, 4 busy
    (a port another command holds), 5 bad input, 6 board did not answer,
    7 some of several targets failed. NO_COLOR=1 turns colours off.
    """


def _register() -> None:
    """The composition root: the one place the host meets the virtual bench
    (its ``edge sim`` commands and its boards, a source of
    :mod:`edge_agent.drivers`)."""
    from edge_agent.cli import ingest, monitor, telemetry
    from edge_agent.drivers import register_source
    from edge_hil.emulated import cli as emulated
    from edge_hil.virtual import cli as sim

    def virtual_boards():
        from edge_hil.virtual.drivers import VirtualBoards
        return VirtualBoards()

    register_source("virtual", virtual_boards)

    main.add_command(sim.sim)
    main.add_command(emulated.emulator)
    from edge_hil import cli as hil; main.add_command(hil.hil)  # noqa: E702
    telemetry.telemetry.add_command(ingest.ingest)
    main.add_command(telemetry.telemetry)
    main.add_command(monitor.monitor)
    from edge_agent.cli import flash; main.add_command(flash.flash)  # noqa: E702
    from edge_agent.cli import provision; main.add_command(provision.provision); main.add_command(provision.label)  # noqa: E702
    from edge_agent.cli import devices; main.add_command(devices.devs)  # noqa: E702
    from edge_agent.cli import scan; main.add_command(scan.scan)  # noqa: E702
    from edge_agent.cli import pair; main.add_command(pair.pair)  # noqa: E702
    from edge_agent.cli import paired; main.add_command(paired.devices)  # noqa: E702
    from edge_agent.cli import gateway; main.add_command(gateway.gateway)  # noqa: E702
    from edge_agent.cli import ota; main.add_command(ota.ota)  # noqa: E702
    from edge_agent.cli import complete; main.add_command(complete.completion)  # noqa: E702


_register()


def table_console(**kwargs):
    """A rich Console for tables: the terminal's width, or 120 columns when
    output goes to a file or pipe (rich would otherwise squeeze it into 80)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 120, **kwargs)
