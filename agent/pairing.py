"""The host's side of BLE pairing, RESUME and sealed messages (docs/protocol.md 5.4-5.6).

Sans I/O, like the device's ``edgefw.pairing``: each object takes message
payloads and gives message payloads; a link (BLE GATT) carries them.

- :class:`Initiator` pairs with the setup code: ``start()`` gives PAIR_START,
  ``reply(PAIR_REPLY)`` gives PAIR_CONFIRM, ``done(PAIR_DONE)`` gives the
  :class:`Bond` and the first :class:`HostSession`. CPace (CPACE-X25519-SHA512)
  on the code, plus the device's static key ``D``, checked against the
  registry's key or the label's fingerprint before the host confirms.
- :class:`Resumer` reopens a session from a bond in one round trip.
- :class:`HostSession` seals (host to device) and opens (device to host).

Every failure is a :class:`PairingError` whose ``reason`` is the device's
ERROR reason (``paused``, ``bound``, ``wrong_code``, ...) or a local one
(``wrong_device``, ``bad_message``, ``bad_tag``). Randoms come from
``secrets`` unless a test passes ``rand`` (shared vectors only).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Callable

from edge_agent import crypto
from edge_agent.messages import MAX_MESSAGE, MessageError, _loads
from edge_agent.names import is_device_id

_lv = crypto.prepend_len  # CPace's lv(): LEB128 length, then the data

PAIR_START, PAIR_REPLY, PAIR_CONFIRM, PAIR_DONE = 16, 17, 18, 19
RESUME, RESUME_OK, UNPAIR, UNPAIR_DONE, ERROR = 20, 21, 22, 23, 31

# type -> {key: check}; a check is ("bstr", exact length), ("id", 0),
# ("tstr", max characters) or ("uint", 0). Keys marked optional may be absent.
_KEYS: dict[int, dict[int, tuple[str, int]]] = {
    PAIR_START: {1: ("bstr", 16), 2: ("bstr", 32), 3: ("id", 0), 4: ("bstr", 16), 9: ("bstr", 32)},
    PAIR_REPLY: {2: ("bstr", 32), 5: ("bstr", 32), 6: ("bstr", 16)},
    PAIR_CONFIRM: {6: ("bstr", 16)},
    PAIR_DONE: {7: ("bstr", 8)},
    RESUME: {7: ("bstr", 8), 8: ("bstr", 16)},
    RESUME_OK: {8: ("bstr", 16), 6: ("bstr", 16)},
    UNPAIR: {},
    UNPAIR_DONE: {},
    ERROR: {1: ("tstr", 32), 2: ("uint", 0), 3: ("tstr", 120)},
}
_OPTIONAL = {(ERROR, 2), (ERROR, 3)}
_TAG = 8
_H2D, _D2H = 1, 2
_LAST_COUNTER = 0xFFFFFFFF
_BASE = b"\x09" + bytes(31)  # X25519's base point


class PairingError(Exception):
    """Pairing or RESUME failed; ``reason`` is the protocol's word for why."""

    def __init__(self, reason: str, text: str = "", wait_ms: int | None = None):
        self.reason = reason
        self.text = text
        self.wait_ms = wait_ms
        more = f" (wait {wait_ms / 1000:.1f} s)" if wait_ms else ""
        super().__init__(f"{reason}: {text}{more}" if text else reason + more)


@dataclass
class Bond:
    """What the host keeps of a pairing (its registry holds it, 5.7)."""

    device_id: str
    account: str
    host_id: bytes
    bond_id: bytes
    bond_key: bytes
    device_key: bytes


def _text_ok(v: Any, hi: int) -> bool:
    return type(v) is str and len(v) <= hi and not any(
        ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in v)


def decode_control(payload: bytes) -> tuple[int, dict[int, Any]]:
    """``(type, {key: value})`` of a pairing message, by the rules of section 2.1.

    Raises :class:`PairingError` with reason ``bad_message`` naming the first
    rule broken.
    """
    if len(payload) > MAX_MESSAGE:
        raise PairingError("bad_message", f"message of {len(payload)} bytes")
    try:
        keys, _ = _loads(bytes(payload), False)
    except MessageError as e:
        raise PairingError("bad_message", str(e)) from None
    kind = keys.get(0)
    if type(kind) is not int or kind not in _KEYS:
        raise PairingError("bad_message", f"not a pairing message type: {kind!r}")
    out: dict[int, Any] = {}
    for key, (check, size) in _KEYS[kind].items():
        if key not in keys:
            if (kind, key) in _OPTIONAL:
                continue
            raise PairingError("bad_message", f"type {kind}: key {key} missing")
        v = keys[key]
        ok = (type(v) is bytes and len(v) == size if check == "bstr"
              else type(v) is str and is_device_id(v) if check == "id"
              else _text_ok(v, size) if check == "tstr"
              else type(v) is int and 0 <= v <= 2**63 - 1)
        if not ok:
            raise PairingError("bad_message", f"type {kind}: key {key} is not a valid {check}")
        out[key] = v
    return kind, out


