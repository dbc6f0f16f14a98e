// The basic layers. Attribute and parameter names are PyTorch's, and so is each layer's default initialisation
// (including the order in which parameters draw from the generator), so a seeded model starts from PyTorch's weights.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { empty, ones, zeros, tensor } from '../creation.js';
import * as F from '../functional.js';
import * as G from '../ops/generated.js';
import { Module, type FactoryOptions } from './module.js';
import * as init from './init.js';

function positiveInt(v: number, what: string): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${what} must be a positive integer, got ${v}`);
  return v;
}

function pair(v: number | number[], what: string): [number, number] {
  const p = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(p) || p.length !== 2 || !p.every(Number.isInteger)) throw new TypeError(`${what} must be an integer or a pair of integers, got ${JSON.stringify(v)}`);
  return [p[0], p[1]];
}

// Python's repr of a float (1e-05, 0.1), so toString() reads as PyTorch's module printout.
function pyFloat(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return `${x}.0`;
  const e = Math.abs(x) >= 1e16 || (x !== 0 && Math.abs(x) < 1e-4);
  if (!e) return String(x);
  const [m, exp] = x.toExponential().split('e');
  const n = Number(exp);
  return `${m}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
}

function fo(o: FactoryOptions): { dtype?: FactoryOptions['dtype']; device?: FactoryOptions['device'] } {
  return { dtype: o.dtype, device: o.device };
}

/**
 * PyTorch's default for Linear and Conv: kaiming_uniform(a = √5) weights, i.e. U(±1/√fan_in), and a bias drawn from
 * U(±1/√fan_in), in that order (the generator order matters for seeded parity).
 */
function resetLinearLike(weight: Tensor, bias: Tensor | null): void {
  init.kaimingUniform_(weight, { a: Math.sqrt(5) });
  if (bias) {
    const [fanIn] = init.calculateFanInAndFanOut(weight);
    const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
    init.uniform_(bias, -bound, bound);
  }
}

// ---------------------------------------------------------------------------------------------------------------

export interface LinearOptions extends FactoryOptions {
  bias?: boolean;
}

/** y = x·Wᵀ + b. weight [out, in], bias [out]. */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  weight: Tensor;
  bias: Tensor | null;

  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.inFeatures = positiveInt(inFeatures, 'inFeatures');
    this.outFeatures = positiveInt(outFeatures, 'outFeatures');
    this.weight = this.registerParameter('weight', empty([outFeatures, inFeatures], fo(opts)));
    this.bias = this.registerParameter('bias', opts.bias ?? true ? empty([outFeatures], fo(opts)) : null);
    this.resetParameters();
  }

  resetParameters(): void {
    resetLinearLike(this.weight, this.bias);
  }

  forward(x: Tensor): Tensor {
    // [..., in] -> [..., out]
    return F.linear(x, this.weight, this.bias);
  }

  extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, bias=${this.bias ? 'True' : 'False'}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------

export interface EmbeddingOptions extends FactoryOptions {
  /** Row that stays zero and gets no gradient (negative counts from the end). */
  paddingIdx?: number | null;
  /** Initial weights [numEmbeddings, embeddingDim] instead of N(0, 1) (copied). */
  weight?: Tensor;
}

