// End to end: the real `retain train` CLI on the real stories260K checkpoint.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { needShared, sharedPath } from './helpers.js';
import { eventStep, readRecords } from '../src/train/tfevents.js';

const skip = needShared('models', 'stories260K', 'stories260K.bin');
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

function makeRun(extra: Record<string, unknown> = {}, training: Record<string, unknown> = {}): { dir: string; cfg: string } {
  const dir = mkdtempSync(join(tmpdir(), 'retain-e2e-'));
  const rows = Array.from({ length: 24 }, (_, i) => ({ prompt: `Tom had ${i % 7} apples and got ${(i * 3) % 5} more. Now Tom has`, completion: ` ${(i % 7) + ((i * 3) % 5)} apples.` }));
  writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
  const cfg = {
    model: { path: sharedPath('models', 'stories260K', 'stories260K.bin') },
    data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 64 } },
    training: { max_steps: 6, batch_size: 4, lr: 0.002, schedule: 'cosine', warmup_steps: 1, seed: 1, threads: 1, save_every: 2, ...training },
    output_dir: 'out',
    ...extra,
  };
  const path = join(dir, 'train.yaml');
  writeFileSync(path, JSON.stringify(cfg)); // JSON is YAML
  return { dir, cfg: path };
}

function retain(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
}

function losses(dir: string): number[] {
  return readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.loss !== undefined).map((r) => r.loss);
}

/** The run's TensorBoard event files, and the steps of the events in each (past the file-version header). */
function eventSteps(dir: string): number[][] {
  return readdirSync(join(dir, 'out')).filter((f) => f.startsWith('events.out.tfevents.')).map((f) => readRecords(readFileSync(join(dir, 'out', f))).slice(1).map(eventStep));
}

/** metrics.csv's step and loss columns (the others hold timings). */
function csvLosses(dir: string): string[] {
  const [head, ...rows] = readFileSync(join(dir, 'out', 'metrics.csv'), 'utf8').trimEnd().split('\n').map((r) => r.split(','));
  const [s, l] = [head.indexOf('step'), head.indexOf('loss')];
  return rows.map((r) => `${r[s]}:${r[l]}`);
}

test('retain train fine-tunes stories260K; the loss values are pinned', { skip }, () => {
  const { dir, cfg } = makeRun();
  const r = retain(['train', cfg]);
  assert.equal(r.status, 0, r.stderr);
  const l = losses(dir);
  assert.equal(l.length, 6);
  // Pinned from a run of this test (Debian libtorch 1.13, OpenBLAS); the tolerance allows BLAS summation order.
  const pinned = [5.419378, 5.616803, 1.949649, 1.255078, 1.121021, 0.977873];
  l.forEach((v, i) => assert.ok(Math.abs(v - pinned[i]) < 2e-3, `step ${i + 1}: loss ${v}, pinned ${pinned[i]}`));
  assert.ok(l[5] < l[0], 'the loss falls');
  assert.ok(existsSync(join(dir, 'out', 'final', 'model.safetensors')));
  assert.ok(existsSync(join(dir, 'out', 'final', 'config.json')));
  // The saved HF directory loads back and generates.
  const g = retain(['generate', join(dir, 'out', 'final'), '-p', 'Tom had 2 apples', '-n', '8']);
  assert.equal(g.status, 0, g.stderr);
  assert.match(g.stdout, /^Tom had 2 apples/);
  rmSync(dir, { recursive: true, force: true });
});

test('a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted run', { skip }, () => {
  const a = makeRun();
  assert.equal(retain(['train', a.cfg]).status, 0);
  const b = makeRun();
  const killed = retain(['train', b.cfg], { RETAIN_KILL_AT_STEP: '3' });
  assert.equal(killed.signal, 'SIGKILL');
  assert.deepEqual(readdirSync(join(b.dir, 'out')).filter((f) => f.startsWith('checkpoint-')), ['checkpoint-2']);
  const resumed = retain(['train', b.cfg]);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /"resumed_from":2/);
  const wa = readFileSync(join(a.dir, 'out', 'final', 'model.safetensors'));
  const wb = readFileSync(join(b.dir, 'out', 'final', 'model.safetensors'));
  assert.ok(wa.equals(wb), 'final weights differ');
  // The killed run's log of step 3 (after checkpoint-2) is dropped on resume: one line per step, as uninterrupted.
  assert.deepEqual(losses(b.dir), losses(a.dir));
  // So are its TensorBoard events and CSV row: one event file, one event and one row per step.
  assert.deepEqual(eventSteps(b.dir), [[1, 2, 3, 4, 5, 6]]);
  assert.deepEqual(eventSteps(a.dir), eventSteps(b.dir));
  assert.deepEqual(csvLosses(b.dir), csvLosses(a.dir));
  assert.equal(csvLosses(a.dir).length, 6);
  rmSync(a.dir, { recursive: true, force: true });
  rmSync(b.dir, { recursive: true, force: true });
});

