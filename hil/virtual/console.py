"""What a board's console shows, made from the Unix-port interpreter's output.

A sans-I/O filter: :meth:`ConsoleFilter.feed` takes the bytes the interpreter
wrote to its pseudo-terminal and returns the bytes the board's serial port
shows plus the events the supervisor must act on. It keeps these rules:

* ``\\n`` not preceded by ``\\r`` becomes ``\\r\\n``, as a board's ``print``
  does (the Unix port leaves that to the terminal, whose output processing is
  off here so that the REPL's own ``\\r\\n`` are not doubled).
* The runner's in-band markers ``ESC _ edge:<what> ESC \\`` never reach the
  port: ``reset`` becomes the event ``"soft_reset"``, ``bootloader`` the
  event ``"bootloader"`` (``machine.bootloader()``); ``raw`` starts swallowing
  the friendly REPL banner up to its ``>>> `` prompt (event ``"enter_raw"``,
  on which the supervisor sends Ctrl-A) and the ``\\r\\n`` the REPL prints on
  Ctrl-A, so that the port shows what a board shows after a soft reset in the
  raw REPL: ``soft reboot\\r\\n`` then ``raw REPL; CTRL-B to exit\\r\\n>``.
* :attr:`raw` follows the REPL mode from the banners it prints, so a soft
  reset knows whether the next interpreter must go straight to the raw REPL.

Markers and banners may be split across reads: partial ones are held back
until the rest arrives.

A board that runs a port's real firmware (an emulated chip: ``native``)
prints its own line endings and banners and sends no markers: its output
passes unchanged, byte for byte, and only :attr:`raw` is followed.
"""

from __future__ import annotations

MARK_START = b"\x1b_edge:"
MARK_END = b"\x1b\\"
MARK_MAX = 32               # longest marker body; longer means it was not one
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
PROMPT = b">>> "

# Swallow states while a soft reset brings the interpreter back to raw REPL.
_PASS, _TO_PROMPT, _TO_CRLF = 0, 1, 2


class ConsoleFilter:
    """Turns interpreter output into board console output; see the module doc."""

    def __init__(self, native: bool = False) -> None:
        self.native = native
        self.raw = False
        self._held = b""          # a possible marker start, kept for the next feed
        self._swallow = _PASS
        self._swallowed = b""
        self._last = b""          # last byte passed to the port (for \n -> \r\n)
        self._tail = b""          # recent port output, to find banners across reads

    def begin(self) -> None:
        """Forget partial input: a new interpreter starts writing."""
        self._held = b""
        self._swallow = _PASS
        self._swallowed = b""

    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """Filter ``data``; return (bytes for the port, events)."""
        if self.native:
            self._follow(data)
            return data, []
        events: list[str] = []
        out = bytearray()
        buf = self._held + data
        self._held = b""
        i = 0
        n = len(buf)
        while i < n:
            j = buf.find(b"\x1b", i)
            if j < 0:
                self._text(buf[i:], out, events)
                break
            self._text(buf[i:j], out, events)
            rest = buf[j:]
            if len(rest) < len(MARK_START):
                if MARK_START.startswith(rest):
                    self._held = rest
                    break
                self._text(rest[:1], out, events)
                i = j + 1
                continue
            if not rest.startswith(MARK_START):
                self._text(rest[:1], out, events)
                i = j + 1
                continue
            end = rest.find(MARK_END, len(MARK_START))
            if end < 0:
                if len(rest) <= len(MARK_START) + MARK_MAX + len(MARK_END):
                    self._held = rest
                    break
                self._text(rest[:1], out, events)
                i = j + 1
                continue
            what = rest[len(MARK_START):end]
            if what == b"reset":
                events.append("soft_reset")
            elif what == b"bootloader":
                events.append("bootloader")
            elif what == b"raw":
                self._swallow = _TO_PROMPT
                self._swallowed = b""
            i = j + end + len(MARK_END)
        return self._cook(bytes(out)), events

    def _text(self, chunk: bytes, out: bytearray, events: list[str]) -> None:
        """Pass ``chunk`` to ``out`` unless a banner is being swallowed."""
        if not chunk:
            return
        if self._swallow == _PASS:
            out += chunk
            return
        self._swallowed += chunk
        if self._swallow == _TO_PROMPT:
            k = self._swallowed.find(PROMPT)
            if k < 0:
                self._swallowed = self._swallowed[-len(PROMPT):]
                return
            events.append("enter_raw")
            self._swallow = _TO_CRLF
            self._swallowed = self._swallowed[k + len(PROMPT):]
        if self._swallow == _TO_CRLF:
            if len(self._swallowed) < 2:
                return
            rest = self._swallowed[2:] if self._swallowed.startswith(b"\r\n") else self._swallowed
            self._swallow = _PASS
            self._swallowed = b""
            out += rest

    def _cook(self, data: bytes) -> bytes:
        """Apply the board's line endings and follow the REPL mode."""
        if not data:
            return data
        if b"\n" in data:
            parts = data.split(b"\n")
            fixed = bytearray(parts[0])
            prev = self._last
            for k in range(1, len(parts)):
                before = parts[k - 1][-1:] if parts[k - 1] else (prev if k == 1 else b"\n")
                fixed += b"\n" if before == b"\r" else b"\r\n"
                fixed += parts[k]
            data = bytes(fixed)
        self._last = data[-1:]
        self._follow(data)
        return data

    def _follow(self, data: bytes) -> None:
        """Follow the REPL mode from the banners it prints."""
        window = self._tail + data
        r = window.rfind(RAW_BANNER)
        f = window.rfind(FRIENDLY_BANNER)
        if r >= 0 or f >= 0:
            self.raw = r > f
        self._tail = window[-max(len(RAW_BANNER), len(FRIENDLY_BANNER)):]
