// AdamW with float32 master weights for bfloat16 parameters (masterWeights): the float32 copy and moments follow
// PyTorch's AdamW on a float32 copy with the bfloat16 gradients, the parameter is that copy rounded, the state stays
// float32 through a state dict round trip, and small updates that plain bfloat16 AdamW rounds away accumulate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { needPython, py } from './helpers.js';

const N = 64;
const STEPS = 20;
const init = Array.from({ length: N }, (_, i) => 0.75 + 0.2 * Math.sin(i * 1.7));
const grad = (s: number) => Array.from({ length: N }, (_, i) => (1.2 + Math.cos(i * 0.9 + s * 2.3)) * (1 + (i % 5)));
const HYPER = { lr: 3e-4, betas: [0.9, 0.99] as [number, number], eps: 1e-8, weightDecay: 0.1 };

function run(impl: 'foreach' | 'single' | 'hooked', masterWeights: boolean, steps = STEPS, from?: torch.optim.AdamW): { p: Tensor; opt: torch.optim.AdamW } {
  const p = torch.tensor(init).to('bfloat16');
  const opt = new torch.optim.AdamW([p], { ...HYPER, masterWeights, impl: impl === 'hooked' ? 'foreach' : impl, ...(impl === 'hooked' ? { transformUpdate: () => {} } : {}) });
  if (from) opt.loadStateDict(from.stateDict());
  for (let s = from ? STEPS - steps : 0; s < (from ? STEPS : steps); s++) {
    p.grad = torch.tensor(grad(s)).to('bfloat16');
    opt.step();
  }
  return { p, opt };
}

const values = (t: Tensor) => t.to('float64').toArray() as number[];

test('AdamW masterWeights on bfloat16 parameters: PyTorch AdamW on a float32 copy, rounded into the parameter', { skip: needPython() }, () => {
  const ref = py(
    `p = torch.tensor(inp['init']).to(torch.bfloat16)
master = p.float().clone().requires_grad_()
opt = torch.optim.AdamW([master], lr=inp['lr'], betas=tuple(inp['betas']), eps=inp['eps'], weight_decay=inp['wd'])
for g in inp['grads']:
    master.grad = torch.tensor(g).to(torch.bfloat16).float()
    opt.step()
st = opt.state[master]
out['master'] = master.double(); out['p'] = master.detach().to(torch.bfloat16).double()
out['exp_avg'] = st['exp_avg'].double(); out['exp_avg_sq'] = st['exp_avg_sq'].double()`,
    { init, lr: HYPER.lr, betas: HYPER.betas, eps: HYPER.eps, wd: HYPER.weightDecay, grads: Array.from({ length: STEPS }, (_, s) => grad(s)) },
  );
  for (const impl of ['foreach', 'single', 'hooked'] as const) {
    const { p, opt } = run(impl, true);
    const s = opt.moments(p)!;
    assert.equal(p.dtype, 'bfloat16');
    for (const k of ['master', 'exp_avg', 'exp_avg_sq'] as const) assert.equal(s[k]!.dtype, 'float32', `${impl}: ${k} dtype`);
    const close = (a: number[], b: number[], tol: number, what: string) => a.forEach((x, i) => assert.ok(Math.abs(x - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `${impl} ${what}[${i}]: ${x} vs ${b[i]}`));
    close(values(s.master!), ref.master, 1e-6, 'master');
    close(values(s.exp_avg), ref.exp_avg, 1e-6, 'exp_avg');
    close(values(s.exp_avg_sq), ref.exp_avg_sq, 1e-6, 'exp_avg_sq');
    assert.deepEqual(values(p), values(s.master!.to('bfloat16')), `${impl}: the parameter is the master rounded`);
    opt.dispose();
  }
});

test('masterWeights keeps updates below bfloat16 resolution that plain bfloat16 AdamW rounds away; the state survives a state dict round trip in float32', () => {
  const plain = run('foreach', false);
  const master = run('foreach', true);
  const moved = (t: Tensor) => values(t).filter((x, i) => x !== values(torch.tensor(init).to('bfloat16'))[i]).length;
  // Each step moves a weight by ~lr (3e-4), below half a bfloat16 step at 0.55..0.95 (≥ 1e-3): plain AdamW loses all.
  assert.equal(moved(plain.p), 0);
  assert.ok(moved(master.p) > N / 2, `only ${moved(master.p)} of ${N} weights moved`);
  assert.equal(plain.opt.moments(plain.p)!.exp_avg.dtype, 'bfloat16');
  // Resume after 5 steps from a state dict: the same weights and masters as 20 uninterrupted steps.
  const first = run('foreach', true, 5);
  const resumed = run('foreach', true, STEPS - 5, first.opt);
  assert.equal(resumed.opt.moments(resumed.p)!.master!.dtype, 'float32');
  assert.deepEqual(values(resumed.opt.moments(resumed.p)!.master!), values(master.opt.moments(master.p)!.master!));
  assert.deepEqual(values(resumed.p), values(master.p));
  for (const r of [plain, master, first, resumed]) r.opt.dispose();
});
