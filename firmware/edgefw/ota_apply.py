# The client's rare steps around a switch (docs/protocol.md 7.7, 7.10): the
# boot report, the confirmation once healthy, the rollback of a trial that
# ran out (from the agent), and the apply policy. Loaded for each and
# dropped after (OtaClient.run, Agent.trial_over).


def boot_report(c):
    # At boot, once: `trial` from a new image on trial, `rolled-back` (with
    # why) from the image the device went back to.
    sl = c.slots()
    if sl is None:
        return  # a firmware built without OTA slots
    r = sl.take_report(c.root)
    if r is not None:
        state, comp, seq, version, why = r
        c.state(comp, seq, state, version=version or None, reason=why or None)


def confirm(c):
    # On trial: one pointer write makes the new image the device's and
    # raises its counter (slots.confirm); then `confirmed`.
    sl = c.slots()
    if sl is None or not sl.on_trial(c.root):
        return
    try:
        # A firmware image on trial is marked valid too (7.8); only the ESP32
        # port has the module (not named in an import: the other ports' type
        # stubs lack it).
        esp32 = __import__("esp32")
    except ImportError:
        esp32 = None
    p = sl.confirm(c.root) if esp32 is None else sl.confirm(c.root, esp32)
    if p is not None:
        c.state(p["component"], p["seq"], "confirmed", version=p.get("version"))


def trial_ended(agent, failed):
    # From the agent on trial (7.7): its deadline passed, or its self-test
    # failed (failed: the self-test's reason). The why names what was missing.
    if failed is not None:
        why = "self-test failed on trial: " + (failed[11:] if failed[:11] == "self-test: " else failed)
    else:
        if agent.clock.epoch(agent.clock.boot) is None:
            why = "no host heard"
        elif agent.ota is None:
            why = "the OTA client did not start"
        else:
            why = "host heard, confirm not done"
        why = "not confirmed within %d s: %s" % (agent.trial_ms // 1000, why)
    agent.trial_ms = 0
    trial_over(agent.port.root, why)


def trial_over(root, why, reset=None):
    # An agent on trial that did not confirm in time, or whose self-test
    # failed (7.7): stage 0's rollback write (slots.rollback, one rename),
    # then the reset that boots the slot rolled back to; a firmware image is
    # still pending verification, so the bootloader goes back (7.8). Nothing
    # is written when the pointer is no longer on trial (confirmed).
    from edgefw import slots
    if slots.rollback(root, why):
        (reset or reset_board)()


def reset_board():
    # A board resets; a port with no machine reset (the Unix port, CPython)
    # exits and its supervisor starts it again.
    try:
        import machine
        machine.reset()
    except (ImportError, AttributeError):  # the virtual board's machine has none
        pass
    raise SystemExit(0)


def _reading(ctx, name):
    # The sensor's latest value, or why the policy has none: a sensor that
    # fails or reads nothing holds the switch, it never passes for a value.
    bad = ctx.get("unreadable")
    if bad and name in bad:
        return None, "%s unreadable: %s" % (name, bad[name])
    if name not in ctx:
        return None, "no %s sensor on this board" % name
    if ctx[name] is None:
        return None, "%s: no reading" % name
    return ctx[name], None


def board_policy(c, ctx):
    # True, or the reason the board file's `ota.apply` waits (7.10). A
    # condition here binds this board (sensors_build.ota took out those on
    # a sensor it lacks).
    a = (c.cfg or {}).get("apply") or {}
    v = a.get("battery_min_v")
    if v is not None:
        b, why = _reading(ctx, "battery")
        if why is not None:
            return why
        if b < v:
            return "battery %s V, below %s V" % (b, v)
    if a.get("parked"):
        p, why = _reading(ctx, "parked")
        if why is not None:
            return why
        if p is not True:
            return "not parked"
    hours = a.get("hours")
    if hours:
        h = ctx.get("hour")
        lo, hi = hours
        inside = h is not None and (lo <= h < hi if lo <= hi else h >= lo or h < hi)
        if not inside:
            return "hour %s outside %d..%d" % (h, lo, hi)
    return True


def _policy(c, ctx):
    # The device's ota_policy.allow(ctx) when it has one, else the board's.
    allow = c.policy
    if allow is None:
        try:
            allow = __import__("ota_policy").allow
        except ImportError:
            allow = None
    if allow is None:
        return board_policy(c, ctx)
    try:
        return allow(ctx)
    except Exception as e:  # a device file's bug must not stop updates for good
        return "ota_policy.allow raised %r" % e


def try_apply(c, now_ms):
    # The switch when the policy allows: `applying`, the pointer written,
    # the board reset once the state has gone out. Else `installed` with
    # the reason, when it changed.
    comp, seq, digest, version, target, told = c.waiting
    ctx = dict(c.readings() if c.readings is not None else {})
    now = c.now_s()
    ctx["hour"] = None if now is None else now // 3600 % 24  # UTC: a device has no time zone
    ctx["component"] = comp
    ctx["version"] = version
    ok = _policy(c, ctx)
    if ok is not True:
        reason = str(ok)
        if reason != told:
            c.waiting = (comp, seq, digest, version, target, reason)
            c.state(comp, seq, "installed", version=version, reason=reason)
        return
    try:
        target.apply(seq, digest, version)
    except OSError as e:
        c.waiting = None
        c.state(comp, seq, "failed", version=version, reason="switch failed: %r" % e)
        return
    c.waiting = None
    c.state(comp, seq, "applying", version=version)
    c.applied(now_ms)
