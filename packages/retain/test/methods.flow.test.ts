// FLOW (docs/METHODS.md §1): the weights against losses computed independently, τ rules, normalisation, the cache, NaN → 0,
// exact resume, the vision variant (probe first, weights from the probe model), and `retain train` on stories260K.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { collate } from '../src/data/loader.js';
import { epochOrder } from '../src/data/loader.js';
import { classificationLoss, train } from '../src/train/trainer.js';
import { Flow, flowWeight, normalizeWeights } from '../src/methods/flow.js';
import { buildMethods } from '../src/methods/registry.js';
import { checkComposition } from '../src/train/hooks.js';
import { atStep, bareContext, constant, directLoss, featureExamples, sameTensors, snapshot, spyLoss, tinyLlama, tinyNet, tokenExamples } from './methods-a.fixtures.js';
import { needShared, sharedPath } from './helpers.js';
import { parseTrainConfig } from '../src/config.js';
import { runTraining } from '../src/train/run.js';

function med(v: number[]): number {
  const s = v.filter(Number.isFinite).sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'retain-flow-'));
}

test('FLOW weights are exp(−f/τ) with τ the median of independently computed pretrained losses; NaN → 0; the step loss is Σwᵢsᵢ/Σnᵢ', async () => {
  const model = tinyLlama(1);
  const ex = tokenExamples(11, 5);
  ex.push({ id: 'no-target', ids: [3, 4, 5], lossMask: [1, 0, 0], source: 'train' }); // no trained token: f = NaN, w = 0
  const f = ex.map((e) => (e.lossMask.slice(1).some(Boolean) ? directLoss(model, e) : NaN));
  const tau = med(f);
  const flow = new Flow({ batch_size: 5 });
  const r = await train({ model, optimizer: { kind: 'sgd' }, examples: ex, batchSize: 4, maxSteps: 1, schedule: constant(0.1), methods: [flow], progress: false, clipGradNorm: null, seed: 3 });
  for (let i = 0; i < ex.length; i++) {
    if (Number.isNaN(f[i])) assert.ok(Number.isNaN(flow.losses![i]), `sample ${i}: loss should be NaN`);
    else assert.ok(Math.abs(flow.losses![i] - f[i]) < 1e-5, `sample ${i}: loss ${flow.losses![i]} vs direct ${f[i]}`);
  }
  assert.ok(Math.abs(flow.tau! - tau) < 1e-5, `τ ${flow.tau} vs median ${tau}`);
  ex.forEach((_, i) => {
    const want = Number.isNaN(f[i]) ? 0 : Math.exp(-f[i] / tau);
    assert.ok(Math.abs(flow.weights![i] - want) < 1e-6, `w${i} ${flow.weights![i]} vs ${want}`);
  });
  assert.equal(flow.weights![ex.length - 1], 0);
  assert.equal(flowWeight(NaN, 1), 0);
  const logLine = r.history.find((h) => h.kind === 'flow')!;
  assert.equal(logLine.flow_samples, 12);
  assert.equal(logLine.flow_nan_losses, 1);
  assert.equal(logLine.flow_zero_weights, 1);
  assert.ok(Math.abs((logLine.flow_tau as number) - tau) < 1e-5);
  for (const k of ['flow_weight_mean', 'flow_weight_min', 'flow_weight_median', 'flow_weight_max']) assert.equal(typeof logLine[k], 'number', k);
  // The trainer's first step (at θ₀) minimises Σ wᵢ·(sum of token losses) / (trained tokens).
  const first = epochOrder(ex.length, 3, 0).slice(0, 4);
  let num = 0;
  let den = 0;
  for (const i of first) {
    const n = ex[i].lossMask.slice(1).filter(Boolean).length;
    den += n;
    if (n) num += flow.weights![i] * f[i] * n;
  }
  const stepLoss = r.history.find((h) => h.loss !== undefined)!.loss as number;
  assert.ok(Math.abs(stepLoss - num / den) < 2e-5, `step loss ${stepLoss} vs Σwᵢsᵢ/Σnᵢ ${num / den}`);
  model.dispose();
});

