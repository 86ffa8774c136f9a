# Sealed messages of the BLE link (docs/protocol.md 5.6), the device's side:
#   sealed = counter (u32 BE) | AES-128-CCM(k, nonce, aad = "", message)
#   nonce  = direction (0x01 host to device, 0x02 device to host) | 8 zeros | counter
# k_d2h seals what the device sends, k_h2d opens what it receives. A message
# opens only if its counter is above the last one opened in this session, so
# a replay or a reordered message is dropped (counted in bad_sealed) and the
# session goes on as if it had not come. It runs for every telemetry message:
# the nonces are two buffers made once, patched in place, and seal_into seals
# into the caller's buffer: a message costs the heap a few small views (CCM
# works in its own buffers).
import struct

from edgefw.ccm import CCM

from micropython import const

_TAG = const(8)
_H2D = const(1)
_D2H = const(2)
_LAST = const(0xFFFFFFFF)  # never sent: at it the sender closes the link


def session_keys(bond_key, bond_id, nh, nd):
    # 5.5: SK = HKDF(Nh | Nd, bond_key, "edge session" | bond_id, 32)
    from edgefw.hkdf import hkdf
    sk = hkdf(nh + nd, bond_key, b"edge session" + bond_id, 32)
    return sk[:16], sk[16:]


class Session:
    def __init__(self, k_h2d, k_d2h, send_dir=_D2H):
        # send_dir: the direction this side seals (the device's: 0x02).
        self._seal = CCM(k_d2h if send_dir == _D2H else k_h2d)
        self._open = CCM(k_h2d if send_dir == _D2H else k_d2h)
        self._out = bytearray(13)
        self._out[0] = send_dir
        self._in = bytearray(13)
        self._in[0] = _H2D if send_dir == _D2H else _D2H
        self._next = 0
        self._last = -1
        self.bad_sealed = 0
        self.proven = False

    def seal(self, message):
        # The sealed message, in a new buffer (tests, the host's side).
        sealed = bytearray(4 + len(message) + _TAG)
        self.seal_into(message, sealed)
        return sealed

    def seal_into(self, message, out):
        # Seals message into out[:n] and returns n (len(message) + 12): the
        # link's sender seals every message into one buffer made once. Raises
        # ValueError, the counter untouched, when out is too short.
        n = self._next
        lm = 4 + len(message) + _TAG
        if len(out) < lm:
            raise ValueError("session: out too short")
        if n >= _LAST:
            raise ValueError("session: counter exhausted, close the link")
        self._next = n + 1
        struct.pack_into(">I", self._out, 9, n)
        struct.pack_into(">I", out, 0, n)
        self._seal.seal_into(self._out, b"", message, memoryview(out)[4:], _TAG)
        return lm

    def open(self, sealed):
        # -> the message, or None (counted) for a short, forged, replayed or
        # reordered one.
        if len(sealed) < 4 + _TAG:
            self.bad_sealed += 1
            return None
        n = struct.unpack_from(">I", sealed, 0)[0]
        if n <= self._last:
            self.bad_sealed += 1
            return None
        struct.pack_into(">I", self._in, 9, n)
        m = bytearray(len(sealed) - 4 - _TAG)
        if not self._open.open_into(self._in, b"", memoryview(sealed)[4:], m, _TAG):
            self.bad_sealed += 1
            return None
        self._last = n
        self.proven = True
        return m
