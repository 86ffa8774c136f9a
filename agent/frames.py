"""Serial frames: one agent message per console line (docs/protocol.md section 1).

A frame is the text line ``#EA:<base64 payload>:<crc32, 8 lowercase hex>\\r\\n``
on a console that also carries a person's REPL. This module is sans-I/O, in
the manner of h11: :class:`FrameDecoder` takes bytes as they arrive, in chunks
of any size, and returns events; :func:`encode_frame` turns a payload into the
bytes of one line. Nothing here reads a port or knows about CBOR.

Rules the decoder keeps:

- A line ends at ``\\n``; trailing ``\\r`` are stripped. A line that starts
  with the prefix ``#EA:`` is a frame; any other line is console text.
- Memory is bounded: at most ``MAX_LINE + 1`` bytes of the current line are
  held, whatever the chunking. A frame line longer than ``MAX_LINE`` is
  reported once (``too_long``) and the rest of it is dropped as it streams in,
  up to the next line ending, where the decoder resynchronises. A console line
  longer than that is not lost: it is handed out in pieces of ``MAX_LINE``
  bytes (each a :class:`ConsoleLine`), and the rest of the line stays console
  text even if a piece happens to start with the prefix.
- The events, and their order, depend only on the bytes, never on how they
  were split into chunks.
- A bad frame never affects the frames after it.

Checks on a frame line, in this order, each with its reason:

1. longer than ``MAX_LINE`` bytes: ``too_long``;
2. no ``:`` after the base64 text, or a CRC field that is not exactly 8
   lowercase hex digits: ``malformed``;
3. base64 that is not canonical RFC 4648 (characters outside the standard
   alphabet, missing or extra ``=`` padding, non-zero pad bits): ``bad_base64``;
4. a decoded payload over ``MAX_PAYLOAD`` bytes: ``too_long``;
5. a CRC-32 that does not match the decoded payload: ``bad_crc``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from edge_agent.messages import MAX_MESSAGE

PREFIX = b"#EA:"
MAX_PAYLOAD = MAX_MESSAGE   # a frame carries one message: the message layer sets the limit
# The longest frame line without its line ending: prefix, base64 of the largest
# payload, ':' and 8 hex digits (4 + 1368 + 1 + 8 = 1381 bytes).
MAX_LINE = len(PREFIX) + 4 * ((MAX_PAYLOAD + 2) // 3) + 1 + 8

# Reasons a frame line is rejected (BadFrame.reason).
TOO_LONG = "too_long"
MALFORMED = "malformed"
BAD_BASE64 = "bad_base64"
BAD_CRC = "bad_crc"
REASONS = (TOO_LONG, MALFORMED, BAD_BASE64, BAD_CRC)

# Bytes kept for the current line: MAX_LINE plus one for a trailing '\r'.
_CAP = MAX_LINE + 1
_CRC_FIELD = re.compile(rb"[0-9a-f]{8}")


@dataclass(frozen=True, slots=True)
class ConsoleLine:
    """A complete line of console text, without its line ending."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame whose CRC matched: ``payload`` is the decoded message bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A line that starts with the prefix but is not a valid frame.

    ``reason`` is one of :data:`REASONS`; ``line`` is the line without its
    ending (for ``too_long``, only its first ``MAX_LINE + 1`` bytes).
    """

    reason: str
    line: bytes


Event = ConsoleLine | Frame | BadFrame


@dataclass(slots=True)
class FrameStats:
    """What a decoder has seen so far."""

    frames: int = 0
    console_lines: int = 0
    bad: dict[str, int] = field(default_factory=dict)

    @property
    def bad_total(self) -> int:
        """All rejected frame lines, whatever the reason."""
        return sum(self.bad.values())


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data``, the checksum every frame carries."""
    return binascii.crc32(data) & 0xFFFFFFFF


def encode_frame(payload: bytes) -> bytes:
    """The frame line (with ``\\r\\n``) that carries ``payload``.

    Raises ValueError if the payload is longer than :data:`MAX_PAYLOAD`.
    """
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"frame payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit; "
            "split the message (e.g. fewer records per BATCH)")
    return b"%s%s:%08x\r\n" % (PREFIX, base64.b64encode(payload), crc32(payload))


