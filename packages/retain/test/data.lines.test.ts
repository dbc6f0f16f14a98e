// JSONL streamed in chunks (data/lines.ts): lines cut at every chunk boundary read as the whole file split at '\n'
// reads, CRLF and a byte-order mark handled as before, errors still name the file and line; and a file past Node's
// string limit (~512 MB), which the whole-file reader could not read, reads with memory bounded by the chunk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants } from 'node:buffer';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readLines } from '../src/data/lines.js';
import { readJsonl, readRecords } from '../src/data/readers.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-lines-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

/** What the file holds as lines: split at '\n', one '\r' before it dropped, no empty line after a final '\n'. */
function expected(text: string): string[] {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  if (text.endsWith('\n')) lines.pop();
  return lines;
}

test('readLines: every chunk size gives the file\'s lines, with CRLF, multi-byte characters and a BOM', () => {
  const body = '{"a":"é"}\r\n\r\n{"b":"😀 x\ry"}\n  \n{"c":"日本語"}\r\nlast without newline';
  const f = join(tmp, 'mixed.jsonl');
  writeFileSync(f, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(body)]));
  for (const chunk of [1, 2, 3, 4, 5, 7, 13, 64, 1 << 20]) {
    const got = [...readLines(f, chunk)];
    assert.deepEqual(got.map((l) => l.text), expected(body), `chunk ${chunk}`);
    assert.deepEqual(got.map((l) => l.line), expected(body).map((_, i) => i + 1), `chunk ${chunk}`);
  }
  writeFileSync(join(tmp, 'empty.jsonl'), '');
  assert.deepEqual([...readLines(join(tmp, 'empty.jsonl'), 2)], []);
});

test('readLines: bad bytes and UTF-16 are named with the file and line at any chunk size', () => {
  const f = join(tmp, 'latin1.jsonl');
  writeFileSync(f, Buffer.concat([Buffer.from('{"a":1}\r\n{"b":2}\n{"c":"caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
  for (const chunk of [1, 3, 1 << 20]) {
    assert.throws(() => [...readLines(f, chunk)], new RegExp(`^Error: ${f.replace(/[.]/g, '\\.')}:3: not valid UTF-8 \\(a Latin-1 or Windows-1252 file\\?\\); convert the file to UTF-8`), `chunk ${chunk}`);
  }
  const g = join(tmp, 'utf16.jsonl');
  writeFileSync(g, Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"a":1}\n', 'utf16le')]));
  assert.throws(() => [...readLines(g, 1)], /utf16\.jsonl: the file is UTF-16; data files must be UTF-8/);
});

test('readJsonl: records, ids and bad-JSON lines as before', async () => {
  const f = join(tmp, 'recs.jsonl');
  writeFileSync(f, '{"q":"x","id":"own"}\r\n\r\n{"q":"y"}\r\n{broken\r\n');
  await assert.rejects(readRecords(f), (e: Error) => e.message.startsWith(`${f}:4: not valid JSON (`));
  writeFileSync(f, '{"q":"x","id":"own"}\r\n\r\n{"q":"y"}\r\n');
  assert.deepEqual(readJsonl(f).map((r) => [r.id, r.q]), [['own', 'x'], ['recs:1', 'y']]);
  assert.throws(() => readJsonl(tmp), /is a folder, where a file is needed/);
});

// About 600 MB of JSONL (8 s here): records padded with spaces, so the file is past the string limit but its records
// are small. The whole-file reader failed on it with ERR_STRING_TOO_LONG.
test('readJsonl: a file past Node\'s string limit reads, with memory bounded by the chunk', { timeout: 600_000 }, (t) => {
  const f = join(tmp, 'big.jsonl');
  const pad = ' '.repeat(1 << 20);
  const lines = Math.ceil(constants.MAX_STRING_LENGTH / pad.length) + 64;
  const fd = openSync(f, 'w');
  try {
    for (let i = 0; i < lines; i++) writeSync(fd, `{"i":${i},${pad}"t":"x"}\n`);
  } finally {
    closeSync(fd);
  }
  const before = process.memoryUsage().rss;
  const recs = readJsonl(f);
  const grown = process.memoryUsage().rss - before;
  rmSync(f);
  t.diagnostic(`${lines} lines of 1 MiB read; resident memory grew by ${(grown / 2 ** 20).toFixed(1)} MiB`);
  assert.equal(recs.length, lines);
  assert.deepEqual([recs[0].i, recs[lines - 1].i, recs[lines - 1].t], [0, lines - 1, 'x']);
  assert.ok(grown < 200 * 2 ** 20, `memory grew by ${(grown / 2 ** 20).toFixed(0)} MiB reading a ${lines} MiB file`);
});
