import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { assertClose, needPython, py } from './helpers.js';

// A fixed problem: 3 parameters and per-step gradients from a deterministic function of the step, so both peers
// apply exactly the same gradients.
const INIT = { w: [[0.5, -0.3, 0.8], [0.1, 0.9, -0.6]], b: [0.05, -0.02], s: [1.5] };
function gradFor(name: string, step: number, shape: number[]): number[] {
  const n = shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, (_, i) => Math.sin(1.3 * step + 0.7 * i + name.length) * (1 + 0.1 * i));
}

function runOurs(make: (ps: torch.Tensor[]) => torch.optim.Optimizer, steps: number, dtype: torch.DType = 'float64'): number[][] {
  const ps = Object.values(INIT).map((v) => torch.tensor(v as number[], { dtype, requiresGrad: true }));
  const names = Object.keys(INIT);
  const opt = make(ps);
  for (let s = 1; s <= steps; s++) {
    torch.tidy(() => {
      ps.forEach((p, i) => (p.grad = torch.tensor(gradFor(names[i], s, p.shape), { dtype }).reshape(p.shape)));
      opt.step();
    });
  }
  const out = ps.map((p) => (p.detach().toArray() as number[]).flat(2) as number[]);
  opt.dispose();
  torch.dispose(ps);
  return out;
}

const PY_PRELUDE = `
import math
init = inp['init']
def grad_for(name, step, shape):
    n = 1
    for d in shape: n *= d
    return torch.tensor([math.sin(1.3 * step + 0.7 * i + len(name)) * (1 + 0.1 * i) for i in range(n)], dtype=torch.float64).reshape(shape)
def run(make, steps):
    ps = [torch.tensor(init[k], dtype=torch.float64, requires_grad=True) for k in ['w', 'b', 's']]
    opt = make(ps)
    for s in range(1, steps + 1):
        for p, k in zip(ps, ['w', 'b', 's']): p.grad = grad_for(k, s, list(p.shape))
        opt.step()
    return [p.detach().reshape(-1) for p in ps]
`;

test('SGD and AdamW match torch.optim over 20 steps in float64', { skip: needPython() }, () => {
  const ref = py(PY_PRELUDE + `
O = torch.optim
out['sgd'] = run(lambda ps: O.SGD(ps, lr=0.1), 20)
out['mom'] = run(lambda ps: O.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01), 20)
out['nes'] = run(lambda ps: O.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, maximize=True), 20)
out['adamw'] = run(lambda ps: O.AdamW(ps, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1), 20)
out['ams'] = run(lambda ps: O.AdamW(ps, lr=0.01, amsgrad=True, weight_decay=0.05), 20)
out['adam'] = run(lambda ps: O.Adam(ps, lr=0.01, weight_decay=0.05), 20)
`, { init: INIT });
  const O = torch.optim;
  const close = (ours: number[][], theirs: number[][], msg: string) => ours.forEach((v, i) => assertClose(v, theirs[i], { rtol: 1e-12, atol: 1e-14, msg }));
  close(runOurs((ps) => new O.SGD(ps, { lr: 0.1 }), 20), ref.sgd, 'sgd');
  close(runOurs((ps) => new O.SGD(ps, { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 }), 20), ref.mom, 'momentum');
  close(runOurs((ps) => new O.SGD(ps, { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0.01, maximize: true }), 20), ref.nes, 'nesterov');
  for (const impl of ['foreach', 'single'] as const) {
    close(runOurs((ps) => new O.AdamW(ps, { lr: 0.01, betas: [0.9, 0.95], weightDecay: 0.1, impl }), 20), ref.adamw, `adamw ${impl}`);
    close(runOurs((ps) => new O.AdamW(ps, { lr: 0.01, amsgrad: true, weightDecay: 0.05, impl }), 20), ref.ams, `amsgrad ${impl}`);
  }
  close(runOurs((ps) => new O.Adam(ps, { lr: 0.01, weightDecay: 0.05 }), 20), ref.adam, 'adam');
});

test('foreach and per-tensor AdamW agree in float32', () => {
  const a = runOurs((ps) => new torch.optim.AdamW(ps, { lr: 0.01, impl: 'foreach' }), 20, 'float32');
  const b = runOurs((ps) => new torch.optim.AdamW(ps, { lr: 0.01, impl: 'single' }), 20, 'float32');
  a.forEach((v, i) => assertClose(v, b[i], { rtol: 1e-6, atol: 1e-7 }));
});

