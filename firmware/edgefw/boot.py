# Boot: read the board file and config, start the agent under asyncio, and
# never boot-loop. A bad file, or three crashes in a row without reaching
# "healthy" (30 s up), put the board in safe mode: it says why on the console,
# sends a STATUS frame, and returns to the REPL so it can be repaired with
# mpremote or `edge flash`. A crash is an exception out of the agent or a
# watchdog reset; a power cut is not one.
import asyncio

from edgefw import VERSION, atomic, config, frame, cbor
from edgefw.port import detect

from micropython import const

_MAX_CRASHES = const(3)


def _path(port, name):
    return port.root + "/" + name if port.root else name


def _mkdir(path):
    import os
    try:
        os.mkdir(path)
    except OSError:
        pass


def safe_mode(port, device_id, reason):
    port.write(b"edge: SAFE MODE: " + reason.encode() + b"\r\n")
    port.write(frame.encode(cbor.dumps({0: 5, 1: device_id or "", 2: "safe", 3: reason})))
    return "safe"


def _crashes(port):
    raw = atomic.read(_path(port, "state/crashes"))
    try:
        n, last = cbor.loads(raw) if raw else (0, "")
        return int(n), str(last)
    except (ValueError, TypeError):
        return 0, ""


def _set_crashes(port, n, last):
    atomic.write(_path(port, "state/crashes"), cbor.dumps([n, last]))


def main(port=None):
    port = port or detect()
    _mkdir(_path(port, "state"))
    try:
        board, cfg = config.load(port.root)
    except config.ConfigError as e:
        return safe_mode(port, None, str(e))
    dev = cfg["device_id"]
    n, last = _crashes(port)
    if port.watchdog_reset():
        n += 1
        last = "watchdog reset"
        _set_crashes(port, n, last)
    if n >= _MAX_CRASHES:
        return safe_mode(port, dev, "agent crashed %d times in a row (last: %s); "
                         "fix the cause, then `edge flash` or delete state/crashes" % (n, last))

    from edgefw.agent import Agent
    from edgefw.clock import Clock
    from edgefw.journal import Journal
    from edgefw.uplink import Uplink

    def healthy():
        if n:
            _set_crashes(port, 0, "")

    try:
        clock = Clock(port, _path(port, "state/clock"))
        clock.start()
        journal = Journal(_path(port, "journal"), max_bytes=cfg["journal_bytes"],
                          seg_bytes=min(4096, cfg["journal_bytes"] // 4))
        journal.open()
        units = {}
        for s in board.get("sensors", []) + board.get("virtual_sensors", []):
            units[s["name"]] = s.get("unit", "")
        uplink = Uplink(dev, board["name"], VERSION, clock, journal, units)
        agent = Agent(port, board, cfg, clock, journal, uplink, healthy)
        port.write(("edge: agent %s on %s (%s), device %s, boot %d\r\n" % (
            VERSION, board["name"], port.name, dev, clock.boot)).encode())
        asyncio.run(agent.run())
    except Exception as e:
        # (KeyboardInterrupt is not an Exception: Ctrl-C from a person or
        # mpremote stops the agent without counting a crash.)
        port.print_exception(e)
        _set_crashes(port, n + 1, repr(e)[:120])
        port.write(b"edge: agent stopped: " + repr(e).encode() + b"\r\n")
        port.reset_after_crash()
        return "crashed"
