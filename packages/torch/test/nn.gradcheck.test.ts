// Finite-difference gradient checks in float64: autograd's gradients of nn layers against central differences of
// the forward pass, for inputs and parameters alike. Independent of python.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';

const { nn } = torch;
type Tensor = torch.Tensor;

/**
 * Compares d loss / d t from backward() with (loss(t + h) − loss(t − h)) / 2h for up to `perTensor` elements of
 * each tensor (spread over the whole tensor). The perturbation writes straight into the tensor's memory, which
 * is why every checked tensor must be a contiguous float64 CPU leaf.
 */
function gradCheck(loss: () => Tensor, tensors: [string, Tensor][], opts: { h?: number; rtol?: number; atol?: number; perTensor?: number } = {}): number {
  const h = opts.h ?? 1e-6;
  const rtol = opts.rtol ?? 1e-5;
  const atol = opts.atol ?? 1e-7;
  const perTensor = opts.perTensor ?? 24;
  for (const [, t] of tensors) t.grad = null;
  torch.tidy(() => loss().backward());
  const analytic = tensors.map(([n, t]) => torch.tidy(() => {
    const g = t.grad;
    assert.ok(g !== null, `${n} got no gradient`);
    return Float64Array.from(g.data() as Float64Array);
  }));
  const value = () => torch.tidy(() => torch.noGrad(() => loss().item()));
  let checked = 0;
  tensors.forEach(([name, t], ti) => {
    assert.equal(t.dtype, 'float64', `${name} must be float64`);
    assert.ok(t.isContiguous(), `${name} must be contiguous`);
    // Perturb one element at a time in place (no grad), read back from a copy of the values.
    const mem = Float64Array.from(t.detach().data() as Float64Array);
    const flat = t.detach().view(-1);
    const set = (i: number, v: number) => torch.noGrad(() => flat.setIndex(i, v));
    const n = mem.length;
    const step = Math.max(1, Math.floor(n / perTensor));
    for (let i = 0; i < n; i += step) {
      const orig = mem[i];
      set(i, orig + h);
      const up = value();
      set(i, orig - h);
      const down = value();
      set(i, orig);
      const numeric = (up - down) / (2 * h);
      const a = analytic[ti][i];
      assert.ok(Math.abs(a - numeric) <= atol + rtol * Math.abs(numeric), `${name}[${i}]: autograd ${a} vs finite difference ${numeric}`);
      checked++;
    }
  });
  return checked;
}

/** Σ y·r with fixed random weights r, so every output element contributes a distinct amount. */
function weightedSum(ys: Tensor[], rs: Tensor[]): Tensor {
  let s = ys[0].mul(rs[0]).sum();
  for (let i = 1; i < ys.length; i++) s = s.add(ys[i].mul(rs[i]).sum());
  return s;
}

function leaf(shape: number[]): Tensor {
  return torch.randn(shape, { dtype: 'float64', requiresGrad: true });
}

function checkModule(m: torch.nn.Module, inputs: Tensor[], run: (xs: Tensor[]) => Tensor[], opts: { rtol?: number; atol?: number } = {}): void {
  torch.tidy(() => {
    const shapes = torch.tidy(() => torch.noGrad(() => run(inputs).map((y) => y.shape)));
    const rs = shapes.map((s) => torch.randn(s, { dtype: 'float64' }));
    const tensors: [string, Tensor][] = [...inputs.map((x, i) => [`input ${i}`, x] as [string, Tensor]), ...m.namedParameters()];
    const n = gradCheck(() => weightedSum(run(inputs), rs), tensors, opts);
    assert.ok(n > 0);
  });
  m.dispose();
}

test('gradcheck RMSNorm', () => {
  torch.manualSeed(1);
  const m = new nn.RMSNorm(6, { dtype: 'float64' });
  torch.noGrad(() => m.weight!.add_(torch.randn([6], { dtype: 'float64' }).mul(0.3)));
  const x = leaf([3, 6]);
  checkModule(m, [x], ([a]) => [m.forward(a)]);
  x.dispose();
});