test('optimizer state dict resumes bit-identically', () => {
  const straight = runOurs((ps) => new torch.optim.AdamW(ps, { lr: 0.01, weightDecay: 0.1 }), 20);
  const ps = Object.values(INIT).map((v) => torch.tensor(v as number[], { dtype: 'float64', requiresGrad: true }));
  const names = Object.keys(INIT);
  const stepTo = (opt: torch.optim.Optimizer, from: number, to: number) => {
    for (let s = from; s <= to; s++) torch.tidy(() => {
      ps.forEach((p, i) => (p.grad = torch.tensor(gradFor(names[i], s, p.shape), { dtype: 'float64' }).reshape(p.shape)));
      opt.step();
    });
  };
  const first = new torch.optim.AdamW(ps, { lr: 0.01, weightDecay: 0.1 });
  stepTo(first, 1, 10);
  const saved = first.stateDict();
  const second = new torch.optim.AdamW(ps, { lr: 0.5 });
  second.loadStateDict(saved);
  first.dispose();
  stepTo(second, 11, 20);
  ps.forEach((p, i) => assert.deepEqual((p.detach().toArray() as number[]).flat(2), straight[i]));
  second.dispose();
  torch.dispose(ps);
});

test('clipGradNorm_ matches torch.nn.utils.clip_grad_norm_', { skip: needPython() }, () => {
  const ref = py(`
ps = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in inp['v']]
for p, g in zip(ps, inp['g']): p.grad = torch.tensor(g, dtype=torch.float64)
out['norm'] = torch.nn.utils.clip_grad_norm_(ps, 1.5).item()
out['g'] = [p.grad for p in ps]
ps2 = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in inp['v']]
for p, g in zip(ps2, inp['g']): p.grad = torch.tensor(g, dtype=torch.float64) * 0.01
out['norm_small'] = torch.nn.utils.clip_grad_norm_(ps2, 1.5).item()
`, { v: [[1, 2, 3], [4, 5]], g: [[0.5, -2, 1.5], [3, -0.25]] });
  torch.tidy(() => {
    const ps = [torch.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true }), torch.tensor([4, 5], { dtype: 'float64', requiresGrad: true })];
    ps[0].grad = torch.tensor([0.5, -2, 1.5], { dtype: 'float64' });
    ps[1].grad = torch.tensor([3, -0.25], { dtype: 'float64' });
    const n = torch.optim.clipGradNorm_(ps, 1.5);
    assertClose([n], [ref.norm], { rtol: 1e-14 });
    assertClose(ps[0].grad!, ref.g[0], { rtol: 1e-14 });
    assertClose(ps[1].grad!, ref.g[1], { rtol: 1e-14 });
    ps[0].grad = torch.tensor([0.005, -0.02, 0.015], { dtype: 'float64' });
    ps[1].grad = torch.tensor([0.03, -0.0025], { dtype: 'float64' });
    assertClose([torch.optim.clipGradNorm_(ps, 1.5)], [ref.norm_small], { rtol: 1e-14 });
    assertClose(ps[0].grad!, [0.005, -0.02, 0.015], { rtol: 1e-14 });
  });
});

test('schedules: warm-up, linear and cosine decay at their boundaries', () => {
  const { lrAt } = torch.optim;
  const s = { kind: 'cosine' as const, lr: 1e-3, warmupSteps: 10 };
  assert.equal(lrAt(s, 0, 110), 0);
  assert.equal(lrAt(s, 5, 110), 5e-4);
  assert.equal(lrAt(s, 10, 110), 1e-3);
  assertClose([lrAt(s, 60, 110)], [5e-4], { rtol: 1e-12 });
  assertClose([lrAt(s, 110, 110)], [0], { atol: 1e-15 });
  assertClose([lrAt({ ...s, minLrRatio: 0.1 }, 110, 110)], [1e-4], { rtol: 1e-12 });
  const l = { kind: 'linear' as const, lr: 2e-3, warmupRatio: 0.1 };
  assert.equal(lrAt(l, 5, 100), 1e-3);
  assertClose([lrAt(l, 55, 100)], [1e-3], { rtol: 1e-12 });
  assert.equal(lrAt({ kind: 'constant', lr: 3e-4 }, 50, 100), 3e-4);
});

test('an optimizer step in tidy leaks no tensors', () => {
  const ps = [torch.randn([4, 4], { requiresGrad: true }), torch.randn([4], { requiresGrad: true })];
  const opt = new torch.optim.AdamW(ps, { lr: 0.01 });
  const step = () => torch.tidy(() => {
    const loss = ps[0].matmul(ps[1]).square().sum();
    loss.backward();
    opt.step();
    opt.zeroGrad();
  });
  for (let i = 0; i < 5; i++) step();
  const before = torch.liveTensors();
  for (let i = 0; i < 100; i++) step();
  assert.equal(torch.liveTensors(), before);
  opt.dispose();
  torch.dispose(ps);
});
