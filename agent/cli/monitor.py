"""``edge monitor PORT``: console passthrough with decoded telemetry frames."""

from __future__ import annotations

import os
import sys
import threading

import click

from edge_agent.cli import complete
from edge_agent.cli.options import DURATION, port_resolver, sim_dir_option
from edge_agent.errors import DeviceError

_EXIT_KEY = b"\x1d"  # Ctrl-], as in miniterm and telnet


def raw_text(data: bytes) -> str:
    """Console bytes as they came, for ``--raw``: UTF-8 text as is (a bad
    byte as U+FFFD), line ends and tabs kept, and every other control byte
    as ``\\xNN``, so the frames' own characters show and no stray byte can
    drive the terminal."""
    return printable(data.decode("utf-8", errors="replace"))


def printable(text: str) -> str:
    """``text`` with every control character but CR, LF and TAB as ``\\xNN``."""
    return "".join(c if c >= " " or c in "\r\n\t" else f"\\x{ord(c):02x}" for c in text)


@click.command()
@click.argument("port", shell_complete=complete.ports)
@click.option("-b", "--baud", type=click.IntRange(50, 12_000_000), default=115200, show_default=True)
@click.option("--raw", is_flag=True,
              help="Show the bytes as they arrive (frames undecoded; UTF-8 with bad bytes as U+FFFD, "
                   "control bytes other than CR, LF and TAB as \\xNN).")
@click.option("--listen-only", is_flag=True,
              help="Send nothing on opening the port (by default the monitor asks the agent to "
                   "announce itself, so HELLO, SENSORS and the pending batch show at once).")
@click.option("--for", "duration", type=DURATION, default=None,
              help="Stop after this long: 30, 30s, 10m (default: until Ctrl-]).")
@sim_dir_option()
@click.option("--db", type=click.Path(dir_okay=False), default=None,
              help="Registry whose device ids name ports [default: $EDGE_DB or ~/.local/share/edge/registry.db].")
def monitor(port, baud, raw, listen_only, duration, sim_dir, db):
    """Show the console of the board on PORT, with telemetry frames decoded inline.

    PORT is a device path (/dev/ttyUSB0), a pyserial URL, or a name from
    `edge devs`: a virtual board's name (esp32-1) or a device id.

    Keys you type go to the board (the REPL works: Ctrl-C stops the agent
    and leaves you at the REPL, Ctrl-D soft-resets); Ctrl-] quits. The monitor only listens: it
    does not acknowledge telemetry, so the board keeps its journal (use
    `edge telemetry ingest` for that). On opening the port it sends one TIME
    asking the agent to announce itself (protocol 2 sends records only to a
    host that has sent TIME); `--listen-only` sends nothing.

    One program at a time owns a port. Every edge command that opens one
    (monitor, telemetry ingest, flash, provision) takes it exclusively: a
    lock file naming it (in $EDGE_RUN_DIR, $XDG_RUNTIME_DIR/edge or
    /tmp/edge-UID), pyserial's exclusive lock, and TIOCEXCL on the tty. A
    second edge command on the port exits 4 at once, naming the holder's
    program and pid. mpremote and esptool take pyserial's lock too and fail
    at once ("failed to access" / "could not open port"), as root as well.
    Programs that take no lock (cat, screen, minicom) are refused by TIOCEXCL
    unless they run as root: the kernel lets root open the port, and then
    both read it, each getting part of the bytes (ingest counts a bad frame;
    the board sends the unacknowledged batch again). As root, do not point
    such programs at a port an edge command holds. A port that goes away
    while monitored exits 6.

    \b
    Example:
      edge monitor /dev/ttyUSB0
      edge monitor esp32-1 --for 10s
    """
    import select
    import time

    import serial
    from rich.console import Console

    from edge_agent.frames import FrameDecoder
    from edge_agent.monitor import render
    from edge_agent.ports import open_serial

    port = port_resolver(sim_dir, db)(port)
    ser = open_serial(port, baudrate=baud, timeout=0.05)
    console = Console(highlight=False, soft_wrap=True)
    styles = {"frame": "dim cyan", "bad": "red"}
    decoder = FrameDecoder()
    stop = threading.Event()
    lost: list[BaseException] = []

    def show_raw(data: bytes) -> None:
        sys.stdout.write(raw_text(data))
        sys.stdout.flush()

    def reader():
        shown = ""  # a partial line (a prompt) already on screen
        while not stop.is_set():
            try:
                data = ser.read(4096)
            except (serial.SerialException, OSError) as e:
                if not stop.is_set():
                    lost.append(e)
                    stop.set()
                return
            if raw:
                if data:
                    show_raw(data)
                continue
            for ev in decoder.feed(data) if data else ():
                try:
                    style, text = render(ev)
                except Exception as e:   # one line lost at worst, never the reader
                    style, text = "bad", f"⟨could not show this line: {e}⟩"
                if shown:
                    if style == "" and text.startswith(shown):
                        text = text[len(shown):]
                    else:
                        sys.stdout.write("\n")
                    shown = ""
                console.print(text, style=styles.get(style, ""), markup=False)
            pending = decoder.pending_text().decode("utf-8", errors="replace")
            if pending and pending != shown and not pending.startswith("#EA:"):
                sys.stdout.write(pending[len(shown):] if pending.startswith(shown) else "\n" + pending)
                sys.stdout.flush()
                shown = pending

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    if not listen_only:
        from edge_agent.frames import announce_request

        ser.write(announce_request())
    deadline = None if duration is None else time.monotonic() + duration
    interactive = sys.stdin.isatty()
    old = None
    if interactive:
        import termios
        import tty

        old = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
        # Raw keys (Ctrl-C goes to the board), but keep newline translation on output.
        attrs = termios.tcgetattr(sys.stdin.fileno())
        attrs[1] |= termios.OPOST | termios.ONLCR
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, attrs)
        console.print(f"[dim]--- {port} at {baud} baud; Ctrl-] to quit ---[/]\r")
    try:
        if interactive:
            while not stop.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                # Wake up for the deadline and to notice a lost port, not only for keys.
                ready, _, _ = select.select([sys.stdin.fileno()], [], [], min(left or 0.2, 0.2))
                if not ready:
                    continue
                key = os.read(sys.stdin.fileno(), 64)
                if not key or _EXIT_KEY in key:
                    break
                # A running agent takes a lone 0x03 for line noise; it stops
                # for a Ctrl-C followed by a control byte (docs/protocol.md
                # 2.11), so one key press sends two. At the REPL the second
                # is a harmless KeyboardInterrupt.
                ser.write(key.replace(b"\n", b"\r").replace(b"\x03", b"\x03\x03"))
        else:
            stop.wait(duration)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if old is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, old)
        t.join(timeout=1)
        ser.close()
    if lost:
        raise DeviceError(f"lost port {port} ({lost[0]})",
                          "check the cable, or whether the board (or the virtual bench) was stopped; "
                          "then run the monitor again")