test('a NaN loss stops the run with a message and writes no weights', { skip }, () => {
  const { dir, cfg } = makeRun({}, { lr: 1e20, clip_grad_norm: null, warmup_steps: 0, schedule: 'constant' });
  const r = retain(['train', cfg]);
  assert.equal(r.status, 1);
  // Either the loss is already non-finite, or (as here: step 2's update diverges after a finite loss) the weights are
  // when the checkpoint after step 2 is due.
  assert.match(r.stderr, /retain: (loss became (NaN|Infinity) at step \d+|weight '[\w.]+' became NaN or Inf by step \d+); training stopped and no checkpoint was written from this state/);
  assert.ok(!existsSync(join(dir, 'out', 'final')), 'no final model');
  // Any checkpoint left holds finite weights only.
  for (const c of readdirSync(join(dir, 'out')).filter((f) => /^checkpoint-\d+$/.test(f))) {
    const w = torch.io.loadSafetensors(join(dir, 'out', c, 'model.safetensors'));
    for (const [k, t] of w) assert.equal(t.isfinite().all().item(), 1, `${c}: ${k} is not finite`);
    torch.dispose(w.values());
  }
  rmSync(dir, { recursive: true, force: true });
});

test('config errors name the key and the allowed values', () => {
  const { dir, cfg } = makeRun({ trianing: {} }, { schedule: 'cosin', lr: 'fast' });
  const r = retain(['train', cfg]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /unknown key 'trianing'/);
  assert.match(r.stderr, /training\.schedule: 'cosin' is not allowed; use one of 'constant', 'linear', 'cosine'/);
  assert.match(r.stderr, /training\.lr: Expected number, received string/);
  rmSync(dir, { recursive: true, force: true });
});

test('pickle checkpoints are refused with a conversion hint', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-pkl-'));
  // torch.save's zip container (a pickle inside); the loader goes by these bytes, not by the name.
  writeFileSync(join(dir, 'pytorch_model.bin'), Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(60)]));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'llama' }));
  const r = retain(['inspect', dir]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /pytorch_model\.bin is a PyTorch pickle checkpoint.*Convert it to safetensors/);
  rmSync(dir, { recursive: true, force: true });
});

