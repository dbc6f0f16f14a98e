// PyTorch 2.x's fused aten::scaled_dot_product_attention against the composed path (matmul, softmax) that 1.13 uses:
// same outputs and gradients for causal, boolean and additive masks, a custom scale, cached keys (S > T) and grouped
// heads expanded to the query heads, in float32 and float64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';

const skip = torch.hasFusedAttention() ? false : `this libtorch (${torch.torchVersion()}) has no aten::scaled_dot_product_attention; run under PyTorch 2.x (npm run test:torch2)`;

type Case = { name: string; T: number; S: number; causal?: boolean; mask?: 'bool' | 'float'; scale?: number; dtype: 'float32' | 'float64' };
const CASES: Case[] = [
  { name: 'causal', T: 7, S: 7, causal: true, dtype: 'float32' },
  { name: 'causal float64', T: 5, S: 5, causal: true, dtype: 'float64' },
  { name: 'bool padding mask', T: 6, S: 6, mask: 'bool', dtype: 'float32' },
  { name: 'additive mask', T: 6, S: 6, mask: 'float', dtype: 'float32' },
  { name: 'custom scale', T: 4, S: 4, causal: true, scale: 1, dtype: 'float32' },
  { name: 'cached keys, bottom-right mask', T: 3, S: 8, mask: 'bool', dtype: 'float32' },
  // aten's is_causal aligns the mask top-left; the composed path's causal aligns it bottom-right, as a cache needs.
  { name: 'causal over cached keys (S > T)', T: 3, S: 8, causal: true, dtype: 'float32' },
  { name: 'causal over cached keys with a padding mask', T: 3, S: 8, causal: true, mask: 'bool', dtype: 'float32' },
  { name: 'causal over cached keys with an additive mask', T: 3, S: 8, causal: true, mask: 'float', dtype: 'float32' },
];

function run(c: Case, fused: boolean, inputs: torch.Tensor[], mask: torch.Tensor | null): { y: number[]; grads: number[][] } {
  const was = torch.setFusedAttention(fused);
  try {
    const [q, k, v] = inputs.map((t) => t.detach().requiresGrad_(true));
    const y = torch.scaledDotProductAttention(q, k, v, { causal: c.causal, mask, scale: c.scale });
    y.mul(y).sum().backward();
    return { y: y.toArray().flat(Infinity) as number[], grads: [q, k, v].map((t) => t.grad!.toArray().flat(Infinity) as number[]) };
  } finally {
    torch.setFusedAttention(was);
  }
}

for (const c of CASES) {
  test(`fused attention equals the composed path: ${c.name}`, { skip }, () => {
    torch.manualSeed(7);
    const [B, H, D] = [2, 3, 8];
    const inputs = [torch.randn([B, H, c.T, D], { dtype: c.dtype }), torch.randn([B, H, c.S, D], { dtype: c.dtype }), torch.randn([B, H, c.S, D], { dtype: c.dtype })];
    let mask: torch.Tensor | null = null;
    if (c.mask === 'bool') {
      // Causal within the cache plus one padded key position in the first sequence: [B, 1, T, S]
      const m = torch.ones([c.T, c.S], { dtype: 'bool' }).tril(c.S - c.T).reshape(1, 1, c.T, c.S).expand([B, 1, c.T, c.S]).contiguous();
      m.i(0, 0, ':', 0).fill_(false);
      m.i(0, 0, ':', c.S - c.T).fill_(true);
      mask = m;
    } else if (c.mask === 'float') {
      mask = torch.randn([1, H, c.T, c.S], { dtype: c.dtype });
    }
    const a = run(c, true, inputs, mask);
    const b = run(c, false, inputs, mask);
    const tol = c.dtype === 'float64' ? 1e-12 : 2e-5;
    const worst = (x: number[], y: number[]) => x.reduce((m, xi, i) => Math.max(m, Math.abs(xi - y[i])), 0);
    assert.ok(worst(a.y, b.y) <= tol, `output differs by ${worst(a.y, b.y)}`);
    for (let i = 0; i < 3; i++) assert.ok(worst(a.grads[i], b.grads[i]) <= tol * 10, `grad ${'qkv'[i]} differs by ${worst(a.grads[i], b.grads[i])}`);
  });
}

test('RETAIN_SDPA toggle: setFusedAttention returns the previous setting', () => {
  const was = torch.setFusedAttention(false);
  assert.equal(torch.setFusedAttention(was), false);
});
