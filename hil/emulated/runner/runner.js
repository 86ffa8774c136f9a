'use strict';
// Runs the MicroPython rp2 firmware on an emulated RP2040 (rp2040js), its USB
// CDC console on this process's stdin/stdout (the board's pseudo-terminal,
// made by the bench's supervisor; see edge_hil/emulated/chip.py).
//
//   node runner.js --rp2040js DIR --bootrom FILE --flash FILE --flash-size N
//                  [--unique-id HEX16] [--stats FILE] [--die-temp CELSIUS]
//
// What it adds to stock rp2040js:
// * the flash chip behind the SSI (spi_flash.js), its memory kept in FILE,
//   so littlefs formats, writes and finds its files again after a power cycle;
// * USB CDC reads that wait for the host's bytes, instead of answering every
//   read at once with an empty packet;
// * a hard reset (watchdog trigger: machine.reset()) that starts a new chip
//   from the boot ROM with the same flash;
// * the on-chip temperature sensor (ADC input 4) at a die temperature,
//   27 C unless --die-temp says (stock reads 0 V on every input: 437 C);
// * device time that never runs ahead of wall time: while the core sleeps
//   (WFI/WFE) the emulator waits for the wall clock instead of skipping to
//   the next timer, so time.sleep takes real time and an idle board costs
//   no CPU; while it computes, device time lags (the emulator is slower than
//   a Pico).
// On SIGUSR1 it writes the emulator's counters to the stats file (JSON):
// cycles executed since the last boot, device and wall nanoseconds, boots.
// Nothing is printed on stdout but what the chip sends; notes go to stderr.

const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');
const { SpiNorFlash, makePeripherals } = require('./spi_flash.js');

const CYCLE_NS = 1e9 / 125e6;         // clk_sys 125 MHz, as rp2040js counts it
const ADC_TEMP = 4;                   // the temperature sensor's ADC input
const SLICE_INSTRUCTIONS = 200000;    // then let I/O in (about 20 ms of emulation)
const MAX_SLEEP_MS = 50;
// Exit status when the firmware enters the boot ROM's USB boot
// (machine.bootloader()): the bench then shows its BOOTSEL drive.
const EXIT_BOOTSEL = 3;

// The address of boot ROM function `code` (two letters, RP2040 datasheet
// 2.8.3): the table at the halfword pointer at 0x14 holds (code, address)
// halfword pairs up to a zero code.
function romFunction(rom, code) {
  const half = (addr) => rom[addr] | (rom[addr + 1] << 8);
  const want = code.charCodeAt(0) | (code.charCodeAt(1) << 8);
  for (let at = half(0x14); half(at) !== 0; at += 4) {
    if (half(at) === want) return half(at + 2) & ~1;
  }
  return -1;
}

