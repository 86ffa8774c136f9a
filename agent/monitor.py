"""Console view: a board's console as a person sees it, telemetry frames decoded inline."""

from __future__ import annotations

from edge_agent.frames import BadFrame, ConsoleLine, Frame
from edge_agent.messages import Ack, Batch, Hello, MessageError, Status, Time, decode_message


def describe(payload: bytes) -> str:
    """A one-line summary of a frame's message, for a person reading the console."""
    try:
        msg = decode_message(payload)
    except MessageError as e:
        return f"[bad message: {e}]"
    if isinstance(msg, Batch):
        n = len(msg.pack)
        values = []
        seen = set()
        for rec in msg.pack:
            name, value = rec.get(0), rec.get(2, rec.get(3, rec.get(4)))
            if name in seen or name is None:
                continue
            seen.add(name)
            unit = rec.get(1, "")
            values.append(f"{name}={value:.4g}{unit}" if isinstance(value, float) else f"{name}={value}{unit}")
        last = msg.first_seq + n - 1
        return (f"BATCH {msg.device_id} boot {msg.boot} seq {msg.first_seq}..{last} "
                f"({n} records{', dropped %d' % msg.dropped if msg.dropped else ''}) " + " ".join(values))
    if isinstance(msg, Hello):
        return (f"HELLO {msg.device_id} board {msg.board} v{msg.version} boot {msg.boot} "
                f"up {msg.uptime_ms / 1000:.1f}s next seq {msg.next_seq} acked {msg.acked}")
    if isinstance(msg, Ack):
        return f"ACK {msg.device_id} < {msg.next_seq}"
    if isinstance(msg, Time):
        return f"TIME {msg.unix_ms}"
    if isinstance(msg, Status):
        return f"STATUS {msg.device_id or '?'} {msg.state}: {msg.reason}"
    return repr(msg)


def render(event) -> tuple[str, str]:
    """(style, text) for one decoder event: console text plain, frames dim, bad frames red."""
    if isinstance(event, ConsoleLine):
        return "", event.text.decode("utf-8", errors="replace")
    if isinstance(event, Frame):
        return "frame", "⟨" + describe(event.payload) + "⟩"
    if isinstance(event, BadFrame):
        return "bad", f"⟨bad frame: {event.reason}⟩"
    return "", repr(event)
