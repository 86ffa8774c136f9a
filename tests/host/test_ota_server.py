"""The OTA server on one link (agent/ota_server.py), driven in process by a
device built from the protocol's messages (tests/host/ota_device.py): which
release a device is offered, the transfer in windows, what the registry
records, the staged rollout and its halt, re-offers, and bad messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_agent.messages import OtaOffer, OtaState, OtaWindow, decode_message, encode_message
from edge_agent.ota_server import MAX_REOFFERS, REOFFER_AFTER, OtaServer
from edge_agent.store import Store
from edge_agent.telemetry.ingest import IngestCore
from edge_agent.telemetry.writer import RegistryWriter
from edge_agent.update_store import UpdateStore, publish
from edge_ota.cose import Ed25519Signer
from edge_ota.manifest import KeyList, Manifest, RootRotation
from edge_ota.rollout import eligible
from edge_ota.transfer import SERIAL_CHUNK
from tests.host.ota_device import BLOCK, OtaDevice

DEVICE = "esp32-0a0b0c0d0e0f"
IMAGE = bytes(range(256)) * 160 + b"tail"          # 40964 bytes: ten blocks and a bit
NOW = 1_800_000_000.0


class Fleet:
    """A registry with releases signed by a test key, and links to devices."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.now = NOW
        self.store = Store(folder / "registry.db")
        self.writer = RegistryWriter(store=self.store, inline=True)
        self.core = IngestCore(self.writer, self.store, clock=lambda: self.now)
        self.updates = UpdateStore(folder / "updates")
        self.keys = folder / "keys"
        self.keys.mkdir()
        self.root = Ed25519Signer.from_seed(bytes(range(32)))
        self.signer = Ed25519Signer.from_seed(bytes(range(32, 64)))
        self.key_list = KeyList.of(1, (self.signer.public_key, int(time.time()) + 10**7))
        (self.keys / "ota-keys.cose").write_bytes(self.key_list.sign(self.root))
        self.events: list[tuple[str, dict]] = []

    def device(self, device_id: str = DEVICE, board: str = "esp32", **kw) -> OtaDevice:
        self.store.device_number(device_id)
        self.store._db.execute("UPDATE devices SET board = ? WHERE device_id = ?", (board, device_id))
        return OtaDevice(device_id, keys_sequence=1, **kw)

    def release(self, image: bytes = IMAGE, *, sequence: int = 7, board: str = "esp32", fraction: float = 1.0,
                halt_at: float = 0.2, min_devices: int = 3, version: str = "1.3.0", expires_in: int = 86400):
        m = Manifest.for_image(image, board=board, component="agent", version=version, sequence=sequence,
                               expires=int(time.time()) + expires_in)
        path = self.folder / f"{board}-{sequence}.bin"
        path.write_bytes(image)
        release, _ = publish(self.store, self.updates, m.sign(self.signer), path, self.key_list, {},
                             fraction=fraction, halt_at=halt_at, min_devices=min_devices)
        return release

    def link(self, dev: OtaDevice, **kw) -> "Link":
        return Link(self, dev, **kw)


class Link:
    """One link session between the host and ``dev``, messages carried by :meth:`pump`."""

    def __init__(self, fleet: Fleet, dev: OtaDevice, *, lose=None):
        self.fleet, self.dev = fleet, dev
        self.to_device: list[bytes] = []
        self.session = fleet.core.link(f"test:{dev.device_id}", self.to_device.append)
        self.session.bound = dev.device_id
        self.server = OtaServer(self.session, updates=fleet.updates, key_dir=fleet.keys,
                                listener=lambda e, f: fleet.events.append((e, f)))
        self.session.ota = self.server
        self.lose = lose            # lose(payload) -> True: the link drops that message to the device

    def pump(self) -> None:
        while self.to_device or self.dev.out:
            out, self.to_device[:] = list(self.to_device), []
            for p in out:
                if self.lose is None or not self.lose(p):
                    self.dev.receive(p)
            back, self.dev.out[:] = list(self.dev.out), []
            for p in back:
                self.session.receive_message(p)

    def up(self) -> None:
        """Deliver what the device sent, and nothing back."""
        back, self.dev.out[:] = list(self.dev.out), []
        for p in back:
            self.session.receive_message(p)

    def sent(self, kind: type) -> list:
        return [m for m in map(decode_message, self.to_device) if isinstance(m, kind)]


