// L2-SP and EWC (docs/METHODS.md §5, §6): penalty values and gradients against direct computations, the Fisher (per-sample
// and per-batch) against python3-torch and a direct loop, and training with exact resume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { causalLmLoss, classificationLoss, train } from '../src/train/trainer.js';
import { collate } from '../src/data/loader.js';
import { L2SP } from '../src/methods/l2sp.js';
import { EWC } from '../src/methods/ewc.js';
import { buildMethods } from '../src/methods/registry.js';
import { bareContext, constant, featureExamples, sameTensors, snapshot, tinyLlama, tinyNet, tokenExamples } from './methods-a.fixtures.js';
import { needPython, py } from '../../torch/test/helpers.js';

function flat(t: Tensor): number[] {
  return Array.from(torch.tidy(() => t.detach().double().reshape(-1).data() as Float64Array));
}

/** Moves every parameter by a seeded random amount. */
/**
 * The empirical Fisher computed directly: the mean over the samples of each one's squared loss gradient, summed in
 * float64 whatever the model's dtype. Gradients are cleared before each sample and after the last.
 */
function directFisher<E>(model: torch.nn.Module, data: E[], lossOf: (e: E) => Tensor): Map<string, Float64Array> {
  const direct = new Map<string, Float64Array>();
  for (const e of data) {
    for (const p of model.parameters()) p.grad = null;
    torch.tidy(() => lossOf(e).backward());
    for (const [n, p] of model.namedParameters()) {
      const g = flat(p.grad!);
      const acc = direct.get(n) ?? new Float64Array(g.length);
      g.forEach((x, i) => (acc[i] += (x * x) / data.length));
      direct.set(n, acc);
    }
  }
  for (const p of model.parameters()) p.grad = null;
  return direct;
}

function perturb(model: torch.nn.Module, seed: number, scale = 0.05): void {
  torch.manualSeed(seed);
  torch.noGrad(() => torch.tidy(() => {
    for (const p of model.parameters()) p.add_(torch.randnLike(p).mul(scale));
  }));
}

