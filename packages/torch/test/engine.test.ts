// Engine correctness: dtypes end to end, broadcasting, in-place identity, grad modes, autograd entry points, RNG
// state, and finite-difference checks of the composite functions in functional.ts. Reference values that only
// PyTorch can give (bf16/f16 rounding, cross-dtype casts) come from one batched python3-torch call.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../src/index.js';
import { assertClose, needPython, py } from './helpers.js';

type Tensor = torch.Tensor;
type DType = torch.DType;

const DTYPES: DType[] = ['float32', 'float64', 'bfloat16', 'float16', 'int64', 'int32', 'bool', 'uint8'];

// Source values per dtype for the cast table: exact in their own dtype, so the only rounding is the cast itself.
// Negative values never go to uint8 (C++ leaves float → unsigned of a negative undefined) and nothing exceeds
// 255 or the float16 range.
const SRC: Record<DType, (number | boolean)[]> = {
  float32: [0, 0.1, 1, 2.5, 3.75, 100.3125, 254.875, -1.5, -3.75, 0.001],
  float64: [0, 0.1, 1, 2.5, 3.75, 100.3, 254.9, -1.5, -3.7, 0.001],
  bfloat16: [0, 0.5, 1, 2.5, 3.75, 100, 254, -1.5, -3.75, 0.0078125],
  float16: [0, 0.5, 1, 2.5, 3.75, 100.25, 254.875, -1.5, -3.75, 0.0009765625],
  int64: [0, 1, 2, 7, 100, 254, -3, -100],
  int32: [0, 1, 2, 7, 100, 254, -3, -100],
  bool: [true, false, true],
  uint8: [0, 1, 7, 200, 255],
} as Record<DType, (number | boolean)[]>;

function srcFor(from: DType, to: DType): (number | boolean)[] {
  return SRC[from].filter((v) => to !== 'uint8' || typeof v === 'boolean' || v >= 0);
}

// Floats chosen around bf16/f16 rounding boundaries: ties to even, subnormals, overflow to inf, the largest finites.
const ROUNDING = [1 / 3, 0.1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519, 65520, 1e5,
  6e-8, 3e-8, 1e-8, 3.14159265, -2.71828, 1e38, 3.3e38, -0, 2 ** -126, 2 ** -133];

let refCache: any;
function reference(): any {
  if (refCache) return refCache;
  const pairs: [DType, DType, (number | boolean)[]][] = [];
  for (const a of DTYPES) for (const b of DTYPES) pairs.push([a, b, srcFor(a, b)]);
  refCache = py(
    `
def dt(n): return getattr(torch, n)
out['casts'] = [torch.tensor(vals, dtype=dt(a)).to(dt(b)) for a, b, vals in inp['pairs']]
x = torch.tensor(inp['rounding'], dtype=torch.float32)
out['bf16'] = x.to(torch.bfloat16)
out['f16'] = x.to(torch.float16)
out['bf16_sum'] = torch.tensor(inp['rounding'][:6], dtype=torch.bfloat16).sum()
# JSON has no infinities: spell them out and turn them back on the JS side.
def enc(v):
    if isinstance(v, list): return [enc(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v): return str(v)
    return v
out = {k: enc(v.tolist() if isinstance(v, torch.Tensor) else [t.tolist() for t in v]) for k, v in out.items()}
`,
    { pairs, rounding: ROUNDING },
  );
  const dec = (v: unknown): unknown => (Array.isArray(v) ? v.map(dec) : v === 'inf' ? Infinity : v === '-inf' ? -Infinity : v === 'nan' ? NaN : v);
  for (const k of Object.keys(refCache)) refCache[k] = dec(refCache[k]);
  refCache.pairs = pairs;
  return refCache;
}

function same(a: unknown, b: unknown): boolean {
  return Object.is(a, b) || (typeof a === 'number' && typeof b === 'number' && a === b);
}

