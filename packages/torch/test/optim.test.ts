import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '../src/index.js';
import type { Tensor, DType } from '../src/index.js';
import { assertClose, needPython, py } from './helpers.js';

const { optim } = torch;

// A small MLP (3 → 4 → 2, tanh) on a fixed batch: both peers start from the same weights and compute the same
// gradients with the same libtorch kernels, so any difference comes from the optimizers.
const SHAPES: Record<string, number[]> = { w1: [4, 3], b1: [4], w2: [2, 4], b2: [2] };
const KEYS = Object.keys(SHAPES);
const wave = (n: number, seed: number, scale = 0.5) => Array.from({ length: n }, (_, i) => Math.sin(seed * 7.1 + i * 1.3) * scale);
const INIT: Record<string, number[]> = Object.fromEntries(KEYS.map((k, j) => [k, wave(SHAPES[k].reduce((a, b) => a * b, 1), j + 1)]));
const X = wave(15, 11, 1);
const Y = wave(10, 12, 1);
const STEPS = 20;
// Every third step the last bias has no gradient, which the optimizers must skip (no step count, no decay).
const dropsGrad = (s: number) => s % 3 === 2;

type Make = (ps: Tensor[]) => torch.optim.Optimizer<any, any>;

function makeParams(dtype: DType): Tensor[] {
  return KEYS.map((k) => torch.tensor(INIT[k], { dtype }).reshape(SHAPES[k]).requiresGrad_());
}

function lossOf(ps: Tensor[], x: Tensor, y: Tensor): Tensor {
  const [w1, b1, w2, b2] = ps;
  const h = x.matmul(w1.t()).add(b1).tanh();
  return h.matmul(w2.t()).add(b2).sub(y).square().mean();
}

/** Runs steps [from, to) on ps with opt; extra runs after each optimizer step (a scheduler). */
function runSteps(ps: Tensor[], opt: torch.optim.Optimizer<any, any>, from: number, to: number, after?: () => void): void {
  const dtype = ps[0].dtype;
  const device = ps[0].device;
  torch.tidy(() => {
    const x = torch.tensor(X, { dtype, device }).reshape([5, 3]);
    const y = torch.tensor(Y, { dtype, device }).reshape([5, 2]);
    for (let s = from; s < to; s++) {
      torch.tidy(() => {
        opt.zeroGrad();
        lossOf(ps, x, y).backward();
        if (dropsGrad(s)) ps[3].grad = null;
        opt.step();
        after?.();
      });
    }
  });
}

function flat(ps: Tensor[]): number[][] {
  return ps.map((p) => Array.from(p.detach().data() as Float64Array));
}

function train(make: Make, dtype: DType = 'float64', steps = STEPS): number[][] {
  const ps = makeParams(dtype);
  const opt = make(ps);
  runSteps(ps, opt, 0, steps);
  const out = flat(ps);
  opt.dispose();
  torch.dispose(ps);
  return out;
}

const PY_PRELUDE = `
KEYS = ${JSON.stringify(KEYS)}
SHAPES = inp['shapes']
O = torch.optim
def params(dtype):
    return [torch.tensor(inp['init'][k], dtype=dtype).reshape(SHAPES[k]).requires_grad_() for k in KEYS]
def loss_of(ps, x, y):
    w1, b1, w2, b2 = ps
    h = torch.tanh(x.matmul(w1.t()).add(b1))
    return h.matmul(w2.t()).add(b2).sub(y).square().mean()
def train(make, dtype, steps=${STEPS}, keep=None):
    ps = params(dtype)
    x = torch.tensor(inp['x'], dtype=dtype).reshape(5, 3)
    y = torch.tensor(inp['y'], dtype=dtype).reshape(5, 2)
    opt = make(ps)
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_of(ps, x, y).backward()
        if s % 3 == 2: ps[3].grad = None
        opt.step()
    if keep is not None: keep['state'] = [{k: v for k, v in opt.state[p].items() if k != 'step'} for p in ps]
    return [p.detach().reshape(-1) for p in ps]
`;

