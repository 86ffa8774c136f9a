"""A stand-in for ``edge_agent.pairing`` (its API, reasons and message shapes) without cryptography.

Used by the host BLE link's tests (installed in ``sys.modules`` for their
duration) and by the scripted peripheral of ``tests/host/edge_air.py``. Tags
are digests of the code and the attempt, so a wrong code is detected as the
real exchange would detect it; sealing is a counter and a direction byte.
"""

from __future__ import annotations

import hashlib
import os

import cbor2

from edge_agent.pairing import Bond, PairingError  # the real ones: only the exchange is stood in


def tag(code: str, sid: bytes, side: str) -> bytes:
    return hashlib.sha256(f"{side}:{code}:".encode() + sid).digest()[:16]


def bond(code: str, sid: bytes) -> tuple[bytes, bytes]:
    digest = hashlib.sha256(b"bond:" + code.encode() + sid).digest()
    return digest[:8], digest


def resume_tag(bond_key: bytes) -> bytes:
    return hashlib.sha256(b"resume" + bond_key).digest()[:16]


class _Session:
    out_dir, in_dir = 1, 2

    def __init__(self, key: bytes):
        self.key = key
        self.sent = 0
        self.last = -1
        self.bad_sealed = 0

    def seal(self, msg: bytes) -> bytes:
        sealed = self.sent.to_bytes(4, "big") + bytes([self.out_dir]) + self.key[:4] + msg
        self.sent += 1
        return sealed

    def open(self, sealed: bytes) -> bytes | None:
        if len(sealed) < 9 or sealed[4] != self.in_dir or sealed[5:9] != self.key[:4]:
            self.bad_sealed += 1
            return None
        counter = int.from_bytes(sealed[:4], "big")
        if counter <= self.last:
            self.bad_sealed += 1
            return None
        self.last = counter
        return sealed[9:]


class HostSession(_Session):
    out_dir, in_dir = 1, 2


class DeviceSession(_Session):
    out_dir, in_dir = 2, 1


def _decode(payload: bytes, want: int) -> dict:
    msg = cbor2.loads(payload)
    if msg.get(0) == 31:
        raise PairingError(msg.get(1, "error"), msg.get(3, ""), msg.get(2))
    if msg.get(0) != want:
        raise PairingError("bad_message", f"expected type {want}")
    return msg


class Initiator:
    def __init__(self, device_id, code, account, host_id, *, device_key=None, fingerprint=None, host_key=None):
        self.device_id, self.code, self.account, self.host_id = device_id, code, account, host_id
        self.device_key, self.fingerprint = device_key, fingerprint
        self.sid = os.urandom(16)
        self.d = b""

    def start(self) -> bytes:
        return cbor2.dumps({0: 16, 1: self.sid, 2: b"X" * 32, 3: self.account, 4: self.host_id})

    def reply(self, payload: bytes) -> bytes:
        msg = _decode(payload, 17)
        if msg[6] != tag(self.code, self.sid, "device"):
            raise PairingError("wrong_code")
        if self.device_key is not None and msg[5] != self.device_key:
            raise PairingError("wrong_device")
        if self.fingerprint is not None and hashlib.sha256(msg[5]).digest()[:8] != self.fingerprint:
            raise PairingError("wrong_device")
        self.d = msg[5]
        return cbor2.dumps({0: 18, 6: tag(self.code, self.sid, "host")})

    def done(self, payload: bytes):
        msg = _decode(payload, 19)
        bond_id, bond_key = bond(self.code, self.sid)
        assert msg[7] == bond_id
        return (Bond(self.device_id, self.account, self.host_id, bond_id, bond_key, self.d),
                HostSession(bond_key))


class Resumer:
    def __init__(self, b: Bond):
        self.bond = b

    def start(self) -> bytes:
        return cbor2.dumps({0: 20, 7: self.bond.bond_id, 8: os.urandom(16)})

    def reply(self, payload: bytes) -> HostSession:
        msg = _decode(payload, 21)
        if msg[6] != resume_tag(self.bond.bond_key):
            raise PairingError("bad_tag")
        return HostSession(self.bond.bond_key)


def unpair_payload() -> bytes:
    return cbor2.dumps({0: 22})


def decode_control(payload: bytes) -> dict:
    return cbor2.loads(payload)


def new_host_id() -> bytes:
    return os.urandom(16)
