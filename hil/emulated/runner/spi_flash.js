'use strict';
// The Pico's QSPI NOR flash chip (a W25Q16JV, 2 MB) as the RP2040's SSI
// sees it in its serial (command) mode, and the two registers that frame a
// command: the SSI itself and IO_QSPI's chip-select override.
//
// Rules it keeps, as the chip does:
// * A command is the bytes clocked while chip select is low. The boot ROM
//   and the SDK force CS through IO_QSPI (GPIO_QSPI_SS_CTRL.OUTOVER); boot2
//   lets the SSI drive it, so disabling the SSI also ends a command.
// * Program (0x02) and erase (0x20, 0x52, 0xD8, 0x60/0xC7) need write enable
//   (0x06) first and clear it at CS high; program can only clear bits and
//   wraps within its 256-byte page; an erase sets its whole block to 0xFF.
// * The chip is never busy: every program or erase is done at CS high, so a
//   status read (0x05) always answers "ready".
// * The memory is the array the core reads through XIP, so a write is seen
//   at once; every change is handed to `onWrite(offset, length)`, which
//   keeps the image file (the board's flash across power cycles).

const PAGE = 256;
const SR1_WEL = 0x02;
const SR2_QE = 0x02;          // quad enable: boot2 then skips writing it
const ERASE = { 0x20: 4096, 0x52: 32768, 0xd8: 65536 };

class SpiNorFlash {
  constructor({ memory, size, uniqueId, jedecId = [0xef, 0x40, 0x15], onWrite = () => {} }) {
    if (size > memory.length || size & (size - 1)) {
      throw new Error(`flash size ${size} must be a power of two within the memory (${memory.length} bytes)`);
    }
    this.memory = memory;
    this.size = size;
    this.uniqueId = Uint8Array.from(uniqueId || new Uint8Array(8));
    this.jedecId = jedecId;
    this.onWrite = onWrite;
    this.wel = false;
    this.selected = false;
    this.forced = false;
    this._end();
  }

  _end() {
    this.cmd = -1;
    this.pos = 0;           // bytes clocked since the command byte
    this.addr = 0;
    this.dirtyLo = Infinity;
    this.dirtyHi = -1;
  }

  // CS low. `forced`: held low by IO_QSPI (the ROM, the SDK) until released;
  // otherwise the SSI drives it (boot2), and a forced select ends that command.
  select(forced = true) {
    if (this.selected && this.forced && forced) return;
    if (this.selected) this.deselect();
    this.selected = true;
    this.forced = forced;
  }

  // CS high: a program or erase takes effect, write enable is spent.
  deselect() {
    if (!this.selected) return;
    this.selected = false;
    const { cmd } = this;
    if (cmd in ERASE && this.pos >= 3 && this.wel) {
      const block = ERASE[cmd];
      const start = (this.addr & (this.size - 1)) & ~(block - 1);
      this.memory.fill(0xff, start, start + block);
      this.onWrite(start, block);
    } else if ((cmd === 0x60 || cmd === 0xc7) && this.wel) {
      this.memory.fill(0xff, 0, this.size);
      this.onWrite(0, this.size);
    } else if (cmd === 0x02 && this.dirtyHi >= 0) {
      this.onWrite(this.dirtyLo, this.dirtyHi - this.dirtyLo + 1);
    }
    if (cmd === 0x02 || cmd === 0x01 || cmd === 0x31 || cmd === 0x60 || cmd === 0xc7 || cmd in ERASE) {
      this.wel = false;
    }
    this._end();
  }

  // One byte out on SD0, one byte back on SD1.
  transfer(byte) {
    if (!this.selected) this.select(false);
    if (this.cmd < 0) {
      this.cmd = byte;
      if (byte === 0x06) this.wel = true;
      else if (byte === 0x04) this.wel = false;
      return 0xff;
    }
    const k = ++this.pos;
    switch (this.cmd) {
      case 0x05: return this.wel ? SR1_WEL : 0;
      case 0x35: return SR2_QE;
      case 0x15: return 0;
      case 0x9f: return k <= this.jedecId.length ? this.jedecId[k - 1] : 0;
      case 0x4b: return k > 4 && k <= 12 ? this.uniqueId[k - 5] : 0xff;
      case 0x03: case 0x0b: case 0x02: case 0x20: case 0x52: case 0xd8: case 0x5a:
        if (k <= 3) {
          this.addr = ((this.addr << 8) | byte) & 0xffffff;
          return 0xff;
        }
        return this._data(k, byte);
      default: return 0xff;
    }
  }