test('gradcheck LayerNorm and Conv2d', () => {
  torch.manualSeed(2);
  const ln = new nn.LayerNorm([2, 3], { dtype: 'float64' });
  const x = leaf([2, 2, 3]);
  checkModule(ln, [x], ([a]) => [ln.forward(a)]);
  const conv = new nn.Conv2d(4, 2, 3, { stride: 2, padding: 1, groups: 2, dtype: 'float64' });
  const img = leaf([1, 4, 5, 5]);
  checkModule(conv, [img], ([a]) => [conv.forward(a)]);
  torch.dispose([x, img]);
});

test('gradcheck CausalSelfAttention (fused, and grouped-query with separate projections)', () => {
  torch.manualSeed(3);
  const fused = new nn.CausalSelfAttention({ nEmbd: 8, nHead: 2, fused: true, dtype: 'float64' });
  const x = leaf([2, 4, 8]);
  checkModule(fused, [x], ([a]) => [fused.forward(a)]);
  const gqa = new nn.CausalSelfAttention({ nEmbd: 8, nHead: 4, nKvHead: 2, bias: false, dtype: 'float64' });
  const y = leaf([1, 5, 8]);
  checkModule(gqa, [y], ([a]) => [gqa.forward(a)]);
  torch.dispose([x, y]);
});

test('gradcheck LSTMCell and a 2-layer LSTM (input, initial state and every weight)', () => {
  torch.manualSeed(4);
  const cell = new nn.LSTMCell(3, 4, { dtype: 'float64' });
  const cx = [leaf([2, 3]), leaf([2, 4]), leaf([2, 4])];
  checkModule(cell, cx, ([x, h, c]) => cell.forward(x, [h, c]));
  const lstm = new nn.LSTM(3, 4, { numLayers: 2, batchFirst: true, dtype: 'float64' });
  const lx = [leaf([2, 4, 3]), leaf([2, 2, 4]), leaf([2, 2, 4])];
  checkModule(lstm, lx, ([x, h, c]) => {
    const [o, [hn, cn]] = lstm.forward(x, [h, c]);
    return [o, hn, cn];
  });
  torch.dispose([...cx, ...lx]);
});

test('gradcheck TransformerBlock (llama style)', () => {
  torch.manualSeed(5);
  const blk = new nn.TransformerBlock({ nEmbd: 8, nHead: 2, nKvHead: 1, style: 'llama', mlpHidden: 12, dtype: 'float64' });
  const x = leaf([1, 4, 8]);
  checkModule(blk, [x], ([a]) => [blk.forward(a)], { rtol: 1e-5, atol: 1e-7 });
  x.dispose();
});

test('attention is causal: later tokens do not change earlier outputs', () => {
  torch.manualSeed(6);
  const att = new nn.CausalSelfAttention({ nEmbd: 8, nHead: 2, dtype: 'float64' });
  torch.tidy(() => {
    const x = torch.randn([1, 5, 8], { dtype: 'float64' });
    const y = att.forward(x);
    const x2 = x.clone();
    x2.setIndex([0, 4, ':'], torch.randn([8], { dtype: 'float64' }));
    const y2 = att.forward(x2);
    assert.ok(y.i(0, ':4').allclose(y2.i(0, ':4'), 1e-12, 1e-12));
    assert.ok(!y.i(0, 4).allclose(y2.i(0, 4)));
    // An extra boolean mask (here: each token sees only itself) combines with the causal one.
    const eye = torch.eye(5, { dtype: 'bool' });
    const ym = att.forward(x, { mask: eye });
    const v = att.v!.forward(x); // [1, 5, 8]: with one visible key, attention returns that token's value
    assert.ok(ym.allclose(att.o.forward(v), 1e-10, 1e-12));
  });
  att.dispose();
});
