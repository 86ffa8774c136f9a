# Stage 0 (docs/protocol.md 7.7): picks the agent slot at every boot, counts
# trial boots and rolls back. `edge flash` writes it, OTA never does, so it
# must not import the agent before it has chosen: the package it imports
# first is the one the board runs. It reads and writes the pointer ota/slot
# itself, in edgefw.atomic's format (the data, then its CRC-32 u32be; written
# to "<name>.new" and renamed), which edgefw.slots reads and writes with
# edgefw.atomic; tests/firmware/test_slots.py keeps the two agreeing.
# Runs under MicroPython (board, Unix port) and CPython.
import os
import sys
from binascii import crc32

_MP = sys.implementation.name == "micropython"
TRIALS = 3


def root():
    # A board's filesystem is its whole root (a virtual board mounts its
    # folder at "/"); CPython: $EDGE_DEVICE_ROOT or the current folder, as
    # edgefw.port_cpython says.
    return "" if _MP else os.environ.get("EDGE_DEVICE_ROOT", ".")


def path(r, name):
    return r + "/" + name if r else name


def load(r):
    # The pointer, or {} (none, torn, or not ours: slot "", counters 0).
    import json
    p = path(r, "ota/slot")
    for name in (p, p + ".new"):
        try:
            f = open(name, "rb")
            try:
                raw = f.read(4100)
            finally:
                f.close()
            n = len(raw) - 4
            if n > 0 and crc32(raw[:n]) == int.from_bytes(raw[n:], "big"):
                d = json.loads(raw[:n])
                if isinstance(d, dict):
                    return d
        except (OSError, ValueError):
            pass
    return {}


def save(r, d):
    import json
    data = json.dumps(d).encode()
    p = path(r, "ota/slot")
    try:
        os.mkdir(path(r, "ota"))
    except OSError:
        pass
    f = open(p + ".new", "wb")
    try:
        f.write(data)
        f.write(crc32(data).to_bytes(4, "big"))
        f.flush()
        if hasattr(os, "fsync"):
            os.fsync(f.fileno())
    finally:
        f.close()
    try:
        os.rename(p + ".new", p)
    except OSError:
        # A filesystem that will not rename over a file: load() takes the
        # ".new" while the old one is gone.
        os.remove(p)
        os.rename(p + ".new", p)


def rolled_back(d, why):
    # The pointer after a rollback of the update on trial: the previous slot
    # (an agent update), the counters unchanged, the sequence marked bad.
    p = d.pop("pending", None) or {}
    d.pop("trial", None)
    c = p.get("component", "agent")
    if c == "agent":
        d["active"] = d.get("prev", "")
        d["prev"] = ""
    bad = d.get("bad")
    d["bad"] = bad = bad if isinstance(bad, dict) else {}
    bad[c] = p.get("seq", 0)
    d["rolled"] = p
    d["why"] = why[:200]
    return d


def _whole(r, slot):
    # A slot folder holding a package (the factory slot "" always counts).
    if not slot:
        return True
    for ext in (".mpy", ".py"):
        try:
            os.stat(path(r, "slots/" + slot + "/edgefw/__init__" + ext))
            return True
        except OSError:
            pass
    return False


def _firmware_went_back(p):
    # A firmware update on trial whose image the bootloader refused: the
    # partition running is not the one set to boot.
    try:
        import esp32  # type: ignore[import-not-found]  # ESP32 ports only
        return esp32.Partition(esp32.Partition.RUNNING).info()[4] != p.get("part")
    except (ImportError, AttributeError, OSError):
        return False


def choose(r):
    # (slot, on trial): the pointer settled for this boot (trial counted,
    # rollback written), the slot put first on sys.path.
    d = load(r)
    if "trial" in d:
        p = d.get("pending") or {}
        why = None
        if p.get("component") == "firmware" and _firmware_went_back(p):
            why = "firmware never confirmed: the bootloader went back to " + str(p.get("from"))
        elif not isinstance(d["trial"], int) or d["trial"] >= TRIALS:
            why = "never confirmed after %d trial boots" % TRIALS
        elif p.get("component", "agent") == "agent" and not _whole(r, d.get("active")):
            why = "slot %s is missing or broken" % d.get("active")
        if why:
            d = rolled_back(d, why)
        else:
            d["trial"] += 1
        save(r, d)
        if why and p.get("component") == "firmware" and not _firmware_went_back(p):
            # Still in the new image: a reset while it is pending
            # verification makes the bootloader boot the previous one.
            _reset()
    trial = "trial" in d
    slot = ""
    for s in (d.get("active"), d.get("prev")):
        if s in ("a", "b") and _whole(r, s):
            slot = s
            break
    if slot:
        sys.path.insert(0, _slot_dir(r, slot))
    return slot, trial


def _slot_dir(r, slot):
    # The slot's package in the board's ROMFS when it is there (a virtual
    # board packs its slots into its "flash" image, as a board whose agent
    # is frozen would hold them in a ROMFS partition: bytecode run in place,
    # not loaded into the heap), else its folder.
    rom = "/rom/slots/" + slot
    try:
        os.stat(rom + "/edgefw")
        return rom
    except OSError:
        return path(r, "slots/" + slot)


def _reset():
    try:
        import machine
        machine.reset()
    except (ImportError, AttributeError):
        pass
    # The Unix port and CPython: the interpreter exits and its supervisor
    # (a virtual board: a soft reset; a Pi: systemd) starts it again.
    sys.exit(1)


def boot():
    r = root()
    try:
        slot, trial = choose(r)
    except Exception as e:
        # A pointer that cannot be written (flash full, failing): the
        # factory agent, which can still say what is wrong.
        print("edge: stage 0: %r; booting the factory agent" % (e,))
        slot, trial = "", False
    try:
        import edgefw.boot
        res = edgefw.boot.main(trial=True) if trial else edgefw.boot.main()
    except Exception as e:
        if not trial:
            raise
        res = e
    if trial and (isinstance(res, Exception) or res in ("crashed", "safe")):
        d = load(r)
        if "trial" in d:
            save(r, rolled_back(d, "crashed on trial: %r" % (res,)))
        # A firmware on trial: the bootloader boots the previous image.
        _reset()
    return res