@pytest.fixture
def fleet(tmp_path):
    f = Fleet(tmp_path)
    yield f
    f.store.close()


def states(fleet: Fleet, device_id: str = DEVICE) -> list[str]:
    return [h["state"] for h in fleet.store.ota_history(device_id=device_id)]


def test_an_eligible_device_is_offered_the_release_downloads_it_whole_and_its_states_are_recorded(fleet):
    release = fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.pump()
    assert bytes(dev.held) == IMAGE and dev.states[-1] == "applying"
    assert dev.ignored == 0, "every chunk came at the offset the device expected"
    assert len(dev.windows) == 1 + -(-len(IMAGE) // BLOCK), "the first, then one per 4 KB block, none per chunk"
    dev.boot_new()
    link.pump()
    assert states(fleet) == ["offered", "downloading", "verified", "installed", "applying", "trial", "confirmed"]
    mine = fleet.store.ota_device(DEVICE, release.id)
    assert mine["state"] == "confirmed" and mine["version"] == "1.3.0"
    assert fleet.store.ota_counts(release.id) == {"confirmed": 1}
    assert link.session.stats.bad == {}


def test_progress_is_kept_as_a_percent_while_downloading(fleet):
    release = fleet.release()
    dev = fleet.device()
    link = fleet.link(dev, lose=lambda p: decode_message(p).__class__.__name__ == "OtaChunk"
                      and decode_message(p).offset >= 5 * BLOCK)
    dev.query()
    link.pump()
    mine = fleet.store.ota_device(DEVICE, release.id)
    assert mine["state"] == "downloading" and mine["held"] == 5 * BLOCK
    assert mine["percent"] == 5 * BLOCK * 100 // len(IMAGE)
    progress = [f for e, f in fleet.events if e == "progress"]
    assert progress[-1]["held"] == 5 * BLOCK and progress[-1]["size"] == len(IMAGE)


def test_the_key_list_goes_along_only_when_the_devices_is_older_and_again_with_each_re_offer(fleet):
    fleet.release()
    old, new = fleet.device(), fleet.device("esp32-0000000000a1")
    old.keys_sequence = 0
    for dev, has in ((old, True), (new, False)):
        link = fleet.link(dev)
        dev.query()
        link.up()
        offer = link.sent(OtaOffer)[0]
        assert (offer.key_list is not None) is has and offer.manifest is not None
        assert offer.key_list is None or offer.key_list == (fleet.keys / "ota-keys.cose").read_bytes()
        # A device short of heap for the offer's checks wrote nothing of it: a
        # re-offer without the list would be refused `unknown-key`.
        fleet.now += REOFFER_AFTER
        link.server.poll()
        again = link.sent(OtaOffer)[1]
        assert again.manifest == offer.manifest and again.key_list == offer.key_list


def test_a_root_rotation_to_the_next_epoch_goes_alone_first(fleet):
    fleet.release()
    nxt = Ed25519Signer.from_seed(bytes(range(64, 96)))
    rotation = RootRotation(1, nxt.public_key).sign(fleet.root)
    (fleet.keys / "ota-root-rotation-1.cose").write_bytes(rotation)
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.up()
    first = link.sent(OtaOffer)[0]
    assert first.rotation == rotation and first.manifest is None and first.key_list is None
    link.pump()
    assert dev.root_epoch == 1
    link.to_device.clear()
    dev.query()
    link.up()
    again = link.sent(OtaOffer)[0]
    assert again.rotation is None and again.manifest is not None, "no rotation to epoch 2 is held"


def test_a_current_device_is_offered_its_own_manifest_for_freshness_and_no_transfer_opens(fleet):
    release = fleet.release()
    dev = fleet.device(counter=7, version="1.3.0")
    link = fleet.link(dev)
    dev.query()
    link.up()
    offer = link.sent(OtaOffer)[0]
    assert offer.manifest == release.manifest, "the manifest of the sequence it runs, as last signed"
    link.pump()
    assert dev.states == ["current"] and link.server.transfers == {}
    assert fleet.store.ota_device(DEVICE, release.id)["state"] == "current"
    assert "offered" not in states(fleet)
    newer = fleet.device("esp32-0000000000b2", counter=9)
    link = fleet.link(newer)
    newer.query()
    link.up()
    assert link.sent(OtaOffer)[0].manifest is None, "nothing older than what it runs"


def test_no_manifest_is_offered_for_freshness_that_names_another_version_than_the_device_runs(fleet):
    """A device with counter 0 runs the agent it was flashed with, which no manifest describes: a
    release of sequence 0 in the registry (a downgrade QA signed to see it refused) is another image.
    Offered for freshness, the device refused it (check `rollback`) and `edge ota push`, waiting on
    the same link, took that refusal for its own release's."""
    fleet.release(sequence=0, version="0.0.1")
    dev = fleet.device(counter=0, version="0.1.0")
    link = fleet.link(dev)
    dev.query()
    link.up()
    assert link.sent(OtaOffer)[0].manifest is None, "only the manifest of the image the device runs"
    link.pump()
    assert dev.states == []


def offered_sequence(link: Link) -> int | None:
    from edge_ota.cose import decode_sign1

    manifest = link.sent(OtaOffer)[-1].manifest
    return None if manifest is None else Manifest.from_cbor(decode_sign1(manifest).payload).sequence


def test_the_newest_release_is_chosen_and_one_the_device_rolled_back_from_is_not_offered_again(fleet):
    r7 = fleet.release(sequence=7, fraction=0.0)
    r8 = fleet.release(IMAGE[::-1], sequence=8, version="1.4.0")
    assert fleet.store.release(r7.id).state == "done", "8 goes to every device: 7 is superseded"
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.pump()
    assert dev.manifest.sequence == 8
    dev.boot_new(confirm=False)
    link.pump()
    assert fleet.store.ota_device(DEVICE, r8.id)["state"] == "rolled-back"
    dev.query()
    link.up()
    assert offered_sequence(link) is None, "the release it rolled back from is skipped"
    fleet.release(IMAGE + b"fixed", sequence=9, version="1.4.1")
    dev.query()
    link.up()
    assert offered_sequence(link) == 9


def test_a_pushed_release_the_device_rolled_back_from_is_not_offered_again_by_the_push(fleet):
    # `edge ota push` pins its release; after the device rolled back from it, its
    # next query must not get that release again (the push offered it anyway, and
    # `edge ota status` showed the device `offered` for what it had just left).
    r7 = fleet.release(sequence=7)
    dev = fleet.device()
    link = fleet.link(dev)
    link.server.pinned = r7
    dev.query()
    link.pump()
    assert dev.manifest.sequence == 7
    dev.boot_new(confirm=False)
    link.pump()
    dev.query()
    link.up()
    assert offered_sequence(link) is None, "the pinned release it rolled back from is not offered again"


def test_a_query_right_after_rolled_back_is_not_offered_that_release_even_before_the_state_is_committed(fleet):
    # A device rebooted from a failed trial says `rolled-back` and asks at once:
    # the gateway's writer may not have committed that state when the query comes.
    fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.pump()
    deferred: list = []
    fleet.writer.submit = deferred.append           # nothing reaches the registry from here on
    dev.boot_new(confirm=False)
    dev.query()
    link.up()
    assert "rolled-back" in [f["state"] for e, f in fleet.events if e == "state"] and deferred
    assert offered_sequence(link) is None, "the release it rolled back from is skipped"


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_a_fraction_offers_exactly_the_devices_the_rollout_picks_and_growing_it_only_adds(fleet, fraction):
    release = fleet.release(fraction=fraction)
    ids = [f"esp32-{i:012x}" for i in range(60)]

    def offered() -> set[str]:
        got = set()
        for device_id in ids:
            dev = fleet.device(device_id)
            link = fleet.link(dev)
            dev.query()
            link.up()
            if link.sent(OtaOffer)[0].manifest is not None:
                got.add(device_id)
        return got

    first = offered()
    assert first == {d for d in ids if eligible(d, release.key, fraction)}
    assert offered() == first, "the same devices every time: no flapping"
    fleet.store.set_rollout(release.id, fraction=min(1.0, fraction * 3))
    grown = offered()
    assert first < grown or fraction * 3 >= 1 and grown == set(ids)


def test_a_device_that_started_keeps_its_update_when_the_fraction_is_lowered(fleet):
    release = fleet.release(fraction=1.0)
    dev = fleet.device()
    link = fleet.link(dev, lose=lambda p: decode_message(p).__class__.__name__ == "OtaChunk"
                      and decode_message(p).offset >= BLOCK)
    dev.query()
    link.pump()
    fleet.store.set_rollout(release.id, fraction=0.0)
    dev.disconnect()
    link = fleet.link(dev)
    dev.query("resume")
    link.pump()
    assert bytes(dev.held) == IMAGE and dev.states[-1] == "applying"
    stranger = fleet.device("esp32-00000000ffff")
    link = fleet.link(stranger)
    stranger.query()
    link.up()
    assert link.sent(OtaOffer)[0].manifest is None, "a device that had not started is not offered"


def test_a_resumed_download_starts_from_what_the_device_holds(fleet):
    fleet.release()
    dev = fleet.device()
    cut = 3 * BLOCK + 500
    link = fleet.link(dev, lose=lambda p: (m := decode_message(p)).__class__.__name__ == "OtaChunk"
                      and m.offset >= cut)
    dev.query()
    link.pump()
    dev.disconnect()
    assert len(dev.held) == 3 * BLOCK
    link = fleet.link(dev)
    dev.query()
    link.up()
    first_window = len(dev.windows)
    link.pump()
    assert dev.windows[first_window].ack == 3 * BLOCK and dev.windows[first_window].rewind
    assert bytes(dev.held) == IMAGE


def test_a_lost_chunk_comes_again_after_the_devices_rewind(fleet):
    fleet.release()
    dev = fleet.device()
    lost = []

    def lose_once(p: bytes) -> bool:
        m = decode_message(p)
        if m.__class__.__name__ == "OtaChunk" and m.offset == SERIAL_CHUNK * 2 and not lost:
            lost.append(m.offset)
            return True
        return False

    link = fleet.link(dev, lose=lose_once)
    dev.query()
    link.pump()
    assert dev.ignored > 0 and len(dev.held) < len(IMAGE), "the chunks after the gap were ignored"
    dev.out.append(encode_message(OtaWindow(DEVICE, 7, dev.durable(), dev.durable() + 2 * BLOCK, True)))
    link.pump()
    assert bytes(dev.held) == IMAGE


def test_the_rollout_halts_itself_when_the_failed_share_passes_its_threshold_and_says_why(fleet):
    release = fleet.release(halt_at=0.3, min_devices=3)
    devices = [fleet.device(f"esp32-{i:012x}") for i in range(4)]
    links = [fleet.link(d) for d in devices]
    for d, link in zip(devices[:2], links):
        d.query()
        link.pump()
    devices[0].boot_new(confirm=False)
    links[0].pump()
    assert fleet.store.release(release.id).state == "active", "one failure of two tried: below the minimum"
    devices[2].query()
    links[2].pump()
    halted = fleet.store.release(release.id)
    assert halted.state == "halted" and halted.halt_reason, "1 rolled back of 3 tried passes 0.3"
    assert ("halted", {"device": devices[2].device_id, "release": release.id,
                       "reason": halted.halt_reason}) in fleet.events
    assert [h["state"] for h in fleet.store.ota_history(release_id=release.id) if h["device_id"] is None] == [
        "published", "halted"]
    devices[3].query()
    links[3].up()
    assert links[3].sent(OtaOffer)[0].manifest is None, "a halted release is offered to nobody"
    fleet.store.set_rollout(release.id, state="active")
    links[3].to_device.clear()
    devices[3].query()
    links[3].up()
    assert links[3].sent(OtaOffer)[0].manifest == release.manifest, "resumed by hand"


def test_an_unanswered_transfer_is_offered_again_after_30_s_then_closed(fleet):
    release = fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.up()
    assert len(link.sent(OtaOffer)) == 1
    assert link.server.poll() == REOFFER_AFTER
    fleet.now += REOFFER_AFTER - 1
    link.server.poll()
    assert len(link.sent(OtaOffer)) == 1
    for n in range(MAX_REOFFERS):
        fleet.now += REOFFER_AFTER
        link.server.poll()
        assert len(link.sent(OtaOffer)) == 2 + n
        assert link.sent(OtaOffer)[-1].manifest == release.manifest
    fleet.now += REOFFER_AFTER
    link.server.poll()
    assert link.server.transfers == {} and len(link.sent(OtaOffer)) == 1 + MAX_REOFFERS
    assert ("closed", {"device": DEVICE, "release": release.id, "sequence": 7, "why": "unanswered"}) in fleet.events


def test_a_window_or_state_resets_the_re_offer_clock(fleet):
    fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.up()
    fleet.now += REOFFER_AFTER - 5
    link.session.receive_message(encode_message(OtaState(DEVICE, "agent", 7, "downloading", held=0)))
    fleet.now += 10
    link.server.poll()
    assert len(link.sent(OtaOffer)) == 1


def test_a_busy_device_is_heard_its_offer_waits_for_its_query_and_history_says_so(fleet):
    # `busy` (no heap for the checks just now) names no sequence: the offer
    # is not given up, and the device's state of the release does not change.
    release = fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.up()
    reason = "no heap for the offer's checks just now: asks again in 10 s"
    for _ in range(MAX_REOFFERS + 2):
        fleet.now += REOFFER_AFTER - 5
        link.session.receive_message(encode_message(OtaState(DEVICE, "agent", 0, "busy", reason=reason)))
        link.server.poll()
    assert 7 in link.server.transfers and len(link.sent(OtaOffer)) == 1
    h = fleet.store.ota_history(device_id=DEVICE)
    assert [x["state"] for x in h].count("busy") == MAX_REOFFERS + 2 and h[-1]["reason"] == reason
    assert [(d["release"], d["state"]) for d in fleet.store.ota_devices(device_id=DEVICE)] == [(release.id, "offered")]


def test_bad_and_unsolicited_ota_messages_are_counted_and_never_stop_the_link(fleet):
    fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    receive = link.session.receive_message
    receive(encode_message(OtaWindow(DEVICE, 7, 0, 8192)))                   # no transfer offered yet
    dev.query()
    link.up()
    link.pump()                                                               # the whole transfer: closed
    receive(encode_message(OtaWindow(DEVICE, 7, 0, 8192)))                   # after it closed
    receive(encode_message(OtaWindow(DEVICE, 99, 0, 10)))                    # a sequence never offered
    receive(encode_message(OtaOffer(DEVICE, "agent")))                        # host -> device only
    receive(encode_message(OtaState("esp32-ffffffffffff", "agent", 7, "confirmed")))   # another device
    receive(encode_message(OtaWindow(DEVICE, 7, 0, 8192))[:-3])              # truncated
    receive(bytes.fromhex("a5000b0178") + b"x" * 5)                          # garbage
    bad = link.session.stats.bad
    assert bad["ota_no_transfer"] == 3 and bad["unexpected"] == 1 and bad["foreign"] == 1
    assert bad["bad_message"] == 2
    link.to_device.clear()
    dev.counter = 0
    dev.manifest = None
    dev.query()
    link.up()
    assert link.sent(OtaOffer), "the link still serves"


def test_the_devices_last_window_after_its_verified_is_no_bad_message(fleet):
    # The device may send its states before its last window {ack size, limit size}.
    fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.up()
    link.pump()
    assert "verified" in states(fleet) and link.server.transfers == {}
    receive = link.session.receive_message
    receive(encode_message(OtaWindow(DEVICE, 7, len(IMAGE), len(IMAGE))))
    assert link.session.stats.bad.get("ota_no_transfer", 0) == 0
    receive(encode_message(OtaWindow(DEVICE, 7, 4096, 8192)))                # any other: counted
    assert link.session.stats.bad["ota_no_transfer"] == 1


def test_a_window_breaking_the_rules_is_ignored_and_counted(fleet):
    fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.up()
    receive = link.session.receive_message
    receive(encode_message(OtaWindow(DEVICE, 7, 0, len(IMAGE) + 1)))         # past the image
    receive(encode_message(OtaWindow(DEVICE, 7, 8192, 16384)))
    link.to_device.clear()
    receive(encode_message(OtaWindow(DEVICE, 7, 4096, 8192)))                # ack went back
    assert link.session.stats.bad["ota_bad_window"] == 2 and link.to_device == []


def test_a_state_for_a_sequence_no_release_has_goes_to_the_history_only(fleet):
    fleet.device()
    link = fleet.link(OtaDevice(DEVICE))
    link.session.receive_message(encode_message(OtaState(DEVICE, "agent", 42, "rolled-back", check="rolled-back",
                                                         reason="crashed at boot")))
    h = fleet.store.ota_history(device_id=DEVICE)
    assert [(x["release"], x["sequence"], x["state"], x["reason"]) for x in h] == [
        (None, 42, "rolled-back", "crashed at boot")]
    assert fleet.store.ota_devices(device_id=DEVICE) == []


def test_a_damaged_image_in_the_update_store_is_named_and_sends_nothing(fleet):
    release = fleet.release()
    fleet.updates.path_of(release.digest).write_bytes(IMAGE[:-1] + b"!")
    dev = fleet.device()
    link = fleet.link(dev)
    dev.query()
    link.pump()
    assert len(dev.held) == 0 and link.server.transfers == {}
    errors = [f for e, f in fleet.events if e == "error"]
    assert errors and "damaged" in errors[0]["error"] and "edge ota publish" in errors[0]["fix"]


def test_history_only_grows(fleet):
    fleet.release()
    import sqlite3

    with pytest.raises(sqlite3.DatabaseError, match="only grows"):
        fleet.store._db.execute("DELETE FROM ota_history")
    with pytest.raises(sqlite3.DatabaseError, match="only grows"):
        fleet.store._db.execute("UPDATE ota_history SET state = 'confirmed'")


def test_chunks_go_through_the_links_sink_at_its_size(fleet):
    fleet.release()
    dev = fleet.device()
    link = fleet.link(dev)
    carried: list[tuple[int, int, bytes]] = []
    link.server.sink = lambda seq, off, data: carried.append((seq, off, bytes(data)))
    link.server.chunk_size = 240
    dev.query()
    link.pump()
    assert carried[0][:2] == (7, 0) and all(len(d) <= 240 for _, _, d in carried)
    # The device sees none of them here: only its first window's 8192 bytes go.
    assert b"".join(d for _, _, d in carried) == IMAGE[:8192]


def test_a_device_with_a_64_character_id_gets_chunks_that_fit_a_message(fleet):
    from edge_agent.messages import MAX_MESSAGE

    fleet.release(sequence=2**40)
    long_id = "esp32-" + "a" * 58
    dev = fleet.device(long_id)
    link = fleet.link(dev)
    sizes: list[int] = []
    link.lose = lambda p: sizes.append(len(p)) and False
    dev.query()
    link.pump()
    assert bytes(dev.held) == IMAGE and link.session.stats.bad == {}
    assert max(sizes) <= MAX_MESSAGE
