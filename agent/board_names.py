"""Names a person may give instead of a port: a board's name, a device id.

``edge monitor esp32-1``, ``edge flash --port esp32c3-3f9a0c12b7d4``: every
command that takes a port passes it through :func:`resolve_port`, so a name
means the same port everywhere. A name is, in this order of precedence:

- the name of a board a board source reports (a running virtual board,
  ``esp32-1``) or of an attached USB board (its port's last path part,
  ``ttyUSB0``);
- a device id that such a board holds (read without opening its port,
  :meth:`edge_agent.drivers.BoardDriver.stored_device_id`);
- a device id of the registry whose telemetry last came on a known port
  (the port it was on then: a hint that holds until the board is moved).

Anything with a ``/`` or ``://`` is a path or a pyserial URL and is used as
given; so is a bare word that names an existing file. Nothing here opens a
port: another command may hold it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.errors import EdgeError, NotFound


def known_names(sim_dir: Path | str | None = None, db: Path | str | None = None,
                ports: Any = None) -> dict[str, str]:
    """Every name :func:`resolve_port` accepts, mapped to its port (first
    rule of the module's list wins)."""
    from edge_agent.discover import discover

    names: dict[str, str] = {}
    boards = discover(sim_dir, ports=ports)
    for c in boards:
        names.setdefault(c.name, c.port if c.driver is None else c.driver.console_port())
    for c in boards:
        if c.driver is not None and (device_id := c.driver.stored_device_id()):
            names.setdefault(device_id, c.driver.console_port())
    for device_id, port in registry_ports(db).items():
        names.setdefault(device_id, port)
    return names


def registry_ports(db: Path | str | None) -> dict[str, str]:
    """device id -> the port its latest telemetry came on, from the registry
    ``db`` (its default when None); empty when there is no registry."""
    from edge_agent.paths import default_db
    from edge_agent.store import Store

    path = Path(db) if db is not None else default_db()
    if not path.is_file():
        return {}
    try:
        with Store(path, create=False) as store:
            return store.last_ports()
    except EdgeError:
        return {}


def is_path(text: str) -> bool:
    """Whether ``text`` is written as a path or URL (never a name)."""
    return "/" in text or "://" in text


def resolve_port(text: str, sim_dir: Path | str | None = None, db: Path | str | None = None,
                 ports: Any = None) -> str:
    """The port ``text`` names (see the module); raises :class:`NotFound`
    (exit 3) for a name nothing knows, listing the names that are known."""
    if is_path(text):
        return text
    names = known_names(sim_dir, db, ports)
    if text in names:
        return names[text]
    if Path(text).exists():
        return text
    known = ", ".join(sorted(names)) or "none (no virtual bench runs, no known USB board is attached)"
    raise NotFound(f"no board, device id or port named {text!r}",
                   f"known names: {known}; or give the port's path (/dev/ttyUSB0) or a pyserial URL")
