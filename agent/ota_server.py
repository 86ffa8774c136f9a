"""The host's side of an OTA transfer on one link (docs/protocol.md 7.3-7.6, 7.9).

One :class:`OtaServer` per link session (:class:`~edge_agent.telemetry.ingest.LinkSession`),
sans-I/O: OTA messages of the link's bound device come in through
:meth:`OtaServer.receive`; OFFERs go out through the session's ``send``, image
bytes through a link-supplied ``sink`` (OTA_CHUNK messages on serial, bulk
writes on BLE); :meth:`OtaServer.poll` is called by the link's loop for the
timers. Reads use the ingest core's registry connection under its lock;
writes go to the one registry writer.

Rules it keeps:

- **Which release.** On OTA_QUERY: among the active releases of the device's
  registered board and the queried component with a sequence above the
  device's counter, the newest the device is eligible for
  (:func:`edge_ota.rollout.eligible`, deterministic per device and release)
  and has not rolled back from, failed or refused, in the registry or on
  this link (a device rebooted from a failed trial says `rolled-back`, then
  asks at once: the answer must not wait for that state's commit). A device that has started
  a release keeps it even if its fraction is lowered (no flapping). A
  halted or paused release is offered to nobody.
- **Freshness (7.9).** With nothing to install, the manifest of the
  sequence the device runs is offered (its latest signature), so a device
  learns of a re-signed manifest and notices a frozen server; only if it
  names the version the device says it runs (a release that shares the
  sequence of a device's flashed agent, 0, is another image).
- **Keys first.** The key list goes along when the device's is older; a
  root rotation to the device's epoch + 1, when the key folder holds one,
  goes alone first (the device asks again at once).
- **Only transfers it offered.** An OTA_WINDOW for a sequence this server did
  not offer on this link, or out of the image's bounds, is ignored and
  counted; nothing a device sends stops the link.
- **Re-offer (7.5).** With no OTA_WINDOW or OTA_STATE 30 s after the last
  thing sent for an open transfer, the OFFER goes again, at most
  :data:`MAX_REOFFERS` times in a row, with the key list the first one
  carried (a device that could not take the first, short of heap, has
  not written it); then the transfer is closed.
- **Recorded.** Every OTA_STATE goes to the registry's state and history of
  the device and release, and the release's halt rule is weighed again
  (:meth:`edge_agent.store.Store.note_ota_state`); the host's own ``offered``
  is recorded when it offers an install.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edge_agent.errors import EdgeError
from edge_agent.messages import MessageError, OtaChunk, OtaOffer, OtaQuery, OtaState, OtaWindow, encode_message
from edge_ota.keys import ROTATION
from edge_agent.store import OTA_IN_PROGRESS, Release, Store

if TYPE_CHECKING:
    from edge_agent.telemetry.ingest import LinkSession
    from edge_agent.update_store import UpdateStore

log = logging.getLogger("edge.ota")

REOFFER_AFTER = 30.0          # seconds without WINDOW/STATE before the OFFER goes again (7.5)
MAX_REOFFERS = 3              # unanswered re-offers before the transfer is closed
PROGRESS_EVERY = 0.05         # share of the image between two progress notes in the registry
CLOSING_STATES = frozenset(("refused", "current", "stalled", "verified", "installed", "applying", "trial",
                            "confirmed", "rolled-back", "failed"))
NOT_AGAIN = ("rolled-back", "failed", "refused")   # a device's state that keeps a release from it
KEY_LIST = "ota-keys.cose"

Sink = Callable[[int, int, memoryview], None]        # (sequence, offset, data)
Listener = Callable[[str, dict], None]                # (event, fields)


def choose(store: Store, device_id: str, board: str, component: str, counter: int, version: str,
           skip: frozenset[int] = frozenset()) -> tuple[Release | None, Release | None]:
    """(the release to install, else None; the release of the running sequence, for freshness: only
    one that names the ``version`` the device runs, so never another image that shares its sequence,
    such as a sequence-0 release beside a device's flashed agent).
    ``skip``: sequences the device said NOT_AGAIN of that the registry may not hold yet."""
    from edge_ota.rollout import eligible

    for release in store.releases(board, component, states=("active",)):
        if release.sequence <= counter:
            break
        if release.sequence in skip:
            continue
        mine = store.ota_device(device_id, release.id)
        if mine is not None and mine["state"] in NOT_AGAIN:
            continue
        if (mine is not None and mine["state"] in OTA_IN_PROGRESS) or \
                eligible(device_id, release.key, release.fraction):
            return release, None
    running = store.release_by_sequence(board, component, counter)
    return None, running if running is not None and running.version == version else None


@dataclass
class Transfer:
    """One image this server offered on its link, by the manifest's sequence."""

    release: Release
    sender: Any = None            # edge_ota.transfer.Sender, made at the first window
    last_sent: float = 0.0        # host clock of the last OFFER or chunk
    heard: float = 0.0            # host clock of the last WINDOW or STATE
    reoffers: int = 0
    noted: int = -1               # bytes acknowledged when progress was last recorded
    key_list: bytes | None = None  # sent with the offer, and with each re-offer


class OtaServer:
    """OTA for the device bound to ``session`` (see the module docstring).

    ``sink(sequence, offset, data)`` carries image bytes (default: OTA_CHUNK
    messages through the session's ``send``), ``chunk_size`` bytes at most
    (default: as many as an OTA_CHUNK of this device holds, 960 for most ids).
    ``listener(event, fields)`` hears offered, progress, state, halted and
    closed, for a progress bar or an event log.
    """

    def __init__(self, session: "LinkSession", *, chunk_size: int | None = None, sink: Sink | None = None,
                 updates: "UpdateStore | None" = None, key_dir: Path | None = None,
                 listener: Listener | None = None, reoffer_after: float = REOFFER_AFTER):
        self.session = session
        self.chunk_size = chunk_size      # None: what fits an OTA_CHUNK for this device and transfer
        self.sink: Sink = sink or self._chunk_message
        self.updates = updates
        self.key_dir = key_dir
        self.listener = listener
        self.reoffer_after = reoffer_after
        self.transfers: dict[int, Transfer] = {}
        # A release this link serves whatever its rollout (`edge ota push`): offered to a query
        # of its component from a device below its sequence, so a resume finds it again.
        self.pinned: Release | None = None
        self._lock = threading.RLock()
        self._images: dict[int, bytes] = {}     # release id -> image, for the session's life
        self._whole: dict[int, int] = {}        # sequence -> size, of the transfers closed `verified`
        self._not_again: set[tuple[str, int]] = set()   # (component, sequence) the device said NOT_AGAIN of

    # -- plumbing

    @property
    def device_id(self) -> str:
        return self.session.bound or ""

    def _now(self) -> float:
        return self.session.core.clock()

    def _read(self, fn: Callable[[Store], Any]) -> Any:
        with self.session.core.lock:
            return fn(self.session.core.registry)

    def _write(self, fn: Callable[[Store], Any], what: str,
               done: Callable[[Any, BaseException | None], None] | None = None) -> None:
        from edge_agent.telemetry.writer import Job

        self.session.core.writer.submit(Job(fn, done, what=what))

    def _emit(self, event: str, **fields: Any) -> None:
        if self.listener is not None:
            try:
                self.listener(event, {"device": self.device_id, **fields})
            except Exception:       # a progress bar's failure is not the transfer's
                log.exception("%s: OTA listener failed on %s", self.session.source, event)

    def _send(self, msg: Any) -> None:
        self.session._send_payload(encode_message(msg), type(msg).__name__)

    def _chunk_message(self, sequence: int, offset: int, data: memoryview) -> None:
        self._send(OtaChunk(self.device_id, sequence, offset, bytes(data)))

    def _key_folder(self) -> Path:
        if self.key_dir is not None:
            return self.key_dir
        from edge_ota.keys import key_dir

        return key_dir()

    def _updates(self) -> "UpdateStore":
        if self.updates is None:
            from edge_agent.update_store import UpdateStore

            self.updates = UpdateStore()
        return self.updates

    # -- messages

    def receive(self, msg: OtaQuery | OtaWindow | OtaState, payload: bytes) -> None:
        """One OTA message of the bound device (the session checked the id)."""
        with self._lock:
            if isinstance(msg, OtaQuery):
                self._query(msg)
            elif isinstance(msg, OtaWindow):
                self._window(msg, payload)
            else:
                self._state(msg)

    def _query(self, q: OtaQuery) -> None:
        board = self._read(lambda s: s.registered_board(q.device_id))
        install = fresh = None
        if board is None:
            log.info("%s: OTA query of %s, whose board the registry does not hold: nothing offered",
                     self.session.source, q.device_id)
        else:
            skip = frozenset(seq for comp, seq in self._not_again if comp == q.component)
            install, fresh = self._read(
                lambda s: choose(s, q.device_id, board, q.component, q.counter, q.version, skip))
        pinned = self.pinned
        if (pinned is not None and pinned.component == q.component and pinned.sequence > q.counter
                and (pinned.component, pinned.sequence) not in self._not_again):
            install = pinned        # a push's release, unless the device said not again of it
        rotation = self._document(ROTATION.format(epoch=q.root_epoch + 1))
        if rotation is not None:        # alone first: the device asks again with its new epoch
            self._send(OtaOffer(q.device_id, q.component, rotation=rotation))
            self._emit("offered", component=q.component, rotation=q.root_epoch + 1)
            return
        key_list = self.key_list_for(q.keys_sequence)
        self.offer(install or fresh, q.component, key_list=key_list, install=install is not None)

    def offer(self, release: Release | None, component: str, *, key_list: bytes | None = None,
              install: bool = True) -> None:
        """Send an OTA_OFFER for ``release`` (None: no manifest); with ``install``, open its transfer
        and record ``offered``. ``edge ota push`` calls this unsolicited."""
        with self._lock:
            manifest = release.manifest if release is not None else None
            try:
                payload = encode_message(OtaOffer(self.device_id, component, manifest=manifest, key_list=key_list))
            except MessageError:
                # Too large together: the key list alone; the device asks again once it holds it.
                payload = encode_message(OtaOffer(self.device_id, component, key_list=key_list))
                release, install = None, False
            self.session._send_payload(payload, "OtaOffer")
            if release is None or not install:
                self._emit("offered", component=component, install=False,
                           sequence=None if release is None else release.sequence)
                return
            now = self._now()
            t = self.transfers.get(release.sequence)
            if t is None or t.release.id != release.id:
                t = self.transfers[release.sequence] = Transfer(release, heard=now)
            t.sender = None         # an offer starts the windows again (a device may start again from 0)
            t.last_sent = now
            t.key_list = key_list
            device, source, rid = self.device_id, self.session.source, release.id
            self._write(lambda s: s.note_ota_state(device, component, release.sequence, "offered",
                                                   release_id=rid, size=release.size, source=source, at=now),
                        f"OTA offer to {device}")
            self._emit("offered", component=component, install=True, release=rid, sequence=release.sequence,
                       version=release.version, size=release.size, reoffer=t.reoffers)

    def _document(self, name: str) -> bytes | None:
        path = self._key_folder() / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.error("cannot read %s (%s): not offered", path, e)
            return None

    def key_list_for(self, device_sequence: int) -> bytes | None:
        """The host's key list if newer than the device's, else None."""
        from edge_ota.cose import OtaError, decode_sign1
        from edge_ota.manifest import KeyList

        data = self._document(KEY_LIST)
        if data is None:
            return None
        try:
            sequence = KeyList.from_cbor(decode_sign1(data).payload).sequence
        except OtaError as e:
            log.error("the key list %s is damaged (%s): not offered; fix: run `edge ota keygen`",
                      self._key_folder() / KEY_LIST, e.message)
            return None
        return data if sequence > device_sequence else None

    def _window(self, w: OtaWindow, payload: bytes) -> None:
        from edge_ota.transfer import Sender, TransferError, serial_chunk_size

        t = self.transfers.get(w.sequence)
        if t is None and w.ack == w.limit == self._whole.get(w.sequence):
            return      # the device's last window, which may come after its `verified` (7.5)
        if t is None:
            self.session.bad("ota_no_transfer", payload)
            log.warning("%s: OTA_WINDOW for sequence %d, which this host did not offer on this link: ignored",
                        self.session.source, w.sequence)
            return
        t.heard = now = self._now()
        t.reoffers = 0
        if t.sender is None:
            image = self._image(t.release)
            if image is None:
                self._close(w.sequence, "image unavailable")
                return
            chunk = self.chunk_size or serial_chunk_size(self.device_id, w.sequence, t.release.size)
            t.sender = Sender(image, w.sequence, chunk)
        try:
            t.sender.on_window(w.ack, w.limit, w.rewind)
        except TransferError as e:
            self.session.bad("ota_bad_window", payload)
            log.warning("%s: %s: ignored", self.session.source, e.message)
            return
        for offset, data in t.sender.next_chunks():
            self.sink(w.sequence, offset, data)
            t.last_sent = now
        self._progress(t, w.ack)

    def _image(self, release: Release) -> bytes | None:
        image = self._images.get(release.id)
        if image is None:
            try:
                image = self._images[release.id] = self._updates().load(release)
            except EdgeError as e:
                log.error("%s: cannot serve release %d: %s; fix: %s", self.session.source, release.id,
                          e.message, e.hint)
                self._emit("error", release=release.id, error=e.message, fix=e.hint)
                return None
        return image

    def _progress(self, t: Transfer, ack: int) -> None:
        size = t.release.size
        self._emit("progress", release=t.release.id, sequence=t.release.sequence, held=ack, size=size)
        if t.noted >= 0 and ack < size and ack - t.noted < size * PROGRESS_EVERY:
            return
        t.noted = ack
        device, rid, source, now = self.device_id, t.release.id, self.session.source, self._now()
        self._write(lambda s: s.note_ota_progress(device, rid, ack, size, source, now),
                    f"OTA progress of {device}")

    def _state(self, st: OtaState) -> None:
        if st.state in NOT_AGAIN and st.sequence:
            self._not_again.add((st.component, st.sequence))
        # `busy` (no heap for the checks just now, 7.2) names no sequence: the
        # device is there and asks again, so every offer waiting is heard.
        for seq in (self.transfers if st.state == "busy" else (st.sequence,)):
            if seq in self.transfers:
                self.transfers[seq].heard = self._now()
                self.transfers[seq].reoffers = 0
        device, source, now = st.device_id, self.session.source, self._now()

        def record(s: Store) -> tuple[Release | None, Release | None]:
            board = s.registered_board(device)
            release = None if board is None else s.release_by_sequence(board, st.component, st.sequence)
            halted = s.note_ota_state(device, st.component, st.sequence, st.state,
                                      release_id=None if release is None else release.id, held=st.held,
                                      size=st.size, check=st.check, reason=st.reason, source=source, at=now)
            return release, halted

        def done(result: tuple[Release | None, Release | None] | None, error: BaseException | None) -> None:
            if error is not None or result is None:
                log.error("%s: OTA state %s of %s not recorded: %s", source, st.state, device, error)
                return
            release, halted = result
            if halted is not None:
                log.warning("release %d halted: %s", halted.id, halted.halt_reason)
                self._emit("halted", release=halted.id, reason=halted.halt_reason)

        self._write(record, f"OTA state of {device}", done)
        self._emit("state", component=st.component, sequence=st.sequence, state=st.state, held=st.held,
                   size=st.size, check=st.check, reason=st.reason, version=st.version)
        if st.state in CLOSING_STATES:
            self._close(st.sequence, st.state)

    def _close(self, sequence: int, why: str) -> None:
        t = self.transfers.pop(sequence, None)
        if t is not None:
            if why == "verified":
                self._whole[sequence] = t.release.size
            self._emit("closed", release=t.release.id, sequence=sequence, why=why)

    # -- time

    def poll(self, now: float | None = None) -> float:
        """Re-offer the transfers that went unanswered (7.5); seconds until the next one is due."""
        now = self._now() if now is None else now
        wait = self.reoffer_after
        with self._lock:
            for sequence, t in list(self.transfers.items()):
                since = max(t.last_sent, t.heard)
                due = since + self.reoffer_after - now
                if due > 0:
                    wait = min(wait, due)
                    continue
                if t.reoffers >= MAX_REOFFERS:
                    log.warning("%s: %s answered none of %d offers of sequence %d: transfer closed",
                                self.session.source, self.device_id, MAX_REOFFERS + 1, sequence)
                    self._close(sequence, "unanswered")
                    continue
                t.reoffers += 1
                self.offer(t.release, t.release.component, key_list=t.key_list)
                wait = min(wait, self.reoffer_after)
        return max(0.0, wait)
