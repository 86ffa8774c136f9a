'use strict';
// node --test: the flash chip's commands, as the boot ROM and the SDK send them.
const test = require('node:test');
const assert = require('node:assert/strict');
const { SpiNorFlash } = require('./spi_flash.js');

const SIZE = 64 * 1024;

function chip() {
  const writes = [];
  const flash = new SpiNorFlash({
    memory: new Uint8Array(SIZE).fill(0xff), size: SIZE,
    uniqueId: [1, 2, 3, 4, 5, 6, 7, 8], onWrite: (o, n) => writes.push([o, n]),
  });
  return { flash, writes };
}

// One command with CS held low, as flash_do_cmd does: the bytes clocked back.
function cmd(flash, bytes) {
  flash.select();
  const out = bytes.map((b) => flash.transfer(b));
  flash.deselect();
  return out;
}

const addr = (a) => [(a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff];

test('JEDEC id names a 2 MB Winbond part and the unique id is the one given', () => {
  const { flash } = chip();
  assert.deepEqual(cmd(flash, [0x9f, 0, 0, 0]).slice(1), [0xef, 0x40, 0x15]);
  assert.deepEqual(cmd(flash, [0x4b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).slice(5), [1, 2, 3, 4, 5, 6, 7, 8]);
});

test('program without write enable changes nothing', () => {
  const { flash, writes } = chip();
  cmd(flash, [0x02, ...addr(0x100), 0x12, 0x34]);
  assert.deepEqual(cmd(flash, [0x03, ...addr(0x100), 0, 0]).slice(4), [0xff, 0xff]);
  assert.equal(writes.length, 0);
});

test('program after write enable is read back, clears only bits, and reports its range', () => {
  const { flash, writes } = chip();
  cmd(flash, [0x06]);
  assert.equal(cmd(flash, [0x05, 0])[1] & 0x02, 0x02, 'write enable latch set');
  cmd(flash, [0x02, ...addr(0x1000), 0xf0, 0x0f]);
  assert.equal(cmd(flash, [0x05, 0])[1], 0, 'latch spent, never busy');
  cmd(flash, [0x06]);
  cmd(flash, [0x02, ...addr(0x1000), 0x3c]);
  assert.deepEqual(cmd(flash, [0x03, ...addr(0x1000), 0, 0]).slice(4), [0x30, 0x0f]);
  assert.deepEqual(cmd(flash, [0x0b, ...addr(0x1000), 0, 0, 0]).slice(5), [0x30, 0x0f], 'fast read skips a dummy byte');
  assert.deepEqual(writes, [[0x1000, 2], [0x1000, 1]]);
});

test('a program past the end of its page wraps to the page start', () => {
  const { flash } = chip();
  cmd(flash, [0x06]);
  cmd(flash, [0x02, ...addr(0x2ff), 0xaa, 0xbb]);
  assert.equal(flash.memory[0x2ff], 0xaa);
  assert.equal(flash.memory[0x200], 0xbb);
  assert.equal(flash.memory[0x300], 0xff);
});

test('sector and block erases set their whole aligned block to 0xFF', () => {
  const { flash, writes } = chip();
  flash.memory.fill(0);
  cmd(flash, [0x06]);
  cmd(flash, [0x20, ...addr(0x1234)]);
  assert.ok(flash.memory.subarray(0x1000, 0x2000).every((b) => b === 0xff));
  assert.equal(flash.memory[0xfff], 0);
  assert.equal(flash.memory[0x2000], 0);
  cmd(flash, [0x06]);
  cmd(flash, [0xd8, ...addr(0x4567)]);
  assert.ok(flash.memory.every((b) => b === 0xff));
  assert.deepEqual(writes, [[0x1000, 4096], [0, 65536]]);
});

test('an erase without write enable, or cut short before its address, does nothing', () => {
  const { flash } = chip();
  flash.memory.fill(0);
  cmd(flash, [0x20, ...addr(0)]);
  cmd(flash, [0x06]);
  cmd(flash, [0x20, 0x00]);
  assert.ok(flash.memory.every((b) => b === 0));
});

test('quad enable reads as set, so boot2 never rewrites the status register', () => {
  const { flash } = chip();
  assert.equal(cmd(flash, [0x35, 0])[1] & 0x02, 0x02);
});

test('without a forced chip select, bytes run on as one command until the next select', () => {
  const { flash } = chip();
  flash.transfer(0x35);
  assert.equal(flash.transfer(0), 0x02);
  flash.select();                       // the ROM forces CS: a new command
  assert.deepEqual([0x9f, 0].map((b) => flash.transfer(b)).slice(1), [0xef]);
  flash.deselect();
});
