// Mixed training (docs/METHODS.md §2): m:n batches have exactly that composition every step and the target set is traversed
// once per epoch; probabilistic shares follow the probabilities and reshuffle; shares of samples and tokens are logged;
// resume is exact; `retain train` loads the general data from its spec.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { train } from '../src/train/trainer.js';
import { checkComposition } from '../src/train/hooks.js';
import { Mixing, parseRatio, ratioSplit } from '../src/methods/mixing.js';
import { constant, sameTensors, snapshot, spyLoss, tinyLlama, tokenExamples } from './methods-a.fixtures.js';
import { needShared, sharedPath } from './helpers.js';

test('m:n splits a fixed batch: 256 at 1:1 is 128+128, at 15:1 240+16; too small a batch is refused', () => {
  assert.deepEqual(ratioSplit(256, 1, 1), [128, 128]);
  assert.deepEqual(ratioSplit(256, 15, 1), [240, 16]);
  assert.deepEqual(ratioSplit(256, 3, 1), [192, 64]);
  assert.deepEqual(ratioSplit(8, 1, 0), [8, 0]);
  assert.throws(() => ratioSplit(8, 15, 1), /a batch of 8 cannot hold 15:1/);
  assert.deepEqual(parseRatio('7:1'), [7, 1]);
  assert.throws(() => parseRatio('0:1'), /ratio must be 'm:n'/);
  assert.throws(() => new Mixing({ ratio: '1:1' }), /option 'general' is required/);
  assert.throws(() => new Mixing({ ratio: '1:1', general: [], probabilities: { target: 1 } }), /probabilities apply to mode: probabilistic/);
  assert.throws(() => checkComposition([new Mixing({ ratio: '1:1', general: [] }), new Mixing({ ratio: '1:1', general: [] })]), /listed twice/);
  assert.throws(() => checkComposition([new Mixing({ ratio: '1:1', general: [] }), { name: 'replay', roles: ['batch-composition'] }]), /both take the batch-composition role/);
});

test('mixing 3:1: every step is exactly 6 target + 2 general, the target set once per epoch in a new order, the general set cycling reshuffled; shares logged', async () => {
  const target = tokenExamples(24, 1);
  const general = tokenExamples(7, 2, 'general', 'g');
  const model = tinyLlama(3);
  const spy = spyLoss();
  const r = await train({ model, optimizer: { kind: 'sgd' }, examples: target, lossFn: spy.fn, batchSize: 8, epochs: 3, schedule: constant(0.05), methods: [new Mixing({ ratio: '3:1', general })], progress: false, seed: 4 });
  assert.equal(r.steps, 12, 'an epoch is 24 / 6 = 4 steps');
  assert.equal(spy.batches.length, 12);
  for (const [i, b] of spy.batches.entries()) {
    assert.equal(b.sources.filter((s) => s === 'train').length, 6, `step ${i + 1}: target count`);
    assert.equal(b.sources.filter((s) => s === 'general').length, 2, `step ${i + 1}: general count`);
  }
  const epochs = [0, 1, 2].map((e) => spy.batches.slice(4 * e, 4 * e + 4).flatMap((b) => b.ids.filter((_, k) => b.sources[k] === 'train')));
  for (const ids of epochs) assert.deepEqual([...ids].sort(), target.map((e) => e.id).sort(), 'each target example once per epoch');
  assert.notDeepEqual(epochs[0], epochs[1], 'a new order each epoch');
  const gen = spy.batches.flatMap((b) => b.ids.filter((_, k) => b.sources[k] === 'general'));
  assert.deepEqual(gen.slice(0, 7).sort(), general.map((e) => e.id).sort(), 'the first pass over the general set');
  assert.deepEqual(gen.slice(7, 14).sort(), general.map((e) => e.id).sort(), 'the second pass');
  assert.notDeepEqual(gen.slice(0, 7), gen.slice(7, 14), 'reshuffled on each pass');
  const logs = r.history.filter((h) => h.kind === 'mixing' && h.sample_share_train !== undefined);
  assert.equal(logs.length, 12);
  logs.forEach((l, i) => {
    assert.equal(l.sample_share_train, 0.75);
    assert.equal(l.sample_share_general, 0.25);
    const b = spy.batches[i];
    const tt = b.tokens.filter((_, k) => b.sources[k] === 'train').reduce((a, x) => a + x, 0);
    const all = b.tokens.reduce((a, x) => a + x, 0);
    assert.equal(l.tokens_train, tt);
    assert.ok(Math.abs((l.token_share_train as number) - tt / all) < 1e-6, 'token share');
  });
  model.dispose();
});

