// Resuming over what a crash or a damaged disk left in output_dir: half-written files of the killed process
// (final.tmp-<pid>, latest.json.tmp-<pid>, checkpoint-N.tmp/) are removed, and a checkpoint whose weights hold NaN is
// skipped with a warning in favour of the one before it (resumed, it gave NaN losses blamed on the learning rate).
// The real `retain train` CLI on the embedded stories260K.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { loadLatestCheckpoint, removeStaleTemps, saveCheckpoint } from '../src/train/checkpoint.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const STORIES = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const ARITH = new URL('../assets/data/arith.jsonl', import.meta.url).pathname;
// Above Linux's largest pid (2^22), so never a live process.
const DEAD = 99_999_999;

function train(cfg: string, maxSteps: number) {
  const text = JSON.stringify({
    model: { path: STORIES },
    data: { train: { path: ARITH, format: { type: 'prompt_completion' }, max_length: 64 } },
    training: { max_steps: maxSteps, batch_size: 4, lr: 0.002, seed: 1, threads: 1, save_every: 1, keep_checkpoints: 3 },
    output_dir: 'out',
  });
  writeFileSync(cfg, text);
  return spawnSync(process.execPath, [CLI, 'train', cfg], { encoding: 'utf8', env: { ...process.env, RETAIN_DEBUG: '' }, timeout: 180_000 });
}

function poison(file: string): string {
  const w = torch.io.loadSafetensors(file);
  const key = [...w.keys()].sort()[0];
  torch.noGrad(() => w.get(key)!.fill_(NaN));
  torch.io.saveSafetensors(file, w);
  torch.dispose(w.values());
  return key;
}

test('resume removes the killed run\'s half-written files and skips a checkpoint holding NaN, with a warning', { timeout: 300_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-resume-damage-'));
  const cfg = join(dir, 'train.yaml');
  const out = join(dir, 'out');
  let r = train(cfg, 3);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(out, 'checkpoint-3')), readdirSync(out).join(', '));
  const key = poison(join(out, 'checkpoint-3', 'model.safetensors'));
  // What a kill -9 during savePretrained / writeTextAtomic / saveCheckpoint leaves behind.
  mkdirSync(join(out, `final.tmp-${DEAD}`));
  writeFileSync(join(out, `final.tmp-${DEAD}`, 'model.safetensors'), 'torn');
  writeFileSync(join(out, `latest.json.tmp-${DEAD}`), '{"checkpoint": "chec');
  writeFileSync(join(out, `metrics.jsonl.tmp-${DEAD}`), '');
  mkdirSync(join(out, 'checkpoint-9.tmp'));
  r = train(cfg, 4);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`resume: skipped checkpoint-3: checkpoint .*checkpoint-3: weight '${key.replace(/\./g, '\\.')}' holds NaN or Inf`));
  assert.match(r.stderr, new RegExp(`removed what an interrupted run left half-written: .*final\\.tmp-${DEAD}`));
  const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.equal(summary.resumed_from, 2);
  assert.ok(Number.isFinite(summary.final_loss), String(summary.final_loss));
  const left = readdirSync(out);
  assert.deepEqual(left.filter((f) => /\.tmp/.test(f)), [], left.join(', '));
  rmSync(dir, { recursive: true, force: true });
});

test('removeStaleTemps leaves the files of a live process and everything that is not a temporary', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-stale-'));
  const names = [`final.tmp-${DEAD}`, `final.old-${DEAD}`, `latest.json.tmp-${DEAD}`, `monitor.jsonl.tmp-${DEAD}`, 'checkpoint-7.tmp', `final.tmp-${process.ppid}`, 'final', 'latest.json', 'checkpoint-7', 'notes.tmp-1'];
  for (const n of names) writeFileSync(join(dir, n), 'x');
  assert.deepEqual(removeStaleTemps(dir).sort(), [`final.old-${DEAD}`, `final.tmp-${DEAD}`, `latest.json.tmp-${DEAD}`, `monitor.jsonl.tmp-${DEAD}`, 'checkpoint-7.tmp'].sort());
  assert.deepEqual(readdirSync(dir).sort(), [`final.tmp-${process.ppid}`, 'final', 'latest.json', 'checkpoint-7', 'notes.tmp-1'].sort());
  rmSync(dir, { recursive: true, force: true });
});

test('loadLatestCheckpoint falls back past a checkpoint whose weights hold Inf, and says so', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-nanckpt-'));
  const state = () => ({ optimizer: {}, loader: { epoch: 0, cursor: 0 }, rng: {} });
  saveCheckpoint(dir, { step: 1, model: new Map([['w', torch.tensor([1, 2])]]), state: state() });
  saveCheckpoint(dir, { step: 2, model: new Map([['w', torch.tensor([3, 4])]]), state: state() });
  torch.io.saveSafetensors(join(dir, 'checkpoint-2', 'model.safetensors'), { w: torch.tensor([3, Infinity]) });
  const warnings: string[] = [];
  const found = loadLatestCheckpoint(dir, (m) => warnings.push(m));
  assert.equal(found?.parts.step, 1);
  assert.deepEqual(found!.parts.model.get('w')!.toArray(), [1, 2]);
  assert.deepEqual(warnings, [`skipped checkpoint-2: checkpoint ${join(dir, 'checkpoint-2')}: weight 'w' holds NaN or Inf`]);
  rmSync(dir, { recursive: true, force: true });
});
