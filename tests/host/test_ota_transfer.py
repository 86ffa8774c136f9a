"""edge_ota.transfer: the host's sender of protocol.md 7.4 and 7.5, wired to a simulated
device over a link that drops, duplicates and reorders chunks and loses windows."""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import BadInput
from edge_agent.messages import MAX_MESSAGE, OtaChunk, encode_message
from edge_ota.transfer import (SERIAL_CHUNK, Sender, TransferError, bulk_value,
                               chunk_size_for_mtu, serial_chunk_size)

BLOCK = 4096


class Device:
    """A device receiving one image as section 7.5 says.

    It takes a chunk only at the offset it expects next, holds at most two
    blocks of 4096 bytes in RAM, writes each whole block to "flash" and then
    grants ``limit = min(size, ack + 8192)``. A chunk above the expected
    offset brings one rewind window until a chunk at that offset arrives;
    :meth:`stall` is its block timer. ``rewind_from_expected`` picks how a
    rewind window reads: True, its key 3 is the offset the device expects
    (the bytes below it are held, the last ones in RAM); False, it is the
    durable ack, and the host sends again bytes the device holds in RAM.
    """

    def __init__(self, size: int, rewind_from_expected: bool):
        self.size = size
        self.rewind_from_expected = rewind_from_expected
        self.flash = bytearray()
        self.ram = bytearray()
        self.rewind_sent = False
        self.ignored = 0

    @property
    def ack(self) -> int:
        return len(self.flash)

    @property
    def expected(self) -> int:
        return self.ack + len(self.ram)

    @property
    def limit(self) -> int:
        return min(self.size, self.ack + 2 * BLOCK)

    def window(self, rewind: bool = False) -> tuple[int, int, bool]:
        return (self.expected if rewind and self.rewind_from_expected else self.ack), self.limit, rewind

    def on_chunk(self, offset: int, data: bytes) -> list[tuple[int, int, bool]]:
        assert offset + len(data) <= self.size, "a chunk past the image's size"
        assert offset + len(data) <= self.limit, "the host broke the window"
        assert 1 <= len(data)
        if offset != self.expected:
            self.ignored += 1
            if offset > self.expected and not self.rewind_sent:
                self.rewind_sent = True
                return [self.window(rewind=True)]
            return []
        self.rewind_sent = False
        self.ram += data
        out = []
        while len(self.ram) >= BLOCK or (self.ram and self.expected == self.size):
            block = self.ram[:BLOCK]
            del self.ram[:BLOCK]
            self.flash += block
            out.append(self.window())
        return out

    def stall(self) -> tuple[int, int, bool]:
        self.rewind_sent = False
        return self.window(rewind=True)


def run_transfer(image: bytes, chunk: int, rng: random.Random, drop: float, dup: float,
                 reorder: float, lose_window: float, rewind_from_expected: bool) -> tuple[Sender, Device]:
    sender = Sender(image, 7, chunk)
    device = Device(len(image), rewind_from_expected)
    to_host = deque([device.window()])
    air: list[tuple[int, memoryview]] = []
    for _ in range(200_000):
        if sender.done:
            return sender, device
        while to_host:
            window = to_host.popleft()
            if rng.random() >= lose_window:
                sender.on_window(*window)
        for offset, data in sender.next_chunks(rng.choice([None, 1, 3])):
            if rng.random() < drop:
                continue
            air.append((offset, data))
            if rng.random() < dup:
                air.append((offset, data))
        if len(air) > 1 and rng.random() < reorder:
            i, j = rng.randrange(len(air)), rng.randrange(len(air))
            air[i], air[j] = air[j], air[i]
        # Deliver part of what is in the air; the rest stays for later (late chunks).
        for _ in range(rng.randint(0, len(air))):
            offset, data = air.pop(0)
            to_host.extend(device.on_chunk(offset, bytes(data)))
        if not air and not to_host and sender.next_offset >= sender.limit:
            to_host.append(device.stall())     # the block timer: nothing moves
    raise AssertionError("the transfer never finished")


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 24_000), chunk=st.sampled_from([1, 17, 240, 512, SERIAL_CHUNK, 5000]),
       seed=st.integers(0, 2**32), drop=st.sampled_from([0.0, 0.05, 0.3]),
       dup=st.sampled_from([0.0, 0.1, 0.5]), reorder=st.sampled_from([0.0, 0.2, 0.9]),
       lose_window=st.sampled_from([0.0, 0.1, 0.4]), rewind_from_expected=st.booleans())