// The 12-bit ADC code of the temperature sensor at `celsius` (RP2040
// datasheet 4.9.5: 0.706 V at 27 C, -1.721 mV a degree; ADC reference 3.3 V).
function sensorCode(celsius) {
  const volts = 0.706 - (celsius - 27) * 0.001721;
  return Math.max(0, Math.min(4095, Math.round(volts / 3.3 * 4095)));
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad argument ${argv[i]}: expected --name value pairs`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  for (const need of ['rp2040js', 'bootrom', 'flash', 'flash-size']) {
    if (!(need in args)) throw new Error(`missing --${need}`);
  }
  return args;
}

// rp2040js logs to stdout, which is the board's console here: keep only its
// errors, on stderr (an unmodelled peripheral's warnings would flood it).
const STDERR_ERRORS = {
  debug() {}, info() {}, warn() {},
  error(component, message) { note(`${component}: ${message}`); },
};

function registerFile(BasePeripheral) {
  return class RegisterFile extends BasePeripheral {
    constructor(mcu, name) {
      super(mcu, name);
      this.regs = new Map();
    }
    readUint32(offset) { return this.regs.get(offset & 0xfff) || 0; }
    writeUint32(offset, value) { this.regs.set(offset & 0xfff, value >>> 0); }
  };
}

function note(text) {
  process.stderr.write(`[rp2040 runner] ${text}\n`);
}

class Board {
  constructor(args) {
    const req = createRequire(path.join(path.resolve(args.rp2040js), 'package.json'));
    this.lib = req('rp2040js');
    const rom = fs.readFileSync(args.bootrom);
    if (rom.length !== 16384) throw new Error(`${args.bootrom}: a boot ROM is 16384 bytes, not ${rom.length}`);
    this.bootrom = new Uint32Array(rom.buffer, rom.byteOffset, rom.length / 4);
    this.usbBootEntry = romFunction(rom, 'UB');   // reset_usb_boot
    this.flashSize = Number(args['flash-size']);
    this.flashFd = fs.openSync(args.flash, 'r+');
    this.uniqueId = Buffer.from(args['unique-id'] || '0000000000000000', 'hex');
    this.statsFile = args.stats || null;
    this.dieTemp = Number(args['die-temp'] ?? 27);
    if (!Number.isFinite(this.dieTemp)) throw new Error(`--die-temp ${args['die-temp']}: not a number`);
    this.input = [];                  // host -> device bytes not yet read by the chip
    this.pendingRead = null;          // [endpoint, size] the chip waits on
    this.timer = null;
    this.boots = 0;
    this.wall0 = process.hrtime.bigint();
    this.boot();
  }

  // A new chip, as after power-on or a hard reset: ROM, flash from the file.
  // `watchdogReason`: a watchdog reset leaves its reason for the firmware
  // (machine.reset_cause() is WDT_RESET then), as the chip's WATCHDOG.REASON does.
  boot(watchdogReason = 0) {
    const { RP2040, USBCDC, BasePeripheral } = this.lib;
    const mcu = new RP2040();
    mcu.logger = STDERR_ERRORS;
    mcu.loadBootrom(this.bootrom);
    fs.readSync(this.flashFd, mcu.flash, 0, this.flashSize, 0);
    const flash = new SpiNorFlash({
      memory: mcu.flash, size: this.flashSize, uniqueId: this.uniqueId,
      onWrite: (offset, length) => fs.writeSync(this.flashFd, mcu.flash, offset, length, offset),
    });
    const { ssi, ioQspi } = makePeripherals(BasePeripheral, mcu, flash);
    mcu.peripherals[0x18000] = ssi;
    mcu.peripherals[0x40018] = ioQspi;
    // VREG_AND_CHIP_RESET: stock answers every read with all ones, which the
    // boot ROM takes for a debugger's restart request (CHIP_RESET.PSM_RESTART_FLAG)
    // and then waits for a debugger. Registers that read back what was
    // written, zero at power-on, boot it normally.
    mcu.peripherals[0x40064] = new (registerFile(BasePeripheral))(mcu, 'VREG_AND_CHIP_RESET');
    // The BOOTSEL button sits on the flash's CS line, which the boot ROM reads
    // through SIO: released, its pull-up holds it high and the chip boots
    // from flash (the bench's BOOTSEL mode is a folder drive, not this ROM).
    // Its pad comes out of reset input-enabled with the pull-up on (0x5a).
    mcu.adc.channelValues[ADC_TEMP] = sensorCode(this.dieTemp);
    mcu.qspi[1].padValue = 0x5a;
    mcu.qspi[1].setInputValue(true);
    const watchdog = mcu.peripherals[0x40058];
    watchdog.reason = watchdogReason;
    // On a trigger the chip resets, so the watchdog's alarm must not fire
    // again: stock re-arms it for the same instant once the count reaches
    // zero, and the clock's tick then loops for ever (the board hangs and
    // the event loop with it).
    watchdog.onWatchdogTrigger = () => {
      this.resetRequested = true;
      watchdog.alarm.enable = false;
    };
    const cdc = new USBCDC(mcu.usbCtrl);
    cdc.onSerialData = (data) => this.toHost(data);
    mcu.usbCtrl.onEndpointRead = (endpoint, size) => this.chipReads(cdc, endpoint, size);
    this.mcu = mcu;
    this.cdc = cdc;
    this.outEndpoint = () => cdc.outEndpoint;
    this.pendingRead = null;
    this.input = [];                  // USB goes down with the chip: unread bytes are lost
    this.resetRequested = false;
    // Device time continues from wall time: a reset does not rewind the clock.
    this.clockBase = this.wallNanos();
    mcu.core.reset();
    this.boots += 1;
  }

  wallNanos() {
    return Number(process.hrtime.bigint() - this.wall0);
  }

  deviceNanos() {
    return this.clockBase + this.mcu.clock.nanos;
  }

  // The chip's CDC OUT endpoint asks for up to `size` bytes: answer with what
  // the host sent, or hold the request until it sends something.
  chipReads(cdc, endpoint, size) {
    if (endpoint !== cdc.outEndpoint) return;
    if (this.input.length) this.deliver(endpoint, size);
    else this.pendingRead = [endpoint, size];
  }

  deliver(endpoint, size) {
    const n = Math.min(size, this.input.length);
    const chunk = Uint8Array.from(this.input.splice(0, n));
    this.mcu.usbCtrl.endpointReadDone(endpoint, chunk);
  }

  fromHost(data) {
    for (const b of data) this.input.push(b);
    if (this.pendingRead) {
      const [endpoint, size] = this.pendingRead;
      this.pendingRead = null;
      this.deliver(endpoint, size);
    }
    this.wake();
  }

  toHost(data) {
    let off = 0;
    while (off < data.length) {
      try {
        off += fs.writeSync(1, data, off, data.length - off);
      } catch (e) {
        if (e.code !== 'EAGAIN') throw e;
      }
    }
  }

  wake() {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
      setImmediate(() => this.run());
    }
  }

  // Emulate one slice; then come back at once (busy) or when device time may
  // advance again (asleep).
  run() {
    this.timer = null;
    const { core, clock } = this.mcu;
    for (let i = 0; i < SLICE_INSTRUCTIONS; i++) {
      if (this.resetRequested) {
        note('hard reset (watchdog): the chip boots again, flash kept');
        this.boot(this.mcu.peripherals[0x40058].reason);
        break;
      }
      if (core.PC === this.usbBootEntry) {
        note('the firmware entered the boot ROM\'s USB boot (BOOTSEL)');
        process.exit(EXIT_BOOTSEL);
      }
      if (core.waiting) {
        const next = clock.nanosToNextAlarm;
        const ahead = this.deviceNanos() + next - this.wallNanos();
        if (next <= 0 || ahead > 0) {
          const ms = next <= 0 ? MAX_SLEEP_MS : Math.min(MAX_SLEEP_MS, Math.max(1, ahead / 1e6));
          if (next > 0 && ahead < 1e6) {
            clock.tick(next);   // within a millisecond of wall time: go on
            continue;
          }
          this.timer = setTimeout(() => this.run(), ms);
          return;
        }
        clock.tick(next);
      } else {
        clock.tick(core.executeInstruction() * CYCLE_NS);
      }
    }
    setImmediate(() => this.run());
  }

  writeStats() {
    if (!this.statsFile) return;
    const stats = {
      cycles: this.mcu.core.cycles, device_ns: this.deviceNanos(), boot_device_ns: this.mcu.clock.nanos,
      wall_ns: this.wallNanos(), boots: this.boots,
    };
    const tmp = `${this.statsFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(stats) + '\n');
    fs.renameSync(tmp, this.statsFile);
  }
}

function main() {
  let board;
  try {
    board = new Board(parseArgs(process.argv.slice(2)));
  } catch (e) {
    note(`cannot start: ${e.message}`);
    process.exit(2);
  }
  process.stdin.on('data', (data) => board.fromHost(data));
  // The supervisor closed the console: the board is gone.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.on('SIGUSR1', () => board.writeStats());
  process.on('SIGTERM', () => process.exit(0));
  board.run();
}

if (require.main === module) main();

module.exports = { Board, romFunction, sensorCode, EXIT_BOOTSEL };
