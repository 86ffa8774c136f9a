# Pairing and RESUME on the device (docs/protocol.md 5.4, 5.5), sans I/O:
# control() takes one message of the control characteristic and gives the
# reply to notify, and the Session when one opens; sealed() takes an opened
# UNPAIR. Rules it keeps:
# - 5.4.3's checks run in order (bad_message, no_identity, paused, bound)
#   before any scalar multiplication;
# - a PAIR_START that passes them is counted as a failed attempt, persisted
#   BEFORE PAIR_REPLY leaves; only a PAIR_CONFIRM that verifies clears it;
# - the back-off is measured on the uptime clock from the last attempt, and
#   from boot after a reboot (the count survives, elapsed time does not);
# - nothing from a message is persisted before it verifies (a bond only after
#   tag_h); no exception escapes control().
# The CPace code (pairing_exchange.py) is loaded for one PAIR_START and
# dropped after, so an idle agent holds this module only.
import os

from edgefw import bonds, drop, identity

from micropython import const

_T_START = const(16)
_T_REPLY = const(17)
_T_CONFIRM = const(18)
_T_DONE = const(19)
_T_RESUME = const(20)
_T_RESUME_OK = const(21)
_T_UNPAIR = const(22)
_UNPAIR_DONE = b"\xa1\x00\x17"  # {0: 23}
_MAX_WAIT = const(3600000)


def backoff_ms(n):
    # 5.4.4: 0 for n <= 2, else min(2^(n-2), 3600) seconds.
    if n <= 2:
        return 0
    return _MAX_WAIT if n > 13 else min(1000 << (n - 2), _MAX_WAIT)


def _same(a, b):
    # Compares without an early exit.
    if len(a) != len(b):
        return False
    x = 0
    for i in range(len(a)):
        x |= a[i] ^ b[i]
    return x == 0


def _error(reason, text, wait_ms=-1):
    from edgefw import messages_pair
    try:
        return messages_pair.error(reason, text, wait_ms)
    finally:
        drop("messages_pair")


def _drop_crypto():
    # The exchange's code and what it imported: loaded for one message.
    for name in ("pairing_exchange", "cpace", "sha512", "hkdf"):
        drop(name)


def _encode(kind, fields):
    from edgefw import messages
    return messages.encode(kind, fields)