  _data(k, byte) {
    const base = this.addr & (this.size - 1);
    if (this.cmd === 0x03) return this.memory[(base + k - 4) & (this.size - 1)];
    if (this.cmd === 0x0b) return k === 4 ? 0xff : this.memory[(base + k - 5) & (this.size - 1)];
    if (this.cmd === 0x02 && this.wel) {
      const at = (base & ~(PAGE - 1)) | ((base + k - 4) & (PAGE - 1));
      this.memory[at] &= byte;
      if (at < this.dirtyLo) this.dirtyLo = at;
      if (at > this.dirtyHi) this.dirtyHi = at;
    }
    return 0xff;     // SFDP and anything after an erase address: no table, nothing to say
  }
}

// SSI registers (RP2040 datasheet 4.10.13) the firmware uses in command mode.
const CTRLR0 = 0x00, SSIENR = 0x08, TXFLR = 0x20, RXFLR = 0x24, SR = 0x28, DR0 = 0x60;
const SR_TFNF = 0x02, SR_TFE = 0x04, SR_RFNE = 0x08;
const FRF_MASK = 0x3 << 21;       // CTRLR0.SPI_FRF: 0 = standard (one data line)
const QSPI_SS_STATUS = 0x08;      // IO_QSPI GPIO_QSPI_SS_STATUS
const QSPI_SS_CTRL = 0x0c;        // IO_QSPI GPIO_QSPI_SS_CTRL
const INFROMPAD = 1 << 17;
const OUTOVER_SHIFT = 8, OUTOVER_LOW = 2, OUTOVER_HIGH = 3;

// Builds the two peripherals around `flash`, given rp2040js's BasePeripheral.
function makePeripherals(BasePeripheral, rp2040, flash) {
  class QspiSsi extends BasePeripheral {
    constructor() {
      super(rp2040, 'SSI');
      this.regs = new Map();
      this.rx = [];
    }
    readUint32(offset) {
      offset &= 0xfff;
      switch (offset) {
        case SR: return SR_TFNF | SR_TFE | (this.rx.length ? SR_RFNE : 0);
        case TXFLR: return 0;
        case RXFLR: return this.rx.length;
        case DR0: return this.rx.length ? this.rx.shift() : 0;
        case 0x58: return 0x51535049;       // IDR
        case 0x5c: return 0x3430312a;       // SSI_VERSION_ID
        default: return this.regs.get(offset) || 0;
      }
    }
    writeUint32(offset, value) {
      offset &= 0xfff;
      if (offset === DR0) {
        // Quad / dual frames are XIP set-up (boot2): the memory is read directly.
        const standard = ((this.regs.get(CTRLR0) || 0) & FRF_MASK) === 0;
        const reply = standard ? flash.transfer(value & 0xff) : 0;
        if (this.rx.length < 16) this.rx.push(reply);
        return;
      }
      if (offset === SSIENR) {
        flash.deselect();
        this.rx.length = 0;
      }
      this.regs.set(offset, value >>> 0);
    }
  }

  class IoQspi extends BasePeripheral {
    constructor() {
      super(rp2040, 'IO_QSPI');
      this.regs = new Map();
    }
    readUint32(offset) {
      offset &= 0xfff;
      // The boot ROM reads the BOOTSEL button on the CS line: high (its
      // pull-up) means not pressed, so the chip boots from flash.
      if (offset === QSPI_SS_STATUS) return INFROMPAD;
      return this.regs.get(offset) || 0;
    }
    writeUint32(offset, value) {
      offset &= 0xfff;
      this.regs.set(offset, value >>> 0);
      if (offset === QSPI_SS_CTRL) {
        const over = (value >>> OUTOVER_SHIFT) & 3;
        if (over === OUTOVER_LOW) flash.select();
        else if (over === OUTOVER_HIGH || flash.forced) flash.deselect();
      }
    }
  }

  return { ssi: new QspiSsi(), ioQspi: new IoQspi() };
}

module.exports = { SpiNorFlash, makePeripherals, PAGE };
