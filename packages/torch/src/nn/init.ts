// Weight initialisers (torch.nn.init). Each fills a tensor in place without recording gradients and returns it.
// The arithmetic on bounds and standard deviations follows PyTorch's order of operations, so that with the same
// seed the drawn values are bit-identical to PyTorch's.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import * as G from '../ops/generated.js';

export type Nonlinearity =
  | 'linear' | 'conv1d' | 'conv2d' | 'conv3d' | 'conv_transpose1d' | 'conv_transpose2d' | 'conv_transpose3d'
  | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu' | 'selu';
export type FanMode = 'fan_in' | 'fan_out';

function inPlace(t: Tensor, fn: () => void): Tensor {
  if (!(t instanceof Tensor)) throw new TypeError('init: expected a Tensor');
  noGrad(() => tidy(fn));
  return t;
}

/** The gain PyTorch recommends for a nonlinearity (param: negative slope of leaky_relu, default 0.01). */
export function calculateGain(nonlinearity: Nonlinearity, param?: number | null): number {
  switch (nonlinearity) {
    case 'linear': case 'conv1d': case 'conv2d': case 'conv3d':
    case 'conv_transpose1d': case 'conv_transpose2d': case 'conv_transpose3d': case 'sigmoid':
      return 1;
    case 'tanh':
      return 5.0 / 3;
    case 'relu':
      return Math.sqrt(2.0);
    case 'leaky_relu': {
      const slope = param ?? 0.01;
      if (typeof slope !== 'number' || !Number.isFinite(slope)) throw new TypeError(`negative_slope ${slope} is not a valid number`);
      return Math.sqrt(2.0 / (1 + slope ** 2));
    }
    case 'selu':
      return 3.0 / 4;
    default:
      throw new TypeError(`unsupported nonlinearity '${nonlinearity}'`);
  }
}

/**
 * [fan_in, fan_out] of a weight laid out as PyTorch's: dim 0 = outputs, dim 1 = inputs, the rest a receptive field
 * (convolution kernels), which multiplies both.
 */
export function calculateFanInAndFanOut(t: Tensor): [number, number] {
  const s = t.shape;
  if (s.length < 2) throw new RangeError(`fan in and fan out can not be computed for a tensor with fewer than 2 dimensions (shape [${s.join(', ')}])`);
  let receptive = 1;
  for (let i = 2; i < s.length; i++) receptive *= s[i];
  return [s[1] * receptive, s[0] * receptive];
}

function correctFan(t: Tensor, mode: FanMode): number {
  if (mode !== 'fan_in' && mode !== 'fan_out') throw new TypeError(`mode '${mode}' not supported, use 'fan_in' or 'fan_out'`);
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  return mode === 'fan_in' ? fanIn : fanOut;
}

function empty(t: Tensor): boolean {
  return t.shape.includes(0);
}

export function uniform_(t: Tensor, a = 0, b = 1): Tensor {
  return inPlace(t, () => G.uniform_(t, a, b));
}

export function normal_(t: Tensor, mean = 0, std = 1): Tensor {
  return inPlace(t, () => G.normal_(t, mean, std));
}

export function constant_(t: Tensor, value: number): Tensor {
  return inPlace(t, () => G.fill__Scalar(t, value));
}

export function zeros_(t: Tensor): Tensor {
  return inPlace(t, () => G.zero_(t));
}

export function ones_(t: Tensor): Tensor {
  return constant_(t, 1);
}

export interface KaimingOptions {
  /** Negative slope of the rectifier after this layer (leaky_relu only). */
  a?: number;
  mode?: FanMode;
  nonlinearity?: Nonlinearity;
}

/** He et al. uniform: U(-b, b), b = gain · sqrt(3 / fan). */
export function kaimingUniform_(t: Tensor, opts: KaimingOptions = {}): Tensor {
  if (empty(t)) return t;
  const fan = correctFan(t, opts.mode ?? 'fan_in');
  const gain = calculateGain(opts.nonlinearity ?? 'leaky_relu', opts.a ?? 0);
  const std = gain / Math.sqrt(fan);
  const bound = Math.sqrt(3.0) * std;
  return uniform_(t, -bound, bound);
}

/** He et al. normal: N(0, std²), std = gain / sqrt(fan). */
export function kaimingNormal_(t: Tensor, opts: KaimingOptions = {}): Tensor {
  if (empty(t)) return t;
  const fan = correctFan(t, opts.mode ?? 'fan_in');
  const gain = calculateGain(opts.nonlinearity ?? 'leaky_relu', opts.a ?? 0);
  const std = gain / Math.sqrt(fan);
  return normal_(t, 0, std);
}

/** Glorot uniform: U(-a, a), a = gain · sqrt(6 / (fan_in + fan_out)). */
export function xavierUniform_(t: Tensor, gain = 1): Tensor {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  const std = gain * Math.sqrt(2.0 / (fanIn + fanOut));
  const a = Math.sqrt(3.0) * std;
  return uniform_(t, -a, a);
}

/** Glorot normal: N(0, std²), std = gain · sqrt(2 / (fan_in + fan_out)). */
export function xavierNormal_(t: Tensor, gain = 1): Tensor {
  const [fanIn, fanOut] = calculateFanInAndFanOut(t);
  const std = gain * Math.sqrt(2.0 / (fanIn + fanOut));
  return normal_(t, 0, std);
}

// Φ(x) in float64 through libtorch's erf, the same libm function Python's math.erf uses.
function normCdf(x: number): number {
  return tidy(() => (1 + G.erf(G.scalar_tensor(x / Math.SQRT2, 'float64')).item()) / 2);
}

/**
 * N(mean, std²) truncated to [a, b], by inverse-CDF sampling: uniform over [2Φ(α)-1, 2Φ(β)-1], erfinv, scale.
 * Accurate when [a, b] is not far in one tail (mean more than 2·std outside it), as PyTorch's.
 */
export function truncNormal_(t: Tensor, mean = 0, std = 1, a = -2, b = 2): Tensor {
  const l = normCdf((a - mean) / std);
  const u = normCdf((b - mean) / std);
  return inPlace(t, () => {
    G.uniform_(t, 2 * l - 1, 2 * u - 1);
    G.erfinv_(t);
    G.mul__Scalar(t, std * Math.sqrt(2.0));
    G.add__Scalar(t, mean);
    G.clamp_(t, a, b);
  });
}
