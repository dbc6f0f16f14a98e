// The user's data files as Python's stack writes them: Parquet with every common page codec (pyarrow) and Hugging
// Face save_to_disk folders (datasets). The fixtures and rows.json (pyarrow's own reading) are made by
// fixtures/data/make.py in the reference environment; the test reads the committed files, so it needs no Python.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRecords } from '../src/data/readers.js';
import { DataError } from '../src/data/records.js';

const FIX = new URL('./fixtures/data/', import.meta.url).pathname;
const ROWS: Record<string, unknown>[] = JSON.parse(readFileSync(join(FIX, 'rows.json'), 'utf8'));
const tmp = mkdtempSync(join(tmpdir(), 'retain-datafiles-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

/** The records without the id the reader adds. */
const bare = (rs: Record<string, unknown>[]) => rs.map(({ id: _, ...r }) => r);

for (const codec of ['zstd', 'gzip', 'brotli', 'snappy', 'lz4']) {
  test(`parquet: ${codec} pages read as pyarrow reads them`, async () => {
    const rs = await readRecords(join(FIX, `rows.${codec}.parquet`));
    assert.equal(rs.length, 40);
    assert.deepEqual(bare(rs), ROWS);
    assert.equal(rs[7].id, `rows.${codec}:7`);
    assert.equal(typeof rs[3].label, 'number', 'int64 comes back as a number, not a BigInt');
  });
}

test('parquet: a codec without a decompressor is named, with the fix', async () => {
  await assert.rejects(readRecords(join(FIX, 'rows.lzo.parquet')), (e: Error) =>
    e instanceof DataError && /rows\.lzo\.parquet: pages compressed with LZO, which retain cannot decompress; write the file with zstd, gzip, brotli, snappy, lz4 or uncompressed/.test(e.message));
});

test('save_to_disk: a Dataset folder reads its shards in state.json order', async () => {
  const rs = await readRecords(join(FIX, 'saved'));
  assert.deepEqual(bare(rs), ROWS);
  assert.deepEqual([rs[0].id, rs[39].id], ['saved:0', 'saved:39']);
  assert.ok(Array.isArray(rs[0].messages) && (rs[0].messages as unknown[]).length === 2, 'nested lists of structs become arrays of objects');
});

test('save_to_disk: a DatasetDict split folder reads; the dict folder names its splits', async () => {
  assert.deepEqual(bare(await readRecords(join(FIX, 'saved_dict', 'train'))), ROWS.slice(0, 30));
  assert.deepEqual(bare(await readRecords(join(FIX, 'saved_dict', 'test'))), ROWS.slice(30));
  await assert.rejects(readRecords(join(FIX, 'saved_dict')), /saved_dict: a DatasetDict \(splits: train, test\); point the path at one split's folder, e\.g\. .*saved_dict\/train/);
});

test('arrow: one shard file reads by its extension', async () => {
  const rs = await readRecords(join(FIX, 'saved', 'data-00001-of-00002.arrow'));
  assert.deepEqual(bare(rs), ROWS.slice(20));
});

test('save_to_disk: a missing shard, a broken state.json, a plain folder and a damaged shard say what is wrong', async () => {
  const dir = join(tmp, 'ds');
  cpSync(join(FIX, 'saved'), dir, { recursive: true });
  rmSync(join(dir, 'data-00001-of-00002.arrow'));
  await assert.rejects(readRecords(dir), /data-00001-of-00002\.arrow: listed in state\.json but missing; the save_to_disk folder is incomplete/);
  writeFileSync(join(dir, 'state.json'), '{"_data_files": 3}');
  await assert.rejects(readRecords(dir), /state\.json: no _data_files list of \{filename\}/);
  writeFileSync(join(dir, 'state.json'), '{');
  await assert.rejects(readRecords(dir), /state\.json: not readable JSON/);
  await assert.rejects(readRecords(tmp), /is a folder, where a file is needed \(or a Hugging Face save_to_disk folder, with state\.json and data-\*\.arrow\)/);
  writeFileSync(join(tmp, 'bad.arrow'), 'not arrow at all');
  await assert.rejects(readRecords(join(tmp, 'bad.arrow')), (e: Error) => e instanceof DataError && /bad\.arrow: not a readable Arrow IPC file/.test(e.message));
});
