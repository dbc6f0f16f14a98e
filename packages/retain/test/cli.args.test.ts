// The shared option parsers (src/cli/args.ts): bad numbers are refused by name before anything is loaded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { int, nonNegative, nonNegativeInt, num, positiveInt, unitInterval } from '../src/cli/args.js';
import { describeFsError } from '../src/files.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

test('option parsers accept what they promise and refuse the rest with the value in the message', () => {
  assert.equal(num('-2.5'), -2.5);
  assert.throws(() => num(''), /'' is not a number/);
  assert.throws(() => num('1e999'), /is not a number/);
  assert.equal(int('-3'), -3);
  assert.throws(() => int('1.5'), /'1.5' is not an integer/);
  assert.equal(positiveInt('7'), 7);
  assert.throws(() => positiveInt('0'), /'0' must be a positive integer/);
  assert.equal(nonNegativeInt('0'), 0);
  assert.throws(() => nonNegativeInt('-1'), /must be an integer ≥ 0/);
  assert.equal(nonNegative('0.7'), 0.7);
  assert.throws(() => nonNegative('-0.1'), /must be a number ≥ 0/);
  assert.equal(unitInterval('1'), 1);
  assert.throws(() => unitInterval('0'), /must be in \(0, 1\]/);
});

test('retain generate -n -3 and eval --limit 1.5 stop at the option, naming it, with status 1 and no model loaded', () => {
  for (const [args, why] of [
    [['generate', '/nonexistent-model', '-n', '-3'], /option '-n, --max-new-tokens <n>' argument '-3' is invalid\. '-3' must be a positive integer/],
    [['generate', '/nonexistent-model', '--stop', ''], /--stop: an empty stop string would end generation before the first token/],
    [['eval', '--model', '/nonexistent-model', '--tasks', 'tinystories', '--limit', '1.5'], /option '--limit <n>' argument '1\.5' is invalid\. '1\.5' is not an integer/],
  ] as const) {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, why);
    assert.doesNotMatch(r.stderr, /model not found/, 'refused before the model path is looked at');
  }
});

test('filesystem errors name the path and say what the code means', () => {
  const e = Object.assign(new Error("EISDIR: illegal operation on a directory, read"), { code: 'EISDIR', path: '/tmp/x.jsonl', syscall: 'read' });
  assert.equal(describeFsError(e), '/tmp/x.jsonl: is a folder, where a file is needed (read EISDIR)');
  assert.equal(describeFsError(new Error('plain')), null);
  // output_dir that is a file: through the CLI, the path and the meaning instead of "EEXIST: file already exists, mkdir".
  const dir = mkdtempSync(join(tmpdir(), 'retain-fs-'));
  const assets = new URL('../assets/', import.meta.url).pathname;
  writeFileSync(join(dir, 'taken'), 'a file');
  writeFileSync(join(dir, 'cfg.yaml'), JSON.stringify({
    model: { path: join(assets, 'stories260K', 'stories260K.bin') },
    data: { train: { path: join(assets, 'data', 'arith.jsonl'), format: { type: 'prompt_completion' }, max_length: 32, limit: 8 } },
    training: { max_steps: 1, batch_size: 2 },
    output_dir: join(dir, 'taken'),
  }));
  const r = spawnSync(process.execPath, [CLI, 'train', join(dir, 'cfg.yaml')], { encoding: 'utf8' });
  assert.equal(r.status, 1);
  // Refused before anything is written (it was mkdir's EEXIST, worded by describeFsError, before the run checked it).
  assert.match(r.stderr, /retain: output_dir '.*taken' is a file; it must be a folder \(or not exist yet\)/);
  rmSync(dir, { recursive: true, force: true });
  assert.doesNotMatch(r.stderr, /^\s+at /m);
});
