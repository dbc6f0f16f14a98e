// The fused CPU paths of native/fused.h against the aten ops they stand in for: Linear on oneDNN's GEMM (float32) and
// RMSNorm with a hand-written backward (float32/float64). Forward, both gradients, double backward, and that inputs
// and parameters are never written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';

type Tensor = torch.Tensor;
const maxDiff = (a: Tensor, b: Tensor) => torch.tidy(() => a.sub(b).abs().max().item() as number);
const scale = (a: Tensor) => torch.tidy(() => Math.max(1, a.abs().max().item() as number));

function leaf(shape: number[], dtype: torch.DType = 'float32'): Tensor {
  return torch.randn(shape, { dtype }).requiresGrad_(true);
}

// Debian's libtorch loads oneDNN as libdnnl.so.2, which fused.h finds; PyTorch 2.x wheels link it statically, so
// there linear() is aten::linear itself and only the numbers are checked.
const dnnlShared = torch.torchVersion().startsWith('1.');

test('linear (oneDNN GEMM on CPU float32) matches aten::linear: shapes, bias, gradients, double backward', () => {
  torch.manualSeed(3);
  torch.tidy(() => {
    // [batch dims..., K] x [N, K]: one row (the M = 1 case once accumulated into the bias), 3-D, no bias, non-contiguous input.
    const cases: { x: number[]; n: number; bias: boolean; transpose?: boolean }[] = [
      { x: [1, 4], n: 8, bias: true },
      { x: [4], n: 3, bias: true },
      { x: [2, 5, 16], n: 7, bias: true },
      { x: [3, 16], n: 9, bias: false },
      { x: [6, 16], n: 5, bias: true, transpose: true },
      { x: [64, 96], n: 80, bias: false },
    ];
    for (const c of cases) {
      const x0 = leaf(c.x);
      const w0 = leaf([c.n, c.x[c.x.length - 1]]);
      const b0 = c.bias ? leaf([c.n]) : null;
      const bCopy = b0 ? b0.detach().clone() : null;
      const wCopy = w0.detach().clone();
      const xin = c.transpose ? x0.t().contiguous().t() : x0; // same values, column-major storage
      const y = torch.linear(xin, w0, b0);
      if (dnnlShared) assert.match(y.gradFn ?? '', /DnnlLinear/);
      const [x1, w1] = [x0.detach().requiresGrad_(true), w0.detach().requiresGrad_(true)];
      const b1 = b0 ? b0.detach().clone().requiresGrad_(true) : null;
      const yr = torch.ops.linear(x1, w1, b1);
      assert.deepEqual(y.shape, yr.shape);
      assert.ok(maxDiff(y, yr) <= 1e-5 * scale(yr), `forward ${JSON.stringify(c)}`);
      const g = torch.randn(yr.shape);
      y.backward(g);
      yr.backward(g);
      assert.ok(maxDiff(x0.grad!, x1.grad!) <= 1e-5 * scale(x1.grad!), `dx ${JSON.stringify(c)}`);
      assert.ok(maxDiff(w0.grad!, w1.grad!) <= 1e-5 * scale(w1.grad!), `dW ${JSON.stringify(c)}`);
      if (b0) assert.ok(maxDiff(b0.grad!, b1!.grad!) <= 1e-5 * scale(b1!.grad!), `db ${JSON.stringify(c)}`);
      // Parameters are read, never written.
      assert.equal(maxDiff(w0.detach(), wCopy), 0);
      if (b0) assert.equal(maxDiff(b0.detach(), bCopy!), 0);
    }
    // Double backward: d/dW of |dL/dx|² through the create_graph path.
    const x = leaf([5, 6]);
    const w = leaf([4, 6]);
    torch.linear(x, w).square().sum().backward(undefined, { createGraph: true });
    const gx = x.grad!;
    assert.notEqual(gx.gradFn, null);
    w.grad = null;
    gx.square().sum().backward();
    const [xr, wr] = [x.detach().requiresGrad_(true), w.detach().requiresGrad_(true)];
    torch.ops.linear(xr, wr, null).square().sum().backward(undefined, { createGraph: true });
    const gxr = xr.grad!;
    wr.grad = null;
    gxr.square().sum().backward();
    assert.ok(maxDiff(w.grad!, wr.grad!) <= 1e-4 * scale(wr.grad!));
  });
});

test('linear keeps aten::linear for other dtypes and without autograd', () => {
  torch.tidy(() => {
    const x = torch.randn([3, 4], { dtype: 'float64' });
    const w = torch.randn([2, 4], { dtype: 'float64' }).requiresGrad_(true);
    assert.doesNotMatch(torch.linear(x, w).gradFn ?? '', /DnnlLinear/);
    const y = torch.noGrad(() => torch.linear(torch.randn([3, 4]), torch.randn([2, 4])));
    assert.equal(y.gradFn, null);
    assert.throws(() => torch.linear(torch.randn([3, 5]), torch.randn([2, 4])), /shapes cannot be multiplied|size/);
  });
});

test('rmsNorm (fused backward) matches the composite in float64 and float32, including a double backward', () => {
  torch.manualSeed(4);
  torch.tidy(() => {
    for (const dtype of ['float64', 'float32'] as const) {
      const tol = dtype === 'float64' ? 1e-12 : 1e-5;
      const x = leaf([3, 5, 8], dtype);
      const w = torch.rand([8], { dtype }).add(0.5).requiresGrad_(true);
      const y = torch.rmsNorm(x, w, 1e-5);
      assert.match(y.gradFn ?? '', /FusedRmsNorm/);
      const [x2, w2] = [x.detach().requiresGrad_(true), w.detach().requiresGrad_(true)];
      const y2 = x2.mul(torch.ops.rsqrt(x2.square().mean([-1], true).add(1e-5))).mul(w2);
      assert.ok(maxDiff(y, y2) <= tol);
      const g = torch.randn([3, 5, 8], { dtype });
      y.backward(g, { createGraph: true });
      y2.backward(g, { createGraph: true });
      assert.ok(maxDiff(x.grad!, x2.grad!) <= tol * scale(x2.grad!));
      assert.ok(maxDiff(w.grad!, w2.grad!) <= tol * scale(w2.grad!));
      // Second order: d/dw of Σ (dL/dx)².
      const gx = x.grad!;
      const gx2 = x2.grad!;
      w.grad = null;
      w2.grad = null;
      gx.square().sum().backward();
      gx2.square().sum().backward();
      assert.ok(maxDiff(w.grad!, w2.grad!) <= 100 * tol * scale(w2.grad!));
    }
  });
});
