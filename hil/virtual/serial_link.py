"""A virtual ESP board's USB-serial bridge: RFC 2217 on 127.0.0.1, carrying DTR and RTS.

A real ESP32 dev board wires its USB-UART's DTR and RTS to EN and IO0 through
two transistors (the "auto-reset circuit"): EN = not(RTS and not DTR),
IO0 = not(DTR and not RTS). A pseudo-terminal has no modem lines, so the
virtual board also listens on ``rfc2217://127.0.0.1:PORT`` (pyserial's
RFC 2217 server side, :class:`serial.rfc2217.PortManager`): the unmodified
esptool opens that URL, drives DTR/RTS with its usual reset sequences, and
the board sees the line changes (:meth:`~edge_hil.virtual.board.VirtualBoard.set_lines`).
Data on it is the board's UART, as on the pty: mpremote works over the URL too.

One client at a time, as a serial port: a new connection replaces the old
one. When the client goes away the lines drop (DTR = RTS = off), as a USB
port closing does.
"""

from __future__ import annotations

import asyncio
import logging

from serial.rfc2217 import PortManager

log = logging.getLogger("edge_hil.virtual.serial_link")


class _Lines:
    """The serial-port face PortManager drives: settings are kept, DTR/RTS go to the board."""

    def __init__(self, link: "SerialLink"):
        self._link = link
        self._dtr = False
        self._rts = False
        self.baudrate = 115200
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = bool(value)
        self._link.lines_changed(self._dtr, self._rts)

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = bool(value)
        self._link.lines_changed(self._dtr, self._rts)

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class _Client(asyncio.Protocol):
    def __init__(self, link: "SerialLink"):
        self.link = link
        self.transport: asyncio.Transport | None = None
        self.lines = _Lines(link)
        self.pm: PortManager | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.link._attach(self)
        self.pm = PortManager(self.lines, self)     # sends the option negotiation

    def write(self, data: bytes) -> None:          # PortManager's connection
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.pm is None or self.link._client is not self:
            return
        payload = b"".join(self.pm.filter(data))
        if payload:
            self.link.on_data(payload)

    def connection_lost(self, exc) -> None:
        self.link._detach(self)


class SerialLink:
    """The RFC 2217 endpoint of one board; ``on_data(bytes)`` and ``on_lines(dtr, rts)`` are the board's."""

    def __init__(self, name: str, on_data, on_lines):
        self.name = name
        self.on_data = on_data
        self.on_lines = on_lines
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._client: _Client | None = None

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def start(self, port: int = 0) -> None:
        """Listen on 127.0.0.1 (a free port unless ``port``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._client is not None and self._client.transport is not None:
            self._client.transport.close()
        self._client = None
        if self._server is not None:
            self._server.close()

    def send(self, data: bytes) -> None:
        """Bytes the board's UART sends, to the client (if any)."""
        c = self._client
        if c is not None and data:
            c.write(data.replace(b"\xff", b"\xff\xff"))    # Telnet escapes IAC

    def lines_changed(self, dtr: bool, rts: bool) -> None:
        self.on_lines(dtr, rts)

    def _attach(self, client: _Client) -> None:
        old, self._client = self._client, client
        if old is not None and old.transport is not None:
            log.info("%s: a new client replaces the previous one", self.name)
            old.transport.close()

    def _detach(self, client: _Client) -> None:
        if self._client is client:
            self._client = None
            self.on_lines(False, False)     # the port closed: the lines drop
