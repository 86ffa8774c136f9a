"""``edge monitor PORT``: console passthrough with decoded telemetry frames."""

from __future__ import annotations

import os
import sys
import threading

import click

from edge_agent.errors import Busy, NotFound

_EXIT_KEY = b"\x1d"  # Ctrl-], as in miniterm and telnet


@click.command()
@click.argument("port")
@click.option("--baud", type=click.IntRange(50, 12_000_000), default=115200, show_default=True)
@click.option("--raw", is_flag=True, help="Show frames as they are, not decoded.")
@click.option("--listen-only", is_flag=True,
              help="Send nothing on opening the port (by default the monitor asks the agent to "
                   "announce itself, so HELLO, SENSORS and the pending batch show at once).")
@click.option("--for", "duration", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop after this many seconds (for scripts; default: until Ctrl-]).")
def monitor(port, baud, raw, listen_only, duration):
    """Show a board's console, with telemetry frames decoded inline.

    Keys you type go to the board (the REPL works: Ctrl-C stops the agent
    and leaves you at the REPL, Ctrl-D soft-resets); Ctrl-] quits. The monitor only listens: it
    does not acknowledge telemetry, so the board keeps its journal (use
    `edge telemetry ingest` for that). On opening the port it sends one TIME
    asking the agent to announce itself (protocol 2 sends records only to a
    host that has sent TIME); `--listen-only` sends nothing.

    \b
    Example:
      edge monitor /dev/ttyUSB0
      edge monitor $(edge sim ls --json | jq -r '.[0].port')
    """
    import serial
    from rich.console import Console

    from edge_agent.frames import FrameDecoder
    from edge_agent.monitor import render

    try:
        ser = serial.serial_for_url(port, baudrate=baud, timeout=0.05)
    except serial.SerialException as e:
        text = str(e)
        if "busy" in text.lower() or "lock" in text.lower():
            raise Busy(f"port {port} is in use", "close the other program using it") from e
        raise NotFound(f"cannot open port {port}: {e}",
                       "check the cable and the name (`ls /dev/tty*`, or `edge sim ls` for virtual boards)") from e
    console = Console(highlight=False, soft_wrap=True)
    styles = {"frame": "dim cyan", "bad": "red"}
    decoder = FrameDecoder()
    stop = threading.Event()

    def reader():
        shown = ""  # a partial line (a prompt) already on screen
        while not stop.is_set():
            try:
                data = ser.read(4096)
            except (serial.SerialException, OSError):
                console.print("[red]port closed[/]")
                stop.set()
                return
            for ev in decoder.feed(data) if data else ():
                try:
                    style, text = render(ev) if not raw else ("", repr(ev))
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
        import time

        from edge_agent.frames import encode_frame
        from edge_agent.messages import Time, encode_message

        ser.write(encode_frame(encode_message(Time(unix_ms=int(time.time() * 1000), hello=True))))
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
