"""The ESP32-family ROM serial bootloader (and esptool's flasher stub), sans-I/O.

A virtual ESP board in download mode runs one :class:`EspRomLoader`: bytes
from the serial line go in through :meth:`EspRomLoader.receive_data`, the
bytes the chip answers come out of :meth:`EspRomLoader.data_to_send`, and
what the board must act on (an image written, the loader told to run the
application) comes out of :meth:`EspRomLoader.next_events`. It reads and
writes a :class:`~edge_hil.virtual.flash.FlashImage` and nothing else, so the
unmodified ``esptool`` drives it over any channel and tests drive it in memory.

Rules it keeps (as the chips' ROMs do):

* Framing is SLIP both ways (0xC0 ends a frame; 0xDB 0xDC / 0xDB 0xDD escape
  0xC0 / 0xDB). Bytes outside a frame and frames shorter than a command
  header are ignored, so console noise and read acknowledgements do no harm.
* A request is ``<BBHI`` (direction 0, opcode, data length, checksum) then
  data; a reply is ``<BBHI`` (direction 1, opcode, length, value) then the
  command's data then status bytes: 4 from the ROM, 2 from the stub.
  Status ``(0, 0)`` is success; the ROM reports errors as ``(1, code)``
  (0x05 invalid message, 0x06 failed, 0x07 checksum, 0x08 write error, 0x0B
  deflate error), the stub as ``(code, 0)`` (0xC0 bad length, 0xC1 bad
  checksum, 0xC3 invalid command, 0xC6 not in flash mode, 0xC7 inflate error).
* SYNC is answered eight times (the ROM answers once per sync pattern),
  with a non-zero value by the ROM and 0 by the stub.
* Data blocks (FLASH_DATA, FLASH_DEFL_DATA, MEM_DATA) carry an XOR checksum
  (seed 0xEF) in the header; a wrong one is refused and nothing is written.
* FLASH_BEGIN / FLASH_DEFL_BEGIN erase before writing; a range that does not
  fit the flash is refused before anything is erased.
* The ESP32 (original) has no GET_SECURITY_INFO and is identified by the
  magic word at 0x40001000; the ESP32-S3 and -C3 answer GET_SECURITY_INFO
  with their chip id.
* Registers read as a small table (eFuse MAC and chip revision, UART clock
  divider); SPI user commands written to the SPI1 registers run at once
  (RDID answers a Winbond-like id whose capacity byte matches the flash).
* The stub: any RAM image run by MEM_END with an entry point is taken to be
  esptool's flasher stub (the code is not executed): the loader says ``OHAI``
  and from then on speaks the stub's dialect (2 status bytes, 16 KB blocks,
  raw MD5, READ_FLASH streaming, ERASE_FLASH / ERASE_REGION).

Events: ``("written", offset, size, complete)`` when a write session ends
(size is the image size, not the padded block count; ``complete`` is False
when it ended before its last block, e.g. by a reset), ``("run",)`` when the loader
is told to leave download mode and run the application.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

SLIP_END, SLIP_ESC, SLIP_ESC_END, SLIP_ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
CHECKSUM_SEED = 0xEF
FRAME_MAX = 64 * 1024           # longer frames are junk: dropped

# Opcodes (the ROM's and the stub's).
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END, SPI_FLASH_MD5 = 0x10, 0x11, 0x12, 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE = 0xD0, 0xD1, 0xD2, 0xD3

# ROM error codes (second status byte, first is 1) and stub codes (first byte).
ROM_INVALID, ROM_FAILED, ROM_CHECKSUM, ROM_WRITE, ROM_DEFLATE = 0x05, 0x06, 0x07, 0x08, 0x0B
STUB_BAD_LEN, STUB_BAD_CHECKSUM, STUB_INVALID, STUB_NOT_FLASHING, STUB_INFLATE = 0xC0, 0xC1, 0xC3, 0xC6, 0xC7

SYNC_VALUE = 0x20120707         # a ROM answers SYNC with a non-zero value; the stub with 0
XTAL_HZ = 40_000_000
FLASH_VENDOR = 0xEF             # Winbond
FLASH_TYPE = 0x40
SPI_CMD_USR = 1 << 18


class Chip:
    """What differs between the chips' ROMs, as far as esptool can see."""

    def __init__(self, name: str, *, magic: int | None, chip_id: int | None, spi_base: int,
                 spi_usr2: int, spi_w0: int, uart_clkdiv: int, mac_reg: int, mac_words: str,
                 extra_regs: dict[int, int]):
        self.name = name
        self.magic = magic              # value at 0x40001000 (chips without a chip id)
        self.chip_id = chip_id          # GET_SECURITY_INFO chip id (None: command unsupported)
        self.spi_base = spi_base
        self.spi_usr2 = spi_base + spi_usr2
        self.spi_w0 = spi_base + spi_w0
        self.uart_clkdiv = uart_clkdiv
        self.mac_reg = mac_reg
        self.mac_words = mac_words      # "esp32": eFuse words 1, 2 with a CRC byte; "s3": low word, high half
        self.extra_regs = extra_regs