test('FLOW τ rules and normalisation: a number × tau_scale, the batch median, none / mean / sum', async () => {
  const model = tinyLlama(2);
  const ex = tokenExamples(9, 8);
  const f = ex.map((e) => directLoss(model, e));
  const batch = collate(ex.slice(2, 7));
  const bf = f.slice(2, 7);
  const counts = batch.tokenCounts;
  const weightsOf = async (o: Record<string, unknown>) => {
    const flow = new Flow(o);
    const ctx = bareContext(model, ex);
    await flow.setup(ctx);
    return torch.tidy(() => flow.sampleWeights(ctx, batch)!.toArray() as number[]);
  };
  const close = (a: number[], b: number[], what: string) => a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) < 1e-5 * Math.max(1, Math.abs(b[i])), `${what}[${i}]: ${x} vs ${b[i]}`));
  close(await weightsOf({ tau: 2, tau_scale: 0.5 }), bf.map((x) => Math.exp(-x / 1)), 'tau 2 × 0.5');
  const bm = med(bf);
  close(await weightsOf({ tau: 'batch_median' }), bf.map((x) => Math.exp(-x / bm)), 'batch median');
  const tau = med(f);
  const raw = bf.map((x) => Math.exp(-x / tau));
  close(await weightsOf({}), raw, 'none');
  const mean = raw.reduce((a, b) => a + b, 0) / raw.length;
  const wm = await weightsOf({ normalize: 'mean' });
  close(wm, raw.map((x) => x / mean), 'mean');
  assert.ok(Math.abs(wm.reduce((a, b) => a + b, 0) / wm.length - 1) < 1e-6, 'mean-normalised weights average 1');
  const ws = await weightsOf({ normalize: 'sum' });
  const tokens = counts.reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(ws.reduce((a, w, i) => a + w * counts[i], 0) - tokens) < 1e-4, 'sum-normalised weights give a weighted token mean');
  close(ws.map((w) => w / ws[0]), raw.map((w) => w / raw[0]), 'sum keeps the ratios');
  assert.deepEqual(normalizeWeights([0, 0], [3, 4], 'sum'), [0, 0]);
  assert.deepEqual(normalizeWeights([0, 0], [3, 4], 'mean'), [0, 0]);
  assert.throws(() => new Flow({ tau: -1 }), /tau' must be 'median', 'batch_median' or a positive number/);
  assert.throws(() => new Flow({ normalise: 'sum' }), /unknown option 'normalise'/);
  torch.dispose([batch.ids, batch.targets]);
  model.dispose();
});

test('FLOW normalisation and the batch median act per optimizer step: grad_accum 4 × batch 2 updates as grad_accum 1 × batch 8', async () => {
  const ex = tokenExamples(16, 31);
  const run = async (o: Record<string, unknown>, batchSize: number, gradAccum: number) => {
    const model = tinyLlama(9);
    // The loader's order does not depend on the batch size: both runs see the same 8 samples in each step.
    const r = await train({ model, optimizer: { kind: 'sgd' }, examples: ex, batchSize, gradAccum, maxSteps: 2, schedule: constant(0.5), methods: [new Flow(o)], progress: false, clipGradNorm: null, seed: 7 });
    const w = snapshot(model);
    model.dispose();
    return { w, losses: r.history.filter((h) => h.loss !== undefined).map((h) => h.loss as number) };
  };
  for (const o of [{ normalize: 'sum' }, { normalize: 'mean' }, { tau: 'batch_median' }, { tau: 'batch_median', normalize: 'sum' }]) {
    const one = await run(o, 8, 1);
    const four = await run(o, 2, 4);
    let worst = 0;
    for (const [k, t] of one.w) worst = Math.max(worst, torch.tidy(() => t.sub(four.w.get(k)!).abs().max().item()));
    assert.ok(worst < 1e-6, `${JSON.stringify(o)}: weights differ by up to ${worst}`);
    one.losses.forEach((l, i) => assert.ok(Math.abs(l - four.losses[i]) < 1e-6, `${JSON.stringify(o)}: step ${i + 1} loss ${l} vs ${four.losses[i]}`));
    torch.dispose([...one.w.values(), ...four.w.values()]);
  }
});

