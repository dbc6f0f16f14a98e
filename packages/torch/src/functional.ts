// Functional ops (torch.* and torch.nn.functional.*) that need overload choice or composition over aten.
import { hasOp, opId, native } from './core.js';
import { Tensor, tidy, describe } from './tensor.js';
import * as G from './ops/generated.js';

type Reduction = 'mean' | 'sum' | 'none';
const REDUCTION = { none: 0, mean: 1, sum: 2 } as const;
function red(r: Reduction): number {
  const v = REDUCTION[r];
  if (v === undefined) throw new TypeError(`reduction must be 'mean', 'sum' or 'none', got '${r}'`);
  return v;
}

export function cat(tensors: Tensor[], dim = 0): Tensor {
  return G.cat(tensors, dim);
}
export function stack(tensors: Tensor[], dim = 0): Tensor {
  return G.stack(tensors, dim);
}
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  if (a instanceof Tensor && b instanceof Tensor) return G.where_self(cond, a, b);
  if (a instanceof Tensor) return G.where_ScalarOther(cond, a, b as number);
  if (b instanceof Tensor) return G.where_ScalarSelf(cond, a, b);
  return G.where_Scalar(cond, a, b);
}
export function matmul(a: Tensor, b: Tensor): Tensor {
  return G.matmul(a, b);
}
export function softmax(x: Tensor, dim: number): Tensor {
  return G.softmax_int(x, dim);
}
export function logSoftmax(x: Tensor, dim: number): Tensor {
  return G.log_softmax_int(x, dim);
}
export function relu(x: Tensor): Tensor {
  return G.relu(x);
}
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  return G.gelu(x, approximate);
}
export function silu(x: Tensor): Tensor {
  return G.silu(x);
}
export function sigmoid(x: Tensor): Tensor {
  return G.sigmoid(x);
}
export function tanh(x: Tensor): Tensor {
  return G.tanh(x);
}
/** y = x·Wᵀ + b. On CPU float32 the products run on oneDNN's GEMM (see native/fused.h), else aten::linear. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (!(x instanceof Tensor) || !(weight instanceof Tensor) || (bias != null && !(bias instanceof Tensor))) return G.linear(x, weight, bias ?? null);
  return new Tensor(native.linear(x.h, weight.h, bias ? bias.h : null));
}
export function embedding(indices: Tensor, weight: Tensor, paddingIdx = -1): Tensor {
  return G.embedding(weight, indices, paddingIdx);
}
export function layerNorm(x: Tensor, normalizedShape: number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return G.layer_norm(x, normalizedShape, weight ?? null, bias ?? null, eps);
}
/** RMSNorm as in Llama: x · rsqrt(mean(x², last dim) + eps) · weight, computed in float32 for low-precision inputs. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps = 1e-6): Tensor {
  // CPU float32/float64 with a weight: one custom autograd node with a cheap backward (native/fused.h).
  if (weight instanceof Tensor && x instanceof Tensor) {
    const h = native.rmsNorm(x.h, weight.h, eps);
    if (h !== null) return new Tensor(h);
  }
  return tidy(() => {
    const dtype = x.dtype;
    const xf = dtype === 'float32' || dtype === 'float64' ? x : x.float();
    // [.., d] * [.., 1]
    let y = xf.mul(G.rsqrt(G.add_Scalar(G.mean_dim(G.square(xf), [-1], true), eps)));
    if (y.dtype !== dtype) y = y.to(dtype);
    return weight ? y.mul(weight) : y;
  });
}
export function dropout(x: Tensor, p: number, training: boolean): Tensor {
  if (p < 0 || p > 1) throw new RangeError(`dropout probability must be in [0, 1], got ${p}`);
  if (!training || p === 0) return G.alias(x);
  return G.dropout(x, p, true);
}
export function conv2d(x: Tensor, w: Tensor, bias: Tensor | null = null, stride: number | number[] = 1, padding: number | number[] = 0, dilation: number | number[] = 1, groups = 1): Tensor {
  return G.conv2d(x, w, bias, stride, padding, dilation, groups);
}
export function batchNorm(x: Tensor, runningMean: Tensor | null, runningVar: Tensor | null, weight: Tensor | null, bias: Tensor | null, training: boolean, momentum = 0.1, eps = 1e-5): Tensor {
  return G.batch_norm(x, weight, bias, runningMean, runningVar, training, momentum, eps, false);
}
export function maxPool2d(x: Tensor, kernel: number | number[], stride?: number | number[], padding: number | number[] = 0): Tensor {
  return G.max_pool2d(x, kernel, stride ?? kernel, padding);
}
export function adaptiveAvgPool2d(x: Tensor, out: number | number[]): Tensor {
  return G.adaptive_avg_pool2d(x, out);
}

/** Cross entropy over class logits [N, C] (or [N, C, ...]) with int64 targets; ignoreIndex rows do not count. */
export function crossEntropy(logits: Tensor, target: Tensor, opts: { reduction?: Reduction; ignoreIndex?: number; labelSmoothing?: number; weight?: Tensor } = {}): Tensor {
  if (!(logits instanceof Tensor) || !(target instanceof Tensor)) throw new TypeError(`crossEntropy(logits, target) needs Tensors, got ${describe(logits)}, ${describe(target)}`);
  return G.cross_entropy_loss(logits, target, opts.weight ?? null, red(opts.reduction ?? 'mean'), opts.ignoreIndex ?? -100, opts.labelSmoothing ?? 0);
}
export function nllLoss(logProbs: Tensor, target: Tensor, opts: { reduction?: Reduction; ignoreIndex?: number } = {}): Tensor {
  return G.nll_loss(logProbs, target, null, red(opts.reduction ?? 'mean'), opts.ignoreIndex ?? -100);
}
export function mseLoss(a: Tensor, b: Tensor, reduction: Reduction = 'mean'): Tensor {
  return G.mse_loss(a, b, red(reduction));
}

