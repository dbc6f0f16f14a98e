// Decoder building blocks: causal self-attention (fused or separate projections, grouped-query heads), the two
// common MLPs and a pre-norm transformer block. Child names default to GPT-2's (c_attn, c_proj, ln_1, mlp.c_fc) or
// Llama's (q_proj … o_proj, input_layernorm, mlp.gate_proj), so those checkpoints map onto these modules.
import { Tensor, tidy } from '../tensor.js';
import * as F from '../functional.js';
import * as G from '../ops/generated.js';
import { Module, type FactoryOptions } from './module.js';
import { Linear, LayerNorm, RMSNorm } from './layers.js';

export interface AttentionOptions extends FactoryOptions {
  nEmbd: number;
  nHead: number;
  /** Key/value heads for grouped-query attention (nHead must be a multiple); default nHead. */
  nKvHead?: number;
  /** Per-head width; default nEmbd / nHead. */
  headDim?: number;
  bias?: boolean;
  /** One [C, (H + 2·Hkv)·D] projection for q, k, v (GPT-2) instead of three (Llama). */
  fused?: boolean;
  /** Dropout on attention weights and on the output, in training. */
  dropout?: number;
  /** Child names: fused → { qkv: 'c_attn', o: 'c_proj' }, separate → { q: 'q_proj', k: 'k_proj', v: 'v_proj', o: 'o_proj' }. */
  names?: { qkv?: string; q?: string; k?: string; v?: string; o?: string };
}

export interface AttentionCallOptions {
  /** Extra mask broadcastable to [B, H, T, T]: bool (true = attend) or additive float; combined with the causal one. */
  mask?: Tensor | null;
  /** Applied to q [B, H, T, D] and k [B, Hkv, T, D] before attention, e.g. rotary position embeddings. */
  rotary?: (q: Tensor, k: Tensor) => [Tensor, Tensor];
}

/** Multi-head causal self-attention over [B, T, C] through functional.scaledDotProductAttention. */
export class CausalSelfAttention extends Module {
  readonly nEmbd: number;
  readonly nHead: number;
  readonly nKvHead: number;
  readonly headDim: number;
  readonly dropoutP: number;
  readonly qkv: Linear | null = null;
  readonly q: Linear | null = null;
  readonly k: Linear | null = null;
  readonly v: Linear | null = null;
  readonly o: Linear;

  constructor(opts: AttentionOptions) {
    super();
    const { nEmbd, nHead } = opts;
    const nKvHead = opts.nKvHead ?? nHead;
    if (!Number.isInteger(nHead) || nHead <= 0) throw new RangeError(`nHead must be a positive integer, got ${nHead}`);
    if (!Number.isInteger(nKvHead) || nKvHead <= 0 || nHead % nKvHead !== 0) throw new RangeError(`nHead (${nHead}) must be a multiple of nKvHead (${nKvHead})`);
    if (opts.headDim === undefined && nEmbd % nHead !== 0) throw new RangeError(`nEmbd (${nEmbd}) must be divisible by nHead (${nHead})`);
    this.nEmbd = nEmbd;
    this.nHead = nHead;
    this.nKvHead = nKvHead;
    this.headDim = opts.headDim ?? nEmbd / nHead;
    this.dropoutP = opts.dropout ?? 0;
    const lin = { bias: opts.bias ?? true, dtype: opts.dtype, device: opts.device };
    const D = this.headDim;
    const n = opts.names ?? {};
    if (opts.fused) {
      this.qkv = this.registerModule(n.qkv ?? 'c_attn', new Linear(nEmbd, (nHead + 2 * nKvHead) * D, lin));
      this.o = this.registerModule(n.o ?? 'c_proj', new Linear(nHead * D, nEmbd, lin));
    } else {
      this.q = this.registerModule(n.q ?? 'q_proj', new Linear(nEmbd, nHead * D, lin));
      this.k = this.registerModule(n.k ?? 'k_proj', new Linear(nEmbd, nKvHead * D, lin));
      this.v = this.registerModule(n.v ?? 'v_proj', new Linear(nEmbd, nKvHead * D, lin));
      this.o = this.registerModule(n.o ?? 'o_proj', new Linear(nHead * D, nEmbd, lin));
    }
  }

