"""A device's side of the OTA exchange (docs/protocol.md 7.3-7.6) built from
the host's message types alone, for the host's tests: it asks, takes an
offer, receives into 4096-byte blocks with two blocks of credit, checks the
digest and reports its states. It trusts the manifest it is offered (the
device's checks have their own tests); what it does is what a host sees."""

from __future__ import annotations

import hashlib
from typing import Any

from edge_agent.messages import (OtaChunk, OtaOffer, OtaQuery, OtaState, OtaWindow, decode_message,
                                 encode_message)

BLOCK = 4096
CREDIT = 2 * BLOCK


class OtaDevice:
    def __init__(self, device_id: str, *, component: str = "agent", version: str = "1.0.0", counter: int = 0,
                 keys_sequence: int = 0, root_epoch: int = 0):
        self.device_id = device_id
        self.component = component
        self.version = version
        self.counter = counter
        self.keys_sequence = keys_sequence
        self.root_epoch = root_epoch
        self.out: list[bytes] = []
        self.offers: list[OtaOffer] = []
        self.windows: list[OtaWindow] = []
        self.states: list[str] = []
        self.manifest: Any = None       # edge_ota.manifest.Manifest of the download
        self.held = bytearray()
        self.ignored = 0                # chunks not at the expected offset
        self.rolled_back: set[int] = set()

    # -- what it sends

    def durable(self) -> int:
        """Bytes held durably: whole blocks, or the whole image."""
        if self.manifest is not None and len(self.held) == self.manifest.size:
            return len(self.held)
        return len(self.held) // BLOCK * BLOCK

    def disconnect(self) -> None:
        """The link (or power) goes: what was not yet durable is lost."""
        del self.held[self.durable():]

    def _send(self, msg: Any) -> None:
        if isinstance(msg, OtaWindow):
            self.windows.append(msg)
        if isinstance(msg, OtaState):
            self.states.append(msg.state)
        self.out.append(encode_message(msg))

    def query(self, why: str = "boot") -> None:
        resume = self.manifest.sequence if self.manifest is not None else None
        self._send(OtaQuery(self.device_id, self.component, self.version, self.counter, self.keys_sequence,
                            self.root_epoch, resume_sequence=resume,
                            resume_held=len(self.held) if resume is not None else None,
                            why="resume" if resume is not None else why))

    def state(self, state: str, **fields: Any) -> None:
        seq = fields.pop("sequence", None)
        if seq is None:
            seq = self.manifest.sequence if self.manifest is not None else self.counter
        self._send(OtaState(self.device_id, self.component, seq, state, **fields))

    def _window(self, rewind: bool = False) -> None:
        size = self.manifest.size
        ack = self.durable()
        self._send(OtaWindow(self.device_id, self.manifest.sequence, ack, min(size, ack + CREDIT), rewind))

    # -- what it receives

    def receive(self, payload: bytes) -> None:
        msg = decode_message(payload)
        if isinstance(msg, OtaOffer):
            self._offer(msg)
        elif isinstance(msg, OtaChunk):
            self._chunk(msg)

    def _offer(self, offer: OtaOffer) -> None:
        from edge_ota.cose import decode_sign1
        from edge_ota.manifest import KeyList, Manifest, RootRotation

        self.offers.append(offer)
        if offer.rotation is not None:
            self.root_epoch = RootRotation.from_cbor(decode_sign1(offer.rotation).payload).epoch
            return
        if offer.key_list is not None:
            self.keys_sequence = KeyList.from_cbor(decode_sign1(offer.key_list).payload).sequence
        if offer.manifest is None:
            return
        m = Manifest.from_cbor(decode_sign1(offer.manifest).payload)
        if m.sequence == self.counter:
            self.state("current", sequence=m.sequence)
            return
        if m.sequence in self.rolled_back:
            self.state("refused", sequence=m.sequence, check="rolled-back")
            return
        resume = self.manifest is not None and self.manifest.digest == m.digest and self.held
        if not resume:
            self.held = bytearray()
        self.manifest = m
        self.state("downloading", held=len(self.held), size=m.size)
        self._window(rewind=bool(resume))

    def _chunk(self, chunk: OtaChunk) -> None:
        m = self.manifest
        if m is None or chunk.sequence != m.sequence or chunk.offset != len(self.held):
            self.ignored += 1
            return
        before = len(self.held) // BLOCK
        self.held += chunk.data
        if len(self.held) == m.size:
            self._window()
            if hashlib.sha256(self.held).digest() != m.digest:
                self.state("refused", check="digest-mismatch")
                self.held = bytearray()
                return
            for state in ("verified", "installed", "applying"):
                self.state(state, version=m.version)
        elif len(self.held) // BLOCK > before:     # a block is written: one window per block
            self._window()

    def boot_new(self, confirm: bool = True) -> None:
        """The reset into the new image: trial, then confirmed (or rolled-back by the old image)."""
        m = self.manifest
        self.state("trial", version=m.version)
        if confirm:
            self.state("confirmed", version=m.version)
            self.counter, self.version = m.sequence, m.version
        else:
            self.state("rolled-back", check="rolled-back", reason="no health check in 3 boots")
            self.rolled_back.add(m.sequence)
        self.manifest, self.held = None, bytearray()