def parse_frame_line(line: bytes) -> Frame | BadFrame:
    """Check one frame line (prefix included, line ending stripped)."""
    if len(line) > MAX_LINE:
        return BadFrame(TOO_LONG, line[:_CAP])
    text, sep, crc_field = line[len(PREFIX):].rpartition(b":")
    if not sep or not _CRC_FIELD.fullmatch(crc_field):
        return BadFrame(MALFORMED, line)
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return BadFrame(BAD_BASE64, line)
    # b64decode tolerates non-zero pad bits; only the canonical text is a frame.
    if base64.b64encode(payload) != text:
        return BadFrame(BAD_BASE64, line)
    if len(payload) > MAX_PAYLOAD:
        return BadFrame(TOO_LONG, line)
    if crc32(payload) != int(crc_field, 16):
        return BadFrame(BAD_CRC, line)
    return Frame(payload)


class FrameDecoder:
    """Splits a console byte stream into console lines, frames and bad frames.

    Feed it bytes with :meth:`feed` as they arrive; each call returns the
    events completed by those bytes. :meth:`pending_text` shows the console
    text of the unfinished line (a prompt such as ``>>> `` has no newline).
    """

    def __init__(self) -> None:
        self.stats = FrameStats()
        self._line = bytearray()
        self._discarding = False   # inside a too-long frame line, until '\n'
        self._continued = False    # the line's start was already handed out as console text

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream; return the events they complete."""
        events: list[Event] = []
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl
            if not self._discarding and stop > pos:
                self._append(view[pos:stop], events)
            if nl < 0:
                break
            self._finish_line(events)
            pos = nl + 1
        return events

    def close(self) -> list[Event]:
        """End of stream: an unfinished line is treated as if a newline followed."""
        events: list[Event] = []
        if self._line.rstrip(b"\r") or (self._line and not self._continued):
            self._finish_line(events)
        self._line.clear()
        self._discarding = self._continued = False
        return events

    def pending_text(self) -> bytes:
        """Console text of the current unfinished line (b"" if it is or may become a frame)."""
        if self._discarding:
            return b""
        line = bytes(self._line)
        if not self._continued and (line.startswith(PREFIX) or PREFIX.startswith(line)):
            return b""
        return line

    @property
    def buffered(self) -> int:
        """Bytes of the current line held in memory (never more than ``MAX_LINE + 1``)."""
        return len(self._line)

    def _append(self, chunk: memoryview, events: list[Event]) -> None:
        line = self._line
        while chunk:
            take = min(len(chunk), _CAP + 1 - len(line))
            line += chunk[:take]
            chunk = chunk[take:]
            if len(line) <= _CAP:
                continue
            if not self._continued and line.startswith(PREFIX):
                self._reject(BadFrame(TOO_LONG, bytes(line[:_CAP])), events)
                line.clear()
                self._discarding = True
                return
            # A console line too long to hold: hand out its start, keep the tail.
            self._console(bytes(line[:MAX_LINE]), events)
            del line[:MAX_LINE]
            self._continued = True

    def _finish_line(self, events: list[Event]) -> None:
        line = bytes(self._line).rstrip(b"\r")
        if self._discarding:
            pass
        elif not self._continued and line.startswith(PREFIX):
            event = parse_frame_line(line)
            if isinstance(event, Frame):
                self.stats.frames += 1
                events.append(event)
            else:
                self._reject(event, events)
        else:
            self._console(line, events)
        self._line.clear()
        self._discarding = False
        self._continued = False

    def _console(self, text: bytes, events: list[Event]) -> None:
        self.stats.console_lines += 1
        events.append(ConsoleLine(text))

    def _reject(self, event: BadFrame, events: list[Event]) -> None:
        self.stats.bad[event.reason] = self.stats.bad.get(event.reason, 0) + 1
        events.append(event)


def announce_request(unix_ms: int | None = None) -> bytes:
    """The frame of a TIME asking the agent on a console to announce itself (protocol 2.3):
    an agent answers with HELLO, and a REPL reads it as a comment line. An agent sends
    nothing to a host that has not sent TIME, so this is how a console is woken."""
    import time

    from edge_agent.messages import Time, encode_message

    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    return encode_frame(encode_message(Time(unix_ms=ms, hello=True)))