// The same configurations on both sides: [name, python constructor, ours (given the implementation switch)].
const CONFIGS: [string, string, (ps: Tensor[], impl: 'foreach' | 'single') => torch.optim.Optimizer<any, any>][] = [
  ['sgd', 'O.SGD(ps, lr=0.1)', (ps, impl) => new optim.SGD(ps, { lr: 0.1, foreach: impl === 'foreach' })],
  ['sgd_momentum', 'O.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)',
    (ps, impl) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01, foreach: impl === 'foreach' })],
  ['sgd_nesterov', 'O.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)',
    (ps, impl) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01, foreach: impl === 'foreach' })],
  ['sgd_maximize', 'O.SGD(ps, lr=0.02, momentum=0.5, weight_decay=0.1, maximize=True)',
    (ps, impl) => new optim.SGD(ps, { lr: 0.02, momentum: 0.5, weightDecay: 0.1, maximize: true, foreach: impl === 'foreach' })],
  ['sgd_groups', "O.SGD([{'params': ps[:2], 'momentum': 0.9}, {'params': ps[2:], 'lr': 0.2}], lr=0.05)",
    (ps, impl) => new optim.SGD([{ params: ps.slice(0, 2), momentum: 0.9 }, { params: ps.slice(2), lr: 0.2 }], { lr: 0.05, foreach: impl === 'foreach' })],
  ['adamw', 'O.AdamW(ps, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)',
    (ps, impl) => new optim.AdamW(ps, { lr: 0.01, betas: [0.9, 0.95], weightDecay: 0.1, impl })],
  ['adamw_amsgrad', 'O.AdamW(ps, lr=0.01, amsgrad=True, weight_decay=0.05, eps=1e-6)',
    (ps, impl) => new optim.AdamW(ps, { lr: 0.01, amsgrad: true, weightDecay: 0.05, eps: 1e-6, impl })],
  ['adamw_maximize', 'O.AdamW(ps, lr=0.01, maximize=True)', (ps, impl) => new optim.AdamW(ps, { lr: 0.01, maximize: true, impl })],
  ['adam', 'O.Adam(ps, lr=0.01, weight_decay=0.05)', (ps, impl) => new optim.Adam(ps, { lr: 0.01, weightDecay: 0.05, impl })],
  ['adam_amsgrad_maximize', 'O.Adam(ps, lr=0.02, amsgrad=True, maximize=True, weight_decay=0.01)',
    (ps, impl) => new optim.Adam(ps, { lr: 0.02, amsgrad: true, maximize: true, weightDecay: 0.01, impl })],
  ['adamw_groups', "O.AdamW([{'params': ps[:2], 'lr': 0.02, 'weight_decay': 0.0}, {'params': ps[2:]}], lr=0.01, weight_decay=0.1)",
    (ps, impl) => new optim.AdamW([{ params: ps.slice(0, 2), lr: 0.02, weightDecay: 0 }, { params: ps.slice(2) }], { lr: 0.01, weightDecay: 0.1, impl })],
];

let refCache: any;
function reference(): any {
  refCache ??= py(
    PY_PRELUDE +
      CONFIGS.map(([name, ctor]) => `out['${name}'] = {'f64': train(lambda ps: ${ctor}, torch.float64), 'f32': train(lambda ps: ${ctor}, torch.float32)}`).join('\n') +
      `
k = {}
out['adamw_state'] = train(lambda ps: O.AdamW(ps, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1), torch.float64, keep=k)
out['adamw_state'] = k['state']
`,
    { shapes: SHAPES, init: INIT, x: X, y: Y },
  );
  return refCache;
}

test('SGD, AdamW and Adam match torch.optim over 20 MLP steps (float64 to 1e-12, float32 closely)', { skip: needPython() }, () => {
  const ref = reference();
  for (const [name, , make] of CONFIGS) {
    for (const impl of ['foreach', 'single'] as const) {
      const f64 = train((ps) => make(ps, impl), 'float64');
      f64.forEach((v, i) => assertClose(v, ref[name].f64[i], { rtol: 1e-12, atol: 1e-14, msg: `${name} ${impl} float64 ${KEYS[i]}` }));
      const f32 = train((ps) => make(ps, impl), 'float32');
      f32.forEach((v, i) => assertClose(v, ref[name].f32[i], { rtol: 1e-5, atol: 1e-6, msg: `${name} ${impl} float32 ${KEYS[i]}` }));
    }
  }
});