test('FLOW caches {id → loss, weight} under a hash of weights and data; a rerun scores nothing, changed data scores again', async () => {
  const dir = tmp();
  const ex = tokenExamples(10, 11);
  const run = async (examples = ex) => {
    const model = tinyLlama(4);
    const spy = spyLoss();
    const flow = new Flow({ batch_size: 4, cache_dir: join(dir, 'cache') });
    const r = await train({ model, optimizer: { kind: 'sgd' }, examples, lossFn: spy.fn, batchSize: 5, maxSteps: 2, schedule: constant(0.05), methods: [flow], progress: false, outputDir: join(dir, 'out'), seed: 1 });
    model.dispose();
    return { flow, spy, r };
  };
  const a = await run();
  assert.equal(a.flow.forwardBatches, 3);
  assert.equal(a.spy.calls, 3 + 2, 'three scoring batches, then one per step');
  assert.ok(a.flow.cacheFile && existsSync(a.flow.cacheFile));
  const cache = JSON.parse(readFileSync(a.flow.cacheFile!, 'utf8'));
  assert.equal(Object.keys(cache.samples).length, 10);
  assert.ok(Math.abs(cache.samples.s3.loss - a.flow.losses![3]) < 1e-12);
  assert.ok(Math.abs(cache.samples.s3.weight - a.flow.weights![3]) < 1e-12);
  const b = await run();
  assert.equal(b.flow.forwardBatches, 0);
  assert.equal(b.spy.calls, 2, 'the rerun does no scoring forward pass');
  assert.equal(b.r.history.find((h) => h.kind === 'flow')!.flow_cached, 1);
  assert.deepEqual(Array.from(b.flow.weights!), Array.from(a.flow.weights!));
  // One token changed: the data hash changes, so the losses are computed again.
  const changed = ex.map((e, i) => (i === 0 ? { ...e, ids: [...e.ids.slice(0, -1), (e.ids[e.ids.length - 1] % 60) + 1] } : e));
  const c = await run(changed);
  assert.equal(c.flow.forwardBatches, 3);
  assert.equal(readdirSync(join(dir, 'cache')).filter((n) => n.startsWith('flow-')).length, 2);
  rmSync(dir, { recursive: true, force: true });
});

test('FLOW resumes from a checkpoint to the same weights as an uninterrupted run', async () => {
  const ex = tokenExamples(12, 21);
  const run = async (dir: string, maxSteps: number) => {
    const model = tinyLlama(6);
    const flow = new Flow({ normalize: 'mean' });
    const r = await train({ model, optimizer: { kind: 'adamw', weightDecay: 0.01 }, examples: ex, batchSize: 4, maxSteps, schedule: constant(0.01), methods: [flow], progress: false, outputDir: dir, saveEvery: 2, resume: true, seed: 2 });
    const w = snapshot(model);
    model.dispose();
    return { r, w, flow };
  };
  const da = tmp();
  const db = tmp();
  const a = await run(da, 5);
  await run(db, 3);
  const b = await run(db, 5);
  assert.equal(b.r.resumedFrom, 3);
  assert.equal(b.flow.forwardBatches, 0, 'the resumed run reads the weights from the cache');
  assert.deepEqual(sameTensors(a.w, b.w), []);
  rmSync(da, { recursive: true, force: true });
  rmSync(db, { recursive: true, force: true });
});

