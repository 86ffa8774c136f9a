"""Console view: a board's console as a person sees it, telemetry frames decoded inline.

Describing a frame never raises: whatever a payload holds, a person sees a
line (``[bad message: ...]`` at worst), and the monitor reads on.
"""

from __future__ import annotations

from edge_agent.frames import BadFrame, ConsoleLine, Frame
from edge_agent.messages import (Ack, Batch, Hello, MessageError, Refuse, Sensors, Status, Time,
                                 decode_message, message_fields, message_name)


def _value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def describe(payload: bytes) -> str:
    """A one-line summary of a frame's message, for a person reading the console."""
    try:
        msg = decode_message(payload)
    except MessageError as e:
        return f"[bad message: {e.message}]"
    try:
        return _describe(msg)
    except Exception as e:   # a summary must never stop the monitor
        return f"[{type(msg).__name__}: could not describe it: {e}]"


def _describe(msg: object) -> str:
    if isinstance(msg, Batch):
        n = msg.count
        samples = " ".join(f"#{tick[j]}={_value(tick[j + 1])}" for tick in msg.ticks[:1]
                           for j in range(1, len(tick), 2))
        return (f"BATCH {msg.device_id} boot {msg.boot} seq {msg.first_seq}..{msg.first_seq + n - 1} "
                f"({n} records in {len(msg.ticks)} ticks, table {msg.table_id}"
                f"{', dropped %d' % msg.dropped if msg.dropped else ''}) {samples}")
    if isinstance(msg, Hello):
        return (f"HELLO {msg.device_id} board {msg.board} v{msg.version} boot {msg.boot} "
                f"up {msg.uptime_ms / 1000:.1f}s next seq {msg.next_seq} acked {msg.acked}"
                f"{' refused %d' % msg.refused if msg.refused else ''}")
    if isinstance(msg, Sensors):
        return f"SENSORS {msg.device_id} table {msg.table_id}: " + " ".join(
            f"{i}={name}" + (f"[{unit}]" if unit else "") for i, (name, unit) in enumerate(msg.sensors))
    if isinstance(msg, Ack):
        return f"ACK {msg.device_id} < {msg.next_seq}"
    if isinstance(msg, Refuse):
        return f"REFUSE {msg.device_id} {msg.first_seq}..{msg.end_seq - 1}: {msg.reason}"
    if isinstance(msg, Time):
        return f"TIME {msg.unix_ms}" + (" (announce yourself)" if msg.hello else "")
    if isinstance(msg, Status):
        return f"STATUS {msg.device_id or '?'} {msg.state}: {msg.reason}"
    return message_name(msg) + " " + " ".join(
        f"{k}={len(v)} bytes" if isinstance(v, bytes) else f"{k}={v}"
        for k, v in message_fields(msg).items() if v is not None)


def render(event: object) -> tuple[str, str]:
    """(style, text) for one decoder event: console text plain, frames dim, bad frames red."""
    if isinstance(event, ConsoleLine):
        return "", event.text.decode("utf-8", errors="replace")
    if isinstance(event, Frame):
        return "frame", "⟨" + describe(event.payload) + "⟩"
    if isinstance(event, BadFrame):
        return "bad", f"⟨bad frame: {event.reason}⟩"
    return "", repr(event)
