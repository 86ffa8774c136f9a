"""Finding the boards on a bench: USB serial ports whose vendor/product id a
board file lists, and every board the registered board sources
(:func:`edge_agent.drivers.register_source`: a virtual bench, emulated chips)
report.

A USB id does not always say which board it is: a CP210x or CH34x bridge sits
on ESP32, ESP32-C3 and ESP32-S3 boards alike. Such a port is a candidate with
several ``choices`` and no ``board``; the caller settles it with ``--board``
or by asking the board itself (:func:`board_from_platform`). Boards of a
source know their type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edge_agent.boards import known_boards, load_board
from edge_agent.errors import EdgeError


@dataclass
class Candidate:
    """A board that ``edge flash`` could work on.

    ``board`` is its type when known (a board of a source, or a USB id only
    one board file lists), else None with the possible types in ``choices``.
    ``driver`` (:class:`edge_agent.drivers.BoardDriver`) drives it; None
    means a USB board on ``port``.
    """

    name: str
    port: str
    board: str | None
    choices: list[str] = field(default_factory=list)
    usb_id: str | None = None          # "vid:pid", lowercase hex
    description: str = ""
    driver: Any = None

    @property
    def kind(self) -> str:
        return self.driver.kind if self.driver is not None else "usb"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "port": self.port, "board": self.board, "choices": self.choices,
                "usb_id": self.usb_id, "description": self.description, "kind": self.kind}


def usb_table(boards: Iterable[dict] | None = None) -> dict[tuple[int, int], list[str]]:
    """(vid, pid) -> the board types whose file lists that USB id, in name order."""
    if boards is None:
        boards = [load_board(n) for n in known_boards()]
    table: dict[tuple[int, int], list[str]] = {}
    for b in boards:
        for pair in b.get("usb_ids") or []:
            try:
                key = (int(pair[0], 16), int(pair[1], 16))
            except (TypeError, ValueError, IndexError):
                raise EdgeError(f"board file {b.get('name')!r}: usb_ids entry {pair!r} is not "
                                "[vid, pid] in hex", "write it as [\"10c4\", \"ea60\"]") from None
            names = table.setdefault(key, [])
            if b["name"] not in names:
                names.append(b["name"])
    for names in table.values():
        names.sort()
    return table


def serial_candidates(ports: Iterable[Any] | None = None,
                      boards: Iterable[dict] | None = None) -> list[Candidate]:
    """USB serial ports whose vid:pid a board file lists (``ports`` defaults to
    :func:`serial.tools.list_ports.comports`); other ports are left out."""
    if ports is None:
        from serial.tools.list_ports import comports
        ports = comports()
    table = usb_table(boards)
    out = []
    for p in ports:
        vid, pid = getattr(p, "vid", None), getattr(p, "pid", None)
        if vid is None or pid is None:
            continue
        choices = table.get((vid, pid))
        if not choices:
            continue
        out.append(Candidate(
            name=p.device.rsplit("/", 1)[-1], port=p.device,
            board=choices[0] if len(choices) == 1 else None, choices=list(choices),
            usb_id=f"{vid:04x}:{pid:04x}", description=getattr(p, "description", "") or ""))
    return sorted(out, key=lambda c: c.port)


def source_candidates(bench_dir: Path | str | None) -> list[Candidate]:
    """The boards every registered board source reports for ``bench_dir``."""
    from edge_agent.drivers import sources

    return [c for src in sources() for c in src.boards(bench_dir)]


def discover(bench_dir: Path | str | None = None, *, serial: bool = True,
             ports: Iterable[Any] | None = None) -> list[Candidate]:
    """Every attached USB board (if ``serial``) plus every board of the sources."""
    found = serial_candidates(ports) if serial else []
    return found + source_candidates(bench_dir)


def find_port(port: str, bench_dir: Path | str | None = None,
              ports: Iterable[Any] | None = None) -> Candidate | None:
    """The candidate on ``port`` (a board of a source or a known USB board), if any."""
    for c in source_candidates(bench_dir):
        if c.port == port or Path(c.port).resolve() == Path(port).resolve():
            return c
    for c in serial_candidates(ports):
        if c.port == port:
            return c
    return None


# What a board's MicroPython says of itself: sys.platform and
# sys.implementation._machine ("Generic ESP32C3 module with ESP32C3",
# "Raspberry Pi Pico W with RP2040", ...). A board that stands in for another
# chip (a virtual board runs the Unix port) states the platform and machine
# of the chip it stands for in its ``machine`` module, as ``PLATFORM`` and
# ``MACHINE``; one probe serves every kind of board.
PLATFORM_PROBE = """\
import sys
_p, _m = sys.platform, getattr(sys.implementation, '_machine', '')
try:
    import machine
    _p, _m = machine.PLATFORM, machine.MACHINE
except (ImportError, AttributeError):
    pass
print(_p)
print(_m)
"""


def read_identity(link) -> tuple[str, str]:
    """(platform, machine) as the board on ``link`` states them."""
    lines = [s.strip() for s in link.exec(PLATFORM_PROBE).splitlines()]
    return (lines[0] if lines else ""), (lines[1] if len(lines) > 1 else "")


def board_from_platform(platform: str, machine: str, choices: Iterable[str] | None = None) -> str | None:
    """The board type a MicroPython ``sys.platform``/``_machine`` pair names, or None.

    With ``choices``, only one of those is returned.
    """
    m = machine.upper().replace("-", "")
    guess = None
    if platform == "esp32":
        guess = "esp32c3" if "ESP32C3" in m else "esp32s3" if "ESP32S3" in m else "esp32"
    elif platform == "rp2":
        guess = ("picow" if re.search(r"\bPICO2? W\b", m)
                 else "pico" if re.search(r"\bPICO WITH RP2040\b", m) else None)
    if guess is not None and choices is not None and guess not in set(choices):
        return None
    return guess


def ask_board(link, choices: Iterable[str] | None = None) -> str | None:
    """Ask the board on ``link`` (a BoardLink) which board type it is."""
    return board_from_platform(*read_identity(link), choices)