  forward(x: Tensor, opts: AttentionCallOptions = {}): Tensor {
    if (x.ndim !== 3 || x.shape[2] !== this.nEmbd) throw new RangeError(`CausalSelfAttention: expected input [B, T, ${this.nEmbd}], got [${x.shape.join(', ')}]`);
    return tidy(() => {
      const [B, T] = x.shape;
      const H = this.nHead;
      const Hkv = this.nKvHead;
      const D = this.headDim;
      let q: Tensor;
      let k: Tensor;
      let v: Tensor;
      if (this.qkv) {
        // [B, T, (H + 2·Hkv)·D] -> three [B, T, ·]
        [q, k, v] = this.qkv.forward(x).split([H * D, Hkv * D, Hkv * D], 2);
      } else {
        q = this.q!.forward(x);
        k = this.k!.forward(x);
        v = this.v!.forward(x);
      }
      q = q.view(B, T, H, D).transpose(1, 2); // [B, H, T, D]
      k = k.view(B, T, Hkv, D).transpose(1, 2); // [B, Hkv, T, D]
      v = v.view(B, T, Hkv, D).transpose(1, 2); // [B, Hkv, T, D]
      if (opts.rotary) [q, k] = opts.rotary(q, k);
      if (Hkv !== H) {
        // Query head j reads key/value head ⌊j / (H/Hkv)⌋: [B, Hkv, T, D] -> [B, H, T, D]
        k = k.repeatInterleave(H / Hkv, 1);
        v = v.repeatInterleave(H / Hkv, 1);
      }
      const dropout = this.training ? this.dropoutP : 0;
      let y: Tensor;
      if (opts.mask) {
        // aten's fused kernel rejects a mask together with is_causal, so the causal part joins the mask here.
        const keep = G.ones([T, T], 'bool', null, x.device).tril(); // [T, T]
        const mask = opts.mask.dtype === 'bool' ? opts.mask.logicalAnd(keep) : opts.mask.maskedFill(keep.logicalNot(), -Infinity);
        y = F.scaledDotProductAttention(q, k, v, { mask, dropout });
      } else {
        y = F.scaledDotProductAttention(q, k, v, { causal: true, dropout });
      }
      // [B, H, T, D] -> [B, T, H·D]
      y = y.transpose(1, 2).reshape(B, T, H * D);
      return F.dropout(this.o.forward(y), this.dropoutP, this.training);
    });
  }

  extraRepr(): string {
    return `n_embd=${this.nEmbd}, n_head=${this.nHead}, n_kv_head=${this.nKvHead}, head_dim=${this.headDim}`;
  }
}

export type Activation = 'gelu' | 'gelu_tanh' | 'relu' | 'silu';

function activate(x: Tensor, a: Activation): Tensor {
  switch (a) {
    case 'gelu': return F.gelu(x);
    case 'gelu_tanh': return F.gelu(x, 'tanh');
    case 'relu': return F.relu(x);
    case 'silu': return F.silu(x);
    default: throw new TypeError(`unknown activation '${a}'`);
  }
}

export interface MLPOptions extends FactoryOptions {
  bias?: boolean;
  activation?: Activation;
  dropout?: number;
}

/** GPT-2's feed-forward: c_proj(act(c_fc(x))), hidden default 4·nEmbd. */
export class MLP extends Module {
  readonly activation: Activation;
  c_fc: Linear;
  c_proj: Linear;
  readonly dropoutP: number;

  constructor(nEmbd: number, hidden = 4 * nEmbd, opts: MLPOptions = {}) {
    super();
    const lin = { bias: opts.bias ?? true, dtype: opts.dtype, device: opts.device };
    this.activation = opts.activation ?? 'gelu';
    this.c_fc = this.registerModule('c_fc', new Linear(nEmbd, hidden, lin));
    this.c_proj = this.registerModule('c_proj', new Linear(hidden, nEmbd, lin));
    this.dropoutP = opts.dropout ?? 0;
  }

  forward(x: Tensor): Tensor {
    // [B, T, C] -> [B, T, hidden] -> [B, T, C]
    return tidy(() => F.dropout(this.c_proj.forward(activate(this.c_fc.forward(x), this.activation)), this.dropoutP, this.training));
  }
}