CHIPS = {
    # ESP32-D0WD v3.0: package 1 (eFuse word 3 bits 9..11), revision bits in
    # word 3 bit 15, word 5 bit 20 and APB_CTL_DATE bit 31; 8 MHz clock
    # calibration chosen so the ROM's crystal estimate is 40 MHz.
    "esp32": Chip("ESP32", magic=0x00F01D83, chip_id=None, spi_base=0x3FF42000, spi_usr2=0x24,
                  spi_w0=0x80, uart_clkdiv=0x3FF40014, mac_reg=0x3FF5A004, mac_words="esp32",
                  extra_regs={0x3FF5A00C: (1 << 9) | (1 << 15), 0x3FF5A014: 1 << 20,
                              0x3FF5A010: 0x80, 0x3FF6607C: 1 << 31, 0x3FF5F06C: 800 << 7}),
    "esp32s3": Chip("ESP32-S3", magic=None, chip_id=9, spi_base=0x60002000, spi_usr2=0x20,
                    spi_w0=0x58, uart_clkdiv=0x60000014, mac_reg=0x60007044, mac_words="s3",
                    extra_regs={0x60004038: 1 << 3}),
    "esp32c3": Chip("ESP32-C3", magic=None, chip_id=5, spi_base=0x60002000, spi_usr2=0x20,
                    spi_w0=0x58, uart_clkdiv=0x60000014, mac_reg=0x60008844, mac_words="s3",
                    extra_regs={}),
}


def slip_encode(packet: bytes) -> bytes:
    """One SLIP frame carrying ``packet``."""
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


def checksum(data: bytes) -> int:
    """The ROM's block checksum: XOR of every byte, seeded with 0xEF."""
    state = CHECKSUM_SEED
    if data:
        # XOR of all bytes, eight at a time.
        pad = (-len(data)) % 8
        word = 0
        for (w,) in struct.iter_unpack("<Q", bytes(data) + b"\0" * pad):
            word ^= w
        for k in range(8):
            state ^= (word >> (8 * k)) & 0xFF
    return state


class _Session:
    """One FLASH_BEGIN / FLASH_DEFL_BEGIN write in progress."""

    def __init__(self, deflated: bool, offset: int, size: int, blocks: int, block_size: int):
        self.deflated = deflated
        self.offset = offset
        self.size = size                # erase size (plain) / uncompressed size
        self.blocks = blocks
        self.block_size = block_size
        self.next_seq = 0
        self.written = 0                # bytes of image (uncompressed) programmed
        self.inflate = zlib.decompressobj() if deflated else None