test('flow_vision: a linear probe first (body bit-identical), then weights from the probe model, then everything trains; resume is exact', async () => {
  const ex = featureExamples(24, 3);
  const run = async (dir: string | null, maxSteps: number, spy?: (ctx: import('../src/train/hooks.js').TrainContext) => void) => {
    const model = tinyNet(7);
    const [flow] = buildMethods([{ name: 'flow_vision', head: '^head\\.', probe_steps: 3 }]) as Flow[];
    const start = snapshot(model);
    let atSwitch: Map<string, torch.Tensor> | null = null;
    let probeLosses: number[] = [];
    const look = atStep([3], (ctx) => {
      atSwitch = snapshot(model);
      // The probe model's per-sample losses, computed here independently of FLOW (eval mode, one pass).
      probeLosses = torch.noGrad(() => torch.tidy(() => {
        const was = model.training;
        model.eval();
        const x = torch.tensor(Array.from(ex, (e) => Array.from(e.features!)));
        const l = torch.crossEntropy(model.forward(x), torch.tensor(ex.map((e) => e.label!)), { reduction: 'none' }).toArray() as number[];
        model.train(was);
        return l;
      }));
      spy?.(ctx);
    });
    const r = await train({ model, optimizer: { kind: 'adamw', weightDecay: 0.1 }, examples: ex, lossFn: classificationLoss, batchSize: 6, maxSteps, schedule: constant(0.05), methods: [look, flow], progress: false, outputDir: dir, saveEvery: dir ? 4 : null, resume: true, seed: 5 });
    const end = snapshot(model);
    model.dispose();
    return { r, flow, start, atSwitch: atSwitch as Map<string, torch.Tensor> | null, end, probeLosses };
  };
  const a = await run(null, 7);
  assert.ok(a.atSwitch, 'the run reached step 3');
  const body = (k: string) => !k.startsWith('head.');
  assert.deepEqual(sameTensors(a.start, a.atSwitch!, body), [], 'the probe phase leaves the body (weights and batch-norm statistics) bit-identical');
  assert.notDeepEqual(sameTensors(a.start, a.atSwitch!, (k) => k.startsWith('head.')), [], 'the head trained');
  const tau = med(a.probeLosses);
  a.probeLosses.forEach((l, i) => {
    assert.ok(Math.abs(a.flow.losses![i] - l) < 1e-5, `probe loss ${i}`);
    assert.ok(Math.abs(a.flow.weights![i] - Math.exp(-l / tau)) < 1e-5, `weight ${i}`);
  });
  assert.ok(sameTensors(a.atSwitch!, a.end, (k) => k === 'fc.weight').length === 1, 'the body trains after the probe');
  assert.equal(a.r.history.find((h) => h.kind === 'flow_vision' && h.flow_phase === 'probe')?.step, 3);
  // Resume across the switch: the checkpoint at step 4 carries the probe model's losses.
  const d1 = tmp();
  await run(d1, 4);
  const b = await run(d1, 7);
  assert.equal(b.r.resumedFrom, 4);
  assert.equal(b.flow.forwardBatches, 0, 'the resumed run takes the probe losses from the checkpoint');
  assert.deepEqual(sameTensors(a.end, b.end), []);
  assert.throws(() => checkComposition(buildMethods([{ name: 'probe', head: 'x' }, { name: 'flow_vision', head: 'x', probe_steps: 1 }])), /cannot run together/);
  assert.throws(() => buildMethods([{ name: 'flow_vision', probe_steps: 1 }]), /option 'head' is required/);
  rmSync(d1, { recursive: true, force: true });
});

test('FLOW is refused with packed training data and next to flow_vision, with messages naming both', async () => {
  assert.throws(
    () => checkComposition(buildMethods(['flow', { name: 'flow_vision', head: '^head\\.', probe_steps: 1 }])),
    /methods 'flow' and 'flow_vision' cannot run together: both weight every training sample; keep one \(flow_vision for a new head\)/,
  );
  assert.throws(() => checkComposition(buildMethods([{ name: 'flow_vision', head: '^head\\.', probe_steps: 1 }, 'flow'])), /methods 'flow_vision' and 'flow' cannot run together/);
  // Refused before the model loads: the model path does not exist.
  for (const m of ['flow', { name: 'flow', normalize: 'sum' }]) {
    const cfg = parseTrainConfig({ model: { path: '/nonexistent/model' }, data: { train: { path: 'train.jsonl', format: { type: 'text' }, pack: true } }, training: {}, output_dir: join(tmpdir(), 'retain-flow-pack'), methods: [m] });
    await assert.rejects(runTraining(cfg, undefined, { progress: false }), /^Error: methods: 'flow' cannot run with data\.train\.pack: true: its weights are per sample, and a packed block joins pieces of several samples; set pack: false$/);
  }
});