/** A lookup table: int64 indices [...] -> rows [..., embeddingDim]. */
export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;
  readonly paddingIdx: number | null;
  weight: Tensor;

  constructor(numEmbeddings: number, embeddingDim: number, opts: EmbeddingOptions = {}) {
    super();
    this.numEmbeddings = positiveInt(numEmbeddings, 'numEmbeddings');
    this.embeddingDim = positiveInt(embeddingDim, 'embeddingDim');
    let pad = opts.paddingIdx ?? null;
    if (pad !== null) {
      if (!Number.isInteger(pad) || pad >= numEmbeddings || pad < -numEmbeddings) throw new RangeError(`paddingIdx must be within [-${numEmbeddings}, ${numEmbeddings}), got ${pad}`);
      if (pad < 0) pad += numEmbeddings;
    }
    this.paddingIdx = pad;
    if (opts.weight) {
      const s = opts.weight.shape;
      if (s.length !== 2 || s[0] !== numEmbeddings || s[1] !== embeddingDim) throw new RangeError(`weight shape [${s.join(', ')}] does not match [${numEmbeddings}, ${embeddingDim}]`);
      const src = opts.weight;
      this.weight = this.registerParameter('weight', tidy(() => src.detach().to({ ...fo(opts), copy: true })));
    } else {
      this.weight = this.registerParameter('weight', empty([numEmbeddings, embeddingDim], fo(opts)));
      this.resetParameters();
    }
  }

  resetParameters(): void {
    init.normal_(this.weight);
    if (this.paddingIdx !== null) {
      const row = this.paddingIdx;
      noGrad(() => this.weight.setIndex(row, 0));
    }
  }

  forward(indices: Tensor): Tensor {
    // [...] -> [..., D]
    return G.embedding(this.weight, indices, this.paddingIdx ?? -1);
  }

  extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx !== null ? `, padding_idx=${this.paddingIdx}` : ''}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------

export interface LayerNormOptions extends FactoryOptions {
  eps?: number;
  elementwiseAffine?: boolean;
  bias?: boolean;
}

/** Normalises over the trailing normalizedShape dimensions; weight ones, bias zeros. */
export class LayerNorm extends Module {
  readonly normalizedShape: number[];
  readonly eps: number;
  weight: Tensor | null;
  bias: Tensor | null;

  constructor(normalizedShape: number | number[], opts: LayerNormOptions = {}) {
    super();
    this.normalizedShape = typeof normalizedShape === 'number' ? [normalizedShape] : [...normalizedShape];
    this.normalizedShape.forEach((d) => positiveInt(d, 'normalizedShape'));
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.elementwiseAffine ?? true;
    this.weight = this.registerParameter('weight', affine ? ones(this.normalizedShape, fo(opts)) : null);
    this.bias = this.registerParameter('bias', affine && (opts.bias ?? true) ? zeros(this.normalizedShape, fo(opts)) : null);
  }

  forward(x: Tensor): Tensor {
    return F.layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }

  extraRepr(): string {
    return `(${this.normalizedShape.join(', ')},), eps=${pyFloat(this.eps)}, elementwise_affine=${this.weight ? 'True' : 'False'}`;
  }
}

export interface RMSNormOptions extends FactoryOptions {
  eps?: number;
  elementwiseAffine?: boolean;
}

/**
 * Llama's RMSNorm over the last dimension: x · rsqrt(mean(x²) + eps) · weight, the statistics in float32 for
 * half-precision inputs. weight ones; eps 1e-6 by default (Llama's).
 */
export class RMSNorm extends Module {
  readonly dim: number;
  readonly eps: number;
  weight: Tensor | null;

  constructor(dim: number, opts: RMSNormOptions = {}) {
    super();
    this.dim = positiveInt(dim, 'dim');
    this.eps = opts.eps ?? 1e-6;
    this.weight = this.registerParameter('weight', opts.elementwiseAffine ?? true ? ones([dim], fo(opts)) : null);
  }

  forward(x: Tensor): Tensor {
    const d = x.shape[x.ndim - 1];
    if (d !== this.dim) throw new RangeError(`RMSNorm(${this.dim}): input's last dimension is ${d}`);
    return F.rmsNorm(x, this.weight, this.eps);
  }

