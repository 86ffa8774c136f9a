"""PlatformIO device-monitor filter ``edge_frames``: Edge Agent's telemetry
frames on a board's console, shown as one-line summaries.

``pio device monitor`` loads ``filter_*.py`` from the project's ``monitor``
folder and registers each ``DeviceMonitorFilterBase`` subclass under its
``NAME``; ``monitor_filters = edge_frames`` in platformio.ini turns it on. The
agent writes each message as a line ``#EA:<base64>:<crc32>`` (docs/protocol.md
section 1) on the console that also carries the REPL. This filter passes
console text through as it arrives (a prompt such as ``>>> `` has no line
ending and must not wait for one) and holds back only a line that starts with
``#EA:``, until its end, then prints the summary instead of the base64.

Which decoder: PlatformIO runs filters in its own Python, which often has no
``edge_agent`` installed (the PlatformIO IDE keeps a private interpreter).
When ``edge_agent`` imports, the filter uses its frame checks and
``edge_agent.monitor.render``, so ``pio device monitor`` shows exactly what
``edge monitor`` shows (HELLO, BATCH values, STATUS...). When it does not, a
small built-in decoder checks the line format itself (base64, CRC-32) and
names the message type from the first bytes of the CBOR map, and the first
frame carries a note saying how to get full summaries. Console text is the
same either way.
"""

from __future__ import annotations

import base64
import binascii

from platformio.device.monitor.filters.base import DeviceMonitorFilterBase

PREFIX = "#EA:"

try:  # the full decoder when the host package is importable in this Python
    from edge_agent.frames import MAX_LINE, MAX_PAYLOAD, FrameDecoder
    from edge_agent.monitor import render as _render
except ImportError:  # PlatformIO's own interpreter: fall back to the line format alone
    FrameDecoder = None
    _render = None
    # docs/protocol.md section 1: prefix + base64 of 1024 bytes + ':' + 8 hex digits.
    MAX_PAYLOAD = 1024
    MAX_LINE = 4 + 4 * ((MAX_PAYLOAD + 2) // 3) + 1 + 8

# Message types (key 0 of the CBOR map), docs/protocol.md section 2.
_TYPES = {1: "HELLO", 2: "TIME", 3: "BATCH (protocol 1)", 4: "ACK", 5: "STATUS", 6: "SENSORS",
          7: "BATCH", 8: "REFUSE"}
_HEX = set("0123456789abcdef")


def summarize_line(line: str) -> str:
    """The text shown for one complete frame line (prefix included, no line ending)."""
    if FrameDecoder is not None:
        events = FrameDecoder().feed(line.encode("utf-8", "surrogateescape") + b"\n")
        return "".join(_render(e)[1] for e in events)
    return _fallback_summary(line)


def _fallback_summary(line: str) -> str:
    """Frame checks of docs/protocol.md section 1 without edge_agent: valid or the reason."""
    if len(line) > MAX_LINE:
        return "⟨bad frame: too_long⟩"
    text, sep, crc = line[len(PREFIX):].rpartition(":")
    if not sep or len(crc) != 8 or not set(crc) <= _HEX:
        return "⟨bad frame: malformed⟩"
    try:
        payload = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "⟨bad frame: bad_base64⟩"
    if base64.b64encode(payload).decode("ascii") != text:
        return "⟨bad frame: bad_base64⟩"
    if len(payload) > MAX_PAYLOAD:
        return "⟨bad frame: too_long⟩"
    if binascii.crc32(payload) & 0xFFFFFFFF != int(crc, 16):
        return "⟨bad frame: bad_crc⟩"
    # A message is a CBOR map (0xa0..0xb7: up to 23 pairs) whose first key is
    # 0 (0x00) with the type as a small unsigned integer (0x00..0x17).
    kind = "message"
    if len(payload) >= 3 and 0xA1 <= payload[0] <= 0xB7 and payload[1] == 0 and payload[2] <= 0x17:
        kind = _TYPES.get(payload[2], "type %d" % payload[2])
    return "⟨%s frame, %d bytes⟩" % (kind, len(payload))


class EdgeFrames(DeviceMonitorFilterBase):
    """``monitor_filters = edge_frames``: decode Edge Agent frames in the console."""

    NAME = "edge_frames"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._start = ""          # the current line so far, while it may still become a frame
        self._in_frame = False    # the current line starts with the prefix: held back
        self._dropping = False    # a frame line too long to hold: skip to its end
        self._console = False     # the current line is console text: passed through
        self._noted = False       # the fallback note was shown

    def rx(self, text):
        """Console text out as it arrives; each frame line replaced by its summary."""
        out = []
        pos, end = 0, len(text)
        while pos < end:
            nl = text.find("\n", pos)
            stop = end if nl < 0 else nl
            piece = text[pos:stop]
            if self._console:
                out.append(piece)
            elif self._dropping:
                if piece:
                    self._start = piece[-1]   # only the last character: was it '\r'?
            elif self._in_frame:
                self._start += piece
                if len(self._start) > MAX_LINE + 1:   # + 1: a '\r' before the '\n'
                    out.append(self._too_long())
            else:
                self._start += piece
                if self._start.startswith(PREFIX):
                    self._in_frame = True
                    if len(self._start) > MAX_LINE + 1:
                        out.append(self._too_long())
                elif not PREFIX.startswith(self._start):
                    out.append(self._start)
                    self._start, self._console = "", True
            if nl < 0:
                break
            out.append(self._end_line())
            pos = nl + 1
        return "".join(out)

    def _too_long(self):
        """Stop holding a frame line longer than any frame; drop the rest of it as it streams in."""
        self._start, self._dropping = self._start[-1], True
        return "⟨bad frame: too_long⟩"

    def _end_line(self):
        """Text for the end of the current line (its '\\n' included); resets the line state."""
        line, in_frame, dropping = self._start, self._in_frame, self._dropping
        self._start, self._in_frame, self._dropping, self._console = "", False, False, False
        if not in_frame:
            return line + "\n"       # console text, or a line that was only a prefix of "#EA:"
        ending = "\r\n" if line.endswith("\r") else "\n"
        if dropping:
            return ending
        summary = summarize_line(line.rstrip("\r"))
        if FrameDecoder is None and not self._noted:
            self._noted = True
            summary += ("  (edge_frames: edge_agent is not importable in PlatformIO's Python, so "
                        "frames are checked but not decoded; `pip install -e .` into that Python "
                        "or run `edge monitor PORT` for full summaries)")
        return summary + ending
