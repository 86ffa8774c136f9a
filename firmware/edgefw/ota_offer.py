# An OTA_OFFER, in the order of docs/protocol.md 7.3: the rotation, then
# the key list, then the manifest, each by the checks of 6.5
# (ota_manifest); the first refusal sends OTA_STATE `refused` naming the
# check, and nothing of what it refused is written. A rotation or a key
# list that passes is written (new file, then rename) before the next is
# checked. Loaded for each OFFER and dropped after (OtaClient.run).
from binascii import hexlify

from edgefw import atomic, ota_manifest
from edgefw.ota_client import path
from edgefw.ota_files import COMPONENTS, keys_held, load, save, trust, version_of


def offer(c, f, link, now_ms):
    # None, or the arguments of the Transfer to open (opened by the client
    # once this module and the checks' are dropped: the heap they held is
    # where the transfer's blocks go).
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
    if kl is not None:
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


def _manifest(c, data, held, root_pub, link, now_ms, now_s):
    root = c.root
    sl = c.slots()
    if sl is None:
        raise ValueError("wrong-component", 0)  # a firmware without OTA slots
    targets = {}
    counters = {}
    capacity = {}
    for comp in COMPONENTS:
        t = c.target(comp)
        if t is not None:
            targets[comp] = t
            # One below the counter: the manifest the device runs passes the
            # checks and is told `current` below, not refused `rollback`.
            counters[comp] = (version_of(c, comp), sl.counter(root, comp) - 1)
            capacity["agent-slot" if comp == "agent" else "ota-partition"] = t.capacity()
    m = ota_manifest.check(data, root_pub, held, c.board, counters, now_s, capacity, held=True)
    comp = m["component"]
    seq = m["sequence"]
    digest = hexlify(m["digest"]).decode()
    version = m["version"]
    from edgefw.ota_query import fresh  # after the checks: not in the heap they need
    if seq == counters[comp][1] + 1:
        if sl.running_digest(root, comp) != digest:
            raise ValueError("rollback", seq)
        fresh(c, m)
        c.state(comp, seq, "current", version=version)
        return
    if sl.bad(root, comp) == seq:
        raise ValueError("rolled-back", seq)
    fresh(c, m)
    x = c.xfer
    if x is not None:
        if x.component == comp and x.seq == seq and x.digest_hex == digest:
            x.again(link, now_ms)  # the host offers again (30 s without news): go on
            return
        x.pause()  # a new download of comp empties what it held (Transfer, begin)
    target = targets[comp]
    if target.installed(seq, digest):
        c.state(comp, seq, "installed", version=version)
        c.waiting = (comp, seq, digest, version, target, "")
        c.try_apply(now_ms)
        return
    dl = load(root, "dl.json")
    resume = (dl is not None and dl.get("component") == comp and dl.get("seq") == seq
              and dl.get("digest") == digest and dl.get("size") == m["size"])
    return link, target, m, digest, resume, now_ms
