# The boot self-test (STATUS key 4, agent.py): run once at start, imported
# then and dropped after, so its code does not stay in the heap.


def run(agent):
    # Reads every sensor once and the free heap and flash: the result a
    # bench reads back after flashing (STATUS key 4).
    ok = 0
    errors = []
    for s in agent.sensors:
        try:
            s.read()
            ok += 1
        except Exception:
            errors.append(s.name)
    try:
        import os
        st = os.statvfs(agent.port.root or "/")
        fs_free = st[0] * st[4]
    except (OSError, AttributeError):
        fs_free = None
    from edgefw import VERSION
    result = {"sensors": ok, "sensor_errors": errors, "heap_free": agent.port.mem_free(),
              "fs_free": fs_free, "version": VERSION}
    if errors:
        return "error", "self-test: sensors failed: " + ", ".join(errors), result
    return "ok", "self-test passed: %d sensors" % ok, result