const skip = needShared('models', 'stories260K', 'stories260K.bin');
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

test('retain train with methods: [flow] on stories260K: weights logged and cached, a rerun reuses them, a killed run resumes bit-identically', { skip }, () => {
  const make = () => {
    const dir = mkdtempSync(join(tmpdir(), 'retain-flow-cli-'));
    const rows = Array.from({ length: 16 }, (_, i) => ({ prompt: `Lily saw ${i % 5} birds and ${(i * 3) % 4} cats. She saw`, completion: ` ${(i % 5) + ((i * 3) % 4)} animals.` }));
    writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
    const cfg = {
      model: { path: sharedPath('models', 'stories260K', 'stories260K.bin') },
      data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 48 } },
      training: { max_steps: 6, batch_size: 4, lr: 0.002, schedule: 'cosine', warmup_steps: 1, seed: 1, threads: 1, save_every: 2 },
      output_dir: 'out',
      methods: ['flow'],
    };
    writeFileSync(join(dir, 'train.yaml'), `# FLOW on stories260K\n${JSON.stringify(cfg)}\n`);
    return dir;
  };
  const retain = (dir: string, env: Record<string, string> = {}) => spawnSync(process.execPath, [CLI, 'train', join(dir, 'train.yaml')], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  const lines = (dir: string) => readFileSync(join(dir, 'out', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const a = make();
  const ra = retain(a);
  assert.equal(ra.status, 0, ra.stderr);
  const fl = lines(a).filter((l) => l.kind === 'flow');
  assert.equal(fl.length, 1);
  assert.equal(fl[0].flow_cached, 0);
  assert.equal(fl[0].flow_samples, 16);
  assert.ok(fl[0].flow_tau > 0 && fl[0].flow_weight_median > 0.3 && fl[0].flow_weight_median < 0.4, `the median weight is e⁻¹: ${fl[0].flow_weight_median}`);
  const cacheFile = readdirSync(join(a, 'out')).find((n) => /^flow-[0-9a-f]{16}\.json$/.test(n));
  assert.ok(cacheFile, 'the cache is in the output dir');
  assert.equal(Object.keys(JSON.parse(readFileSync(join(a, 'out', cacheFile!), 'utf8')).samples).length, 16);
  assert.equal(lines(a).filter((l) => l.loss !== undefined).length, 6);
  // Killed after step 3, then resumed from checkpoint-2: FLOW reads its cache and the result is bit-identical.
  const b = make();
  const killed = retain(b, { RETAIN_KILL_AT_STEP: '3' });
  assert.equal(killed.signal, 'SIGKILL');
  const cacheB = join(b, 'out', cacheFile!);
  const written = statSync(cacheB).mtimeMs;
  const rb = retain(b);
  assert.equal(rb.status, 0, rb.stderr);
  assert.match(rb.stdout, /"resumed_from":2/);
  // FLOW writes its cache only when it computed the losses: an untouched file means the resumed run read it. The
  // resumed run does not log its setup again, so the log holds the first run's one FLOW line, as an uninterrupted run.
  assert.equal(statSync(cacheB).mtimeMs, written, 'the resumed run read the cache instead of scoring again');
  const fb = lines(b).filter((l) => l.kind === 'flow');
  assert.deepEqual(fb.map((l) => l.flow_cached), [0]);
  assert.ok(readFileSync(join(a, 'out', 'final', 'model.safetensors')).equals(readFileSync(join(b, 'out', 'final', 'model.safetensors'))), 'final weights differ');
  rmSync(a, { recursive: true, force: true });
  rmSync(b, { recursive: true, force: true });
});