def _encode(kind: int, fields: dict[int, Any]) -> bytes:
    import cbor2

    return cbor2.dumps({0: kind, **fields}, canonical=True)


def _fail_on_error(kind: int, f: dict[int, Any], want: int) -> None:
    if kind == ERROR:
        raise PairingError(f[1], f.get(3, ""), f.get(2))
    if kind != want:
        raise PairingError("bad_message", f"expected type {want}, got {kind}")


def session_keys(bond_key: bytes, bond_id: bytes, nh: bytes, nd: bytes) -> tuple[bytes, bytes]:
    """5.5: ``(k_h2d, k_d2h)`` from the bond and the two nonces."""
    sk = crypto.hkdf(nh + nd, bond_key, b"edge session" + bond_id, 32)
    return sk[:16], sk[16:]


def resume_tag(bond_key: bytes, bond_id: bytes, nh: bytes, nd: bytes) -> bytes:
    return crypto.hmac_sha256(bond_key, b"edge resume" + bond_id + nh + nd)[:16]


def fingerprint(device_key: bytes) -> bytes:
    """Section 4: the first 8 bytes of SHA-256 of the raw public key."""
    return hashlib.sha256(device_key).digest()[:8]


def new_host_key() -> tuple[bytes, bytes]:
    """A host's static key pair (ea, Ea = X(ea, 9)) for PAIR_START key 9 (5.4.1)."""
    ea = crypto.sample_scalar()
    return ea, crypto.scalar_mult_vfy(ea, _BASE)


def new_host_id() -> bytes:
    """16 random bytes a host installation chooses once and keeps."""
    return secrets.token_bytes(16)


def unpair_payload() -> bytes:
    """UNPAIR, to be sealed with the session and sent on telemetry."""
    return _encode(UNPAIR, {})


def channel(device_id: str) -> bytes:
    """CI = lv("edge-ble-pair-1") | lv(device id)."""
    return _lv(b"edge-ble-pair-1") + _lv(device_id.encode())


class HostSession:
    """Seals with ``k_h2d`` (direction 0x01) and opens with ``k_d2h`` (0x02), 5.6."""

    def __init__(self, k_h2d: bytes, k_d2h: bytes):
        self._seal = crypto.CCM(k_h2d)
        self._open = crypto.CCM(k_d2h)
        self._next = 0
        self._last = -1
        self.bad_sealed = 0

    @staticmethod
    def _nonce(direction: int, counter: int) -> bytes:
        return bytes([direction]) + bytes(8) + struct.pack(">I", counter)

    def seal(self, msg: bytes) -> bytes:
        """``counter | ct || tag``; raises once the counter would reach 2^32 - 1."""
        n = self._next
        if n >= _LAST_COUNTER:
            raise PairingError("counter_exhausted", "close the link and RESUME for new keys")
        self._next = n + 1
        return struct.pack(">I", n) + self._seal.seal(self._nonce(_H2D, n), b"", msg, _TAG)

    def open(self, sealed: bytes) -> bytes | None:
        """The message, or ``None`` (counted) for a short, forged, replayed or reordered one."""
        if len(sealed) < 4 + _TAG:
            self.bad_sealed += 1
            return None
        n = struct.unpack_from(">I", sealed)[0]
        msg = None if n <= self._last else self._open.open(self._nonce(_D2H, n), b"", sealed[4:], _TAG)
        if msg is None:
            self.bad_sealed += 1
            return None
        self._last = n
        return msg


Rand = Callable[[int], bytes]


