# The client's queries (docs/protocol.md 7.2, 7.3, 7.9, 7.10): loaded for
# each query and dropped after (OtaClient.run).
from edgefw import messages
from edgefw.ota_files import COMPONENTS, keys_seq, load, save, trust, version_of

_CHECK_S = 86400  # board files without an `ota` object: once a day
_JITTER = 0.1


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
        if sl is None or c.target(comp) is None:
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