class EspRomLoader:
    """The serial bootloader of one chip; see the module doc for its rules."""

    def __init__(self, chip: str, flash, mac: bytes = b"\x24\x0a\xc4\x00\x00\x01"):
        if chip not in CHIPS:
            raise ValueError(f"no ROM loader for chip {chip!r}; known: {', '.join(CHIPS)}")
        self.chip = CHIPS[chip]
        self.flash = flash
        self.stub = False
        self.baud = 115200
        self._rx = bytearray()
        self._in_frame = False
        self._esc = False
        self._out = bytearray()
        self._events: list[tuple] = []
        self._session: _Session | None = None
        self._ram_loaded = False
        self._regs: dict[int, int] = dict(self.chip.extra_regs)
        self._set_mac(bytes(mac))
        self.commands = 0               # requests served (for figures)

    # ---- the sans-I/O surface ----------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the serial line."""
        for b in data:
            if b == SLIP_END:
                if self._in_frame and self._rx:
                    self._frame(bytes(self._rx))
                self._rx.clear()
                self._in_frame = True
                self._esc = False
            elif not self._in_frame:
                continue                        # noise between frames
            elif self._esc:
                self._esc = False
                if b == SLIP_ESC_END:
                    self._rx.append(SLIP_END)
                elif b == SLIP_ESC_ESC:
                    self._rx.append(SLIP_ESC)
                else:                           # bad escape: drop the frame
                    self._rx.clear()
                    self._in_frame = False
            elif b == SLIP_ESC:
                self._esc = True
            else:
                self._rx.append(b)
                if len(self._rx) > FRAME_MAX:
                    self._rx.clear()
                    self._in_frame = False

    def data_to_send(self) -> bytes:
        """Bytes the chip sends back (and forgets)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_events(self) -> list[tuple]:
        """What happened since the last call: ``("written", offset, size, complete)``, ``("run",)``."""
        ev, self._events = self._events, []
        return ev

    def close(self) -> None:
        """The chip is reset or powered off: a write in progress ends where it stopped."""
        self._end_session()

    # ---- replies ------------------------------------------------------------

    def _reply(self, op: int, value: int = 0, data: bytes = b"", error: int = 0) -> None:
        if self.stub:
            status = bytes([error, 0]) if error else b"\0\0"
        else:
            status = (bytes([1, error]) if error else b"\0\0") + b"\0\0"
        body = data + status
        self._out += slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _fail(self, op: int, rom_code: int, stub_code: int) -> None:
        self._reply(op, error=stub_code if self.stub else rom_code)

    # ---- requests -----------------------------------------------------------

    def _frame(self, frame: bytes) -> None:
        if len(frame) < 8 or frame[0] != 0:
            return                              # not a request (e.g. a read acknowledgement)
        _, op, size, chk = struct.unpack("<BBHI", frame[:8])
        data = frame[8:]
        self.commands += 1
        if len(data) != size:
            self._fail(op, ROM_INVALID, STUB_BAD_LEN)
            return
        handler = self._HANDLERS.get(op)
        if handler is None or (op in self._STUB_ONLY and not self.stub) or \
                (op in self._ROM_ONLY and self.stub):
            self._fail(op, ROM_INVALID, STUB_INVALID)
            return
        try:
            handler(self, op, data, chk)
        except (struct.error, ValueError):
            self._fail(op, ROM_INVALID, STUB_BAD_LEN)

    def _sync(self, op, data, chk):
        if data[:4] != b"\x07\x07\x12\x20" or data[4:] != b"\x55" * 32:
            self._fail(op, ROM_INVALID, STUB_INVALID)
            return
        # Eight answers either way; the stub's value 0 tells esptool it is already running.
        for _ in range(8):
            self._reply(op, 0 if self.stub else SYNC_VALUE)

    def _security_info(self, op, data, chk):
        if self.chip.chip_id is None:
            self._fail(op, ROM_INVALID, STUB_INVALID)
            return
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version
        self._reply(op, data=struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.chip_id, 0))

    def _read_reg(self, op, data, chk):
        (addr,) = struct.unpack("<I", data[:4])
        self._reply(op, self._reg(addr))

    def _write_reg(self, op, data, chk):
        # One or more (addr, value, mask, delay) words.
        for addr, value, mask, _delay in struct.iter_unpack("<IIII", data[:len(data) // 16 * 16]):
            old = self._regs.get(addr, 0)
            self._regs[addr] = (old & ~mask) | (value & mask)
            if addr == self.chip.spi_base and value & SPI_CMD_USR:
                self._spi_user_command()
        self._reply(op)

    def _ok(self, op, data, chk):
        self._reply(op)

    def _change_baud(self, op, data, chk):
        (baud,) = struct.unpack("<I", data[:4])
        if baud:
            self.baud = baud
        self._reply(op)

    def _mem_begin(self, op, data, chk):
        struct.unpack("<IIII", data[:16])
        self._ram_loaded = False
        self._reply(op)

    def _mem_data(self, op, data, chk):
        size, _seq, _, _ = struct.unpack("<IIII", data[:16])
        block = data[16:]
        if len(block) != size:
            self._fail(op, ROM_INVALID, STUB_BAD_LEN)
        elif checksum(block) != chk & 0xFF:
            self._fail(op, ROM_CHECKSUM, STUB_BAD_CHECKSUM)
        else:
            self._ram_loaded = True
            self._reply(op)

    def _mem_end(self, op, data, chk):
        no_entry, entry = struct.unpack("<II", data[:8])
        self._reply(op)
        if not no_entry and entry and self._ram_loaded and not self.stub:
            # The code uploaded is taken to be esptool's flasher stub.
            self.stub = True
            self._out += slip_encode(b"OHAI")

    def _flash_begin(self, op, data, chk):
        size, blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        deflated = op == FLASH_DEFL_BEGIN
        self._end_session()
        if block_size == 0 or blocks * block_size > (1 << 30) or offset + size > self.flash.size \
                or offset > self.flash.size:
            self._fail(op, ROM_FAILED, STUB_BAD_LEN)
            return
        if size:
            self.flash.erase(offset, size)
        self._session = _Session(deflated, offset, size, blocks, block_size)
        self._reply(op)

    def _flash_data(self, op, data, chk):
        s = self._session
        if s is None or s.deflated != (op == FLASH_DEFL_DATA):
            self._fail(op, ROM_FAILED, STUB_NOT_FLASHING)
            return
        size, seq, _, _ = struct.unpack("<IIII", data[:16])
        block = data[16:]
        if len(block) != size or size > max(s.block_size, 0x4000):
            self._fail(op, ROM_INVALID, STUB_BAD_LEN)
            return
        if checksum(block) != chk & 0xFF:
            self._fail(op, ROM_CHECKSUM, STUB_BAD_CHECKSUM)
            return
        if seq != s.next_seq:
            # A block esptool repeats because our reply got lost is already written.
            if s.deflated or seq + 1 != s.next_seq:
                self._fail(op, ROM_FAILED, STUB_BAD_LEN)
                return
            self._reply(op)
            return
        if s.deflated:
            try:
                plain = s.inflate.decompress(block)
            except zlib.error:
                self._fail(op, ROM_DEFLATE, STUB_INFLATE)
                return
            at = s.offset + s.written
        else:
            plain = block
            at = s.offset + seq * s.block_size
        if at + len(plain) > self.flash.size:
            self._fail(op, ROM_WRITE, STUB_BAD_LEN)
            return
        if plain:
            if self.stub and s.deflated:
                self.flash.erase(at, len(plain))    # the stub erases as it goes
            self.flash.write(at, plain)
        s.written = (s.written + len(plain)) if s.deflated else (seq * s.block_size + len(plain))
        s.next_seq += 1
        self._reply(op)

    def _flash_end(self, op, data, chk):
        (stay,) = struct.unpack("<I", data[:4]) if len(data) >= 4 else (0,)
        self._end_session()
        self._reply(op)
        if not self.stub:
            # The ROM leaves download mode and runs the application.
            self._events.append(("run",))
        elif not stay:
            self.stub = False               # the stub reboots into the ROM loader

    def _md5(self, op, data, chk):
        addr, size, _, _ = struct.unpack("<IIII", data[:16])
        self._end_session()
        if addr + size > self.flash.size:
            self._fail(op, ROM_FAILED, STUB_BAD_LEN)
            return
        digest = hashlib.md5(self.flash.read(addr, size)).digest()
        self._reply(op, data=digest if self.stub else digest.hex().encode())

    def _read_slow(self, op, data, chk):
        addr, size = struct.unpack("<II", data[:8])
        self._end_session()
        if size > 64 or addr + size > self.flash.size:
            self._fail(op, ROM_FAILED, STUB_BAD_LEN)
            return
        self._reply(op, data=self.flash.read(addr, size).ljust(64, b"\xff"))

    def _read_flash(self, op, data, chk):
        addr, size, packet, _in_flight = struct.unpack("<IIII", data[:16])
        self._end_session()
        if addr + size > self.flash.size or not packet:
            self._fail(op, ROM_FAILED, STUB_BAD_LEN)
            return
        self._reply(op)
        blob = self.flash.read(addr, size)
        # The stub streams; esptool's acknowledgements (short frames) are ignored.
        for k in range(0, size, packet):
            self._out += slip_encode(blob[k:k + packet])
        self._out += slip_encode(hashlib.md5(blob).digest())

    def _erase_flash(self, op, data, chk):
        self._end_session()
        self.flash.erase(0, self.flash.size)
        self._reply(op)

    def _erase_region(self, op, data, chk):
        addr, size = struct.unpack("<II", data[:8])
        self._end_session()
        if addr % 4096 or size % 4096 or addr + size > self.flash.size:
            self._fail(op, ROM_FAILED, STUB_BAD_LEN)
            return
        self.flash.erase(addr, size)
        self._reply(op)

    def _run_user_code(self, op, data, chk):
        self._end_session()
        self._events.append(("run",))

    _HANDLERS = {
        SYNC: _sync, GET_SECURITY_INFO: _security_info, READ_REG: _read_reg, WRITE_REG: _write_reg,
        SPI_ATTACH: _ok, SPI_SET_PARAMS: _ok, CHANGE_BAUDRATE: _change_baud,
        MEM_BEGIN: _mem_begin, MEM_DATA: _mem_data, MEM_END: _mem_end,
        FLASH_BEGIN: _flash_begin, FLASH_DATA: _flash_data, FLASH_END: _flash_end,
        FLASH_DEFL_BEGIN: _flash_begin, FLASH_DEFL_DATA: _flash_data, FLASH_DEFL_END: _flash_end,
        SPI_FLASH_MD5: _md5, READ_FLASH_SLOW: _read_slow, READ_FLASH: _read_flash,
        ERASE_FLASH: _erase_flash, ERASE_REGION: _erase_region, RUN_USER_CODE: _run_user_code,
    }
    _STUB_ONLY = {READ_FLASH, ERASE_FLASH, ERASE_REGION, RUN_USER_CODE}
    _ROM_ONLY = {READ_FLASH_SLOW}

    # ---- state --------------------------------------------------------------

    def _end_session(self) -> None:
        s, self._session = self._session, None
        if s is None or not s.written:
            return
        size = s.written if s.deflated else min(s.written, s.size)
        complete = s.next_seq >= s.blocks
        self._events.append(("written", s.offset, size, complete))

    def _set_mac(self, mac: bytes) -> None:
        c = self.chip
        if c.mac_words == "esp32":
            # Word 2 holds the CRC byte and the first 3 MAC bytes, word 1 the last 3... as big-endian halves.
            hi = struct.unpack(">I", b"\x00\x00" + mac[:2])[0]
            lo = struct.unpack(">I", mac[2:6])[0]
            self._regs[c.mac_reg] = lo              # eFuse word 1
            self._regs[c.mac_reg + 4] = hi          # eFuse word 2 (CRC byte left 0)
        else:
            self._regs[c.mac_reg] = struct.unpack(">I", mac[2:6])[0]
            self._regs[c.mac_reg + 4] = struct.unpack(">H", mac[:2])[0]

    def _reg(self, addr: int) -> int:
        c = self.chip
        if addr == 0x40001000:
            return c.magic if c.magic is not None else 0
        if addr == c.uart_clkdiv:
            return round(XTAL_HZ / self.baud) & 0xFFFFF
        if addr == c.spi_base:
            return self._regs.get(addr, 0) & ~SPI_CMD_USR     # user commands finish at once
        return self._regs.get(addr, 0)

    def _spi_user_command(self) -> None:
        c = self.chip
        command = self._regs.get(c.spi_usr2, 0) & 0xFF
        if command == 0x9F:                 # RDID: vendor, type, capacity (log2 of bytes)
            result = FLASH_VENDOR | (FLASH_TYPE << 8) | ((self.flash.size.bit_length() - 1) << 16)
        else:                               # status registers, SFDP, write enables: all zero
            result = 0
        self._regs[c.spi_w0] = result
        self._regs[c.spi_base] = self._regs.get(c.spi_base, 0) & ~SPI_CMD_USR