// The fused kernel, where this torch has one: its op id and whether it takes `scale` (2.1+). 1.13 has only a private
// variant, so there the composed path runs.
let sdpa: { id: number; scale: boolean } | null | undefined;
let fusedAttentionOn = process.env.RETAIN_SDPA !== '0';
function fusedAttention(): { id: number; scale: boolean } | null {
  if (sdpa === undefined) {
    const row = (native.listOps() as unknown as [string, string, string, [string][]][]).find((r) => r[0] === 'aten::scaled_dot_product_attention' && r[1] === '');
    sdpa = row ? { id: opId('aten::scaled_dot_product_attention'), scale: row[3].some((a) => a[0] === 'scale') } : null;
  }
  return sdpa;
}

/** Whether aten::scaled_dot_product_attention exists in this torch (PyTorch 2.x). */
export function hasFusedAttention(): boolean {
  return fusedAttention() !== null;
}

/**
 * Turns the fused attention kernel on or off (RETAIN_SDPA=0 starts with it off) and returns the previous setting; off,
 * attention is composed from matmul and softmax, which is what parity tests compare the kernel against.
 */
export function setFusedAttention(on: boolean): boolean {
  const was = fusedAttentionOn;
  fusedAttentionOn = on;
  return was;
}

/**
 * Scaled dot-product attention, q,k,v: [B, H, T, D]. Uses aten::scaled_dot_product_attention where this torch has it
 * (2.x: flash / memory-efficient kernels, and a custom `scale` from 2.1), otherwise the same maths composed from
 * matmul and softmax.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, opts: { causal?: boolean; mask?: Tensor | null; dropout?: number; scale?: number } = {}): Tensor {
  const causal = opts.causal ?? false;
  const fused = fusedAttentionOn ? fusedAttention() : null;
  if (fused && (opts.scale === undefined || fused.scale)) {
    // aten's is_causal aligns its mask top-left; with cached keys (S > T) the queries are the last T positions, so
    // the bottom-right mask the composed path uses goes in as an explicit mask.
    const T = q.shape[q.ndim - 2];
    const S = k.shape[k.ndim - 2];
    if (causal && S !== T) return tidy(() => scaledDotProductAttention(q, k, v, { ...opts, causal: false, mask: withCausal(opts.mask ?? null, T, S, q) }));
    const args: unknown[] = [q.h, k.h, v.h, opts.mask ? opts.mask.h : null, opts.dropout ?? 0, causal];
    if (opts.scale !== undefined) args.push(opts.scale);
    return new Tensor(native.call(fused.id, ...args));
  }
  return tidy(() => {
    const qs = q.shape;
    const T = qs[qs.length - 2];
    const D = qs[qs.length - 1];
    const S = k.shape[k.ndim - 2];
    const scale = opts.scale ?? 1 / Math.sqrt(D);
    // Fold batch and heads: [..., T, D] -> [BH, T, D]
    const q3 = q.reshape(-1, T, D);
    const k3 = k.reshape(-1, S, D);
    const v3 = v.reshape(-1, S, v.shape[v.ndim - 1]);
    // The causal mask and any user mask become one additive bias; baddbmm then computes scale·QKᵀ + bias in one
    // pass instead of a product, a scaling and a masked fill.
    let bias: Tensor | null = causal ? causalBias(T, S, q.dtype, q.device) : null;
    if (opts.mask) {
      const m = opts.mask.dtype === 'bool' ? G.masked_fill_Scalar(G.zeros(opts.mask.shape, q.dtype, null, q.device), opts.mask.logicalNot(), -Infinity) : opts.mask;
      const m3 = m.ndim > 2 ? m.expand([...qs.slice(0, -2), T, S]).reshape(-1, T, S) : m;
      bias = bias ? m3.add(bias) : m3;
    }
    // [BH, T, S]
    let att = bias ? G.baddbmm(bias, q3, k3.transpose(1, 2), 1, scale) : G.bmm(q3, k3.transpose(1, 2)).mul(scale);
    att = att.softmax(-1);
    if (opts.dropout) att = G.dropout(att, opts.dropout, true);
    // [BH, T, Dv] -> [..., T, Dv]
    return G.bmm(att, v3).reshape([...qs.slice(0, -1), v.shape[v.ndim - 1]]);
  });
}

// `mask` ([..., T, S], bool or additive) with the bottom-right causal mask applied too; a bool [T, S] when none.
function withCausal(mask: Tensor | null, T: number, S: number, q: Tensor): Tensor {
  if (mask && mask.dtype !== 'bool') return mask.add(causalBias(T, S, q.dtype, q.device));
  const tri = G.ones([T, S], 'bool', null, q.device).tril(S - T);
  return mask ? mask.logicalAnd(tri) : tri;
}

// Additive causal bias [T, S]: 0 where a query may attend, -inf elsewhere (bottom-right aligned when S > T). Built
// per call rather than cached, so no tensor outlives the caller's scope; it is T·S elements against B·H·T·S.
function causalBias(T: number, S: number, dtype: string, device: string): Tensor {
  return G.masked_fill_Scalar(G.zeros([T, S], dtype as never, null, device), G.ones([T, S], 'bool', null, device).tril(S - T).logicalNot(), -Infinity);
}