def test_a_transfer_over_a_faulty_link_always_ends_with_exactly_the_image(
        size, chunk, seed, drop, dup, reorder, lose_window, rewind_from_expected):
    if chunk < 100:
        size = min(size, 2000)
    image = random.Random(seed).randbytes(size)
    sender, device = run_transfer(image, chunk, random.Random(seed + 1), drop, dup, reorder,
                                  lose_window, rewind_from_expected)
    assert bytes(device.flash) == image
    assert sender.done and sender.progress == 1.0 and sender.ack == size
    assert sender.bytes_sent >= size and sender.chunks_sent >= -(-size // chunk)


def test_a_clean_link_sends_each_byte_once_one_window_per_block():
    image = bytes(range(256)) * 400          # 102400 bytes, 25 blocks
    sender, device = run_transfer(image, SERIAL_CHUNK, random.Random(1), 0, 0, 0, 0, True)
    assert bytes(device.flash) == image
    assert sender.bytes_sent == len(image) and sender.rewinds == 0
    assert sender.windows == 1 + len(image) // BLOCK


def test_nothing_is_sent_before_the_first_window_and_nothing_past_the_limit():
    sender = Sender(b"x" * 10000, 7, 960)
    assert sender.next_chunks() == [] and sender.progress == 0.0 and not sender.done
    sender.on_window(0, 8192)
    chunks = [(o, len(d)) for o, d in sender.next_chunks()]
    block = [(0, 960), (960, 960), (1920, 960), (2880, 960), (3840, 256)]   # none crosses 4096
    assert chunks == block + [(4096 + o, n) for o, n in block]
    assert sender.next_chunks() == []
    sender.on_window(4096, 10000)
    assert [(o, len(d)) for o, d in sender.next_chunks(max_count=2)] == [(8192, 960), (9152, 848)]
    assert sender.next_offset == 10000 and sender.bytes_sent == 10000 and sender.chunks_sent == 12


def test_after_a_rewind_chunks_start_at_the_same_offsets_as_in_the_first_pass():
    sender = Sender(bytes(20000), 7, 240)
    sender.on_window(0, 12288)
    first = {o for o, _ in sender.next_chunks()}
    sender.on_window(4096, 12288, rewind=True)
    again = {o for o, _ in sender.next_chunks()}
    assert again == {o for o in first if o >= 4096} and 8192 in again


def test_a_rewind_sends_again_from_ack_and_a_window_ahead_of_next_moves_it():
    image = bytes(range(250)) * 40
    sender = Sender(image, 7, 1000)
    sender.on_window(0, 8192)
    sender.next_chunks(max_count=3)
    sender.on_window(0, 8192, rewind=True)
    assert sender.next_offset == 0 and sender.rewinds == 1
    offset, data = sender.next_chunks(max_count=1)[0]
    assert offset == 0 and bytes(data) == image[:1000]
    sender.on_window(4096, 8192)            # the device holds more than was sent since: skip ahead
    assert sender.next_offset == 4096 and sender.progress == pytest.approx(4096 / 10000)
    sender.on_window(4096, 8192)            # the same window again changes nothing
    assert sender.next_offset == 4096


@pytest.mark.parametrize("ack, limit", [(-1, 10), (20, 10), (0, 10001), (10001, 10001)])
def test_a_window_out_of_range_is_refused_and_changes_nothing(ack, limit):
    sender = Sender(bytes(10000), 7, 960)
    sender.on_window(0, 8192)
    with pytest.raises(TransferError) as info:
        sender.on_window(ack, limit)
    assert isinstance(info.value, BadInput) and "bad-window" in info.value.message
    assert str(limit) in info.value.message and info.value.hint
    assert (sender.ack, sender.limit) == (0, 8192)


def test_an_ack_going_back_is_refused():
    sender = Sender(bytes(10000), 7, 960)
    sender.on_window(4096, 8192)
    with pytest.raises(TransferError, match="below the ack 4096"):
        sender.on_window(0, 8192, rewind=True)
    assert sender.ack == 4096


def test_an_image_of_one_block_exactly_ends_with_a_window_at_its_size():
    sender = Sender(bytes(BLOCK), 7, SERIAL_CHUNK)
    sender.on_window(0, BLOCK)
    assert sum(len(d) for _, d in sender.next_chunks()) == BLOCK
    sender.on_window(BLOCK, BLOCK)
    assert sender.done and sender.next_chunks() == []


def test_bulk_values_carry_a_big_endian_offset_then_the_bytes():
    assert bulk_value(0x01020304, b"\xaa\xbb") == b"\x01\x02\x03\x04\xaa\xbb"
    assert bulk_value(0, memoryview(b"xyz")[1:]) == b"\x00\x00\x00\x00yz"
    for offset, data in [(-1, b"x"), (2**32, b"x"), (0, b"")]:
        with pytest.raises(ValueError):
            bulk_value(offset, data)


def test_a_chunk_fills_an_att_value_at_every_mtu():
    assert chunk_size_for_mtu(247) == 240 and len(bulk_value(0, bytes(240))) == 244
    assert chunk_size_for_mtu(23) == 16 and chunk_size_for_mtu(517) == 510
    with pytest.raises(ValueError, match="MTU of 7"):
        chunk_size_for_mtu(7)


def test_a_serial_chunk_fits_one_message_for_a_bench_device_id():
    assert serial_chunk_size("esp32-7c9e3a0b1d2f", 2**40, 2**31) == SERIAL_CHUNK
    payload = encode_message(OtaChunk("esp32-7c9e3a0b1d2f", 2**40, 2**31, bytes(SERIAL_CHUNK)))
    assert len(payload) <= MAX_MESSAGE


@pytest.mark.parametrize("device_id, sequence, size", [
    ("a" * 64, 2**63 - 1, 2**32), ("a" * 64, 7, 130001), ("e" * 40, 2**40, 2**31), ("esp32-1", 1, 1)])
def test_a_serial_chunk_shrinks_only_as_far_as_a_long_id_needs(device_id, sequence, size):
    n = serial_chunk_size(device_id, sequence, size)
    assert len(encode_message(OtaChunk(device_id, sequence, size - 1, bytes(n)))) <= MAX_MESSAGE
    if n < SERIAL_CHUNK:
        with pytest.raises(ValueError, match="over the 1024-byte limit"):
            encode_message(OtaChunk(device_id, sequence, size - 1, bytes(n + 1)))


def test_a_sender_refuses_a_chunk_size_of_zero():
    with pytest.raises(ValueError):
        Sender(b"abc", 1, 0)