// ---------------------------------------------------------------------------------------------------------------
// dtypes

test('every dtype: creation from typed arrays, data() and toArray() round trips', () => {
  torch.tidy(() => {
    const cases: [ArrayBufferView, DType, string][] = [
      [new Float32Array([1.5, -2, 0.25]), 'float32', 'Float32Array'],
      [new Float64Array([1.5, -2, 1e-300]), 'float64', 'Float64Array'],
      [new Int32Array([1, -2, 2 ** 31 - 1]), 'int32', 'Int32Array'],
      [new BigInt64Array([1n, -2n, 2n ** 40n]), 'int64', 'BigInt64Array'],
      [new Uint8Array([0, 7, 255]), 'uint8', 'Uint8Array'],
    ];
    for (const [arr, dtype, kind] of cases) {
      const t = torch.tensor(arr as Float32Array);
      assert.equal(t.dtype, dtype);
      assert.deepEqual(t.shape, [3]);
      const back = t.data();
      assert.equal(back.constructor.name, kind, `${dtype} data() type`);
      assert.deepEqual(Array.from(back as ArrayLike<unknown>), Array.from(arr as unknown as ArrayLike<unknown>), `${dtype} round trip`);
    }
    // A typed array with a shape, and one converted on creation.
    const m = torch.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] });
    assert.deepEqual(m.toArray(), [[1, 2, 3], [4, 5, 6]]);
    assert.throws(() => torch.tensor(new Float32Array(5), { shape: [2, 3] }), /20 bytes but shape and dtype need 24/);
    const h = torch.tensor(new Float32Array([0.5, 1.5, 2]), { dtype: 'float16' });
    assert.equal(h.dtype, 'float16');
    assert.equal(h.data().constructor.name, 'Float32Array', 'half widens to float32');
    assert.deepEqual(Array.from(h.data() as Float32Array), [0.5, 1.5, 2]);
    const b = torch.tensor(new Float32Array([1, 0, -3]), { dtype: 'bool' });
    assert.deepEqual(b.toArray(), [true, false, true]);
    assert.deepEqual(Array.from(b.data() as Uint8Array), [1, 0, 1]);
  });
});

test('every dtype: creation from nested arrays keeps shape and values', () => {
  torch.tidy(() => {
    const nested = [[0, 1, 2], [3, 4, 5]];
    for (const d of DTYPES) {
      const t = torch.tensor(nested, { dtype: d });
      assert.equal(t.dtype, d);
      assert.deepEqual(t.shape, [2, 3]);
      const expect = d === 'bool' ? nested.map((r) => r.map((v) => v !== 0)) : nested;
      assert.deepEqual(t.toArray(), expect, d);
      assert.equal(t.numel(), 6);
    }
    assert.deepEqual(torch.tensor([[[true]], [[false]]]).shape, [2, 1, 1]);
    assert.equal(torch.tensor(2.5, { dtype: 'float64' }).item(), 2.5);
    assert.deepEqual(torch.tensor([], { dtype: 'float32' }).shape, [0]);
    // int64 beyond 2^53 cannot be a JS number exactly; the BigInt view keeps it.
    const big = torch.tensor(new BigInt64Array([2n ** 60n + 1n]));
    assert.equal((big.data() as BigInt64Array)[0], 2n ** 60n + 1n);
  });
});

test('.to() between every pair of dtypes matches PyTorch', { skip: needPython() }, () => {
  const ref = reference();
  torch.tidy(() => {
    ref.pairs.forEach(([from, to, vals]: [DType, DType, (number | boolean)[]], i: number) => {
      const src = torch.tensor(vals as number[], { dtype: from });
      const got = src.to(to);
      assert.equal(got.dtype, to);
      const a = got.toArray() as unknown[];
      const b = ref.casts[i] as unknown[];
      assert.equal(a.length, b.length);
      for (let k = 0; k < a.length; k++) assert.ok(same(a[k], b[k]), `${from} → ${to}: [${k}] ${vals[k]} gave ${a[k]}, PyTorch ${b[k]}`);
    });
  });
});

