"""The virtual air: emulated BLE controllers on one shared link, each reachable over HCI.

``python -m edge_hil.virtual.air --rundir R --board NAME ... [--hosts N]``
runs one Bumble ``LocalLink`` with one emulated controller per board and N
(default 2) for host processes, and serves each on a unix socket::

    R/air/<board>.hci      board NAME's controller
    R/air/host-<k>.hci     host controller k = 0, 1, ...

A host process reaches one with Bumble's transport spec ``unix:PATH``. It
prints ``ready`` on stdout once every socket listens, logs to stderr, and on
SIGTERM or SIGINT closes every socket and removes it.

Rules it keeps, each for a pitfall found with Bumble's stock controller
(see FACTS.md):

* One host per controller at a time: a second process that connects while
  one is attached is closed at once (a controller has one host), and a new
  one is accepted as soon as the previous one leaves.
* No stale link: when a host detaches (it exited or was killed) or sends
  HCI_Reset, its controller drops every connection (the peer sees a
  connection timeout, as after a real link loss) and stops advertising and
  scanning, so a peripheral can advertise again and the next central does
  not find a ghost connection.
* A board's address is its chip's: a static random address derived from the
  board name (:func:`.state.board_ble_address`), the same on every run. Its
  controller refuses a host that sets another one, loudly, rather than advertising
  under an address the bench does not list (LE pairing mixes the addresses
  into its checks, so a silent mismatch would fail much later).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from bumble import hci, ll
from bumble.controller import Controller
from bumble.link import LocalLink
from bumble.transport.common import PacketParser

from edge_hil.virtual.state import (AIR_DIR, AIR_MODULE, board_ble_address, board_hci_socket, die_with_parent,
                                    host_hci_socket)

log = logging.getLogger("edge_hil.virtual.air")

DEFAULT_HOSTS = 2
# sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH = 107


class AirController(Controller):
    """An emulated controller that forgets its links when its host goes, and keeps a board's address."""

    def __init__(self, name: str, link: LocalLink, address: str | None = None, **kwargs):
        super().__init__(name, link=link, **kwargs)
        self.fixed_address = hci.Address(address) if address else None
        self._power_on_state()

    def _power_on_state(self) -> None:
        self.random_address = self.fixed_address or hci.Address.ANY_RANDOM

    def drop_links(self) -> None:
        """Forget every connection, advertisement and scan, as a controller that lost power.

        Each peer is told the link timed out (what a real peer sees when
        the other side goes silent) and reports the disconnection to its host.
        """
        for connection in list(self.le_connections.values()):
            try:
                connection.send_ll_control_pdu(ll.TerminateInd(hci.HCI_ErrorCode.CONNECTION_TIMEOUT_ERROR))
            except Exception as e:  # the peer's controller may be gone too
                log.debug("%s: could not tell %s: %s", self.name, connection.peer_address, e)
            self.le_connections.pop(connection.peer_address, None)
        self.le_legacy_advertiser.stop()
        for advertising_set in self.advertising_sets.values():
            advertising_set.stop()
        self.advertising_sets.clear()
        self.le_scan_enable = False
        self.pending_le_connection = None

    def on_hci_reset_command(self, command: hci.HCI_Reset_Command) -> hci.HCI_StatusReturnParameters:
        self.drop_links()
        self._power_on_state()
        return super().on_hci_reset_command(command)

    def on_hci_le_create_connection_cancel_command(self, command):
        # As the Core spec says (Vol 4 Part E 7.8.13): Command Complete, then
        # an LE Connection Complete with status Unknown Connection Identifier.
        # Bumble's emulated controller answers success but keeps the
        # connection pending, and connects later for a host that gave up.
        pending, self.pending_le_connection = self.pending_le_connection, None
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        asyncio.get_running_loop().call_soon(self.send_hci_packet, hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0,
            role=hci.Role.CENTRAL, peer_address_type=pending.peer_address_type,
            peer_address=pending.peer_address, connection_interval=0, peripheral_latency=0,
            supervision_timeout=0, central_clock_accuracy=0))
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)

    def on_hci_le_set_random_address_command(
        self, command: hci.HCI_LE_Set_Random_Address_Command
    ) -> hci.HCI_StatusReturnParameters:
        if self.fixed_address is not None and command.random_address != self.fixed_address:
            log.warning("%s: refused random address %s: this board's address is %s "
                        "(configure the host's Bumble Device with it)",
                        self.name, command.random_address, self.fixed_address)
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.INVALID_COMMAND_PARAMETERS_ERROR)
        return super().on_hci_le_set_random_address_command(command)