class Pairing:
    def __init__(self, root, device_id, clock, rand=None):
        # rand(n) -> n bytes replaces every random draw (yb, Nd): test
        # vectors only. Built at boot: the wait restarts in full from here.
        self.root = root
        self.device_id = device_id
        self._clock = clock
        self._rand = rand
        self._count = bonds.attempts(root)
        self._since = clock.uptime_ms()
        _, bl, corrupt = bonds.load(root)
        self.paired = len(bl) > 0
        self.bad_state = 1 if corrupt else 0  # a bonds file that read as corrupt
        self.bad_messages = 0
        self._pending = None  # after PAIR_REPLY: what PAIR_CONFIRM needs
        self._dpub = None

    def attempts(self):
        return self._count

    def wait_ms(self, now_ms):
        left = self._since + backoff_ms(self._count) - now_ms
        return left if left > 0 else 0

    def state_byte(self, now_ms):
        # 5.1: version 1 in bits 7-4, bit 0 paired, bit 1 paused.
        return 0x10 | (1 if self.paired else 0) | (2 if self.wait_ms(now_ms) else 0)

    def disconnected(self):
        self._pending = None

    def control(self, payload, now_ms):
        # -> (reply payload or None, Session or None); never raises.
        try:
            return self._control(payload, now_ms)
        except Exception as e:  # a flash error, memory: refuse, keep running
            self._pending = None
            self.bad_messages += 1
            try:
                return _error("bad_message", "device: %s" % (e.args[0] if e.args else e)), None
            except Exception:
                return None, None

    def _control(self, payload, now_ms):
        from edgefw import messages_pair
        try:
            kind, f = messages_pair.decode(payload)
        except ValueError as e:
            kind, f = -1, str(e)
        finally:
            drop("messages_pair")
        if kind == _T_START:
            return self._start(f, now_ms), None
        if kind == _T_CONFIRM and self._pending is not None:
            return self._confirm(f)
        if kind == _T_RESUME:
            return self._resume(f)
        self.bad_messages += 1
        if kind == _T_CONFIRM:
            f = "PAIR_CONFIRM without a PAIR_START"
        elif kind >= 0:
            f = "type %d is not taken on control" % kind
        return _error("bad_message", f), None

    def _start(self, f, now_ms):
        if self._pending is not None:
            return _error("busy", "a pairing is in progress on this connection")
        root = self.root
        d = identity.private_key(root)
        code = identity.setup_code(root)
        if d is None or code is None:
            return _error("no_identity", "no key or setup code: edge flash this device")
        w = self.wait_ms(now_ms)
        if w:
            return _error("paused", "wrong codes: wait", w)
        owner = bonds.owner(root)
        if owner is not None and owner != f[3]:
            return _error("bound", "bound to another account")
        self._count += 1
        bonds.set_attempts(root, self._count)
        self._since = now_ms
        if self._dpub is None:
            self._dpub = identity.cached_public_key(root, self.device_id)
        kept = self._dpub is not None
        try:
            from edgefw import pairing_exchange
            r = pairing_exchange.respond(code, self.device_id, f[1], f[2], f[3], f[4], f[9], d,
                                         self._dpub, self._rand)
        except MemoryError:
            # Our own shortage, not a guess: nothing left the device, so the
            # attempt is given back (5.4.4) and the host may try again.
            _drop_crypto()
            self._count -= 1
            bonds.set_attempts(root, self._count)
            return _error("no_memory", "device: out of memory for the exchange; try again")
        finally:
            _drop_crypto()
        if r is None:
            self.bad_messages += 1
            return _error("bad_message", "Ya or Ea is a low-order point")
        yb, self._dpub, tag_d, tag_h, bond_id, bond_key = r
        if not kept:
            identity.keep_public_key(root, self._dpub)
        self._pending = (tag_h, bond_id, bond_key, f[3], f[4], f[1], yb[:16])
        return _encode(_T_REPLY, {2: yb, 5: self._dpub, 6: tag_d})

    def _confirm(self, f):
        tag_h, bond_id, bond_key, account, host_id, sid, nd = self._pending
        self._pending = None
        if not _same(f[6], tag_h):
            return _error("wrong_code", "the setup code did not match"), None
        bonds.add(self.root, account, host_id, bond_id, bond_key)
        self.paired = True
        self._count = 0
        bonds.set_attempts(self.root, 0)
        return _encode(_T_DONE, {7: bond_id}), self._session(bond_key, bond_id, sid, nd)

    def _resume(self, f):
        if self._pending is not None:
            return _error("busy", "a pairing is in progress on this connection"), None
        b = bonds.find(self.root, f[7])
        if b is None:
            return _error("unknown_bond", "no such bond: pair again"), None
        bond_id, _, bond_key = b
        nd = self._rand(16) if self._rand else os.urandom(16)
        from edgefw.hkdf import hmac_sha256
        tag = hmac_sha256(bond_key, b"edge resume" + bond_id + f[8] + nd)[:16]
        drop("hkdf")
        return _encode(_T_RESUME_OK, {6: tag, 8: nd}), self._session(bond_key, bond_id, f[8], nd)

    def _session(self, bond_key, bond_id, nh, nd):
        from edgefw.session import Session, session_keys
        k_h2d, k_d2h = session_keys(bond_key, bond_id, nh, nd)
        drop("hkdf")
        return Session(k_h2d, k_d2h)

    def sealed(self, message):
        # An opened message of the BLE link's own (UNPAIR): -> the reply to
        # seal, or None. After UNPAIR_DONE the link disconnects.
        from edgefw import messages_pair
        try:
            kind, _ = messages_pair.decode(message)
        except ValueError:
            kind = -1
        finally:
            drop("messages_pair")
        if kind != _T_UNPAIR:
            self.bad_messages += 1
            return None
        bonds.clear(self.root)
        self.paired = False
        return _UNPAIR_DONE
