# The device's OTA client (docs/protocol.md section 7): one per agent,
# shared by its links. Sans-I/O like the Uplink: messages in (offer, chunk,
# bulk), messages out (poll, per link); it never touches a radio.
#
# What stays in the heap is this small front: the query schedule, the
# messages waiting to go out and the hooks to the rest. The rest is loaded
# when needed: an OFFER's checks (ota_offer.py) and the queries and boot
# report (ota_query.py, ota_apply.py) from modules dropped after; the transfer
# (ota_transfer.py, which streams chunks to flash and holds no block) only
# while one is open.
#
# Rules it keeps:
# - an OTA_STATE goes on every link (like STATUS); an OTA_WINDOW only on the
#   link the transfer was opened on; queries on the first link that polls
#   with a host's TIME heard;
# - nothing from an OFFER is written before its checks pass (ota_offer.py);
# - at most _STATES states wait per link: a link that falls further behind
#   (a BLE central gone away) misses the oldest, never blocks the others.
from edgefw import drop

from micropython import const

_STATES = const(8)
_POLICY_MS = const(60000)
_RESET_MS = const(500)  # the last states leave before the reset
_RETRY_MS = const(60000)
_BUSY_MS = const(10000)  # an offer its heap could not check: asked again after this


def path(root, name):
    return root + "/" + name if root else name