class _HostSink:
    """Where a controller sends packets to its attached host (drops them once the host has gone)."""

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport

    def on_packet(self, packet: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(packet)


class HciSocket:
    """Serves one controller on a unix socket, to one host at a time."""

    def __init__(self, controller: AirController, path: Path):
        self.controller = controller
        self.path = path
        self.server: asyncio.AbstractServer | None = None
        self.attached: asyncio.Transport | None = None

    async def start(self) -> None:
        if len(str(self.path).encode()) > MAX_SOCKET_PATH:
            raise OSError(f"socket path too long for AF_UNIX ({len(str(self.path))} bytes): {self.path}; "
                          "use a shorter run folder (--sim-dir)")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        self.server = await asyncio.get_running_loop().create_unix_server(
            lambda: _HostConnection(self), str(self.path))

    def attach(self, transport: asyncio.Transport) -> bool:
        if self.attached is not None:
            log.warning("%s: refused a second host (one is attached)", self.controller.name)
            return False
        self.attached = transport
        self.controller.host = _HostSink(transport)
        log.info("%s: host attached", self.controller.name)
        return True

    def detach(self, transport: asyncio.Transport) -> None:
        if self.attached is not transport:
            return
        self.attached = None
        self.controller.host = None
        self.controller.drop_links()
        log.info("%s: host detached", self.controller.name)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.attached is not None:
            self.attached.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class _HostConnection(asyncio.Protocol):
    """One host's connection: HCI packets (H4 framing) in, to the controller."""

    def __init__(self, sock: HciSocket):
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.parser = PacketParser(sock.controller)

    def connection_made(self, transport) -> None:
        if self.sock.attach(transport):
            self.transport = transport
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.parser.feed_data(data)
        except Exception as e:  # a host that sends garbage loses its connection, not the air
            log.warning("%s: bad HCI data from the host (%s): closing it", self.sock.controller.name, e)
            self.transport.close()

    def connection_lost(self, exc) -> None:
        if self.transport is not None:
            self.sock.detach(self.transport)


class Air:
    """One shared link, its controllers and their sockets."""

    def __init__(self, rundir: Path, boards: list[str], hosts: int = DEFAULT_HOSTS):
        self.rundir = rundir
        self.link = LocalLink()
        self.sockets: list[HciSocket] = []
        self.boards = boards
        self.hosts = hosts

    async def start(self) -> None:
        (self.rundir / AIR_DIR).mkdir(parents=True, exist_ok=True)
        for name in self.boards:
            c = AirController(name, self.link, board_ble_address(name))
            self.sockets.append(HciSocket(c, board_hci_socket(self.rundir, name)))
        for k in range(self.hosts):
            c = AirController(f"host-{k}", self.link)
            self.sockets.append(HciSocket(c, host_hci_socket(self.rundir, k)))
        for s in self.sockets:
            await s.start()

    def close(self) -> None:
        for s in self.sockets:
            s.close()


async def serve(rundir: Path, boards: list[str], hosts: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    air = Air(rundir, boards, hosts)
    try:
        await air.start()
        log.info("air: %s", ", ".join(f"{n} {board_ble_address(n)}" for n in boards) or "no boards")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await stop.wait()
    finally:
        air.close()
        log.info("air stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m " + AIR_MODULE, description=__doc__.split("\n")[0])
    p.add_argument("--rundir", type=Path, required=True)
    p.add_argument("--board", action="append", default=[], metavar="NAME", help="a board's controller (repeat)")
    p.add_argument("--hosts", type=int, default=DEFAULT_HOSTS, help="how many host controllers")
    p.add_argument("--parent", type=int, help="exit when this process (the supervisor) dies")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if args.hosts < 0:
        p.error("--hosts must be 0 or more")
    die_with_parent(args.parent)
    try:
        return asyncio.run(serve(args.rundir.resolve(), args.board, args.hosts))
    except OSError as e:
        log.error("the air did not start: %s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