test('the moments read through moments() are torch state exp_avg / exp_avg_sq', { skip: needPython() }, () => {
  const ref = reference();
  const ps = makeParams('float64');
  const opt = new optim.AdamW(ps, { lr: 0.01, betas: [0.9, 0.95], weightDecay: 0.1 });
  runSteps(ps, opt, 0, STEPS);
  ps.forEach((p, i) => {
    const m = opt.moments(p)!;
    assert.equal(m.step, i === 3 ? STEPS - Math.floor(STEPS / 3) : STEPS);
    assertClose(m.exp_avg, ref.adamw_state[i].exp_avg, { rtol: 1e-12, atol: 1e-15, msg: `exp_avg ${KEYS[i]}` });
    assertClose(m.exp_avg_sq, ref.adamw_state[i].exp_avg_sq, { rtol: 1e-12, atol: 1e-18, msg: `exp_avg_sq ${KEYS[i]}` });
  });
  opt.dispose();
  torch.dispose(ps);
});

test('foreach and per-tensor paths give identical parameters', () => {
  for (const dtype of ['float64', 'float32'] as const) {
    for (const [name, , make] of CONFIGS) {
      const a = train((ps) => make(ps, 'foreach'), dtype);
      const b = train((ps) => make(ps, 'single'), dtype);
      assert.deepEqual(a, b, `${name} ${dtype}`);
    }
  }
});

