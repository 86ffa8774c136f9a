# Boot: read the board file and config, start the agent under asyncio, and
# never boot-loop or strand a board at a bare REPL:
# - every import of the agent happens inside the guard: a MemoryError while
#   loading is a counted crash and a safe-mode STATUS, not a traceback;
# - a bad file, or three crashes in a row without reaching "healthy" (30 s
#   up), put the board in safe mode: it says why on the console, sends a
#   STATUS frame and returns to the REPL, so mpremote or `edge flash` can
#   repair it;
# - the crash handler's own writes may fail (full flash): it still prints and
#   sends STATUS, and returns to the REPL instead of resetting when the crash
#   could not be counted (a reset would loop uncounted).
# A crash is an exception out of the agent or a watchdog reset; a power cut is
# not one. An agent on trial (an update, docs/protocol.md 7.7) does not reset
# after a crash: main() returns "crashed" and stage 0 rolls back at once.
# This module imports nothing at its top but the package's drop()
# (what runs once, reading the files and building the agent, is in
# boot_build.py, dropped after); the port adapter has a guard of its own (without it no
# frame can be sent).
from edgefw import drop as _drop  # the package is loaded already: no cost

def _path(port, name):
    return port.root + "/" + name if port.root else name


def _line(port, text):
    # Needs no import and little heap: said even when nothing else works.
    try:
        port.write(b"edge: " + text.encode() + b"\r\n")
    except Exception:
        pass


def send_status(port, device_id, state, reason):
    try:
        from edgefw import frame, messages
        port.write(frame.encode(messages.status(device_id or "", state, reason[:512])))
        return True
    except Exception:
        return False


def safe_mode(port, device_id, reason):
    _line(port, "SAFE MODE: " + reason)
    send_status(port, device_id, "safe", reason)
    return "safe"


def _set_crashes(port, n, last):
    # False when it could not be written (flash full or failing).
    try:
        from edgefw import atomic, messages
        try:
            import os
            os.mkdir(_path(port, "state"))
        except OSError:
            pass
        atomic.write(_path(port, "state/crashes"), messages.dump([n, last]))
        return True
    except Exception:
        return False


def _unload():
    # Drops what a failed load left half-imported, so the heap it took comes
    # back for the safe-mode STATUS.
    import gc
    import sys
    for name in list(sys.modules):
        if name.startswith("edgefw.") and name not in ("edgefw.boot", "edgefw.port"):
            _drop(name[7:])
    gc.collect()


class _Boot:
    # What the guard needs to know when something fails.
    def __init__(self, port, trial):
        self.port = port
        self.trial = trial
        self.dev = None
        self.crashes = 0
        self.running = False


def main(port=None, trial=False):
    if port is None:
        try:
            from edgefw.port import detect
            port = detect()
        except Exception as e:
            # No port adapter: only print can say it (no frame without one).
            print("edge: SAFE MODE: cannot load the port adapter (%r); re-flash with "
                  "`edge flash`" % (e,))
            return "safe"
    b = _Boot(port, trial)
    try:
        return _start(b)
    except MemoryError as e:
        if b.running:
            return _crashed(b, e)
        _unload()
        saved = _set_crashes(port, b.crashes + 1, "out of memory loading the agent")
        return safe_mode(port, b.dev, "out of memory loading the agent (%r); it needs a "
                         "firmware with the agent frozen in flash (docs/firmware-build.md)%s"
                         % (e, "" if saved else "; crash count not saved"))
    except Exception as e:
        return _crashed(b, e)


def _crashed(b, e):
    # KeyboardInterrupt is not an Exception: Ctrl-C (an interrupt request
    # on the console) stops the agent without counting a crash.
    port = b.port
    try:
        port.print_exception(e)
    except Exception:
        pass
    saved = _set_crashes(port, b.crashes + 1, repr(e)[:120])
    reason = "agent crashed: %s" % repr(e)[:200]
    if not saved:
        reason += "; crash count not saved (flash full?): staying at the REPL"
    _line(port, "agent stopped: " + reason)
    send_status(port, b.dev, "error", reason)
    if saved and not b.trial:
        port.reset_after_crash()
    return "crashed"


def _start(b):
    # The agent is built by code run once (boot_build.py), dropped after.
    port = b.port
    from edgefw import boot_build
    agent = boot_build.start(b)
    _drop("boot_build")
    _drop("cbor")  # read the state files at boot; the agent writes with messages.dump
    _drop("cbor_tree")  # the containers cbor.loads read
    if isinstance(agent, str):
        return agent  # safe mode
    b.running = True
    port.kbd_intr(-1)
    try:
        import asyncio
        asyncio.run(agent.run())
    finally:
        port.kbd_intr(3)
        # A radio's stack holds its IRQ handler, and through it the link
        # and its buffers: released, so a session after the agent has the
        # heap (and the radio is off, as before boot).
        for link in agent.links:
            close = getattr(link, "close", None)
            if close is not None:
                close()


def _healthy(port, n):
    # Called once the agent has run 30 s: the crash count starts again.
    def healthy():
        if n:
            _set_crashes(port, 0, "")
    return healthy
