"""Shell completion for ``edge``: what a TAB offers for board types, ports
(board names included) and device ids.

Each function is a click ``shell_complete`` callback. It reads the folder
and registry the command line names so far (``--sim-dir``, ``--db``) or
their defaults, never opens a port, and offers nothing rather than fail: a
completion must not print an error into the user's shell.
"""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem


def _param(ctx, *names):
    """The first of ``names`` the command line has set so far (this
    command's or a parent's), or None."""
    while ctx is not None:
        for n in names:
            if ctx.params.get(n) is not None:
                return ctx.params[n]
        ctx = ctx.parent
    return None


def _items(values, incomplete, help_of=None):
    return [CompletionItem(v, help=(help_of or {}).get(v)) for v in sorted(set(values))
            if v.startswith(incomplete)]


def board_types(ctx, param, incomplete):
    """The board files' names (boards/*.json)."""
    try:
        from edge_agent.boards import known_boards
        return _items(known_boards(), incomplete)
    except Exception:
        return []


def ports(ctx, param, incomplete):
    """Board names and device ids (:mod:`edge_agent.board_names`), and the
    ports of attached boards; a path being typed completes as a file."""
    if "/" in incomplete:
        return [CompletionItem(incomplete, type="file")]
    try:
        from edge_agent.board_names import known_names
        from edge_agent.paths import default_sim_dir

        names = known_names(_param(ctx, "sim_dir", "rundir") or default_sim_dir(), _param(ctx, "db"))
        return _items(names, incomplete, names)
    except Exception:
        return []


def device_ids(ctx, param, incomplete):
    """The device ids of the registry."""
    try:
        from edge_agent.paths import default_db
        from edge_agent.store import Store

        with Store(_param(ctx, "db") or default_db(), create=False) as store:
            return _items([d["device_id"] for d in store.devices()], incomplete)
    except Exception:
        return []


def paired_devices(ctx, param, incomplete):
    """The device ids this registry holds a bond of (``edge devices show/unpair``)."""
    try:
        from edge_agent.paths import default_db
        from edge_agent.store import Store

        with Store(_param(ctx, "db") or default_db(), create=False) as store:
            bonds = store.bonds()
        return _items([b["device_id"] for b in bonds], incomplete,
                      {b["device_id"]: f"account {b['account']}" for b in bonds})
    except Exception:
        return []


def accounts(ctx, param, incomplete):
    """The owner accounts of the registry's bonds."""
    try:
        from edge_agent.paths import default_db
        from edge_agent.store import Store

        with Store(_param(ctx, "db") or default_db(), create=False) as store:
            return _items([b["account"] for b in store.bonds()], incomplete)
    except Exception:
        return []


def sim_boards(ctx, param, incomplete):
    """The names of the running virtual bench's boards (``edge sim`` NAME)."""
    try:
        from edge_agent.discover import source_candidates
        from edge_agent.paths import default_sim_dir

        return _items([c.name for c in source_candidates(_param(ctx, "sim_dir", "rundir") or default_sim_dir())],
                      incomplete)
    except Exception:
        return []


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell):
    """Print the completion script for SHELL (bash, zsh or fish).

    It completes commands and options, board types after --board,
    board names, device ids and ports wherever a port goes, virtual
    board names after `edge sim reset` and the like, device ids
    after `edge label`, `edge pair` and --device, paired devices after
    `edge devices show/unpair`, and accounts after --account.

    \b
      edge completion bash > ~/.local/share/bash-completion/completions/edge
      edge completion zsh > ~/.zfunc/_edge      # with fpath+=~/.zfunc before compinit
      edge completion fish > ~/.config/fish/completions/edge.fish

    Or evaluate it at each start: eval "$(edge completion bash)" in ~/.bashrc.
    """
    from click.shell_completion import get_completion_class

    root = click.get_current_context().find_root()
    cls = get_completion_class(shell)
    click.echo(cls(root.command, {}, "edge", "_EDGE_COMPLETE").source())

