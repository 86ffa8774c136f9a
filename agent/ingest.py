"""Telemetry ingest over one console, as one object: the serial link and the ingest core together.

The work is done by :mod:`edge_agent.telemetry.ingest` (the transport-neutral
core), :mod:`edge_agent.telemetry.writer` (the registry writer) and
:mod:`edge_agent.links.serial` (frames and the port). :class:`PortSession`
wires them for one console with no thread, for tests and tools: bytes in,
frames out, each batch committed before its ACK is returned.
"""

from __future__ import annotations

import time
from typing import Callable

from edge_agent.links.serial import SerialLink, run_ports
from edge_agent.store import Store
from edge_agent.telemetry.ingest import IngestCore, LinkStats
from edge_agent.telemetry.writer import RegistryWriter

__all__ = ["PortSession", "run_ports", "LinkStats"]


class PortSession:
    """Ingest for one console on an open :class:`Store`, in the caller's thread (sans-I/O)."""

    def __init__(self, source: str, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.writer = RegistryWriter(store=store, inline=True)
        self.core = IngestCore(self.writer, store, clock)
        self._out: list[bytes] = []
        self.link = SerialLink(source, self.core, write=self._out.append)
        self.on_console: Callable[[bytes], None] | None = None
        self.link.on_console = lambda port, text: self.on_console(text) if self.on_console else None

    @property
    def stats(self) -> LinkStats:
        """What this console delivered."""
        return self.link.stats

    def start(self) -> bytes:
        """Bytes to write when the console (re)opens: TIME asking the device to announce itself."""
        self.link.opened(self._out.append)
        return self._take()

    def receive(self, data: bytes) -> list[bytes]:
        """Feed console bytes; returns the frames to write back, in order."""
        self.link.feed(data)
        out, self._out[:] = list(self._out), []
        return out

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out