test('mixing 2:1 with a target set that does not fill its last batch: still exactly 4 target + 2 general every step, the short batch topped up from the next epoch', async () => {
  const target = tokenExamples(9, 21);
  const general = tokenExamples(5, 22, 'general', 'g');
  const model = tinyLlama(3);
  const spy = spyLoss();
  // 9 target examples in loader batches of 4: 4 + 4 + 1 per epoch.
  const r = await train({ model, optimizer: { kind: 'sgd' }, examples: target, lossFn: spy.fn, batchSize: 6, epochs: 2, schedule: constant(0.05), methods: [new Mixing({ ratio: '2:1', general })], progress: false, seed: 4 });
  assert.equal(r.steps, 6);
  for (const [i, b] of spy.batches.entries()) {
    assert.deepEqual([b.sources.filter((s) => s === 'train').length, b.sources.filter((s) => s === 'general').length], [4, 2], `step ${i + 1}: target + general`);
  }
  const tIds = spy.batches.flatMap((b) => b.ids.filter((_, k) => b.sources[k] === 'train'));
  assert.deepEqual(tIds.slice(0, 9).sort(), target.map((e) => e.id).sort(), 'the first epoch: every target example once');
  assert.deepEqual(tIds.slice(9, 18).sort(), target.map((e) => e.id).sort(), 'the second epoch: every target example once');
  model.dispose();
});

test('probabilistic mixing: shares follow the probabilities over many steps, each target example once per loader epoch, general sources reshuffle', async () => {
  const target = tokenExamples(12, 5);
  const ga = tokenExamples(5, 6, 'books', 'b');
  const gb = tokenExamples(4, 7, 'code', 'c');
  const mix = new Mixing({ mode: 'probabilistic', probabilities: { target: 0.6, books: 0.3, code: 0.1 }, general: [{ examples: ga, name: 'books' }, { examples: gb, name: 'code' }], seed: 9 });
  const model = tinyLlama(8);
  const spy = spyLoss();
  const r = await train({ model, optimizer: { kind: 'sgd' }, examples: target, lossFn: spy.fn, batchSize: 10, maxSteps: 150, schedule: constant(0.01), methods: [mix], progress: false, seed: 2, logEvery: 1000 });
  assert.equal(mix.targetPerBatch, 6, 'the loader yields round(0.6 × 10) target examples at a time');
  const slots = spy.batches.flatMap((b) => b.sources);
  assert.equal(slots.length, 1500);
  const share = (s: string) => slots.filter((x) => x === s).length / slots.length;
  assert.ok(Math.abs(share('train') - 0.6) < 0.04, `target share ${share('train')}`);
  assert.ok(Math.abs(share('books') - 0.3) < 0.04, `books share ${share('books')}`);
  assert.ok(Math.abs(share('code') - 0.1) < 0.03, `code share ${share('code')}`);
  const perStep = spy.batches.map((b) => b.sources.filter((s) => s === 'train').length);
  assert.ok(new Set(perStep).size > 3, 'the composition varies from step to step');
  const tIds = spy.batches.flatMap((b) => b.ids.filter((_, k) => b.sources[k] === 'train'));
  for (let e = 0; e < Math.floor(tIds.length / 12); e++) assert.deepEqual(tIds.slice(12 * e, 12 * e + 12).sort(), target.map((x) => x.id).sort(), `loader epoch ${e}`);
  const books = spy.batches.flatMap((b) => b.ids.filter((_, k) => b.sources[k] === 'books'));
  assert.deepEqual(books.slice(0, 5).sort(), ga.map((x) => x.id).sort());
  const passes = new Set(Array.from({ length: 6 }, (_, p) => books.slice(5 * p, 5 * p + 5).join()));
  assert.ok(passes.size > 1, 'a new shuffle on each pass');
  const logged = r.history.filter((h) => h.kind === 'mixing' && h.samples_train !== undefined);
  assert.equal(logged.length, 150, 'shares are logged every step');
  assert.equal(logged.reduce((a, l) => a + (l.samples_code as number), 0), slots.filter((x) => x === 'code').length);
  model.dispose();
});