test('saveCheckpoint refuses weights holding NaN or Inf before it writes anything, and keeps the earlier checkpoint', async () => {
  const { saveCheckpoint, listCheckpoints } = await import('../src/train/checkpoint.js');
  const dir = mkdtempSync(join(tmpdir(), 'retain-ckpt-'));
  const w = torch.tensor([1.5, 2, 3]);
  saveCheckpoint(dir, { step: 1, model: new Map([['w', w]]), state: {} });
  torch.noGrad(() => w.fill_(Number.POSITIVE_INFINITY));
  assert.throws(() => saveCheckpoint(dir, { step: 2, model: new Map([['w', w]]), state: {} }), /refusing to save checkpoint checkpoint-2: weight 'w' holds NaN or Inf/);
  assert.deepEqual(listCheckpoints(dir), [1]);
  assert.deepEqual(readdirSync(dir).sort(), ['checkpoint-1', 'latest.json'], 'no half-written folder');
  w.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test('resume: false moves an earlier run aside instead of mixing with it; a damaged newest checkpoint falls back to the one before, with a warning', { skip }, () => {
  const { dir, cfg } = makeRun({}, { max_steps: 3, save_every: 1 });
  assert.equal(retain(['train', cfg]).status, 0);
  const out = join(dir, 'out');
  const first = losses(dir);
  const [eventsFile] = readdirSync(out).filter((f) => f.startsWith('events.out.tfevents.'));
  // A fresh, shorter run in the same folder: the earlier run's checkpoint-3 must not be resumed by a later rerun.
  const cfgText = readFileSync(cfg, 'utf8');
  writeFileSync(cfg, JSON.stringify({ ...JSON.parse(cfgText), resume: false, training: { ...JSON.parse(cfgText).training, max_steps: 2 } }));
  const fresh = retain(['train', cfg]);
  assert.equal(fresh.status, 0, fresh.stderr);
  assert.match(fresh.stderr, /resume: false — the previous run's checkpoints, logs and final model in .* were moved to .*previous-/);
  const aside = readdirSync(out).filter((f) => f.startsWith('previous-'));
  assert.equal(aside.length, 1);
  assert.deepEqual(readdirSync(join(out, aside[0])).sort(), ['checkpoint-2', 'checkpoint-3', eventsFile, 'final', 'latest.json', 'metrics.csv', 'metrics.jsonl']);
  assert.deepEqual(losses(dir), first.slice(0, 2), 'the new log holds the new run only (same seed: the same first two steps)');
  assert.deepEqual(readdirSync(out).filter((f) => f.startsWith('checkpoint-')).sort(), ['checkpoint-1', 'checkpoint-2']);

  // Damage the newest checkpoint two ways: resume falls back to checkpoint-1 and says why.
  writeFileSync(cfg, JSON.stringify({ ...JSON.parse(cfgText), training: { ...JSON.parse(cfgText).training, max_steps: 3 } }));
  writeFileSync(join(out, 'checkpoint-2', 'state.json'), '{}');
  const r1 = retain(['train', cfg]);
  assert.equal(r1.status, 0, r1.stderr);
  assert.match(r1.stderr, /resume: skipped checkpoint-2: checkpoint .*checkpoint-2: state\.json is not a training state written by retain \(no optimizer, loader, rng\)/);
  assert.match(r1.stdout, /"resumed_from":1/);
  const st = join(out, 'checkpoint-3', 'model.safetensors');
  writeFileSync(st, readFileSync(st).subarray(0, 100));
  const r2 = retain(['train', cfg]);
  assert.equal(r2.status, 0, r2.stderr);
  assert.match(r2.stderr, /resume: skipped checkpoint-3: .*model\.safetensors/);
  assert.match(r2.stdout, /"resumed_from":2/);
  // With every checkpoint damaged the run stops, naming each, rather than silently starting over.
  for (const c of readdirSync(out).filter((f) => /^checkpoint-\d+$/.test(f))) writeFileSync(join(out, c, 'state.json'), 'not json');
  const r3 = retain(['train', cfg]);
  assert.equal(r3.status, 1);
  assert.match(r3.stderr, /cannot resume in .*out: no checkpoint there loads:\n {2}checkpoint-3: .*state\.json is not valid JSON/);
  assert.match(r3.stderr, /set resume: false to start over/);
  rmSync(dir, { recursive: true, force: true });
});

test('max_length past the model\'s context is cut to it, with a notice, instead of asking for a huge attention mask', { skip }, () => {
  const { dir, cfg } = makeRun({}, { max_steps: 1, save_every: null, batch_size: 1 });
  const long = Array.from({ length: 400 }, (_, i) => `Once upon a time a cat called ${i} played.`).join(' ');
  writeFileSync(join(dir, 'long.jsonl'), JSON.stringify({ text: long }) + '\n');
  const c = JSON.parse(readFileSync(cfg, 'utf8'));
  writeFileSync(cfg, JSON.stringify({ ...c, data: { train: { path: 'long.jsonl', format: { type: 'text' }, max_length: 100000 } } }));
  const r = retain(['train', cfg]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /retain: train: max_length 100000 is longer than the model's context \(max_position_embeddings 512\); using 512/);
  const [line] = readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.loss !== undefined);
  assert.equal(line.tokens, 511, 'one 512-token window: 511 predicted tokens');
  rmSync(dir, { recursive: true, force: true });
});

test('empty data and data too short to train on are told apart, each with what to change', { skip }, () => {
  const { dir, cfg } = makeRun({}, { max_steps: 1, save_every: null });
  const c = JSON.parse(readFileSync(cfg, 'utf8'));
  writeFileSync(join(dir, 'empty.jsonl'), '');
  writeFileSync(cfg, JSON.stringify({ ...c, data: { train: { path: 'empty.jsonl', format: { type: 'text' } } } }));
  const e = retain(['train', cfg]);
  assert.equal(e.status, 1);
  assert.match(e.stderr, /empty\.jsonl: holds no records \(train data\)/);
  writeFileSync(cfg, JSON.stringify({ ...c, data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 1 } } }));
  const s = retain(['train', cfg]);
  assert.equal(s.status, 1);
  assert.match(s.stderr, /train\.jsonl: no usable examples: each needs at least 2 tokens to train on within max_length 1 \(raise max_length/);
  rmSync(dir, { recursive: true, force: true });
});

test('a device this machine lacks, or float16 on CPU, is refused before the model loads, with what to use instead', { skip: torch.cudaDeviceCount() > 0 ? 'this machine has CUDA' : false }, () => {
  const { dir, cfg } = makeRun({}, { max_steps: 1 });
  const c = JSON.parse(readFileSync(cfg, 'utf8'));
  writeFileSync(cfg, JSON.stringify({ ...c, model: { ...c.model, device: 'cuda:1' } }));
  const r = retain(['train', cfg]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /model\.device is cuda:1, but this build of @retain\/torch sees no CUDA device .*use device cpu/);
  writeFileSync(cfg, JSON.stringify({ ...c, model: { ...c.model, dtype: 'float16' } }));
  const h = retain(['train', cfg]);
  assert.equal(h.status, 1);
  assert.match(h.stderr, /model\.dtype float16 with model\.device cpu: .*use dtype bfloat16 or float32 on CPU/);
  assert.doesNotMatch(h.stderr + r.stderr, /^\s+at /m);
  rmSync(dir, { recursive: true, force: true });
});
