# A device's pairing core under test, driven over stdin/stdout, one line a
# command and one line a reply (hex; "-" for none), run by micropython (or
# CPython) in the board's folder. Not firmware: tests/ only.
#   boot <device_id> <uptime_ms>   build Pairing on the folder (a boot)
#   rand <hex>                     queue a fixed random (then rand() pops)
#   ctl <hex> <now_ms>             -> "<reply hex|-> <1 if a session opened>"
#   keys <k_h2d> <k_d2h>           a session from fixed keys
#   seal <hex> / open <hex>        the session's; open -> hex or "-"
#   sealed <hex>                   Pairing.sealed -> hex or "-"
#   state <now_ms> / disc / info / mods / heap / quit
import gc
import sys
from binascii import hexlify, unhexlify

from edgefw import pairing


class Clock:
    def __init__(self, t):
        self.t = t

    def uptime_ms(self):
        return self.t


def h(b):
    return hexlify(b).decode() if b is not None else "-"


queue = []
peak = [0]


def rand(n):
    # The fixed randoms; also the moment inside the exchange (every module
    # loaded, g and the scalars in flight) where the live heap is measured.
    gc.collect()
    peak[0] = max(peak[0], gc.mem_alloc())
    v = queue.pop(0)
    assert len(v) == n, (len(v), n)
    return v


p = s = None
while True:
    line = sys.stdin.readline()
    if not line:
        break
    w = line.split()
    if not w:
        continue
    c = w[0]
    if c == "boot":
        p = pairing.Pairing("", w[1], Clock(int(w[2])), rand)
        s = None
        print("ok")
    elif c == "bootrandom":
        p = pairing.Pairing("", w[1], Clock(int(w[2])))
        print("ok")
    elif c == "keys":
        from edgefw.session import Session
        s = Session(unhexlify(w[1]), unhexlify(w[2]))
        print("ok")
    elif c == "rand":
        queue.append(unhexlify(w[1]))
        print("ok")
    elif c == "ctl":
        r, ns = p.control(unhexlify(w[1]) if w[1] != "-" else b"", int(w[2]))
        if ns is not None:
            s = ns
        print(h(r), 1 if ns is not None else 0)
    elif c == "seal":
        print(h(s.seal(unhexlify(w[1]))))
    elif c == "open":
        print(h(s.open(unhexlify(w[1]))))
    elif c == "sealed":
        print(h(p.sealed(unhexlify(w[1]))))
    elif c == "state":
        print(p.state_byte(int(w[1])))
    elif c == "disc":
        p.disconnected()
        print("ok")
    elif c == "info":
        print(p.attempts(), p.bad_messages, s.bad_sealed if s else -1,
              1 if s and s.proven else 0, 1 if p.paired else 0, p.bad_state)
    elif c == "mods":
        print(" ".join(sorted(m[7:] for m in sys.modules if m.startswith("edgefw."))))
    elif c == "heap":
        gc.collect()
        print(gc.mem_alloc(), peak[0])
    elif c == "quit":
        break
    else:
        print("?")
