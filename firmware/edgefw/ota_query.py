# The client's queries (docs/protocol.md 7.2, 7.3, 7.9, 7.10) and the trust
# it holds on flash: loaded for each query or OFFER and dropped after
# (OtaClient.run). Files, each written whole to a new name and renamed
# (atomic.py), so a power cut leaves the old or the new one:
#   ota/root.json   {"epoch": n, "root": hex} after a root rotation (absent:
#                   the provisioned root of identity/anchors.json, epoch 0)
#   ota/keys.cose   the key list in force, as the root signed it
#   ota/dl.json     the download in progress (7.6)
#   ota/fresh.json  {component: latest expires of a valid manifest that was
#                   current or newer} (7.9)
import json
from binascii import hexlify, unhexlify

from edgefw import atomic, messages
from edgefw.ota_client import path

COMPONENTS = ("agent", "firmware")
_CHECK_S = 86400  # board files without an `ota` object: once a day
_JITTER = 0.1


def load(root, name):
    # The JSON of ota/<name>, or None (absent, damaged).
    data = atomic.read(path(root, "ota/" + name))
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def save(root, name, value):
    try:
        import os
        os.mkdir(path(root, "ota"))
    except OSError:
        pass
    atomic.write(path(root, "ota/" + name), json.dumps(value).encode())


def trust(root):
    # (root public key or None, epoch): the latest rotation's, else the
    # provisioned anchor's.
    r = load(root, "root.json")
    try:
        if r is not None:
            return unhexlify(r["root"]), int(r["epoch"])
        from edgefw import identity
        a = identity.anchors(root) or {}
        return unhexlify(a["ota_root"]), 0
    except (KeyError, TypeError, ValueError):
        return None, 0


def keys_held(root):
    # The signed key list in force, or None.
    return atomic.read(path(root, "ota/keys.cose"), 1024)


def keys_seq(root):
    data = keys_held(root)
    if data is None:
        return 0
    from edgefw import ota_manifest
    try:
        return ota_manifest.held_key_list(data)[1]
    except ValueError:
        return 0


def version_of(c, component):
    if component == "agent":
        return c.version
    import os
    return os.uname().release


def fresh(c, m):
    # Remembers a valid manifest's expires (current or newer), for 7.9.
    f = load(c.root, "fresh.json") or {}
    comp = m["component"]
    if f.get(comp, 0) < m["expires"]:
        f[comp] = m["expires"]
        save(c.root, "fresh.json", f)


def _wait_ms(cfg):
    # check_s x (1 +- jitter), at random (section 7.10).
    import os
    check = cfg.get("check_s", _CHECK_S) if cfg else _CHECK_S
    jitter = cfg.get("jitter", _JITTER) if cfg else _JITTER
    r = int.from_bytes(os.urandom(2), "big") / 65535
    return int(check * 1000 * (1 + jitter * (2 * r - 1)))


def queries(c, now_ms):
    # One OTA_QUERY per component the device has; `stale` for a component
    # whose newest manifest expired (once per query; STATUS error once per
    # boot). The next query is scheduled here.
    root = c.root
    sl = c.slots()
    seq = keys_seq(root)
    epoch = trust(root)[1]
    dl = load(root, "dl.json")
    fr = load(root, "fresh.json") or {}
    now_s = c.now_s()
    why = c.why
    for comp in COMPONENTS:
        if c.target(comp) is None:
            continue
        counter = sl.counter(root, comp)
        held = dl is not None and dl.get("component") == comp
        c.queries.append(messages.ota_query(
            c.device_id, comp, version_of(c, comp), counter, seq, epoch,
            "resume" if held and why != "command" else why,
            dl.get("seq") if held else None, dl.get("held") if held else None))
        exp = fr.get(comp)
        if exp is not None and now_s is not None and now_s >= exp:
            reason = "newest manifest expired at %d and no newer came: update server frozen?" % exp
            c.state(comp, counter, "stale", reason=reason)
            if not c.stale_told:
                c.stale_told = True
                c.queue(messages.status(c.device_id, "error", "OTA %s: %s" % (comp, reason)))
    c.why = "schedule"
    c.query_at = now_ms + _wait_ms(c.cfg)


def when(c, f, now_ms):
    # An OFFER's key 6: ask again in that many seconds.
    s = f.get(6)
    if s is not None:
        c.query_at = now_ms + s * 1000


def hexdigest(b):
    return hexlify(b).decode()
