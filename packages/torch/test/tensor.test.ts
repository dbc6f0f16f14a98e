import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { assertClose, needPython, py } from './helpers.js';

test('creation infers dtypes as Python does', () => {
  torch.tidy(() => {
    assert.equal(torch.tensor([1, 2]).dtype, 'int64');
    assert.equal(torch.tensor([1.5, 2]).dtype, 'float32');
    assert.equal(torch.tensor([true]).dtype, 'bool');
    assert.equal(torch.arange(3).dtype, 'int64');
    assert.deepEqual(torch.zeros([2, 3]).shape, [2, 3]);
    assert.deepEqual(torch.tensor([[1, 2], [3, 4]], { dtype: 'float64' }).toArray(), [[1, 2], [3, 4]]);
  });
});

test('overload resolution picks Tensor or Scalar variants', () => {
  torch.tidy(() => {
    const a = torch.tensor([1, 2, 3], { dtype: 'float32' });
    assert.deepEqual(a.add(1).toArray(), [2, 3, 4]);
    assert.deepEqual(a.add(a, 2).toArray(), [3, 6, 9]);
    assert.equal(a.sum().item(), 6);
    const m = torch.arange(6).reshape(2, 3);
    assert.deepEqual(m.sum(1).toArray(), [3, 12]);
    assert.deepEqual(m.sum(0, true).shape, [1, 3]);
    const [vals, idx] = m.max(1);
    assert.deepEqual(vals.toArray(), [2, 5]);
    assert.deepEqual(idx.toArray(), [2, 2]);
  });
});

test('indexing and slicing follow Python semantics', () => {
  torch.tidy(() => {
    const x = torch.arange(24).reshape(2, 3, 4);
    assert.deepEqual(x.i(1, ':', '1:3').toArray(), [[13, 14], [17, 18], [21, 22]]);
    assert.deepEqual(x.i('...', 0).toArray(), [[0, 4, 8], [12, 16, 20]]);
    assert.deepEqual(x.i(null, 0).shape, [1, 3, 4]);
    assert.deepEqual(x.i(0, '::2', -1).toArray(), [3, 11]);
    assert.deepEqual(x.i([1, 0], 0, 0).toArray(), [12, 0]);
    const y = torch.zeros([2, 3]);
    y.setIndex([0, '1:'], 5);
    assert.deepEqual(y.toArray(), [[0, 5, 5], [0, 0, 0]]);
    assert.throws(() => x.i(2), /out of bounds/);
  });
});

test('errors name the op and the problem; no crash', () => {
  torch.tidy(() => {
    const a = torch.ones([2, 3]);
    assert.throws(() => a.matmul(torch.ones([4, 4])), /aten::matmul: mat1 and mat2 shapes cannot be multiplied/);
    const d = torch.ones([1]);
    d.dispose();
    assert.throws(() => d.add(1), /disposed/);
    assert.throws(() => torch.tensor([[1, 2], [3]]), /ragged/);
  });
});

test('tidy releases temporaries and keeps results', () => {
  const before = torch.liveTensors();
  const kept = torch.tidy(() => {
    const a = torch.ones([3]);
    a.mul(2).add(1);
    return a.add(5);
  });
  assert.equal(torch.liveTensors(), before + 1);
  assert.deepEqual(kept.toArray(), [6, 6, 6]);
  kept.dispose();
  assert.equal(torch.liveTensors(), before);
});

test('printing matches PyTorch', { skip: needPython() }, () => {
  const cases = ['torch.tensor([1., 2., 3.])', 'torch.tensor([1.5, 2.25])', 'torch.arange(6).reshape(2, 3)', 'torch.tensor([True, False])', 'torch.tensor([[0.001, 1000.5]])', 'torch.tensor([1.,2.], dtype=torch.float64)'];
  const ref = py(`out['s'] = [${cases.map((c) => `repr(${c})`).join(', ')}]`).s as string[];
  torch.tidy(() => {
    const mine = [
      torch.tensor([1, 2, 3], { dtype: 'float32' }),
      torch.tensor([1.5, 2.25]),
      torch.arange(6).reshape(2, 3),
      torch.tensor([true, false]),
      torch.tensor([[0.001, 1000.5]]),
      torch.tensor([1, 2], { dtype: 'float64' }),
    ].map((t) => t.toString());
    assert.deepEqual(mine, ref);
  });
});

test('autograd matches PyTorch on a small graph', { skip: needPython() }, () => {
  const ref = py(`
x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], dtype=torch.float64, requires_grad=True)
w = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.2]], dtype=torch.float64, requires_grad=True)
y = torch.tanh(x @ w).pow(2).sum() + (x.exp() * 0.1).mean()
y.backward()
out['y'] = y; out['gx'] = x.grad; out['gw'] = w.grad
`);
  torch.tidy(() => {
    const x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], { dtype: 'float64', requiresGrad: true });
    const w = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, 0.2]], { dtype: 'float64', requiresGrad: true });
    const y = x.matmul(w).tanh().pow(2).sum().add(x.exp().mul(0.1).mean());
    y.backward();
    assertClose(y, ref.y, { rtol: 1e-12 });
    assertClose(x.grad!, ref.gx, { rtol: 1e-12 });
    assertClose(w.grad!, ref.gw, { rtol: 1e-12 });
  });
});

test('seeded RNG is deterministic and matches PyTorch', { skip: needPython() }, () => {
  const ref = py(`torch.manual_seed(123); out['r'] = torch.randn(5); out['u'] = torch.rand(3)`);
  torch.manualSeed(123);
  torch.tidy(() => {
    assertClose(torch.randn([5]), ref.r, { rtol: 1e-6 });
    assertClose(torch.rand([3]), ref.u, { rtol: 1e-6 });
  });
});

test('item() is a number for every dtype: a bool tensor gives 1 or 0, so a finiteness check can compare it', () => {
  const t = torch.tensor([1, Number.NaN, 3]);
  torch.tidy(() => {
    assert.equal(t.isfinite().all().item(), 0);
    assert.equal(t.isfinite().any().item(), 1);
    assert.equal(typeof t.isnan().any().item(), 'number');
    assert.equal(torch.tensor([7], { dtype: 'int64' }).item(), 7);
  });
  t.dispose();
});