class OtaClient:
    # root: the filesystem root ("" on a board); cfg: the board file's `ota`
    # object (defaults filled by ota_query.settings); targets: None for the
    # real ones, or {component: target} (tests); slots: None for
    # edgefw.slots, or a stand-in with its functions; reset: called after
    # the switch; readings: () -> {sensor name: latest value}.
    def __init__(self, root, device_id, board, version, clock, cfg, targets=None, slots=None,
                 reset=None, readings=None, policy=None):
        self.root = root
        self.device_id = device_id
        self.board = board
        self.version = version
        self.clock = clock
        self.cfg = cfg
        self.targets = targets
        self.slots_mod = slots
        self.reset = reset
        self.readings = readings
        self.policy = policy  # the device's ota_policy.allow, or None: the board's
        self.states = []  # [(number, payload)], for every link
        self.sent = 0  # number of the last state queued
        self.queries = []  # payloads for one link
        self.window = None  # the transfer whose OTA_WINDOW is due, on window_link only
        self.window_link = None
        self.xfer = None  # the open transfer (ota_transfer.Transfer)
        self.waiting = None  # (component, seq, digest_hex, version, reason): installed, not applied
        self.query_at = 0  # uptime ms of the next query (0: at the first TIME)
        self.now_ms = 0  # of the latest poll
        self.why = "boot"
        self.policy_at = 0
        self.reset_at = None
        self.ignored = 0  # chunks for no open transfer, another sequence or link
        self.nomem = 0  # offers dropped for want of heap
        self.errors = 0  # faults of the OTA code or the flash, each reported
        self.healthy_seen = False
        self.stale_told = False
        self.report_due = True  # slots.take_report, at the first poll: off boot's peak

    # -- helpers for the modules loaded on demand --------------------------
    def run(self, module, fn, *args):
        # edgefw.<module>.<fn>(self, *args), then every edgefw module it
        # loaded is dropped again (ota_manifest, ed25519, ...): rare work
        # whose code leaves the heap. Modules loaded before are kept.
        import gc
        import sys
        gc.collect()  # an Ed25519 verify needs ~20 KB: room made first
        before = list(sys.modules)
        try:
            return getattr(__import__("edgefw." + module, None, None, (fn,)), fn)(self, *args)
        except MemoryError:
            if module == "ota_offer":
                raise  # the offer says so itself
            # A heap too cut up just now: counted, tried again in a minute.
            self.nomem += 1
            self.query_at = self.policy_at = self.now_ms + _RETRY_MS
            return None
        except Exception as e:
            # A fault of this code or of the flash: reported, never a crash
            # of the agent; the next query tries again.
            # Not before a minute either: a fault that repeats must not
            # flood the link.
            self.errors += 1
            self.query_at = self.policy_at = self.now_ms + _RETRY_MS
            self.state("agent", 0, "failed", reason="%s: %r" % (fn, e))
            return None
        finally:
            for name in list(sys.modules):
                if name[:7] == "edgefw." and name not in before:
                    drop(name[7:])

    def slots(self):
        # edgefw.slots, or None on a firmware built without it.
        if self.slots_mod is None:
            try:
                from edgefw import slots
            except ImportError:
                return None
            return slots
        return self.slots_mod

    def target(self, component):
        # The target of a component, or None when the device has none.
        if self.targets is not None:
            return self.targets.get(component)
        if component == "agent":
            sl = self.slots()
            return None if sl is None else sl.AgentTarget(self.root)
        if component == "firmware":
            try:
                esp32 = __import__("esp32")  # the ESP32 port's only (ota_apply.confirm)
                from edgefw import ota_partition
            except ImportError:
                return None
            return ota_partition.FirmwareTarget.open(esp32, self.root)
        return None

    def now_s(self):
        # Unix seconds, or None before a TIME this boot.
        e = self.clock.epoch(self.clock.boot)
        return None if e is None else (e[0] + self.clock.uptime_ms()) // 1000

    def state(self, component, seq, state, **more):
        from edgefw import messages
        self.queue(messages.ota_state(self.device_id, component, seq, state, **more))

    def queue(self, payload):
        self.sent += 1
        self.states.append((self.sent, payload))
        if len(self.states) > _STATES:
            self.states.pop(0)

    # -- messages in -------------------------------------------------------
    def offer(self, f, link, now_ms):
        # A valid OTA_OFFER (messages.decode) for this device, on link.
        x = self.xfer
        if x is not None and self.same(x, f):
            # The offer that opened this transfer, again (a host that heard
            # nothing for 30 s, or answering a query sent meanwhile): its
            # checks passed already, so none run beside the transfer.
            if 6 in f:
                self.query_at = now_ms + f[6] * 1000
            x.again(link, now_ms)
            return
        try:
            plan = self.run("ota_offer", "offer", f, link, now_ms)
            if plan is not None:
                from edgefw.ota_transfer import Transfer
                self.xfer = Transfer(self, *plan)
                self.xfer.manifest = bytes(f[3])
        except MemoryError:
            # No room for the checks just now (the heap of a running agent
            # comes and goes): `busy`, and asked again in 10 s, when the
            # host offers again. The agent goes on.
            self.nomem += 1
            self.query_at = now_ms + _BUSY_MS
            self.why = "retry"
            try:
                import gc
                gc.collect()
                self.state(f[2], 0, "busy", reason="no heap for the offer's checks just now: asks again in %d s"
                           % (_BUSY_MS // 1000))
            except MemoryError:
                pass
        if self.xfer is None:
            drop("ota_transfer")

    def same(self, x, f):
        # Whether OFFER f is byte for byte the one that opened transfer x:
        # its manifest, no rotation, and no key list but the one held.
        if f.get(3) != x.manifest or 5 in f:
            return False
        if 4 not in f:
            return True
        from edgefw.ota_files import keys_held
        return f[4] == keys_held(self.root)

    def chunk(self, seq, offset, data, skip, link, now_ms):
        # Image bytes data[skip:] at offset, for the transfer of sequence
        # seq (None: the one open on link). No allocation.
        x = self.xfer
        if x is None or x.link is not link or (seq is not None and seq != x.seq):
            self.ignored += 1
            return
        x.take(offset, data, skip, now_ms)

    def bulk(self, value, link, now_ms):
        # A write on the BLE bulk characteristic (section 7.4): u32be offset,
        # then the bytes.
        if len(value) < 5:
            self.ignored += 1
            return
        self.chunk(None, value[0] << 24 | value[1] << 16 | value[2] << 8 | value[3], value, 4,
                   link, now_ms)

    def closed(self, link):
        # A link went away (BLE disconnect): its transfer pauses, nothing
        # held is lost.
        x = self.xfer
        if x is not None and x.link is link:
            x.pause("link closed")

    def healthy(self):
        # The agent ran 30 s and its self-test passed; confirmed at the next
        # poll with a host's TIME heard (section 7.7).
        self.healthy_seen = True

    # -- messages out ------------------------------------------------------
    def poll(self, link, now_ms):
        # (payload or None, ms until it wants to run again) for link, which
        # has heard a host's TIME. link.ota_seen: the last state it sent.
        self.now_ms = now_ms
        x = self.xfer
        if x is not None:
            x.tick(now_ms)
        seen = link.ota_seen
        for n, payload in self.states:
            if n > seen:
                link.ota_seen = n
                return payload, 0
        if self.window is not None and self.window_link is link:
            payload = self.window.message()
            self.window = None
            return payload, 0
        if self.reset_at is not None:
            if now_ms >= self.reset_at:
                self.reset_at = None
                self.reset()
            return None, 100
        # Each step below moves its own time or flag on, so the poll again
        # that sends what it queued ends.
        if self.report_due:
            self.report_due = False
            self.run("ota_apply", "boot_report")
            return self.poll(link, now_ms)
        if self.healthy_seen:
            self.healthy_seen = False
            self._confirm()
            return self.poll(link, now_ms)
        if self.queries:
            return self.queries.pop(0), 0
        if self.xfer is None and now_ms >= self.query_at:
            self._query(now_ms)
            return self.poll(link, now_ms)
        if self.waiting is not None and now_ms >= self.policy_at:
            self.try_apply(now_ms)
            return self.poll(link, now_ms)
        wait = self.query_at - now_ms
        if self.xfer is not None:
            wait = 1000
        elif self.waiting is not None and self.policy_at - now_ms < wait:
            wait = self.policy_at - now_ms
        return None, max(0, wait)

    def _query(self, now_ms):
        self.run("ota_query", "queries", now_ms)

    def _confirm(self):
        self.run("ota_apply", "confirm")

    def try_apply(self, now_ms):
        # The switch when the policy allows (section 7.10), else `installed`
        # with what it waits for, and a look again in 60 s.
        self.run("ota_apply", "try_apply", now_ms)
        self.policy_at = now_ms + _POLICY_MS

    def applied(self, now_ms):
        self.reset_at = now_ms + _RESET_MS


def start(agent):
    # The agent's client, shared by its links (from Agent.sampler).
    from edgefw import VERSION
    board_name, cfg = agent.ota_setup
    port = agent.port
    sensors = agent.sensors

    def readings():
        # The latest value of the sensors the apply policy looks at, present
        # only for a sensor the board has (None: no reading now). A read that
        # raises is no value: `unreadable` names the sensor and the error, and
        # the policy waits and says so (7.10).
        out = {}
        for s in sensors:
            if s.name == "battery" or s.name == "parked":
                try:
                    out[s.name] = s.read()
                except Exception as e:
                    out[s.name] = None
                    bad = out.get("unreadable") or {}
                    bad[s.name] = "%s: %s" % (type(e).__name__, e)
                    out["unreadable"] = bad
        return out

    def reset():
        # After the switch: the board boots the new slot.
        from edgefw.ota_apply import reset_board
        reset_board()

    c = OtaClient(port.root, agent.device_id, board_name, VERSION, agent.clock, cfg, reset=reset,
                  readings=readings)
    for link in agent.links:
        link.uplink.ota = c
    agent.ota = c
    agent.ota_setup = None