class Initiator:
    """The host's side of one pairing attempt (5.4.1)."""

    def __init__(self, device_id: str, code: str, account: str, host_id: bytes, *,
                 device_key: bytes | None = None, fingerprint: bytes | None = None,
                 host_key: tuple[bytes, bytes] | None = None, rand: Rand | None = None):
        code = code.replace("-", "")
        if len(code) != 8 or not code.isdigit() or not code.isascii():
            raise PairingError("bad_code", "a setup code is 8 digits (1234-5678)")
        if not is_device_id(account):
            raise PairingError("bad_account", f"account {account!r} breaks the device-id rule")
        if not is_device_id(device_id) or len(host_id) != 16:
            raise PairingError("bad_input", "a device id (section 2.2) and a 16-byte host id")
        self.device_id, self.account, self.host_id = device_id, account, bytes(host_id)
        self._code = code.encode()
        self._device_key, self._fingerprint = device_key, fingerprint
        self._rand = rand
        self._host_key = host_key   # (ea, Ea): the host's static pair (5.4.1), else one per attempt
        self._state = "new"

    def start(self) -> bytes:
        """PAIR_START {sid, Ya, account, host_id, Ea}."""
        if self._state != "new":
            raise PairingError("busy", "start() once per attempt")
        self._sid = self._rand(16) if self._rand else secrets.token_bytes(16)
        self._ya = self._rand(32) if self._rand else crypto.sample_scalar()
        g = crypto.cpace_generator(self._code, channel(self.device_id), self._sid)
        self._ya_pub = crypto.scalar_mult_vfy(self._ya, g)
        # A key on the base point: S = X(ea, D) = X(d, Ea) proves d.
        if self._host_key is not None:
            self._ea, self._ea_pub = self._host_key
        else:
            self._ea = self._rand(32) if self._rand else crypto.sample_scalar()
            self._ea_pub = crypto.scalar_mult_vfy(self._ea, _BASE)
        self._state = "started"
        return _encode(PAIR_START, {1: self._sid, 2: self._ya_pub, 3: self.account, 4: self.host_id,
                                    9: self._ea_pub})

    def reply(self, payload: bytes) -> bytes:
        """PAIR_CONFIRM for a PAIR_REPLY; :class:`PairingError` for an ERROR or a bad reply."""
        if self._state != "started":
            raise PairingError("busy", "reply() after start()")
        self._state = "failed"
        kind, f = decode_control(payload)
        _fail_on_error(kind, f, PAIR_REPLY)
        yb_pub, dpub, tag_d = f[2], f[5], f[6]
        # D first: it costs no scalar multiplication, and a man in the middle
        # who knew the code would still answer with a key of its own.
        if self._device_key is not None and not hmac.compare_digest(dpub, self._device_key):
            raise PairingError("wrong_device", f"{self.device_id} answered with a key not its registered one")
        if self._fingerprint is not None and not hmac.compare_digest(fingerprint(dpub), self._fingerprint):
            raise PairingError("wrong_device", f"{self.device_id}'s key does not match its label")
        try:
            k = crypto.scalar_mult_vfy(self._ya, yb_pub)
            s = crypto.scalar_mult_vfy(self._ea, dpub)
        except ValueError:
            raise PairingError("bad_message", "Yb or D is a low-order point") from None
        ada = _lv(self.account.encode()) + _lv(self.host_id) + _lv(self._ea_pub)
        isk = crypto.isk_ir(self._sid, k, self._ya_pub, ada, yb_pub, _lv(dpub))
        ikm = isk + s

        def expand(info: bytes, n: int) -> bytes:  # HKDF-Expand(PRK = Extract(sid, ISK | S))
            return crypto.hkdf(self._sid, ikm, info, n)

        want_d = crypto.hmac_sha256(expand(b"edge pair confirm device", 32),
                                    self._ya_pub + yb_pub + dpub)[:16]
        if not hmac.compare_digest(want_d, tag_d):
            raise PairingError("wrong_code", f"{self.device_id} did not prove the setup code "
                               "(a wrong code, or someone in the middle)")
        tag_h = crypto.hmac_sha256(expand(b"edge pair confirm host", 32),
                                   yb_pub + self._ya_pub + dpub)[:16]
        self._bond = Bond(self.device_id, self.account, self.host_id,
                          expand(b"edge bond id", 8),
                          expand(b"edge bond key", 32), dpub)
        self._nd = yb_pub[:16]
        self._state = "confirmed"
        return _encode(PAIR_CONFIRM, {6: tag_h})

    def done(self, payload: bytes) -> tuple[Bond, HostSession]:
        """The bond and the first session, from PAIR_DONE (ERROR: :class:`PairingError`)."""
        if self._state != "confirmed":
            raise PairingError("busy", "done() after reply()")
        self._state = "failed"
        kind, f = decode_control(payload)
        _fail_on_error(kind, f, PAIR_DONE)
        bond = self._bond
        if not hmac.compare_digest(f[7], bond.bond_id):
            raise PairingError("bad_message", "PAIR_DONE names another bond")
        self._state = "done"
        return bond, HostSession(*session_keys(bond.bond_key, bond.bond_id, self._sid, self._nd))


class Resumer:
    """Reopens a session from a bond (5.5): one round trip, no code."""

    def __init__(self, bond: Bond, *, rand: Rand | None = None):
        self.bond = bond
        self._rand = rand
        self._nh: bytes | None = None

    def start(self) -> bytes:
        """RESUME {bond_id, Nh}."""
        self._nh = self._rand(16) if self._rand else secrets.token_bytes(16)
        return _encode(RESUME, {7: self.bond.bond_id, 8: self._nh})

    def reply(self, payload: bytes) -> HostSession:
        """The session, from RESUME_OK; ERROR (``unknown_bond``, ...) or a bad tag: :class:`PairingError`."""
        if self._nh is None:
            raise PairingError("busy", "reply() after start()")
        nh, self._nh = self._nh, None
        kind, f = decode_control(payload)
        _fail_on_error(kind, f, RESUME_OK)
        b = self.bond
        if not hmac.compare_digest(resume_tag(b.bond_key, b.bond_id, nh, f[8]), f[6]):
            raise PairingError("bad_tag", f"{b.device_id} did not prove the bond")
        return HostSession(*session_keys(b.bond_key, b.bond_id, nh, f[8]))