test('stateDict through safetensors + JSON resumes bit-identically (optimizer and LR schedule)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-optim-'));
  try {
    const schedule: torch.optim.Schedule = { kind: 'cosine', warmupSteps: 4, totalSteps: STEPS, minLrRatio: 0.1 };
    const makers: [string, (ps: Tensor[]) => torch.optim.Optimizer<any, any>, (ps: Tensor[]) => torch.optim.Optimizer<any, any>][] = [
      ['adamw', (ps) => new optim.AdamW([{ params: ps.slice(0, 2), lr: 0.02 }, { params: ps.slice(2), weightDecay: 0 }], { lr: 0.01, amsgrad: true }),
        (ps) => new optim.AdamW([{ params: ps.slice(0, 2) }, { params: ps.slice(2) }], { lr: 0.5, betas: [0.5, 0.5] })],
      ['sgd', (ps) => new optim.SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01 }), (ps) => new optim.SGD(ps, { lr: 1 })],
    ];
    for (const [name, make, makeOther] of makers) {
      const straightPs = makeParams('float64');
      const straight = make(straightPs);
      const sched = new optim.LRScheduler(straight, schedule);
      runSteps(straightPs, straight, 0, STEPS, () => sched.step());
      const expected = flat(straightPs);

      const ps = makeParams('float64');
      const first = make(ps);
      const firstSched = new optim.LRScheduler(first, schedule);
      runSteps(ps, first, 0, 10, () => firstSched.step());
      const { tensors, meta } = optim.flattenStateDict(first.stateDict());
      const file = join(dir, `${name}.safetensors`);
      torch.io.saveSafetensors(file, tensors);
      const json = JSON.stringify({ optimizer: meta, scheduler: firstSched.stateDict() });
      const hyper = first.paramGroups.map(({ params, ...h }) => h);
      first.dispose();

      const loaded = torch.io.loadSafetensors(file);
      const saved = JSON.parse(json);
      const second = makeOther(ps);
      second.loadStateDict(optim.unflattenStateDict(loaded, saved.optimizer));
      torch.dispose(loaded.values());
      assert.deepEqual(second.paramGroups.map(({ params, ...h }) => h), hyper, `${name}: group hyper-parameters`);
      const secondSched = new optim.LRScheduler(second, schedule);
      secondSched.loadStateDict(saved.scheduler);
      runSteps(ps, second, 10, STEPS, () => secondSched.step());
      assert.deepEqual(flat(ps), expected, `${name}: resumed run differs from the straight one`);
      assert.deepEqual(secondSched.lastLrs(), sched.lastLrs());
      for (const o of [straight, second]) o.dispose();
      torch.dispose([...ps, ...straightPs]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('loadStateDict refuses a mismatched state and leaves the optimizer as it was', () => {
  const ps = makeParams('float64');
  const opt = new optim.AdamW(ps, { lr: 0.01 });
  runSteps(ps, opt, 0, 2);
  const before = opt.stateDict();
  const m0 = opt.moments(ps[0])!.exp_avg.clone();
  const other = new optim.AdamW(ps.slice(0, 2), { lr: 0.01 });
  assert.throws(() => other.loadStateDict(before), /group 0 has 4 saved parameters, this optimizer has 2/);
  assert.throws(() => opt.loadStateDict({ ...before, state: { ...before.state, 9: before.state[0] } }), /parameter 9/);
  const bad = { ...before, state: { ...before.state, 0: { ...before.state[0], exp_avg: torch.zeros([7]) } } };
  assert.throws(() => opt.loadStateDict(bad), /shape \[7\]/);
  assert.throws(() => opt.loadStateDict({ ...before, paramGroups: [] }), /1 parameter groups|0 parameter groups/);
  assert.ok(opt.moments(ps[0])!.exp_avg.equal(m0));
  assert.equal(opt.paramGroups[0].lr, 0.01);
  torch.dispose([m0, bad.state[0].exp_avg as Tensor]);
  opt.dispose();
  other.dispose();
  torch.dispose(ps);
});

test('parameter groups: validation, defaults, addParamGroup, zeroGrad', () => {
  torch.tidy(() => {
    const a = torch.ones([3]).requiresGrad_();
    const b = torch.ones([2]).requiresGrad_();
    assert.throws(() => new optim.SGD([], { lr: 0.1 }), /empty parameter list/);
    assert.throws(() => new optim.SGD([{ params: [a] }, { params: [a] }], { lr: 0.1 }), /more than one parameter group/);
    assert.throws(() => new optim.SGD([a], { lr: -1 }), /learning rate/);
    assert.throws(() => new optim.SGD([a], { nesterov: true }), /Nesterov/);
    assert.throws(() => new optim.AdamW([a], { betas: [1, 0.9] }), /betas/);
    assert.throws(() => new optim.SGD([torch.ones([2], { dtype: 'int64' })]), /floating point/);
    const opt = new optim.AdamW([a], { lr: 0.1, weightDecay: undefined });
    assert.equal(opt.paramGroups[0].weightDecay, 1e-2);
    assert.equal(new optim.Adam([b]).paramGroups[0].weightDecay, 0);
    opt.addParamGroup({ params: [b], lr: 0.5 });
    assert.deepEqual(opt.paramGroups.map((g) => g.lr), [0.1, 0.5]);
    assert.notEqual(opt.paramGroups[0].betas, opt.paramGroups[1].betas, 'groups must not share default arrays');
    assert.throws(() => opt.addParamGroup({ params: [a] }), /more than one/);
    a.grad = torch.ones([3]);
    opt.step();
    assert.equal(opt.moments(a)!.step, 1);
    assert.equal(opt.moments(b), undefined, 'a parameter without a gradient has no state');
    opt.zeroGrad(false);
    assert.deepEqual(a.grad!.toArray(), [0, 0, 0]);
    opt.zeroGrad();
    assert.equal(a.grad, null);
    opt.dispose();
  });
});

test('clipGradNorm_ matches torch.nn.utils.clip_grad_norm_ (norm types 2, 1, 3.5, inf; clipping or not)', { skip: needPython() }, () => {
  const grads = [wave(6, 3, 2), wave(4, 4, 3), wave(1, 5, 1)];
  const shapes = [[2, 3], [4], [1]];
  const cases: [number, number][] = [[2, 1.5], [2, 100], [1, 2], [3.5, 0.5], [Infinity, 0.7], [Infinity, 50]];
  const ref = py(`
res = []
for dtype in (torch.float64, torch.float32):
    for norm_type, max_norm in inp['cases']:
        ps = [torch.zeros(s, dtype=dtype, requires_grad=True) for s in inp['shapes']]
        extra = torch.zeros(3, dtype=dtype, requires_grad=True)  # no grad: skipped
        for p, g in zip(ps, inp['grads']): p.grad = torch.tensor(g, dtype=dtype).reshape(p.shape)
        total = torch.nn.utils.clip_grad_norm_(ps + [extra], max_norm, norm_type=float(norm_type))
        res.append({'total': total.item(), 'grads': [p.grad.reshape(-1) for p in ps]})
out['res'] = res
`, { cases: cases.map(([n, m]) => [n === Infinity ? 'inf' : n, m]), grads, shapes });
  let k = 0;
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? { rtol: 1e-14, atol: 0 } : { rtol: 1e-6, atol: 1e-7 };
    for (const [normType, maxNorm] of cases) {
      const r = ref.res[k++];
      for (const foreach of [true, false]) {
        torch.tidy(() => {
          const ps = shapes.map((s) => torch.zeros(s, { dtype, requiresGrad: true }));
          const extra = torch.zeros([3], { dtype, requiresGrad: true });
          ps.forEach((p, i) => (p.grad = torch.tensor(grads[i], { dtype }).reshape(shapes[i])));
          const total = optim.clipGradNorm_([...ps, extra], maxNorm, normType, { foreach });
          const msg = `${dtype} norm ${normType} max ${maxNorm} foreach ${foreach}`;
          assertClose([total], [r.total], { ...tol, msg });
          ps.forEach((p, i) => assertClose(p.grad!, r.grads[i], { ...tol, msg }));
          assert.equal(extra.grad, null);
        });
      }
    }
  }
});

test('clipGradNorm_ edge cases and clipGradValue_', () => {
  torch.tidy(() => {
    const p = torch.zeros([3], { dtype: 'float64', requiresGrad: true });
    assert.equal(optim.clipGradNorm_([p], 1), 0, 'no gradients: total 0');
    p.grad = torch.tensor([3, 4, 0], { dtype: 'float64' });
    assert.equal(optim.clipGradNorm_(p, 1), 5);
    assertClose(p.grad!, [3 / (5 + 1e-6), 4 / (5 + 1e-6), 0], { rtol: 1e-15 });
    p.grad = torch.tensor([NaN, 1, 0], { dtype: 'float64' });
    assert.throws(() => optim.clipGradNorm_([p], 1, 2, { errorIfNonfinite: true }), /NaN/);
    p.grad = torch.tensor([-3, 0.5, 2], { dtype: 'float64' });
    optim.clipGradValue_([p], 1);
    assert.deepEqual(p.grad!.toArray(), [-1, 0.5, 1]);
  });
});

test('schedules: values at warm-up and decay boundaries', () => {
  const { lrAt, lrFactor } = optim;
  const near = (a: number, b: number, msg: string) => assertClose([a], [b], { rtol: 1e-14, atol: 1e-16, msg });
  const cos = { kind: 'cosine' as const, lr: 1e-3, warmupSteps: 10, totalSteps: 110 };
  near(lrAt(cos, 0), 0, 'cosine start');
  near(lrAt(cos, 5), 5e-4, 'cosine mid warm-up');
  near(lrAt(cos, 9), 9e-4, 'cosine last warm-up step');
  near(lrAt(cos, 10), 1e-3, 'cosine peak');
  near(lrAt(cos, 35), 1e-3 * 0.5 * (1 + Math.cos(Math.PI / 4)), 'cosine quarter');
  near(lrAt(cos, 60), 5e-4, 'cosine half');
  near(lrAt(cos, 110), 0, 'cosine end');
  near(lrAt(cos, 160), 5e-4, 'cosine past the end follows the curve, as transformers');
  near(lrAt({ ...cos, minLrRatio: 0.1 }, 110), 1e-4, 'cosine floor');
  near(lrAt({ ...cos, minLrRatio: 0.1 }, 60), 5.5e-4, 'cosine floor half');
  near(lrFactor({ ...cos, numCycles: 1 }, 60), 0, 'one full cycle: zero at the middle');
  near(lrFactor({ ...cos, numCycles: 1 }, 110), 1, 'one full cycle: back up at the end');
  const lin = { kind: 'linear' as const, lr: 2e-3, warmupRatio: 0.1 };
  near(lrAt(lin, 5, 100), 1e-3, 'linear warm-up from the ratio (10 steps)');
  near(lrAt(lin, 10, 100), 2e-3, 'linear peak');
  near(lrAt(lin, 55, 100), 1e-3, 'linear half');
  near(lrAt(lin, 100, 100), 0, 'linear end');
  near(lrAt(lin, 120, 100), 0, 'linear stays at 0');
  assert.equal(optim.warmupSteps({ kind: 'linear', warmupRatio: 0.06 }, 50), 3, 'ratio rounds up');
  assert.equal(optim.warmupSteps({ kind: 'linear', warmupSteps: 0, warmupRatio: 0.1 }, 100), 10, 'steps 0 defers to the ratio');
  assert.equal(optim.warmupSteps({ kind: 'linear', warmupSteps: 4, warmupRatio: 0.1 }, 100), 4, 'steps win over the ratio');
  near(lrAt({ kind: 'constant', lr: 3e-4 }, 50, 100), 3e-4, 'constant');
  near(lrAt({ kind: 'constant_with_warmup', lr: 3e-4, warmupSteps: 4 }, 2), 1.5e-4, 'constant warm-up');
  near(lrAt({ kind: 'constant_with_warmup', lr: 3e-4, warmupSteps: 4 }, 4), 3e-4, 'constant after warm-up');
  near(lrAt({ kind: 'cosine', warmupSteps: 0, totalSteps: 0 }, 0), 1, 'no steps at all');
  assert.throws(() => optim.checkSchedule({ kind: 'cosine' }), /totalSteps/);
  assert.throws(() => optim.checkSchedule({ kind: 'exp' as 'linear' }), /unknown schedule/);
});

test('LRScheduler follows torch LambdaLR with transformers\' schedule lambdas', { skip: needPython() }, () => {
  const schedules: torch.optim.Schedule[] = [
    { kind: 'cosine', warmupSteps: 3, totalSteps: 12 },
    { kind: 'cosine', warmupSteps: 2, totalSteps: 12, minLrRatio: 0.2, numCycles: 0.75 },
    { kind: 'linear', warmupSteps: 4, totalSteps: 12 },
    { kind: 'constant_with_warmup', warmupSteps: 5 },
    { kind: 'constant' },
  ];
  const ref = py(`
import math
def lam(s):
    w = s.get('warmupSteps', 0); T = s.get('totalSteps', 0); nc = s.get('numCycles', 0.5); mn = s.get('minLrRatio', 0.0)
    def f(step):
        if step < w: return float(step) / float(max(1, w))
        if s['kind'].startswith('constant'): return 1.0
        if s['kind'] == 'linear': return max(0.0, float(T - step) / float(max(1, T - w)))
        progress = float(step - w) / float(max(1, T - w))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(nc) * 2.0 * progress))
        return max(0.0, factor * (1 - mn) + mn)
    return f
res = []
for s in inp:
    p = torch.zeros(1, requires_grad=True); q = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([{'params': [p], 'lr': 1e-3}, {'params': [q], 'lr': 5e-4}], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam(s))
    lrs = []
    for step in range(15):
        lrs.append([g['lr'] for g in opt.param_groups])
        opt.step(); sched.step()
    res.append(lrs)
out['res'] = res
`, schedules);
  schedules.forEach((s, k) => {
    const p = torch.zeros([1], { requiresGrad: true });
    const q = torch.zeros([1], { requiresGrad: true });
    const opt = new optim.SGD([{ params: [p], lr: 1e-3 }, { params: [q], lr: 5e-4 }], { lr: 1 });
    const sched = new optim.LRScheduler(opt, s);
    for (let step = 0; step < 15; step++) {
      assertClose(sched.lastLrs(), ref.res[k][step], { rtol: 1e-14, atol: 1e-18, msg: `${JSON.stringify(s)} step ${step}` });
      opt.step();
      sched.step();
    }
    opt.dispose();
    torch.dispose([p, q]);
  });
});

// MoFO-style filter: only the top-α fraction of each parameter's coordinates by |momentum| move.
class TopMomentumAdamW extends optim.AdamW {
  moved: number[] = [];
  constructor(params: Tensor[], readonly alpha: number, o: torch.optim.AdamWOptions = {}) {
    super(params, o);
  }
  protected transformUpdates(b: torch.optim.UpdateBatch): void {
    b.updates.forEach((u, i) => {
      const m = b.states[i].exp_avg.abs().flatten();
      const k = Math.max(1, Math.ceil(this.alpha * m.numel()));
      const mask = torch.zerosLike(m).scatter(0, m.topk(k)[1], 1).reshape(u.shape);
      u.mul_(mask);
    });
  }
}

test('update hook: identity equals the default path; a top-α momentum filter moves only α of the coordinates', () => {
  class Identity extends optim.AdamW {
    calls = 0;
    protected transformUpdates(): void {
      this.calls++;
    }
  }
  for (const impl of ['foreach', 'single'] as const) {
    const plain = train((ps) => new optim.AdamW(ps, { lr: 0.01, amsgrad: true, weightDecay: 0.1, impl }));
    let hooked: Identity | undefined;
    const viaHook = train((ps) => (hooked = new Identity(ps, { lr: 0.01, amsgrad: true, weightDecay: 0.1, impl })));
    assert.equal(hooked!.calls, STEPS);
    viaHook.forEach((v, i) => assertClose(v, plain[i], { rtol: 1e-13, atol: 1e-15, msg: `identity hook ${impl}` }));
    const viaOption = train((ps) => new optim.AdamW(ps, { lr: 0.01, amsgrad: true, weightDecay: 0.1, impl, transformUpdate: () => {} }));
    assert.deepEqual(viaOption, viaHook);
  }

  // With no weight decay, a parameter moves exactly where its update was kept.
  const ps = makeParams('float64');
  const dense = makeParams('float64');
  const opt = new TopMomentumAdamW(ps, 0.25, { lr: 0.01, weightDecay: 0 });
  const ref = new optim.AdamW(dense, { lr: 0.01, weightDecay: 0 });
  for (let s = 0; s < 6; s++) {
    const before = flat(ps);
    runSteps(ps, opt, s, s + 1);
    runSteps(dense, ref, s, s + 1);
    const after = flat(ps);
    ps.forEach((p, i) => {
      if (dropsGrad(s) && i === 3) return;
      const changed = after[i].filter((v, j) => v !== before[i][j]).length;
      assert.equal(changed, Math.max(1, Math.ceil(0.25 * p.numel())), `step ${s} ${KEYS[i]}`);
    });
    if (s === 0) {
      // The moments stay dense: after the first step (same weights, same gradients) they equal plain AdamW's.
      ps.forEach((p, i) => {
        assert.ok(opt.moments(p)!.exp_avg.equal(ref.moments(dense[i])!.exp_avg));
        assert.ok(opt.moments(p)!.exp_avg_sq.equal(ref.moments(dense[i])!.exp_avg_sq));
      });
    }
  }
  opt.dispose();
  ref.dispose();
  torch.dispose([...ps, ...dense]);
});

test('fused AdamW: refused clearly where libtorch lacks it; matches the per-tensor path where it exists', () => {
  const fusedW = torch.hasOp('aten::_fused_adamw_');
  if (!fusedW) {
    torch.tidy(() => {
      const p = torch.zeros([2]).requiresGrad_();
      assert.throws(() => new optim.AdamW([p], { impl: 'fused' }), /_fused_adamw_/);
      // 'auto' falls back to foreach and still steps.
      const opt = new optim.AdamW([p], { lr: 0.1 });
      p.grad = torch.ones([2]);
      opt.step();
      assert.equal(opt.moments(p)!.step, 1);
      opt.dispose();
    });
    return;
  }
  // torch 2.x (run on the GPU machine): CUDA if present, else CPU (fused CPU kernels exist from torch 2.4).
  const device = torch.cudaDeviceCount() > 0 ? 'cuda' : 'cpu';
  for (const dtype of ['float32', 'float64'] as const) {
    for (const [Cls, o] of [
      [optim.AdamW, { lr: 0.01, weightDecay: 0.1 }],
      [optim.AdamW, { lr: 0.01, amsgrad: true, maximize: true }],
      [optim.Adam, { lr: 0.01, weightDecay: 0.05, amsgrad: true }],
    ] as const) {
      const run = (impl: torch.optim.AdamImpl): number[][] => {
        const ps = makeParams(dtype).map((p) => torch.noGrad(() => p.to({ device }).requiresGrad_()));
        const opt = new Cls(ps, { ...o, impl });
        runSteps(ps, opt, 0, STEPS);
        const out = ps.map((p) => Array.from(p.detach().cpu().data() as Float64Array));
        opt.dispose();
        torch.dispose(ps);
        return out;
      };
      const single = run('single');
      const fused = run('fused');
      const tol = dtype === 'float64' ? { rtol: 1e-10, atol: 1e-12 } : { rtol: 1e-5, atol: 1e-6 };
      const msg = `${Cls.name} ${dtype} ${device} ${JSON.stringify(o)}`;
      fused.forEach((v, i) => assertClose(v, single[i], { ...tol, msg: `fused ${msg}` }));
      run('foreach').forEach((v, i) => assertClose(v, single[i], { ...tol, msg: `foreach ${msg}` }));
      if (device === 'cuda') assert.deepEqual(run('auto'), fused, `'auto' takes the fused kernel on CUDA: ${msg}`);
    }
  }
});

test('optimizer steps in tidy (and outside) leak no tensors over 100 steps', () => {
  const configs: [string, (ps: Tensor[]) => torch.optim.Optimizer<any, any>][] = [
    ['adamw auto', (ps) => new optim.AdamW(ps, { lr: 0.01 })],
    ['adamw single amsgrad', (ps) => new optim.AdamW(ps, { lr: 0.01, amsgrad: true, impl: 'single' })],
    ['adam foreach maximize', (ps) => new optim.Adam(ps, { lr: 0.01, maximize: true, weightDecay: 0.1, impl: 'foreach' })],
    ['adamw hooked', (ps) => new TopMomentumAdamW(ps, 0.5, { lr: 0.01 })],
    ['sgd foreach', (ps) => new optim.SGD(ps, { lr: 0.01, momentum: 0.9, nesterov: true, weightDecay: 0.1 })],
    ['sgd single', (ps) => new optim.SGD(ps, { lr: 0.01, momentum: 0.9, foreach: false })],
  ];
  for (const [name, make] of configs) {
    const ps = [torch.randn([8, 4], { requiresGrad: true }), torch.randn([4], { requiresGrad: true }), torch.randn([3], { requiresGrad: true })];
    const opt = make(ps);
    const sched = new optim.LRScheduler(opt, { kind: 'cosine', warmupSteps: 10, totalSteps: 200 });
    const backward = () => torch.tidy(() => ps[0].matmul(ps[1]).square().sum().backward());
    const inTidy = () =>
      torch.tidy(() => {
        opt.zeroGrad();
        backward();
        optim.clipGradNorm_(ps, 0.5);
        optim.clipGradValue_(ps, 0.1);
        opt.step();
        sched.step();
      });
    const outside = () => {
      opt.zeroGrad();
      backward();
      opt.step();
    };
    for (let i = 0; i < 3; i++) inTidy();
    const before = torch.liveTensors();
    for (let i = 0; i < 100; i++) inTidy();
    assert.equal(torch.liveTensors(), before, `${name}: steps in tidy`);
    for (let i = 0; i < 100; i++) outside();
    assert.equal(torch.liveTensors(), before, `${name}: steps outside tidy`);
    opt.zeroGrad();
    opt.dispose();
    torch.dispose(ps);
  }
});