test('L2-SP: λ·Σ(θ−θ₀)² with sum or mean, new heads excluded or given plain L2; gradient 2λ(θ−θ₀)', async () => {
  const model = tinyLlama(1);
  const before = new Map(model.namedParameters().map(([n, p]) => [n, flat(p)]));
  const l2 = new L2SP({ lambda: 0.3, exclude: '^lm_head\\.', head_lambda: 0.02 });
  const ctx = bareContext(model, []);
  l2.setup(ctx);
  assert.equal(ctx.lines[0].l2_reduction, 'sum (default)', 'the log says the reduction was not given');
  perturb(model, 3);
  let sq = 0;
  let head = 0;
  let count = 0;
  let headCount = 0;
  for (const [n, p] of model.namedParameters()) {
    const now = flat(p);
    if (n.startsWith('lm_head.')) {
      head += now.reduce((a, x) => a + x * x, 0);
      headCount += now.length;
    } else {
      sq += now.reduce((a, x, i) => a + (x - before.get(n)![i]) ** 2, 0);
      count += now.length;
    }
  }
  const v = torch.tidy(() => l2.penalty().item());
  assert.ok(Math.abs(v - (0.3 * sq + 0.02 * head)) < 1e-5 * v, `sum: ${v} vs ${0.3 * sq + 0.02 * head}`);
  const mean = new L2SP({ lambda: 0.3, reduction: 'mean', exclude: '^lm_head\\.', head_lambda: 0.02 });
  const ctxm = bareContext(model, []);
  // θ₀ for this one is the perturbed model; move again and compare with the direct mean.
  mean.setup(ctxm);
  assert.equal(ctxm.lines[0].l2_reduction, 'mean');
  const anchor = new Map(model.namedParameters().map(([n, p]) => [n, flat(p)]));
  perturb(model, 4);
  let sq2 = 0;
  let head2 = 0;
  for (const [n, p] of model.namedParameters()) {
    const now = flat(p);
    if (n.startsWith('lm_head.')) head2 += now.reduce((a, x) => a + x * x, 0);
    else sq2 += now.reduce((a, x, i) => a + (x - anchor.get(n)![i]) ** 2, 0);
  }
  const vm = torch.tidy(() => mean.penalty().item());
  const want = (0.3 * sq2) / count + (0.02 * head2) / headCount;
  assert.ok(Math.abs(vm - want) < 1e-5 * want, `mean: ${vm} vs ${want}`);
  // The gradient of the sum penalty on a non-head tensor is 2λ(θ−θ₀).
  const q = model.getParameter('model.layers.0.self_attn.q_proj.weight');
  q.grad = null;
  torch.tidy(() => l2.penalty().backward());
  const g = flat(q.grad!);
  const th = flat(q);
  const th0 = before.get('model.layers.0.self_attn.q_proj.weight')!;
  g.forEach((x, i) => assert.ok(Math.abs(x - 2 * 0.3 * (th[i] - th0[i])) < 1e-6, `grad ${i}`));
  assert.throws(() => new L2SP({}), /option 'lambda' is required/);
  assert.throws(() => new L2SP({ lambda: 1, reduction: 'avg' }), /reduction' must be one of sum, mean/);
  l2.dispose();
  mean.dispose();
  model.dispose();
});

test('EWC per-sample (empirical) and per-batch Fisher match python3-torch; the penalty is Σ(λ/2)·F·(θ−θ₀)²', { skip: needPython() }, async () => {
  const model = tinyNet(2);
  torch.noGrad(() => {
    model.bn.running_mean!.copy_(torch.linspace(-0.5, 0.5, 8));
    model.bn.running_var!.copy_(torch.linspace(0.5, 2, 8));
  });
  const data = featureExamples(9, 4, 'general');
  const sd: Record<string, { v: number[]; shape: number[]; dtype: string }> = {};
  for (const [k, t] of model.stateDict()) sd[k] = { v: flat(t), shape: t.shape, dtype: t.dtype };
  const ref = py(`
import torch.nn as nn, torch.nn.functional as F
class Net(nn.Module):
    def __init__(s):
        super().__init__(); s.fc = nn.Linear(4, 8); s.bn = nn.BatchNorm2d(8); s.head = nn.Linear(8, 3)
    def forward(s, x):
        h = s.fc(x); B = h.shape[0]
        return s.head(torch.relu(s.bn(h.reshape(B, 8, 1, 1)).reshape(B, 8)))
m = Net().double()
m.load_state_dict({k: torch.tensor(d['v'], dtype=torch.long if d['dtype'] == 'int64' else torch.float64).reshape(d['shape']) for k, d in inp['sd'].items()})
m.eval()
X = torch.tensor(inp['x'], dtype=torch.float64); Y = torch.tensor(inp['y'])
def fisher(groups):
    acc = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for g in groups:
        m.zero_grad()
        F.cross_entropy(m(X[g]), Y[g]).backward()
        for n, p in m.named_parameters(): acc[n] += p.grad ** 2
    return {n: a / len(groups) for n, a in acc.items()}
n = len(inp['y'])
out['per_sample'] = fisher([[i] for i in range(n)])
out['per_batch'] = fisher([list(range(i, min(i + 4, n))) for i in range(0, n, 4)])
`, { sd, x: data.map((e) => Array.from(e.features!)), y: data.map((e) => e.label) });
  for (const mode of ['per_sample', 'per_batch'] as const) {
    const ewc = new EWC({ lambda: 5, data, fisher: mode, fisher_batch_size: 4 });
    const ctx = bareContext(model, [], { sampleLosses: (b) => classificationLoss(model, b) });
    await ewc.setup(ctx);
    ewc.beforeStep(ctx);
    const line = ctx.lines.find((l) => l.kind === 'ewc')!;
    assert.equal(line.ewc_fisher, mode);
    assert.match(String(line.ewc_fisher_estimate), mode === 'per_sample' ? /empirical Fisher: squared per-sample gradients/ : /squared mini-batch gradients/);
    assert.equal(line.ewc_backwards, mode === 'per_sample' ? 9 : 3);
    for (const e of ewc.entries) {
      const want = (ref[mode][e.name] as number[][]).flat(Infinity as 1) as number[];
      const got = flat(e.fisher!);
      got.forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 1e-6 + 1e-4 * Math.abs(want[i]), `${mode} F[${e.name}][${i}] ${x} vs ${want[i]}`));
    }
    for (const p of model.parameters()) assert.equal(p.grad, null, 'the estimate leaves no gradient behind');
    // Penalty against a direct sum, after moving the weights.
    const theta0 = new Map(ewc.entries.map((e) => [e.name, flat(e.theta0)]));
    const fisher = new Map(ewc.entries.map((e) => [e.name, flat(e.fisher!)]));
    perturb(model, 7, 0.1);
    let want = 0;
    for (const [n, p] of model.namedParameters()) {
      const th = flat(p);
      th.forEach((x, i) => (want += (5 / 2) * fisher.get(n)![i] * (x - theta0.get(n)![i]) ** 2));
    }
    const got = torch.tidy(() => ewc.penalty().item());
    assert.ok(Math.abs(got - want) < 1e-5 * want + 1e-9, `${mode} penalty ${got} vs ${want}`);
    // Back to θ₀ for the other mode.
    torch.noGrad(() => ewc.entries.forEach((e) => e.p.copy_(e.theta0)));
    ewc.dispose();
  }
  model.dispose();
});