  extraRepr(): string {
    return `(${this.dim},), eps=${pyFloat(this.eps)}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------

/** Zeroes elements with probability p in training and scales the rest by 1/(1-p); the identity in eval(). */
export class Dropout extends Module {
  readonly p: number;

  constructor(p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new RangeError(`dropout probability has to be between 0 and 1, but got ${p}`);
    this.p = p;
  }

  forward(x: Tensor): Tensor {
    return F.dropout(x, this.p, this.training);
  }

  extraRepr(): string {
    return `p=${pyFloat(this.p)}, inplace=False`;
  }
}

// ---------------------------------------------------------------------------------------------------------------

export interface Conv2dOptions extends FactoryOptions {
  stride?: number | number[];
  /** Zero padding per side, or 'valid' (none) / 'same' (output size = input size; stride 1 only). */
  padding?: number | number[] | 'valid' | 'same';
  dilation?: number | number[];
  groups?: number;
  bias?: boolean;
}

/** 2-d convolution over [N, C, H, W] (or unbatched [C, H, W]); weight [out, in/groups, kh, kw]. */
export class Conv2d extends Module {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number] | 'valid' | 'same';
  readonly dilation: [number, number];
  readonly groups: number;
  weight: Tensor;
  bias: Tensor | null;

  constructor(inChannels: number, outChannels: number, kernelSize: number | number[], opts: Conv2dOptions = {}) {
    super();
    this.inChannels = positiveInt(inChannels, 'inChannels');
    this.outChannels = positiveInt(outChannels, 'outChannels');
    this.kernelSize = pair(kernelSize, 'kernelSize');
    this.stride = pair(opts.stride ?? 1, 'stride');
    this.dilation = pair(opts.dilation ?? 1, 'dilation');
    this.groups = positiveInt(opts.groups ?? 1, 'groups');
    const pad = opts.padding ?? 0;
    if (pad === 'same' || pad === 'valid') {
      if (pad === 'same' && (this.stride[0] !== 1 || this.stride[1] !== 1)) throw new RangeError("padding='same' is not supported for strided convolutions");
      this.padding = pad;
    } else {
      this.padding = pair(pad, 'padding');
    }
    if (inChannels % this.groups !== 0) throw new RangeError(`inChannels (${inChannels}) must be divisible by groups (${this.groups})`);
    if (outChannels % this.groups !== 0) throw new RangeError(`outChannels (${outChannels}) must be divisible by groups (${this.groups})`);
    this.weight = this.registerParameter('weight', empty([outChannels, inChannels / this.groups, ...this.kernelSize], fo(opts)));
    this.bias = this.registerParameter('bias', opts.bias ?? true ? empty([outChannels], fo(opts)) : null);
    this.resetParameters();
  }

  resetParameters(): void {
    resetLinearLike(this.weight, this.bias);
  }

  forward(x: Tensor): Tensor {
    // [N, Cin, H, W] -> [N, Cout, H', W']
    if (typeof this.padding === 'string') return G.conv2d_padding(x, this.weight, this.bias, this.stride, this.padding, this.dilation, this.groups);
    return F.conv2d(x, this.weight, this.bias, this.stride, this.padding, this.dilation, this.groups);
  }

  extraRepr(): string {
    const t = (p: number[]) => `(${p.join(', ')})`;
    let s = `${this.inChannels}, ${this.outChannels}, kernel_size=${t(this.kernelSize)}, stride=${t(this.stride)}`;
    if (typeof this.padding === 'string') s += `, padding=${this.padding}`;
    else if (this.padding[0] || this.padding[1]) s += `, padding=${t(this.padding)}`;
    if (this.dilation[0] !== 1 || this.dilation[1] !== 1) s += `, dilation=${t(this.dilation)}`;
    if (this.groups !== 1) s += `, groups=${this.groups}`;
    if (!this.bias) s += ', bias=False';
    return s;
  }
}

// ---------------------------------------------------------------------------------------------------------------

export interface BatchNormOptions extends FactoryOptions {
  eps?: number;
  /** Weight of the new batch in the running averages; null averages all batches equally (cumulative). */
  momentum?: number | null;
  affine?: boolean;
  trackRunningStats?: boolean;
}

/**
 * Batch normalisation over [N, C, H, W] per channel. Training normalises with the batch statistics and updates
 * running_mean / running_var (unbiased variance) and num_batches_tracked; eval() normalises with the running ones.
 */
export class BatchNorm2d extends Module {
  readonly numFeatures: number;
  readonly eps: number;
  readonly momentum: number | null;
  readonly trackRunningStats: boolean;
  weight: Tensor | null;
  bias: Tensor | null;
  running_mean: Tensor | null;
  running_var: Tensor | null;
  num_batches_tracked: Tensor | null;

  constructor(numFeatures: number, opts: BatchNormOptions = {}) {
    super();
    this.numFeatures = positiveInt(numFeatures, 'numFeatures');
    this.eps = opts.eps ?? 1e-5;
    this.momentum = opts.momentum === undefined ? 0.1 : opts.momentum;
    this.trackRunningStats = opts.trackRunningStats ?? true;
    const affine = opts.affine ?? true;
    this.weight = this.registerParameter('weight', affine ? ones([numFeatures], fo(opts)) : null);
    this.bias = this.registerParameter('bias', affine ? zeros([numFeatures], fo(opts)) : null);
    const track = this.trackRunningStats;
    this.running_mean = this.registerBuffer('running_mean', track ? zeros([numFeatures], fo(opts)) : null);
    this.running_var = this.registerBuffer('running_var', track ? ones([numFeatures], fo(opts)) : null);
    this.num_batches_tracked = this.registerBuffer('num_batches_tracked', track ? tensor(0, { dtype: 'int64', device: opts.device }) : null);
  }

  forward(x: Tensor): Tensor {
    if (x.ndim !== 4) throw new RangeError(`BatchNorm2d: expected 4D input [N, C, H, W], got ${x.ndim}D input`);
    if (x.shape[1] !== this.numFeatures) throw new RangeError(`BatchNorm2d(${this.numFeatures}): input has ${x.shape[1]} channels`);
    let factor = this.momentum ?? 0;
    if (this.training && this.num_batches_tracked) {
      const nbt = this.num_batches_tracked;
      noGrad(() => nbt.add_(1));
      if (this.momentum === null) factor = 1 / nbt.item();
    }
    // Batch statistics in training, and always when no running statistics are kept.
    const useBatch = this.training || this.running_mean === null;
    const updateRunning = !this.training || this.trackRunningStats;
    return F.batchNorm(x, updateRunning ? this.running_mean : null, updateRunning ? this.running_var : null, this.weight, this.bias, useBatch, factor, this.eps);
  }

  extraRepr(): string {
    return `${this.numFeatures}, eps=${pyFloat(this.eps)}, momentum=${this.momentum === null ? 'None' : pyFloat(this.momentum)}, affine=${this.weight ? 'True' : 'False'}, track_running_stats=${this.trackRunningStats ? 'True' : 'False'}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Activations as modules, for Sequential.

export class ReLU extends Module {
  forward(x: Tensor): Tensor { return F.relu(x); }
}

export class GELU extends Module {
  constructor(readonly approximate: 'none' | 'tanh' = 'none') { super(); }
  forward(x: Tensor): Tensor { return F.gelu(x, this.approximate); }
  extraRepr(): string { return `approximate='${this.approximate}'`; }
}

export class SiLU extends Module {
  forward(x: Tensor): Tensor { return F.silu(x); }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor { return F.tanh(x); }
}

export class Sigmoid extends Module {
  forward(x: Tensor): Tensor { return F.sigmoid(x); }
}

export class Identity extends Module {
  forward(x: Tensor): Tensor { return G.alias(x); }
}

/** Flattens dims startDim..endDim (PyTorch's default keeps the batch dimension). */
export class Flatten extends Module {
  constructor(readonly startDim = 1, readonly endDim = -1) { super(); }
  forward(x: Tensor): Tensor { return x.flatten(this.startDim, this.endDim); }
}
