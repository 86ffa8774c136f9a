# Boot's setup (boot.py): the board file and config, the crash count, then
# the agent's objects. Run once, imported then and dropped after, so its
# code does not stay in the heap.
from edgefw import drop
from edgefw.boot import _healthy, _path, _set_crashes, safe_mode

from micropython import const

_MAX_CRASHES = const(3)
_TRIAL_S = const(600)  # board files without ota.trial_s (docs/protocol.md 7.10)


def _crashes(port):
    try:
        from edgefw import atomic, cbor
        raw = atomic.read(_path(port, "state/crashes"))
        n, last = cbor.loads(raw) if raw else (0, "")
        return int(n), str(last)
    except Exception:
        return 0, ""


def start(b):
    # The agent, ready to run; or what safe_mode returned.
    port = b.port
    from edgefw import config
    try:
        board, cfg = config.load(port.root)
    except config.ConfigError as e:
        return safe_mode(port, None, str(e))
    drop("config")  # read once: its code need not stay in the heap
    dev = b.dev = cfg["device_id"]
    n, last = _crashes(port)
    if port.watchdog_reset():
        n += 1
        last = "watchdog reset"
        _set_crashes(port, n, last)
    b.crashes = n
    if n >= _MAX_CRASHES:
        return safe_mode(port, dev, "agent crashed %d times in a row (last: %s); "
                         "fix the cause, then `edge flash` or delete state/crashes" % (n, last))
    try:
        import os
        os.mkdir(_path(port, "state"))
    except OSError:
        pass
    # Room kept for the state writes that free room on a full flash.
    from edgefw import atomic
    atomic.reserve(_path(port, "state/reserve"))
    # The board file's dict (kilobytes of heap) is garbage once this
    # returns: what the agent needs was copied out of it.
    return build(port, board, cfg, _healthy(port, n), b.trial)


def trial_s(board):
    # The board's ota.trial_s: any whole number of seconds >= 1 (a board
    # file keeps to 60..86400; a test may go shorter), else the default.
    ota = board.get("ota")
    t = ota.get("trial_s") if isinstance(ota, dict) else None
    return t if isinstance(t, int) and not isinstance(t, bool) and t >= 1 else _TRIAL_S


def build(port, board, cfg, healthy, trial=False):
    from edgefw import VERSION
    from edgefw.agent import Agent
    from edgefw.clock import Clock
    from edgefw.journal import Journal
    from edgefw.link_serial import SerialLink
    from edgefw.ticks import TickWriter
    from edgefw.uplink import Uplink

    dev = cfg["device_id"]
    # The BLE link's modules before anything else: the names they bring
    # stay in the heap for good (as those of every module imported from a
    # filesystem do), and placed first they leave no island in the middle of
    # what a session after the agent needs in one piece.
    bt = _radio()
    if bt is not None:
        ble = _ble_modules()
    # The line buffer first, while the heap is still in one piece.
    link = SerialLink(port, None)
    # And room for the Uplink's buffers (about 4 KB in four blocks), and the
    # BLE link's (its two reassemblers, seal and segment buffers: about 3.4
    # KB) when there is a radio, kept in one piece while the clock, the
    # journal and the sensors load and drop their boot code around it; given
    # back just before the Uplinks are built. A radio's events arrive from
    # its own thread during boot: without this room their small objects can
    # leave no hole of 1 KB for the BLE link's buffers.
    room = bytearray(4352 if bt is None else 4352 + 3584)
    clock = Clock(port, _path(port, "state/clock"))
    clock.start()
    journal = Journal(_path(port, "journal"), max_bytes=cfg["journal_bytes"],
                      seg_bytes=min(4096, cfg["journal_bytes"] // 4))
    journal.open()
    from edgefw import sensors_build
    found = sensors_build.build(board, port, clock, dev)
    ota_cfg = sensors_build.ota(board, port)
    drop("sensors_build")
    ticks = TickWriter(journal, found)
    room = None
    import gc
    gc.collect()
    link.uplink = Uplink(dev, board["name"], VERSION, clock, journal, ticks.table)
    links = [link]
    if bt is not None:
        links.append(_ble_link(ble, bt, port, board, dev, clock, journal, ticks, link.uplink))

    port.write(("edge: agent %s on %s (%s), device %s, boot %d%s\r\n" % (
        VERSION, board["name"], port.name, dev, clock.boot,
        ", BLE" if len(links) > 1 else "")).encode())
    agent = Agent(port, board.get("watchdog_ms", 0), dev, cfg["sample_period_ms"], clock, ticks,
                  links, found, healthy, trial_s(board) if trial else 0)
    agent.ota_setup = (board["name"], ota_cfg)  # the OTA client, built once the agent runs
    return agent


def _radio():
    # MicroPython's `bluetooth` module, when the firmware has one (ESP32,
    # Pico W; the virtual board's stand-in when its bench runs a radio).
    # Nothing of the BLE link is imported otherwise, so a board without a
    # radio pays no heap for it. A `bluetooth` without BLE() (PyBluez on a
    # Raspberry Pi) is not MicroPython's.
    try:
        import bluetooth
    except ImportError:
        return None
    return bluetooth if hasattr(bluetooth, "BLE") else None


def _ble_modules():
    # (BleLink, Pairing or None): a firmware may be built without the
    # pairing core (imported by name for that reason).
    from edgefw.link_ble import BleLink
    try:
        Pairing = __import__("edgefw.pairing", None, None, ("Pairing",)).Pairing
    except ImportError:
        Pairing = None
    return BleLink, Pairing


def _ble_link(ble, bt, port, board, dev, clock, journal, ticks, first):
    # The BLE link: its own Uplink over the same journal and clock, and the
    # pairing core when the firmware has one (without it, control messages
    # are answered ERROR not_supported and no session opens). Its Uplink
    # shares the serial one's scratch buffers (first): the agent polls its
    # links in turn on one thread.
    from edgefw import VERSION
    from edgefw.uplink import Uplink
    BleLink, Pairing = ble
    pairing = Pairing(port.root, dev, clock) if Pairing is not None else None
    up = Uplink(dev, board["name"], VERSION, clock, journal, ticks.table, share=first)
    return BleLink(bt, up, pairing, dev, clock)
