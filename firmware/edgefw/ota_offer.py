# An OTA_OFFER, in the order of docs/protocol.md 7.3: the rotation, then
# the key list, then the manifest, each by the checks of 6.5
# (ota_manifest); the first refusal sends OTA_STATE `refused` naming the
# check, and nothing of what it refused is written. A rotation or a key
# list that passes is written (new file, then rename) before the next is
# checked. Loaded for each OFFER and dropped after (OtaClient.run).
from binascii import hexlify

from edgefw import atomic, drop, ota_manifest
from edgefw.ota_client import path
from edgefw.ota_files import COMPONENTS, keys_held, load, save, trust, version_of


def offer(c, f, link, now_ms):
    # None, or the arguments of the Transfer to open (opened by the client
    # once this module and the checks' are dropped).
    comp = f[2]
    if 6 in f:
        c.query_at = now_ms + f[6] * 1000  # the host says when to ask again
    try:
        return _offer(c, f, link, now_ms)
    except ValueError as e:
        c.state(comp, e.args[1] if len(e.args) > 1 else 0, "refused", check=e.args[0])
    except OSError as e:
        c.state(comp, 0, "failed", reason="flash write failed: %r" % e)


def _offer(c, f, link, now_ms):
    root = c.root
    now_s = c.now_s()
    if now_s is None:
        c.ignored += 1  # no TIME yet: expiry cannot be checked; asked again later
        return
    root_pub, epoch = trust(root)
    if root_pub is None:
        raise ValueError("not-root", 0)
    rot = f.get(5)
    if rot is not None:
        nxt, epoch = ota_manifest.rotation(rot, root_pub, epoch)
        save(root, "root.json", {"epoch": epoch, "root": hexlify(nxt).decode()})
        root_pub = nxt
        # Asked again at once, with the new epoch (7.2).
        c.query_at = now_ms
        c.why = "command"
    held = keys_held(root)
    kl = f.get(4)
    # The list held, sent again (a push does not know what the device
    # holds), is skipped: nothing to check or write (7.3).
    if kl is not None and kl != held:
        cur = ota_manifest.held_key_list(held)[1] if held is not None else 0
        ota_manifest.key_list(kl, root_pub, cur)
        held = bytes(kl)
        try:
            import os
            os.mkdir(path(root, "ota"))
        except OSError:
            pass
        atomic.write(path(root, "ota/keys.cose"), held)
    data = f.get(3)
    if data is not None:
        return _manifest(c, data, held, root_pub, link, now_ms, now_s)


class _Device:
    # What ota_manifest.check asks of the device after the signature passed
    # (counters, then room), read only then: edgefw.slots and the targets
    # are loaded once the verify's code and numbers have left the heap.
    def __init__(self, c):
        self.c = c
        self.sl = None
        self.targets = {}

    def _target(self, comp):
        if self.sl is None:
            drop("ed25519")  # the signatures are checked: their code goes
            drop("sha512")
            import gc
            gc.collect()
            self.sl = self.c.slots()
        if comp not in self.targets:
            self.targets[comp] = None if self.sl is None else self.c.target(comp)
        return self.targets[comp]

    def get(self, key, default=None):
        # counters: component -> (running version, counter - 1), one below
        # the counter so the manifest the device runs passes the checks and
        # is told `current`, not refused `rollback`; capacity: target -> bytes.
        if key in COMPONENTS:
            if self._target(key) is None:
                return default
            return version_of(self.c, key), self.sl.counter(self.c.root, key) - 1
        t = self._target("agent" if key == "agent-slot" else "firmware")
        return default if t is None else t.capacity()


def _manifest(c, data, held, root_pub, link, now_ms, now_s):
    root = c.root
    dev = _Device(c)
    m = ota_manifest.check(data, root_pub, held, c.board, dev, now_s, dev, held=True)
    sl = dev.sl
    comp = m["component"]
    seq = m["sequence"]
    digest = hexlify(m["digest"]).decode()
    version = m["version"]
    from edgefw.ota_query import fresh  # after the checks: not in the heap they need
    if seq == sl.counter(root, comp):
        if sl.running_digest(root, comp) != digest:
            raise ValueError("rollback", seq)
        fresh(c, m)
        c.state(comp, seq, "current", version=version)
        return
    if sl.bad(root, comp) == seq:
        raise ValueError("rolled-back", seq)
    if sl.on_trial(root):
        p = sl.read(root).get("pending") or {}
        if p.get("component") == comp and p.get("seq") == seq and p.get("digest") == digest:
            # The image on trial, offered again (its counter is raised only
            # at the confirm): it runs already, nothing to download.
            c.state(comp, seq, "trial", version=version)
            return
    fresh(c, m)
    x = c.xfer
    if x is not None:
        if x.component == comp and x.seq == seq and x.digest_hex == digest:
            x.again(link, now_ms)  # the host offers again (30 s without news): go on
            return
        x.pause()  # a new download of comp empties what it held (Transfer, begin)
    target = dev.targets[comp]
    if target.installed(seq, digest):
        c.state(comp, seq, "installed", version=version)
        c.waiting = (comp, seq, digest, version, target, "")
        c.try_apply(now_ms)
        return
    dl = load(root, "dl.json")
    resume = (dl is not None and dl.get("component") == comp and dl.get("seq") == seq
              and dl.get("digest") == digest and dl.get("size") == m["size"])
    return link, target, m, digest, resume, now_ms
