// retain eval on tasks that cannot all be scored, on long prompts and long texts: a failing task does not lose the
// others, --limit bounds whole-text tasks, cut prompts are counted, and a missing template field lists the record's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as torch from '@retain/torch';

torch.setNumThreads(1);
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const TEXT = new URL('../assets/data/tinystories-eval.txt', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-eval-partial-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'a user error prints no stack');
  return r;
}

writeFileSync(join(dir, 'mc.jsonl'), '{"p": "lily went to play in the", "a": 0}\n{"p": "they looked up at the", "a": 1}\n');
writeFileSync(join(dir, 'bad.jsonl'), '{"p": "lily went to play in the", "a": 0}\n{"p": "they looked up at the", "a": 7}\n');

test('one failing task: the others are scored and written, the failure is named, and the exit status is 1', { timeout: 120_000 }, () => {
  writeFileSync(join(dir, 'tasks.yaml'), [
    '- {name: good_mc, kind: multiple_choice, data: mc.jsonl, prompt: "{p}", choices: ["park.", "moon."], answer: a}',
    '- {name: bad_mc, kind: multiple_choice, data: bad.jsonl, prompt: "{p}", choices: ["park.", "moon."], answer: a}',
    `- {name: stories, kind: perplexity, data: ${TEXT}, split: blank_lines}`,
  ].join('\n') + '\n');
  const out = join(dir, 'r.json');
  const r = cli('eval', '--model', MODEL, '--tasks', join(dir, 'tasks.yaml'), '--limit', '5', '-o', out);
  assert.equal(r.status, 1, r.stderr);
  assert.ok(existsSync(out), 'results written');
  const res = JSON.parse(readFileSync(out, 'utf8'));
  assert.deepEqual(Object.keys(res.results), ['good_mc', 'stories']);
  assert.deepEqual(res.failed, { bad_mc: 'record bad:1: answer index 7 is outside 0..1' });
  assert.match(r.stderr, /^retain: failed: bad_mc: record bad:1: answer index 7 is outside 0\.\.1$/m);
  assert.match(r.stderr, /^retain: 1 of 3 task evaluations failed; the other 2 are in .*r\.json$/m);
  assert.match(r.stdout, /^good_mc\tacc\t/m);
});