test('EWC on a causal LM: per-sample Fisher equals a direct loop over the samples; estimated late, it is still taken at θ₀', async () => {
  const model = tinyLlama(5);
  model.eval();
  const data = tokenExamples(5, 9, 'general', 'g');
  const direct = directFisher(model, data, (e) => {
    const logits = model.forward(torch.tensor([e.ids.slice(0, -1)])).reshape(e.ids.length - 1, -1); // [T, V]
    return torch.crossEntropy(logits, torch.tensor(e.ids.slice(1).map((t, k) => (e.lossMask[k + 1] ? t : -100))));
  });
  model.train();
  const ewc = new EWC({ lambda: 1, data });
  const ctx = bareContext(model, []);
  await ewc.setup(ctx);
  const at = snapshot(model);
  // Pretend the weights moved before the estimate (a resumed run without a stored Fisher): θ₀ is swapped in for it.
  perturb(model, 11);
  const moved = snapshot(model);
  ctx.step = 3;
  ewc.beforeStep(ctx);
  assert.deepEqual(sameTensors(moved, snapshot(model)), [], 'the weights are put back after the estimate');
  assert.ok(model.training, 'train mode is restored');
  for (const e of ewc.entries) {
    const want = direct.get(e.name)!;
    flat(e.fisher!).forEach((x, i) => assert.ok(Math.abs(x - want[i]) <= 1e-9 + 1e-4 * want[i], `F[${e.name}][${i}] ${x} vs ${want[i]}`));
  }
  void at;
  ewc.dispose();
  model.dispose();
});

test('EWC on a bfloat16 model sums its Fisher in float32: it equals the float64 sum of the same bf16 gradients', async () => {
  const model = tinyLlama(6).to({ dtype: 'bfloat16' });
  model.eval();
  const data = tokenExamples(48, 10, 'general', 'g');
  // The squared gradient of each sample's mean token loss (the trainer's loss function), summed here in float64.
  const direct = directFisher(model, data, (e) => {
    const sl = causalLmLoss(model, collate([e]));
    return sl.sums.sum().div(sl.counts.sum());
  });
  const ewc = new EWC({ lambda: 1, data });
  const ctx = bareContext(model, []);
  await ewc.setup(ctx);
  ewc.beforeStep(ctx);
  let worst = 0;
  for (const e of ewc.entries) {
    assert.equal(e.fisher!.dtype, 'float32', `F[${e.name}] is kept in float32`);
    const want = direct.get(e.name)!;
    flat(e.fisher!).forEach((x, i) => (worst = Math.max(worst, Math.abs(x - want[i]) / (want[i] + 1e-30))));
  }
  // float32 rounding of the sum and of the division by the sample count: a few ulps of 2⁻²⁴.
  assert.ok(worst < 1e-5, `largest relative error of F ${worst}`);
  // The penalty is taken in float32 too, against the bf16 weights.
  perturb(model, 12, 0.05);
  const v = torch.tidy(() => ewc.penalty());
  assert.equal(v.dtype, 'float32');
  v.dispose();
  ewc.dispose();
  model.dispose();
});

test('L2-SP and EWC train through the loop, log their penalty, and resume from a checkpoint bit-identically (EWC reloads F)', async () => {
  const target = tokenExamples(12, 13);
  const general = tokenExamples(6, 14, 'general', 'g');
  const run = async (dir: string, maxSteps: number) => {
    const model = tinyLlama(12);
    const methods = buildMethods([{ name: 'l2', lambda: 0.5, reduction: 'sum' }, { name: 'ewc', lambda: 100, data: general, fisher: 'per_batch', fisher_batch_size: 2, fisher_samples: 4 }]);
    const r = await train({ model, optimizer: { kind: 'adamw' }, examples: target, batchSize: 4, maxSteps, schedule: constant(0.02), methods, progress: false, outputDir: dir, saveEvery: 2, resume: true, seed: 6 });
    const w = snapshot(model);
    model.dispose();
    return { r, w, ewc: methods[1] as EWC };
  };
  const da = mkdtempSync(join(tmpdir(), 'retain-pen-'));
  const db = mkdtempSync(join(tmpdir(), 'retain-pen-'));
  const a = await run(da, 5);
  const steps = a.r.history.filter((h) => h.loss !== undefined);
  assert.equal(steps[0].l2, 0, 'no penalty at θ₀');
  assert.ok((steps[4].l2 as number) > 0 && (steps[4].ewc as number) > 0, 'penalties grow as the weights move');
  const ewcLine = a.r.history.find((h) => h.kind === 'ewc')!;
  assert.equal(ewcLine.ewc_samples, 4);
  assert.equal(ewcLine.ewc_backwards, 2);
  assert.equal(a.ewc.fisherBackwards, 2);
  await run(db, 3);
  const b = await run(db, 5);
  assert.equal(b.r.resumedFrom, 3);
  assert.equal(b.ewc.fisherBackwards, 0, 'F came from the checkpoint');
  assert.deepEqual(sameTensors(a.w, b.w), []);
  const lb = b.r.history.filter((h) => h.loss !== undefined);
  assert.deepEqual(lb.map((h) => [h.l2, h.ewc]), steps.slice(3).map((h) => [h.l2, h.ewc]));
  rmSync(da, { recursive: true, force: true });
  rmSync(db, { recursive: true, force: true });
});