test('bfloat16 and float16 round exactly as PyTorch does', { skip: needPython() }, () => {
  const ref = reference();
  torch.tidy(() => {
    const x = torch.tensor(new Float32Array(ROUNDING));
    const bf = x.to('bfloat16').toArray() as number[];
    const hf = x.to('float16').toArray() as number[];
    ROUNDING.forEach((v, i) => {
      assert.ok(same(bf[i], ref.bf16[i]), `bf16(${v}) = ${bf[i]}, PyTorch ${ref.bf16[i]}`);
      assert.ok(same(hf[i], ref.f16[i]), `f16(${v}) = ${hf[i]}, PyTorch ${ref.f16[i]}`);
    });
    // Arithmetic stays in bf16 (its own rounding on the result), not float32 behind the scenes.
    assert.equal(torch.tensor(ROUNDING.slice(0, 6), { dtype: 'bfloat16' }).sum().item(), ref.bf16_sum);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Broadcasting and in-place ops

test('broadcasting follows NumPy rules and names the op when shapes do not fit', () => {
  torch.tidy(() => {
    const a = torch.arange(6).reshape(2, 1, 3); // [2,1,3]
    const b = torch.tensor([[10], [20], [30], [40]]); // [4,1]
    const c = a.add(b);
    assert.deepEqual(c.shape, [2, 4, 3]);
    const expect = [0, 1].map((i) => [10, 20, 30, 40].map((r) => [0, 1, 2].map((k) => i * 3 + k + r)));
    assert.deepEqual(c.toArray(), expect);
    assert.deepEqual(torch.tensor(2).mul(torch.ones([2, 2])).toArray(), [[2, 2], [2, 2]], '0-d broadcasts');
    assert.deepEqual(torch.zeros([0, 3]).add(torch.ones([3])).shape, [0, 3], 'empty dims broadcast');
    // Promotion: int tensor + float scalar gives the default float dtype; int + int stays int64.
    assert.equal(torch.tensor([1, 2]).add(0.5).dtype, 'float32');
    assert.equal(torch.tensor([1, 2]).add(torch.tensor([1, 2], { dtype: 'int32' })).dtype, 'int64');
    assert.throws(() => torch.ones([2, 3]).add(torch.ones([4])), /aten::add\.Tensor: The size of tensor a \(3\) must match the size of tensor b \(4\)/);
    assert.throws(() => torch.ones([2]).add_(torch.ones([2, 2])), /doesn't match the broadcast shape/);
  });
});

test('in-place ops return the same Tensor object and change it', () => {
  torch.tidy(() => {
    const a = torch.tensor([1, 2, 3], { dtype: 'float32' });
    const h = a.h;
    assert.equal(a.add_(1), a);
    assert.equal(a.mul_(2), a);
    assert.equal(a.sub_(torch.ones([3])), a);
    assert.equal(a.div_(2), a);
    assert.deepEqual(a.toArray(), [1.5, 2.5, 3.5]);
    assert.equal(a.clamp_(2, 3), a);
    assert.deepEqual(a.toArray(), [2, 2.5, 3]);
    assert.equal(a.fill_(7), a);
    assert.equal(a.zero_(), a);
    assert.deepEqual(a.toArray(), [0, 0, 0]);
    assert.equal(a.setIndex([1], 4), a);
    assert.equal(a.copy_(torch.tensor([9, 8, 7], { dtype: 'float64' })), a);
    assert.deepEqual(a.toArray(), [9, 8, 7]);
    assert.equal(a.h, h, 'no new handle');
    assert.equal(a.dtype, 'float32', 'copy_ keeps the destination dtype');
    // Generated in-place wrappers hand back their first argument too.
    assert.equal(torch.ops.add__Scalar(a, 1), a);
    assert.deepEqual(a.toArray(), [10, 9, 8]);
    // Writes through a view reach the base.
    const base = torch.zeros([2, 3]);
    base.i(1).fill_(5);
    base.i(':', 0).add_(1);
    assert.deepEqual(base.toArray(), [[1, 0, 0], [6, 5, 5]]);
    // An in-place op whose result dtype cannot be stored is refused.
    assert.throws(() => torch.tensor([1, 2]).add_(0.5), /result type Float can't be cast to the desired output type Long/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Grad modes

test('noGrad and enableGrad scopes nest and restore the mode after an exception', () => {
  torch.tidy(() => {
    const x = torch.ones([2], { requiresGrad: true });
    assert.equal(torch.isGradEnabled(), true);
    const y = torch.noGrad(() => {
      assert.equal(torch.isGradEnabled(), false);
      const inner = torch.enableGrad(() => x.mul(2));
      assert.equal(inner.requiresGrad, true, 'enableGrad inside noGrad records');
      return x.mul(2);
    });
    assert.equal(y.requiresGrad, false);
    assert.equal(y.gradFn, null);
    assert.equal(torch.isGradEnabled(), true);
    assert.throws(() => torch.noGrad(() => { throw new RangeError('boom'); }), /boom/);
    assert.equal(torch.isGradEnabled(), true, 'restored after a JS exception');
    assert.throws(() => torch.noGrad(() => x.matmul(torch.ones([3, 3]))), /aten::matmul/);
    assert.equal(torch.isGradEnabled(), true, 'restored after a native exception');
    assert.equal(x.mul(2).requiresGrad, true);
  });
});

test('inferenceMode: its tensors are inference tensors that cannot require grad; the mode ends with the scope', () => {
  torch.tidy(() => {
    const w = torch.ones([2], { requiresGrad: true });
    const t = torch.inferenceMode(() => {
      assert.equal(torch.isGradEnabled(), false);
      const r = w.mul(3);
      assert.equal(r.requiresGrad, false);
      return r;
    });
    assert.equal(t.isInference, true);
    assert.equal(w.isInference, false);
    assert.deepEqual(t.toArray(), [3, 3]);
    assert.throws(() => t.requiresGrad_(true), /Setting requires_grad=True on inference tensor outside InferenceMode is not allowed/);
    // Outside the scope: grad mode is back, and new tensors are normal.
    assert.equal(torch.isGradEnabled(), true);
    assert.equal(torch.ones([1]).isInference, false);
    assert.throws(() => torch.inferenceMode(() => { w.mul(2); throw new Error('inside inference'); }), /inside inference/);
    assert.equal(torch.isGradEnabled(), true, 'restored after an exception');
    assert.equal(torch.ones([1]).isInference, false, 'inference mode ended after an exception');
    assert.equal(w.mul(2).requiresGrad, true);
    // Nested scopes unwind in order.
    torch.inferenceMode(() => torch.noGrad(() => torch.inferenceMode(() => torch.ones([1]))));
    assert.equal(torch.isGradEnabled(), true);
    assert.equal(torch.ones([1]).isInference, false);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Autograd entry points

test('backward with a gradient for a non-scalar output; a clear error without one', () => {
  torch.tidy(() => {
    const x = torch.tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
    const y = x.mul(x); // dy/dx = 2x
    y.backward(torch.tensor([1, 0.5, 2], { dtype: 'float64' }));
    assert.deepEqual(x.grad!.toArray(), [2, 2, 12]);
    const z = x.mul(3);
    assert.throws(() => z.backward(), /grad can be implicitly created only for scalar outputs; pass a gradient for a tensor of shape \[3\]/);
    assert.throws(() => z.backward(torch.ones([2], { dtype: 'float64' })), /invalid gradient at index 0 - got \[2\] but expected shape compatible with \[3\]/);
    // Several roots at once, one with an implicit gradient.
    x.grad = null;
    torch.backward([x.sum(), x.mul(2)], [null, torch.ones([3], { dtype: 'float64' })]);
    assert.deepEqual(x.grad!.toArray(), [3, 3, 3]);
    assert.throws(() => torch.ones([2]).sum().backward(), /does not require grad/);
  });
});

test('retainGraph: a second backward throws without it and accumulates with it', () => {
  torch.tidy(() => {
    const x = torch.tensor([1, 2], { dtype: 'float64', requiresGrad: true });
    const y = x.mul(x).sum();
    y.backward();
    assert.throws(() => y.backward(), /Trying to backward through the graph a second time/);
    x.grad = null;
    const y2 = x.mul(x).sum();
    y2.backward(null, { retainGraph: true });
    y2.backward();
    assert.deepEqual(x.grad!.toArray(), [4, 8], 'two backward passes add up: 2 · 2x');
  });
});

test('grad get and set, with shape and dtype checked', () => {
  torch.tidy(() => {
    const x = torch.zeros([2, 2], { requiresGrad: true });
    assert.equal(x.grad, null);
    x.grad = torch.ones([2, 2]);
    assert.deepEqual(x.grad!.toArray(), [[1, 1], [1, 1]]);
    assert.throws(() => { x.grad = torch.ones([4]); }, (e: unknown) => e instanceof RangeError && /assigned grad has shape \[4\] but the tensor has shape \[2, 2\]/.test(String(e)));
    assert.throws(() => { x.grad = torch.ones([2, 2], { dtype: 'float64' }); }, (e: unknown) => e instanceof TypeError && /dtype and device/.test(String(e)));
    assert.throws(() => { x.grad = 3 as unknown as Tensor; }, /grad must be a Tensor/);
    // The stored gradient accumulates into by the next backward.
    x.sum().backward();
    assert.deepEqual(x.grad!.toArray(), [[2, 2], [2, 2]]);
    x.grad = null;
    assert.equal(x.grad, null);
  });
});

test('detach shares memory, drops the graph and cannot carry grad back', () => {
  torch.tidy(() => {
    const x = torch.ones([3], { requiresGrad: true });
    const y = x.mul(2);
    const d = y.detach();
    assert.equal(d.requiresGrad, false);
    assert.equal(d.gradFn, null);
    assert.equal(d.isLeaf, true);
    assert.match(y.gradFn ?? '', /^MulBackward/);
    torch.noGrad(() => d.add_(1));
    assert.deepEqual(y.toArray(), [3, 3, 3], 'detach() aliases the same storage');
    // The in-place change through the detached alias bumped the version y's graph saw only if y was saved; mul by
    // a scalar saves nothing of y, so backward still runs.
    y.sum().backward();
    assert.deepEqual(x.grad!.toArray(), [2, 2, 2]);
  });
});

test('requiresGrad on an integer or bool tensor is a clear TypeError', () => {
  torch.tidy(() => {
    for (const d of ['int64', 'int32', 'uint8', 'bool'] as DType[]) {
      const t = torch.zeros([2], { dtype: d });
      assert.throws(() => t.requiresGrad_(true), (e: unknown) => e instanceof TypeError && /only floating point tensors can require gradients \(dtype is \w+\)/.test(String(e)), d);
      assert.throws(() => { t.requiresGrad = true; }, TypeError);
      assert.equal(t.requiresGrad, false);
      t.requiresGrad_(false);
    }
    assert.throws(() => torch.zeros([2], { dtype: 'int64', requiresGrad: true }), TypeError);
    for (const d of ['float32', 'float64', 'bfloat16', 'float16'] as DType[]) assert.equal(torch.zeros([1], { dtype: d }).requiresGrad_(true).requiresGrad, true);
  });
});

test('native entry points refuse handles and op ids that are not integers', () => {
  torch.tidy(() => {
    const a = torch.tensor([42]);
    for (const bad of [NaN, Infinity, a.h + 0.5]) {
      assert.throws(() => torch.native.item(bad), /handle|integer/, `item(${bad})`);
      assert.throws(() => torch.native.call(torch.opId('aten::neg'), bad), /handle|integer/, `call(neg, ${bad})`);
      assert.throws(() => torch.native.call(bad, a.h), /op id/, `call(${bad})`);
    }
    assert.throws(() => torch.native.release(NaN), /integer/);
    assert.throws(() => torch.native.release(a.h + 0.5), /integer/);
    assert.equal(a.item(), 42, 'a refused release frees nothing');
  });
});

// ---------------------------------------------------------------------------------------------------------------
// RNG

test('seeded RNG: same seed, same tensors; saved state resumes the sequence', () => {
  torch.tidy(() => {
    const draw = () => [torch.randn([4]), torch.rand([3]), torch.randint(0, 100, [5]), torch.randperm(6), torch.randn([2]).uniform_(-1, 1)].map((t) => t.toArray());
    torch.manualSeed(1234);
    const first = draw();
    torch.manualSeed(1234);
    assert.deepEqual(draw(), first);
    torch.manualSeed(1235);
    assert.notDeepEqual(draw(), first);

    torch.manualSeed(99);
    torch.randn([10]);
    const state = torch.getRngState();
    assert.equal(state.dtype, 'uint8');
    const next = draw();
    const further = draw();
    torch.setRngState(state);
    assert.deepEqual(draw(), next, 'resumes where the state was taken');
    assert.deepEqual(draw(), further);
    // The state tensor is a snapshot: drawing more does not change it.
    torch.setRngState(state);
    assert.deepEqual(draw(), next);
    assert.throws(() => torch.setRngState(torch.zeros([3])), /RNG state must be a CPU uint8 tensor/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Finite differences

interface Input {
  name: string;
  shape: number[];
  values: Float64Array;
}

function input(name: string, shape: number[], seed: number, scale = 1): Input {
  let s = seed;
  const n = shape.reduce((a, b) => a * b, 1);
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 16807) % 2147483647;
    values[i] = ((s / 2147483647) * 2 - 1) * scale;
  }
  return { name, shape, values };
}

/**
 * Autograd's gradient of f (a scalar) against central differences in float64, for every element of every input.
 * Inputs are rebuilt from their JS values for each evaluation, so nothing writes into tensor memory behind autograd.
 */
function gradCheck(f: (...xs: Tensor[]) => Tensor, inputs: Input[], opts: { h?: number; rtol?: number; atol?: number } = {}): number {
  const h = opts.h ?? 1e-6;
  const rtol = opts.rtol ?? 1e-6;
  const atol = opts.atol ?? 1e-8;
  const build = (requiresGrad: boolean) => inputs.map((x) => torch.tensor(Float64Array.from(x.values), { shape: x.shape, requiresGrad }));
  const analytic = torch.tidy(() => {
    const xs = build(true);
    const y = f(...xs);
    assert.deepEqual(y.shape, [], 'f must return a scalar');
    y.backward();
    return xs.map((x, i) => {
      assert.ok(x.grad, `${inputs[i].name} got no gradient`);
      return Float64Array.from(x.grad.data() as Float64Array);
    });
  });
  const value = () => torch.tidy(() => torch.noGrad(() => f(...build(false)).item()));
  let checked = 0;
  inputs.forEach((x, xi) => {
    for (let i = 0; i < x.values.length; i++) {
      const orig = x.values[i];
      x.values[i] = orig + h;
      const up = value();
      x.values[i] = orig - h;
      const down = value();
      x.values[i] = orig;
      const numeric = (up - down) / (2 * h);
      const a = analytic[xi][i];
      assert.ok(Math.abs(a - numeric) <= atol + rtol * Math.abs(numeric), `${x.name}[${i}]: autograd ${a}, central difference ${numeric}`);
      checked++;
    }
  });
  return checked;
}

// A fixed random projection turns any output into a scalar whose gradient reaches every element.
function project(y: Tensor, seed: number): Tensor {
  const w = input('w', y.shape, seed);
  return y.mul(torch.tensor(w.values, { shape: w.shape })).sum();
}

test('finite differences: rmsNorm and layerNorm', () => {
  const n1 = gradCheck((x, w) => project(torch.rmsNorm(x, w, 1e-6), 7), [input('x', [3, 5], 1), input('weight', [5], 2)]);
  const n2 = gradCheck((x, w, b) => project(torch.layerNorm(x, [5], w, b, 1e-5), 8), [input('x', [2, 3, 5], 3), input('weight', [5], 4), input('bias', [5], 5)]);
  assert.equal(n1 + n2, 15 + 5 + 30 + 10);
});

test('finite differences: crossEntropy with ignoreIndex, label smoothing and class weights', () => {
  const target = () => torch.tensor([2, 0, -100, 3]);
  const n1 = gradCheck((logits) => torch.crossEntropy(logits, target()), [input('logits', [4, 5], 11, 3)]);
  // Class weights are constants to autograd (nll_loss has no derivative for them), so they are not checked.
  const weight = () => torch.tensor([0.5, 1, 2, 1.5, 0.25], { dtype: 'float64' });
  const n2 = gradCheck((logits) => torch.crossEntropy(logits, target(), { labelSmoothing: 0.1, weight: weight() }), [input('logits', [4, 5], 12, 3)]);
  const n3 = gradCheck((logits) => torch.crossEntropy(logits, torch.tensor([[1, 0], [2, 2]]), { reduction: 'sum' }), [input('logits', [2, 3, 2], 14, 2)]);
  assert.equal(n1 + n2 + n3, 20 + 20 + 12);
});

test('finite differences: scaledDotProductAttention, composite path (plain, causal, additive and boolean masks)', () => {
  const qkv = (seed: number) => [input('q', [1, 2, 3, 4], seed), input('k', [1, 2, 3, 4], seed + 1), input('v', [1, 2, 3, 4], seed + 2)];
  // An explicit scale takes the composite path on every torch; 1.13 has no fused kernel at all.
  let n = gradCheck((q, k, v) => project(torch.scaledDotProductAttention(q, k, v, { scale: 0.5 }), 21), qkv(20));
  n += gradCheck((q, k, v) => project(torch.scaledDotProductAttention(q, k, v, { causal: true, scale: 0.5 }), 22), qkv(30));
  n += gradCheck((q, k, v, m) => project(torch.scaledDotProductAttention(q, k, v, { mask: m, scale: 0.5 }), 23), [...qkv(40), input('mask', [3, 3], 44)]);
  n += gradCheck(
    (q, k, v) => project(torch.scaledDotProductAttention(q, k, v, { mask: torch.tensor([[true, false, true], [true, true, false], [false, true, true]]), scale: 0.5 }), 24),
    qkv(50),
  );
  assert.equal(n, 4 * 72 + 9);
});

test('scaledDotProductAttention equals softmax(QKᵀ·scale + mask)·V computed by hand', () => {
  torch.tidy(() => {
    torch.manualSeed(5);
    const q = torch.randn([2, 3, 4], { dtype: 'float64' });
    const k = torch.randn([2, 3, 4], { dtype: 'float64' });
    const v = torch.randn([2, 3, 4], { dtype: 'float64' });
    const causal = torch.scaledDotProductAttention(q, k, v, { causal: true });
    const keep = torch.ones([3, 3], { dtype: 'bool' }).tril();
    const att = q.matmul(k.transpose(-2, -1)).mul(1 / Math.sqrt(4)).maskedFill(keep.logicalNot(), -Infinity).softmax(-1);
    assertClose(causal, att.matmul(v).toArray(), { rtol: 1e-12, atol: 1e-12 });
  });
});