test('mixing resumes exactly: the same batches and the same weights as an uninterrupted run (both modes)', async () => {
  const target = tokenExamples(10, 11);
  const general = tokenExamples(6, 12, 'general', 'g');
  for (const opts of [{ ratio: '2:1', general }, { mode: 'probabilistic', probabilities: { target: 0.5, general: 0.5 }, general }]) {
    const run = async (dir: string, maxSteps: number) => {
      const model = tinyLlama(9);
      const spy = spyLoss();
      const r = await train({ model, optimizer: { kind: 'adamw' }, examples: target, lossFn: spy.fn, batchSize: 6, maxSteps, schedule: constant(0.01), methods: [new Mixing(opts)], progress: false, outputDir: dir, saveEvery: 3, resume: true, seed: 1 });
      const w = snapshot(model);
      model.dispose();
      return { r, w, spy };
    };
    const da = mkdtempSync(join(tmpdir(), 'retain-mix-'));
    const db = mkdtempSync(join(tmpdir(), 'retain-mix-'));
    const a = await run(da, 8);
    const b1 = await run(db, 5);
    const b2 = await run(db, 8);
    assert.equal(b2.r.resumedFrom, 5);
    assert.deepEqual([...b1.spy.batches, ...b2.spy.batches].map((b) => b.ids), a.spy.batches.map((b) => b.ids), `${JSON.stringify(opts.ratio ?? opts.mode)}: batches`);
    assert.deepEqual(sameTensors(a.w, b2.w), [], 'weights');
    rmSync(da, { recursive: true, force: true });
    rmSync(db, { recursive: true, force: true });
  }
});

const skip = needShared('models', 'stories260K', 'stories260K.bin');
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

test('retain train with mixing 1:1 and FLOW: the general set loads from its spec, every step is half general, FLOW weighs only the target', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-mix-cli-'));
  const rows = Array.from({ length: 8 }, (_, i) => ({ prompt: `Ben has ${i} toys. Ben has`, completion: ` ${i} toys.` }));
  writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
  const stories = ['Once upon a time there was a little cat.', 'The sun was warm and the birds sang.', 'Tim liked to play in the park with his dog.'];
  writeFileSync(join(dir, 'general.jsonl'), stories.map((text) => JSON.stringify({ text })).join('\n'));
  const cfg = {
    model: { path: sharedPath('models', 'stories260K', 'stories260K.bin') },
    data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 48 } },
    training: { max_steps: 4, batch_size: 4, lr: 0.002, seed: 1, threads: 1 },
    output_dir: 'out',
    methods: ['flow', { name: 'mixing', ratio: '1:1', general: { path: join(dir, 'general.jsonl'), format: { type: 'text' }, name: 'stories', max_length: 48 } }],
  };
  writeFileSync(join(dir, 'train.yaml'), JSON.stringify(cfg));
  const r = spawnSync(process.execPath, [CLI, 'train', join(dir, 'train.yaml')], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const lines = readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const mix = lines.filter((l) => l.kind === 'mixing' && l.samples_train !== undefined);
  assert.equal(mix.length, 4);
  for (const l of mix) {
    assert.equal(l.samples_train, 2);
    assert.equal(l.samples_stories, 2);
    assert.ok(l.token_share_stories > 0 && l.token_share_stories < 1);
  }
  assert.equal(lines.find((l) => l.kind === 'flow').flow_samples, 8, 'FLOW scores the training set only');
  rmSync(dir, { recursive: true, force: true });
});
