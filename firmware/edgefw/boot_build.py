# The agent's objects, built at boot (boot.py): run once, imported then and
# dropped after, so its code does not stay in the heap.
from edgefw import drop
from edgefw.boot import _path


def build(port, board, cfg, healthy):
    from edgefw import VERSION
    from edgefw.agent import Agent
    from edgefw.clock import Clock
    from edgefw.journal import Journal
    from edgefw.link_serial import SerialLink
    from edgefw.ticks import TickWriter
    from edgefw.uplink import Uplink

    dev = cfg["device_id"]
    # The line buffer first, while the heap is still in one piece.
    link = SerialLink(port, None)
    # And room for the Uplink's buffers (about 4 KB in four blocks), kept in
    # one piece while the clock, the journal and the sensors load and drop
    # their boot code around it; given back just before the Uplink is built.
    room = bytearray(4352)
    clock = Clock(port, _path(port, "state/clock"))
    clock.start()
    journal = Journal(_path(port, "journal"), max_bytes=cfg["journal_bytes"],
                      seg_bytes=min(4096, cfg["journal_bytes"] // 4))
    journal.open()
    from edgefw import sensors_build
    found = sensors_build.build(board, port, clock, dev)
    drop("sensors_build")
    ticks = TickWriter(journal, found)
    room = None
    import gc
    gc.collect()
    link.uplink = Uplink(dev, board["name"], VERSION, clock, journal, ticks.table)

    port.write(("edge: agent %s on %s (%s), device %s, boot %d\r\n" % (
        VERSION, board["name"], port.name, dev, clock.boot)).encode())
    return Agent(port, board.get("watchdog_ms", 0), dev, cfg["sample_period_ms"], clock, ticks,
                 [link], found, healthy)
