"""The host's side of an OTA transfer (docs/protocol.md sections 7.4 and 7.5), sans-I/O.

A :class:`Sender` holds one image and the state of the device's window; it
never touches a link. Its driver feeds it each OTA_WINDOW the device sends
(:meth:`Sender.on_window`) and asks it for the chunks the window allows now
(:meth:`Sender.next_chunks`), then carries them in OTA_CHUNK messages
(serial) or as bulk values (:func:`bulk_value`, BLE).

The rules it keeps, from section 7.5:

- ``0 <= ack <= limit <= size`` in every window, and ``ack`` never goes
  back (bytes below it are held by the device); a window that breaks this
  raises :class:`TransferError` and changes nothing;
- the host keeps a ``next`` offset: a window sets ``next = ack`` when it asks
  for a rewind or when ``next < ack``; chunks go from ``next`` while
  ``next < limit``, none crossing ``limit`` (the device ignores bytes past
  the window);
- no chunk crosses a 4096-byte block boundary, so the offsets chunks start
  at are the same in every pass over a block (``block + k * chunk_size``):
  after a rewind from the durable ack, one of them is the offset the device
  expects next, whatever it held in RAM (a device takes a chunk only at that
  offset); the cost is one short chunk per block;
- the transfer is done when the device holds every byte (``ack == size``).
"""

from __future__ import annotations

import struct

from edge_ota.cose import OtaError

BLOCK = 4096                # the device's flash block (section 7.5)
# Image bytes in one OTA_CHUNK a host sends (section 7.2 allows up to 960):
# 512, so a frame line stays near 750 bytes, which a board's heap, cut up
# after hours of telemetry, still finds room to decode (a 960-byte chunk
# needs a 1.3 KB line, which the virtual picow at times could not place).
SERIAL_CHUNK = 512
BULK_HEADER = 4             # u32be offset in front of a chunk on the bulk characteristic (7.4)
ATT_OVERHEAD = 3            # ATT write-without-response opcode and handle
_U32 = struct.Struct(">I")


class TransferError(OtaError):
    """A window from the device that breaks section 7.5 (the transfer cannot go on with it)."""

    check = "bad-window"

    def __init__(self, message: str):
        super().__init__(message, "the device's OTA receiver broke protocol.md 7.5: "
                                  "offer the update again; if it repeats, report the device's agent version")


def serial_chunk_size(device_id: str, sequence: int, image_size: int) -> int:
    """Image bytes per OTA_CHUNK for this device and transfer: :data:`SERIAL_CHUNK`, or fewer
    when a long device id and large numbers would take the message past 1024 bytes."""
    from edge_agent.messages import MAX_MESSAGE, OtaChunk, encode_message

    # 256 bytes of data have the same 3-byte string head as 960; the last offset is the longest.
    probe = encode_message(OtaChunk(device_id, sequence, max(image_size - 1, 0), bytes(256)))
    return min(SERIAL_CHUNK, MAX_MESSAGE - (len(probe) - 256))


def chunk_size_for_mtu(mtu: int) -> int:
    """Image bytes per bulk chunk at ATT ``mtu`` (section 7.4: MTU - 7; 240 at MTU 247)."""
    size = mtu - ATT_OVERHEAD - BULK_HEADER
    if size < 1:
        raise ValueError(f"an ATT MTU of {mtu} leaves no room for image bytes (at least 8 needed)")
    return size


def bulk_value(offset: int, data: bytes | memoryview) -> bytes:
    """One ATT value for the bulk characteristic: ``u32be offset | data`` (section 7.4)."""
    if not 0 <= offset <= 0xFFFFFFFF:
        raise ValueError(f"offset {offset} does not fit the bulk chunk's 32 bits")
    if not len(data):
        raise ValueError("a bulk chunk carries at least one byte")
    return _U32.pack(offset) + bytes(data)


class Sender:
    """The host's state for sending ``image`` as transfer ``sequence`` (the manifest's sequence).

    ``chunk_size`` is the most image bytes a chunk carries on the link
    (:data:`SERIAL_CHUNK`, or :func:`chunk_size_for_mtu`). Nothing is sent
    before the device's first window.
    """

    def __init__(self, image: bytes | memoryview, sequence: int, chunk_size: int):
        if chunk_size < 1:
            raise ValueError(f"chunk size {chunk_size}: a chunk carries at least one byte")
        self._image = memoryview(image).cast("B")
        self.sequence = sequence
        self.chunk_size = chunk_size
        self._ack = 0
        self._limit = 0
        self._next = 0
        self.bytes_sent = 0
        self.chunks_sent = 0
        self.rewinds = 0        # windows that asked to send again from ack
        self.windows = 0        # windows taken

    @property
    def size(self) -> int:
        """The image's length in bytes."""
        return len(self._image)

    @property
    def ack(self) -> int:
        """Every byte below this offset is held by the device."""
        return self._ack

    @property
    def limit(self) -> int:
        """The host may send bytes below this offset."""
        return self._limit

    @property
    def next_offset(self) -> int:
        """The offset of the next chunk to send."""
        return self._next

    @property
    def done(self) -> bool:
        """True once the device holds the whole image."""
        return self._ack == self.size

    @property
    def progress(self) -> float:
        """The share of the image the device holds, 0.0 to 1.0."""
        return self._ack / self.size if self.size else 1.0

    def on_window(self, ack: int, limit: int, rewind: bool = False) -> None:
        """Take an OTA_WINDOW for this transfer; raise :class:`TransferError` if it breaks 7.5."""
        if not 0 <= ack <= limit <= self.size:
            raise TransferError(f"window ack {ack}, limit {limit} for an image of {self.size} bytes "
                                "(0 <= ack <= limit <= size)")
        if ack < self._ack:
            raise TransferError(f"window ack {ack} is below the ack {self._ack} the device sent before")
        self._ack, self._limit = ack, limit
        self.windows += 1
        if rewind:
            self.rewinds += 1
        if rewind or self._next < ack:
            self._next = ack

    def next_chunks(self, max_count: int | None = None) -> list[tuple[int, memoryview]]:
        """The chunks the window allows now, as ``(offset, bytes)``, at most ``max_count``.

        ``next`` moves past them: a chunk the link loses comes again only
        after the device asks for a rewind. The views share the image's memory.
        """
        out: list[tuple[int, memoryview]] = []
        while self._next < self._limit and (max_count is None or len(out) < max_count):
            start = self._next
            end = min(start + self.chunk_size, self._limit, (start // BLOCK + 1) * BLOCK)
            out.append((start, self._image[start:end]))
            self._next = end
            self.bytes_sent += end - start
        self.chunks_sent += len(out)
        return out
