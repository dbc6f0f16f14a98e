// retain synth on real models: the embedded stories260K (llama2.c, TinyStories) and, when ../shared has it, the
// char-LSTM. Determinism, exact resume, deduplication and filters in the pipeline, consensus scoring, Magpie on a
// template, diverse selection, and training with the synthesised set as mixing's general source and EWC's Fisher data.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as torch from '@retain/torch';
import { synthesize, type SynthOptions } from '../src/synth/index.js';
import { synthModel } from '../src/synth/lm.js';
import { answerLogProb, rankAnswers } from '../src/synth/consensus.js';
import { loadPretrained } from '../src/models/hub.js';
import { loadTrainConfig, parseTrainConfig } from '../src/config.js';
import { runTraining } from '../src/train/run.js';
import { readRecords } from '../src/data/readers.js';
import { needShared, sharedPath } from './helpers.js';

torch.setNumThreads(1);
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const ARITH = new URL('../assets/data/arith.jsonl', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-synth-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const base: Omit<SynthOptions, 'out' | 'count'> = { model: MODEL, maxNewTokens: 32, batchSize: 8, progress: false };
const read = (p: string) => readFileSync(p, 'utf8');
const lines = (p: string) => read(p).trim().split('\n').map((l) => JSON.parse(l));

test('bos sampling on stories260K: TinyStories-like text, every record with seed and index; the same seed writes the same file, another seed another', async () => {
  const a = await synthesize({ ...base, out: join(dir, 'a.jsonl'), count: 12, seed: 7 });
  const b = await synthesize({ ...base, out: join(dir, 'b.jsonl'), count: 12, seed: 7 });
  const c = await synthesize({ ...base, out: join(dir, 'c.jsonl'), count: 12, seed: 8 });
  assert.equal(a.accepted, 12);
  assert.equal(read(join(dir, 'a.jsonl')), read(join(dir, 'b.jsonl')));
  assert.notEqual(read(join(dir, 'a.jsonl')), read(join(dir, 'c.jsonl')));
  const recs = lines(join(dir, 'a.jsonl'));
  assert.deepEqual(recs.map((r) => r.synth.index), recs.map((_, i) => i), 'no candidate was dropped, indices are 0..11');
  for (const r of recs) {
    assert.equal(r.synth.seed, 7);
    assert.equal(r.id, `synth-${r.synth.index}`);
    assert.ok(r.text.length > 20 && r.synth.tokens > 5);
    assert.ok(r.synth.loss > 0 && r.synth.loss < 4, `loss ${r.synth.loss}`);
  }
  // The model's own samples are stories: common TinyStories words occur throughout.
  const words = recs.map((r) => r.text).join(' ').toLowerCase();
  for (const w of [' the ', ' was ', ' she ']) assert.ok(words.includes(w), w);
  // Readable by the data layer as format text.
  assert.equal((await readRecords(join(dir, 'a.jsonl'))).length, 12);
});

test('resume: a run stopped part-way (and a torn last line) continues to the same file as one uninterrupted run', async () => {
  const opts = { ...base, count: 20, seed: 3, filters: { maxLoss: 1.0 } };
  const whole = await synthesize({ ...opts, out: join(dir, 'whole.jsonl') });
  assert.ok(Object.values(whole.rejected).reduce((x, y) => x + y, 0) > 0, 'some candidates were filtered, so resume must skip them the same way');
  const part = join(dir, 'part.jsonl');
  const first = await synthesize({ ...opts, out: part, count: 7 });
  assert.equal(first.accepted, 7);
  // Seven records end inside a round of 8 candidates; the rerun regenerates that round and skips what it wrote.
  appendFileSync(part, '{"id":"synth-99","text":"half a li');
  const second = await synthesize({ ...opts, out: part });
  assert.equal(second.added, 13);
  assert.equal(read(part), read(join(dir, 'whole.jsonl')));
  // Asking again for the same count adds nothing; other sampling settings are refused.
  assert.equal((await synthesize({ ...opts, out: part })).added, 0);
  await assert.rejects(synthesize({ ...opts, out: part, temperature: 0.5 }), /refusing to resume .*sampling/);
});

test('deduplication in the pipeline: greedy decoding repeats one sample, and only the first copy is kept', async () => {
  const r = await synthesize({ ...base, out: join(dir, 'greedy.jsonl'), count: 3, temperature: 0, maxAttempts: 16 });
  assert.equal(r.accepted, 1);
  assert.deepEqual(r.rejected, { duplicate: 15 });
  const off = await synthesize({ ...base, out: join(dir, 'greedy-nodedup.jsonl'), count: 3, temperature: 0, dedup: false });
  assert.equal(off.accepted, 3);
  assert.equal(new Set(off.records.map((x) => x.text)).size, 1, 'the injected duplicates are really identical');
});

test('filters in the pipeline: loss bounds and lengths hold for every kept record and drops are counted by reason', async () => {
  const r = await synthesize({ ...base, out: join(dir, 'filtered.jsonl'), count: 10, seed: 1, filters: { maxLoss: 1.0, minTokens: 20, maxTokens: 40 } });
  assert.equal(r.accepted, 10);
  assert.ok((r.rejected.loss_high ?? 0) > 0, JSON.stringify(r.rejected));
  for (const x of r.records) {
    assert.ok(x.synth.loss <= 1.0);
    assert.ok(x.synth.tokens >= 20 && x.synth.tokens <= 40);
  }
  // A bound nothing meets gives up after maxAttempts, having written nothing.
  const none = await synthesize({ ...base, out: join(dir, 'none.jsonl'), count: 2, filters: { maxLoss: 0.01 }, maxAttempts: 8 });
  assert.equal(none.accepted, 0);
  assert.equal(none.rejected.loss_high, 8);
});

test('consensus scoring: the answer the model finds more likely scores higher and is ranked first', async () => {
  const p = await loadPretrained(MODEL);
  p.model.eval();
  const m = synthModel(p);
  const task = { prompt: 'Once upon a time, there was a little girl named Lily. She loved to play', base: 'Once upon a time, there was a little girl named Lily. She loved to play', lead: ' ' };
  const good = 'with her toys in the park.';
  const bad = 'quantum xylophone zebra 42 vortex kilogram.';
  const lpGood = answerLogProb(m, task, good);
  const lpBad = answerLogProb(m, task, bad);
  assert.ok(lpGood > lpBad + 2, `log-probs ${lpGood} vs ${lpBad}`);
  const ranked = rankAnswers(task, [{ model: 'b', answer: bad }, { model: 'a', answer: good }], [m, m]);
  assert.equal(ranked[0].answer, good);
  assert.ok(Math.abs(ranked[0].score - (1 + 4 * Math.exp(lpGood))) < 1e-9, 'a base scorer maps the likelihood onto 1..5');
  assert.ok(ranked[1].score < ranked[0].score && ranked[1].score >= 1);
  p.model.dispose();
});

const TEMPLATE = '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}';

test('magpie on a chat template: the model writes one-line user turns and answers them; answer models score and a threshold drops prompts', async () => {
  const r = await synthesize({ ...base, out: join(dir, 'magpie.jsonl'), count: 4, mode: 'magpie', chatTemplate: TEMPLATE });
  assert.equal(r.accepted, 4);
  for (const x of r.records) {
    const msgs = x.messages as { role: string; content: string }[];
    assert.deepEqual(msgs.map((m) => m.role), ['user', 'assistant']);
    assert.ok(msgs[0].content.length > 0 && !msgs[0].content.includes('\n'), 'the instruction stops where the template ends a user turn');
    assert.ok(msgs[1].content.length > 0);
  }
  const scored = await synthesize({ ...base, out: join(dir, 'magpie-scored.jsonl'), count: 3, mode: 'magpie', chatTemplate: TEMPLATE, answerModels: [MODEL], minScore: 1 });
  for (const x of scored.records) assert.ok(x.synth.score! > 1 && x.synth.score! <= 5 && x.synth.answer_model === MODEL);
  const strict = await synthesize({ ...base, out: join(dir, 'magpie-strict.jsonl'), count: 2, mode: 'magpie', chatTemplate: TEMPLATE, answerModels: [MODEL], minScore: 4.99, maxAttempts: 8 });
  assert.equal(strict.accepted, 0);
  assert.equal(strict.rejected.low_score, 8);
  await assert.rejects(synthesize({ ...base, out: join(dir, 'x.jsonl'), count: 1, mode: 'magpie' }), /magpie needs a chat template/);
});

test('fewshot: documents continue a prompt of k demonstrations and come back in the demonstrations\' field', async () => {
  const demos = (await readRecords(new URL('../assets/data/tinystories-replay.txt', import.meta.url).pathname)).slice(0, 6).map((r) => ({ text: String(r.text) }));
  const r = await synthesize({ ...base, out: join(dir, 'fewshot.jsonl'), count: 4, mode: 'fewshot', demos, shots: 2, maxNewTokens: 40 });
  assert.equal(r.accepted, 4);
  for (const x of r.records) {
    assert.deepEqual(Object.keys(x).sort(), ['id', 'synth', 'text']);
    assert.ok(!demos.some((d) => d.text === x.text));
  }
});

test('diverse selection: k-means over hidden states keeps per-cluster records from the pool, and the CLI writes the same', async () => {
  const out = join(dir, 'sel.jsonl');
  const r = await synthesize({ ...base, out, count: 24, select: { k: 4, perCluster: 2 } });
  assert.equal(r.selected, 8);
  const pool = lines(join(dir, 'sel.pool.jsonl'));
  assert.equal(pool.length, 24);
  const chosen = lines(out);
  assert.equal(chosen.length, 8);
  for (const c of chosen) assert.deepEqual(pool.find((p) => p.id === c.id), c);
  // The CLI, on the same pool settings, resumes the pool (adds nothing) and selects the same records.
  const cli = spawnSync(process.execPath, [CLI, 'synth', '--model', MODEL, '--out', out, '--count', '24', '-n', '32', '--batch-size', '8', '--select-k', '4', '--per-cluster', '2', '--max-repeat', '0.5', '--quiet'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(cli.status, 0, cli.stderr);
  const summary = JSON.parse(cli.stdout.trim().split('\n').pop()!);
  assert.equal(summary.added, 0);
  assert.deepEqual(lines(out).map((x) => x.id), chosen.map((x) => x.id));
});

test('end to end: synthesised stories are mixing\'s general source and EWC\'s Fisher data in 3 training steps', async () => {
  const general = join(dir, 'general.jsonl');
  await synthesize({ ...base, out: general, count: 8, seed: 11 });
  const cfg = parseTrainConfig({
    model: { path: MODEL },
    data: { train: { path: ARITH, format: { type: 'prompt_completion' }, max_length: 48, limit: 16 } },
    training: { max_steps: 3, batch_size: 4, lr: 0.002, seed: 1, threads: 1 },
    output_dir: join(dir, 'run'),
    methods: [
      { name: 'mixing', ratio: '1:1', general: { path: general, format: { type: 'text' }, name: 'synth', max_length: 48 } },
      { name: 'ewc', lambda: 1, data: { path: general, format: { type: 'text' }, max_length: 48 }, fisher_samples: 4 },
    ],
  });
  const res = await runTraining(cfg, undefined, { progress: false });
  assert.equal(res.steps, 3);
  assert.ok(Number.isFinite(res.finalLoss));
  const log = read(join(dir, 'run', 'metrics.jsonl')).trim().split('\n').map((l) => JSON.parse(l));
  const mix = log.filter((l) => l.kind === 'mixing' && l.samples_synth !== undefined);
  assert.equal(mix.length, 3);
  for (const l of mix) assert.equal(l.samples_synth, 2);
  assert.ok(log.some((l) => l.kind === 'ewc'), 'EWC estimated its Fisher on the synthesised set');
});

const skipLstm = needShared('models', 'charrnn-shakespeare', 'manifest.json');

test('char-LSTM: context-free sampling after a start character, deterministic, characters of its vocabulary only', { skip: skipLstm }, async () => {
  const model = sharedPath('models', 'charrnn-shakespeare');
  const o = { model, count: 4, maxNewTokens: 60, batchSize: 4, progress: false as const, seed: 2, select: { k: 2, perCluster: 1 } };
  const a = await synthesize({ ...o, out: join(dir, 'lstm-a.jsonl') });
  await synthesize({ ...o, out: join(dir, 'lstm-b.jsonl') });
  assert.equal(read(join(dir, 'lstm-a.pool.jsonl')), read(join(dir, 'lstm-b.pool.jsonl')));
  assert.equal(a.accepted, 4);
  assert.equal(a.selected, 2);
  const vocab = new Set(Object.keys(JSON.parse(read(join(model, 'vocab.json')))));
  vocab.add('u').add('U'); // the two damaged keys of ml5's export (CharVocab repairs them)
  for (const r of lines(join(dir, 'lstm-a.pool.jsonl'))) {
    assert.ok(r.text.length > 10);
    for (const ch of r.text) assert.ok(vocab.has(ch), `character ${JSON.stringify(ch)}`);
    assert.ok(r.synth.loss > 0 && r.synth.loss < 5);
  }
});

test('the shipped synth-mix config trains on the shipped synthesised set (2 steps; its paths resolve against the config)', async () => {
  const cfg = loadTrainConfig(new URL('../configs/stories260k-arith-synth-mix.yaml', import.meta.url).pathname);
  const mix = cfg.methods.find((m) => typeof m === 'object' && m.name === 'mixing') as { general: { path: string } };
  const recs = lines(mix.general.path);
  assert.ok(recs.length >= 256 && recs.every((r) => typeof r.text === 'string' && r.synth.mode === 'bos'));
  const res = await runTraining({ ...cfg, training: { ...cfg.training, max_steps: 2, batch_size: 4 }, output_dir: join(dir, 'shipped') }, undefined, { progress: false });
  assert.equal(res.steps, 2);
});
