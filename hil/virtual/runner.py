# MicroPython (Unix port) script, not host code: it boots a virtual board.
#
#   micropython -X heapsize=N -i runner.py FS_DIR MODE [ROM_IMAGE]
#
# The board's folder becomes its whole filesystem, then boot.py and main.py
# run as a board runs them, and `-i` leaves the interpreter at the REPL.
# MODE "boot": boot.py then main.py (power-on, hard reset, friendly soft reset);
#      "raw":  boot.py only, then a marker; the supervisor swallows the
#              friendly banner and sends Ctrl-A (a board stays in the raw REPL
#              across a soft reset and does not run main.py then);
#      "repl": nothing (the interpreter died of a Ctrl-C between scripts).
# The supervisor reads in-band markers `ESC _ edge:<what> ESC \` (an APC
# string, which terminals ignore) and strips them from the console;
# `machine` is vmachine.py (adds machine.bootloader()); `bluetooth` is
# vbluetooth.py when EDGE_BLE_SOCKET is set; `esp32` is vesp32.py (OTA
# partitions) when EDGE_ESP32_OTA is set; `time` is vtime.py (a clock the
# bench can move ahead) when EDGE_CLOCK is set and main.py is to run.
# ROM_IMAGE (rom.py): the agent frozen as a ROMFS image, mounted at /rom ahead
# of the folder on sys.path; its buffer is the heap's first allocation and
# stands for the board's flash (the heap is the budget plus the image).
# Modules are imported inside the functions so that main.py's globals, which
# the REPL keeps after main.py ends as on a board, hold only what it defined.


def _marker(what):
    import sys
    sys.stdout.write("\x1b_edge:" + what + "\x1b\\")


def _run(path, g):
    # Returns False when the script asked for a soft reset (SystemExit, which
    # is what sys.exit() and machine.soft_reset() raise), True otherwise.
    try:
        f = open(path)
    except OSError:
        return True
    try:
        code = compile(f.read(), path, "exec")
    except BaseException as e:
        f.close()
        _print_exception(e)
        return True
    f.close()
    g["__file__"] = path
    try:
        exec(code, g)
    except SystemExit:
        return False
    except BaseException as e:
        # KeyboardInterrupt included: a board prints it and goes to the REPL.
        _print_exception(e)
    return True


def _print_exception(e):
    # As a board prints it: a board runs main.py from C, so the runner's own
    # frame is left out of the traceback.
    import sys
    try:
        import io
        buf = io.StringIO()
        sys.print_exception(e, buf)
        for line in buf.getvalue().split("\n"):
            if line and not (line.endswith(", in _run") and "runner.py\"" in line):
                sys.stdout.write(line + "\n")
    except MemoryError:
        sys.print_exception(e)


def _boot():
    import os
    import sys
    fs = sys.argv[1]
    mode = sys.argv[2]
    rom = sys.argv[3] if len(sys.argv) > 3 and mode == "boot" else None
    if rom:
        import vfs
        rom_buf = bytearray(os.stat(rom)[6])
        with open(rom, "rb") as f:
            f.readinto(rom_buf)
        vfs.mount(vfs.VfsRom(rom_buf), "/rom")
    # machine.bootloader() and friends (vmachine.py sits beside this file,
    # reachable only until the board's filesystem replaces "/").
    try:
        import vmachine
        sys.modules["machine"] = vmachine
    except ImportError:
        pass
    # The board's clock (vtime.py): its file is in the board's home too.
    clock = os.getenv("EDGE_CLOCK")
    if clock and mode == "boot":
        import vtime
        vtime.start(clock)
        sys.modules["time"] = vtime
    # OTA partitions (vesp32.py) on an ESP-family board: the file is in the
    # board's home, opened before the board's folder becomes "/".
    ota = os.getenv("EDGE_ESP32_OTA")
    if ota:
        import vesp32
        vesp32.start(ota, int(os.getenv("EDGE_ESP32_OTA_SIZE")), mode == "boot")
        sys.modules["esp32"] = vesp32
    # A radio (vbluetooth.py, bridged to the virtual air by ble_bridge.py)
    # only on a board the supervisor gave one: it costs heap, as NimBLE does.
    if os.getenv("EDGE_BLE_SOCKET"):
        # Compiled (radio.py), so loading it scatters nothing in the heap.
        mpy = os.getenv("EDGE_BLE_MPY")
        if mpy:
            sys.path.insert(0, mpy)
        import vbluetooth
        if mpy:
            sys.path.pop(0)
        sys.modules["bluetooth"] = vbluetooth
        # Its BLE object made now, at the bottom of the heap, as a port's is
        # static: one made by the agent would stay amid the agent's heap.
        vbluetooth.BLE()
    os.umount("/")
    os.mount(os.VfsPosix(fs), "/")
    os.chdir("/")
    # A board's sys.path; frozen modules (asyncio) stay importable.
    while sys.path:
        sys.path.pop()
    for p in (("/rom",) if rom else ()) + ("", ".frozen", "/lib"):
        sys.path.append(p)
    while sys.argv:
        sys.argv.pop()
    g = globals()
    ok = True
    if mode != "repl":
        ok = _run("boot.py", g)
    if ok and mode == "boot":
        ok = _run("main.py", g)
        if rom:
            # main.py ended (Ctrl-C, a crash): the REPL, like mpremote's
            # sessions, sees the folder's files, which may be newer.
            sys.path.remove("/rom")
            for name in list(sys.modules):
                if name == "edgefw" or name.startswith("edgefw."):
                    del sys.modules[name]
    if not ok:
        _marker("reset")
        # The supervisor kills this interpreter and starts the next one; never
        # fall through to the REPL banner meanwhile.
        import time
        while True:
            time.sleep(1)
    if mode == "raw":
        _marker("raw")
    g.pop("__file__", None)


_boot()
del _boot, _run, _marker, _print_exception