/** Llama's gated feed-forward: down_proj(silu(gate_proj(x)) · up_proj(x)), no biases by default. */
export class GatedMLP extends Module {
  readonly activation: Activation;
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;

  constructor(nEmbd: number, hidden: number, opts: MLPOptions = {}) {
    super();
    const lin = { bias: opts.bias ?? false, dtype: opts.dtype, device: opts.device };
    this.activation = opts.activation ?? 'silu';
    this.gate_proj = this.registerModule('gate_proj', new Linear(nEmbd, hidden, lin));
    this.up_proj = this.registerModule('up_proj', new Linear(nEmbd, hidden, lin));
    this.down_proj = this.registerModule('down_proj', new Linear(hidden, nEmbd, lin));
  }

  forward(x: Tensor): Tensor {
    // [B, T, C] -> [B, T, hidden] -> [B, T, C]
    return tidy(() => this.down_proj.forward(activate(this.gate_proj.forward(x), this.activation).mul(this.up_proj.forward(x))));
  }
}

export interface TransformerBlockOptions extends FactoryOptions {
  nEmbd: number;
  nHead: number;
  nKvHead?: number;
  /** 'gpt2': LayerNorm, fused attention, GELU MLP, biases (ln_1, attn, ln_2, mlp). 'llama': RMSNorm, separate
   * projections, SwiGLU MLP, no biases (input_layernorm, self_attn, post_attention_layernorm, mlp). */
  style?: 'gpt2' | 'llama';
  /** MLP width; default 4·nEmbd (gpt2) or 8/3·nEmbd rounded up to a multiple of 8 (llama). */
  mlpHidden?: number;
  bias?: boolean;
  eps?: number;
  dropout?: number;
}

/** Pre-norm decoder block: x + attn(norm₁(x)), then x + mlp(norm₂(x)). */
export class TransformerBlock extends Module {
  readonly style: 'gpt2' | 'llama';
  readonly norm1: LayerNorm | RMSNorm;
  readonly attn: CausalSelfAttention;
  readonly norm2: LayerNorm | RMSNorm;
  readonly mlp: MLP | GatedMLP;

  constructor(opts: TransformerBlockOptions) {
    super();
    const style = (this.style = opts.style ?? 'gpt2');
    const f = { dtype: opts.dtype, device: opts.device };
    const C = opts.nEmbd;
    const attn = { ...f, nEmbd: C, nHead: opts.nHead, nKvHead: opts.nKvHead, dropout: opts.dropout };
    if (style === 'gpt2') {
      const bias = opts.bias ?? true;
      this.norm1 = this.registerModule('ln_1', new LayerNorm(C, { ...f, eps: opts.eps ?? 1e-5, bias }));
      this.attn = this.registerModule('attn', new CausalSelfAttention({ ...attn, bias, fused: true }));
      this.norm2 = this.registerModule('ln_2', new LayerNorm(C, { ...f, eps: opts.eps ?? 1e-5, bias }));
      this.mlp = this.registerModule('mlp', new MLP(C, opts.mlpHidden ?? 4 * C, { ...f, bias, dropout: opts.dropout }));
    } else if (style === 'llama') {
      const bias = opts.bias ?? false;
      const hidden = opts.mlpHidden ?? 8 * Math.ceil((8 * C) / 3 / 8);
      this.norm1 = this.registerModule('input_layernorm', new RMSNorm(C, { ...f, eps: opts.eps ?? 1e-6 }));
      this.attn = this.registerModule('self_attn', new CausalSelfAttention({ ...attn, bias, fused: false }));
      this.norm2 = this.registerModule('post_attention_layernorm', new RMSNorm(C, { ...f, eps: opts.eps ?? 1e-6 }));
      this.mlp = this.registerModule('mlp', new GatedMLP(C, hidden, { ...f, bias }));
    } else {
      throw new TypeError(`unknown TransformerBlock style '${style}'`);
    }
  }

  forward(x: Tensor, opts: AttentionCallOptions = {}): Tensor {
    return tidy(() => {
      // [B, T, C]
      const h = x.add(this.attn.forward(this.norm1.forward(x), opts));
      return h.add(this.mlp.forward(this.norm2.forward(h)));
    });
  }
}
