// GPT-2 in Hugging Face's layout, so that parameter names are the checkpoint keys: transformer.wte, transformer.wpe,
// transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}, transformer.ln_f, lm_head (tied to
// wte).
//
// GPT-2's projections are "Conv1D" layers: y = x·W + b with W stored [in, out], the transpose of nn.Linear's. The
// weights keep that layout, so a Hugging Face gpt2 safetensors file loads tensor for tensor. Learned absolute
// positions, pre-norm blocks, gelu_new (GELU's tanh approximation), a key/value cache for generation.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { checkBoolean, checkPositiveInt, checkPositiveNumber, checkProbability, ModelConfigError, tieHead } from './weights.js';

const { nn } = torch;

/** The fields of a Hugging Face GPT-2 config.json that this architecture reads (others are kept and ignored). */
export interface GPT2Config {
  model_type?: 'gpt2' | string;
  vocab_size: number;
  /** Context length (learned position table rows). */
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  /** MLP width; null or absent means 4·n_embd. */
  n_inner?: number | null;
  activation_function?: 'gelu_new' | 'gelu_pytorch_tanh' | 'gelu' | 'relu' | 'silu';
  layer_norm_epsilon?: number;
  initializer_range?: number;
  resid_pdrop?: number;
  embd_pdrop?: number;
  attn_pdrop?: number;
  /** Divide attention logits by √head_dim (true in every released GPT-2). */
  scale_attn_weights?: boolean;
  /** Also divide by (layer index + 1) (used by some GPT-2 variants for stability). */
  scale_attn_by_inverse_layer_idx?: boolean;
  tie_word_embeddings?: boolean;
  bos_token_id?: number | null;
  eos_token_id?: number | null;
  [k: string]: unknown;
}

/** HF's Conv1D: y = x·W + b, weight [in, out], bias [out]. */
export class Conv1D extends nn.Module {
  weight: Tensor;
  bias: Tensor;

  constructor(readonly inFeatures: number, readonly outFeatures: number, std = 0.02) {
    super();
    this.weight = this.registerParameter('weight', torch.empty([inFeatures, outFeatures]));
    this.bias = this.registerParameter('bias', torch.zeros([outFeatures]));
    nn.init.normal_(this.weight, 0, std);
  }

  forward(x: Tensor): Tensor {
    // [..., in] -> [..., out] as one b + x·W over the flattened leading dimensions
    const lead = x.shape.slice(0, -1);
    return torch.ops.addmm(this.bias, x.reshape(-1, this.inFeatures), this.weight).view([...lead, this.outFeatures]);
  }

  extraRepr(): string {
    return `nf=${this.outFeatures}, nx=${this.inFeatures}`;
  }
}

/** Per-layer key/value buffers [B, H, maxLen, hd], written in place as tokens arrive. */
export class GPT2Cache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  length = 0;

  constructor(layers: number, heads: number, headDim: number, readonly batch: number, readonly maxLen: number, device = 'cpu', dtype: torch.DType = 'float32') {
    for (let l = 0; l < layers; l++) {
      this.k.push(torch.keep(torch.zeros([batch, heads, maxLen, headDim], { dtype, device })));
      this.v.push(torch.keep(torch.zeros([batch, heads, maxLen, headDim], { dtype, device })));
    }
  }

  dispose(): void {
    torch.dispose([...this.k, ...this.v]);
  }
}

function activation(name: string, x: Tensor): Tensor {
  switch (name) {
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
      return torch.gelu(x, 'tanh');
    case 'gelu':
      return torch.gelu(x);
    case 'relu':
      return x.relu();
    case 'silu':
      return torch.silu(x);
    default:
      throw new Error(`GPT-2: activation_function '${name}' is not supported`);
  }
}

export class GPT2Attention extends nn.Module {
  c_attn: Conv1D;
  c_proj: Conv1D;
  attn_dropout: torch.nn.Dropout;
  resid_dropout: torch.nn.Dropout;
  readonly nHead: number;
  readonly hd: number;

  constructor(readonly c: GPT2Config, readonly layerIdx: number) {
    super();
    const C = c.n_embd;
    const std = c.initializer_range ?? 0.02;
    this.nHead = c.n_head;
    this.hd = C / c.n_head;
    this.c_attn = this.registerModule('c_attn', new Conv1D(C, 3 * C, std));
    // GPT-2 scales the init of projections into the residual stream by 1/√(2·layers).
    this.c_proj = this.registerModule('c_proj', new Conv1D(C, C, std / Math.sqrt(2 * c.n_layer)));
    this.attn_dropout = this.registerModule('attn_dropout', new nn.Dropout(c.attn_pdrop ?? 0.1));
    this.resid_dropout = this.registerModule('resid_dropout', new nn.Dropout(c.resid_pdrop ?? 0.1));
  }

  forward(x: Tensor, cache?: GPT2Cache, mask?: Tensor | null): Tensor {
    const [B, T, C] = x.shape;
    // [B, T, 3C] -> q, k, v [B, H, T, hd]
    const [q, k0, v0] = torch.ops.unbind_int(this.c_attn.forward(x).view(B, T, 3, this.nHead, this.hd).permute(2, 0, 3, 1, 4), 0);
    let k = k0;
    let v = v0;
    const start = cache?.length ?? 0;
    if (cache) {
      cache.k[this.layerIdx].narrow(2, start, T).copy_(k);
      cache.v[this.layerIdx].narrow(2, start, T).copy_(v);
      k = cache.k[this.layerIdx].narrow(2, 0, start + T);
      v = cache.v[this.layerIdx].narrow(2, 0, start + T);
    }
    let scale = this.c.scale_attn_weights ?? true ? 1 / Math.sqrt(this.hd) : 1;
    if (this.c.scale_attn_by_inverse_layer_idx) scale /= this.layerIdx + 1;
    const S = start + T;
    // Causal over the whole key range; with cached keys ahead of a chunk the mask is bottom-right aligned.
    let attnMask: Tensor | null = mask ?? null;
    let causal = true;
    if (start > 0 || attnMask) {
      const tri = torch.ones([T, S], { dtype: 'bool', device: x.device }).tril(start); // [T, S]
      attnMask = attnMask ? (attnMask.dtype === 'bool' ? attnMask.logicalAnd(tri) : attnMask.maskedFill(tri.logicalNot(), -Infinity)) : tri;
      causal = false;
    }
    const y = torch.scaledDotProductAttention(q, k, v, {
      causal,
      mask: attnMask,
      dropout: this.training ? this.attn_dropout.p : 0,
      scale: scale === 1 / Math.sqrt(this.hd) ? undefined : scale,
    }); // [B, H, T, hd]
    return this.resid_dropout.forward(this.c_proj.forward(y.transpose(1, 2).reshape(B, T, C)));
  }
}

export class GPT2MLP extends nn.Module {
  c_fc: Conv1D;
  c_proj: Conv1D;
  dropout: torch.nn.Dropout;

  constructor(readonly c: GPT2Config) {
    super();
    const inner = c.n_inner ?? 4 * c.n_embd;
    const std = c.initializer_range ?? 0.02;
    this.c_fc = this.registerModule('c_fc', new Conv1D(c.n_embd, inner, std));
    this.c_proj = this.registerModule('c_proj', new Conv1D(inner, c.n_embd, std / Math.sqrt(2 * c.n_layer)));
    this.dropout = this.registerModule('dropout', new nn.Dropout(c.resid_pdrop ?? 0.1));
  }

  forward(x: Tensor): Tensor {
    // [B, T, C] -> [B, T, inner] -> [B, T, C]
    return this.dropout.forward(this.c_proj.forward(activation(this.c.activation_function ?? 'gelu_new', this.c_fc.forward(x))));
  }
}

export class GPT2Block extends nn.Module {
  ln_1: torch.nn.LayerNorm;
  attn: GPT2Attention;
  ln_2: torch.nn.LayerNorm;
  mlp: GPT2MLP;

  constructor(c: GPT2Config, idx: number) {
    super();
    const eps = c.layer_norm_epsilon ?? 1e-5;
    this.ln_1 = this.registerModule('ln_1', new nn.LayerNorm(c.n_embd, { eps }));
    this.attn = this.registerModule('attn', new GPT2Attention(c, idx));
    this.ln_2 = this.registerModule('ln_2', new nn.LayerNorm(c.n_embd, { eps }));
    this.mlp = this.registerModule('mlp', new GPT2MLP(c));
  }

  forward(x: Tensor, cache?: GPT2Cache, mask?: Tensor | null): Tensor {
    const h = x.add(this.attn.forward(this.ln_1.forward(x), cache, mask));
    return h.add(this.mlp.forward(this.ln_2.forward(h)));
  }
}

export class GPT2Model extends nn.Module {
  wte: torch.nn.Embedding;
  wpe: torch.nn.Embedding;
  drop: torch.nn.Dropout;
  h: torch.nn.ModuleList<GPT2Block>;
  ln_f: torch.nn.LayerNorm;

  constructor(c: GPT2Config) {
    super();
    const std = c.initializer_range ?? 0.02;
    this.wte = this.registerModule('wte', new nn.Embedding(c.vocab_size, c.n_embd));
    this.wpe = this.registerModule('wpe', new nn.Embedding(c.n_positions, c.n_embd));
    nn.init.normal_(this.wte.weight, 0, std);
    nn.init.normal_(this.wpe.weight, 0, std);
    this.drop = this.registerModule('drop', new nn.Dropout(c.embd_pdrop ?? 0.1));
    this.h = this.registerModule('h', new nn.ModuleList(Array.from({ length: c.n_layer }, (_, i) => new GPT2Block(c, i))));
    this.ln_f = this.registerModule('ln_f', new nn.LayerNorm(c.n_embd, { eps: c.layer_norm_epsilon ?? 1e-5 }));
  }
}

export interface GPT2ForwardOptions {
  cache?: GPT2Cache;
  /** Only compute logits for the last position (generation). */
  lastOnly?: boolean;
  /** Return the final hidden states [B, T, C] instead of logits. */
  hidden?: boolean;
  /** Extra attention mask, bool [T, S] or [B, 1, T, S] (true = may attend), combined with the causal one. */
  mask?: Tensor | null;
}

export class GPT2LMHeadModel extends nn.Module {
  transformer: GPT2Model;
  lm_head: torch.nn.Linear;
  readonly kind = 'causal-lm' as const;
  /** The HF config with max_position_embeddings (HF's alias of n_positions) filled in for generate(). */
  readonly config: GPT2Config & { max_position_embeddings: number };

  constructor(config: GPT2Config) {
    super();
    validateGPT2Config(config);
    this.config = { ...config, max_position_embeddings: config.n_positions };
    this.transformer = this.registerModule('transformer', new GPT2Model(config));
    this.lm_head = this.registerModule('lm_head', new nn.Linear(config.n_embd, config.vocab_size, { bias: false }));
    if (config.tie_word_embeddings ?? true) this.tieWeights();
  }

  /** Keys that share storage when the head is tied: a checkpoint may hold only the second of each pair. */
  tiedKeys(): [string, string][] {
    return this.config.tie_word_embeddings ?? true ? [['lm_head.weight', 'transformer.wte.weight']] : [];
  }

  tieWeights(): void {
    tieHead(this.lm_head, this.transformer.wte.weight);
  }

  /** ids [B, T] int64 -> logits [B, T, V] (or [B, 1, V] with lastOnly). */
  forward(ids: Tensor, opts: GPT2ForwardOptions = {}): Tensor {
    const [, T] = ids.shape;
    const start = opts.cache?.length ?? 0;
    if (start + T > this.config.n_positions) throw new RangeError(`sequence of ${start + T} tokens exceeds GPT-2's ${this.config.n_positions} positions`);
    if (opts.cache && start + T > opts.cache.maxLen) throw new RangeError(`sequence of ${start + T} tokens exceeds the cache of ${opts.cache.maxLen}`);
    const tr = this.transformer;
    const pos = torch.arange(start, start + T, 1, { device: ids.device }); // [T]
    let x = tr.drop.forward(tr.wte.forward(ids).add(tr.wpe.forward(pos))); // [B, T, C]
    for (const block of tr.h) x = block.forward(x, opts.cache, opts.mask);
    if (opts.cache) opts.cache.length += T;
    x = tr.ln_f.forward(x);
    if (opts.hidden) return x;
    if (opts.lastOnly) x = x.narrow(1, T - 1, 1);
    return this.lm_head.forward(x); // [B, T, V]
  }

  newCache(batch: number, maxLen?: number): GPT2Cache {
    const p = this.transformer.wte.weight;
    const c = this.config;
    return new GPT2Cache(c.n_layer, c.n_head, c.n_embd / c.n_head, batch, Math.min(maxLen ?? c.n_positions, c.n_positions), p.device, p.dtype);
  }
}

/**
 * Checkpoint tensors → this model's keys. The released `gpt2` files were saved from the bare GPT2Model, so their keys
 * lack the `transformer.` prefix; older transformers versions also saved each layer's causal-mask buffers
 * (`h.N.attn.bias`, `h.N.attn.masked_bias`), which this model computes instead. Other keys pass through unchanged.
 */
export function gpt2CheckpointKeys(weights: Map<string, Tensor>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, t] of weights) {
    if (/^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$/.test(k)) continue;
    const key = k.startsWith('transformer.') || k.startsWith('lm_head.') ? k : `transformer.${k}`;
    out.set(key, t);
  }
  return out;
}

export function validateGPT2Config(c: GPT2Config): void {
  for (const k of ['vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head']) checkPositiveInt(c, k);
  checkPositiveInt(c, 'n_inner', { optional: true });
  checkPositiveNumber(c, 'layer_norm_epsilon', { optional: true, hint: 'GPT-2 uses 1e-5' });
  for (const k of ['resid_pdrop', 'embd_pdrop', 'attn_pdrop']) checkProbability(c, k);
  for (const k of ['scale_attn_weights', 'scale_attn_by_inverse_layer_idx', 'tie_word_embeddings']) checkBoolean(c, k);
  if (c.n_embd % c.n_head !== 0) throw new ModelConfigError(`n_embd (${c.n_embd}) must divide by n_head (${c.n_head})`);
  const act = c.activation_function ?? 'gelu_new';
  if (!['gelu_new', 'gelu_pytorch_tanh', 'gelu', 'relu', 'silu'].includes(act)) throw new ModelConfigError(`activation_function '${act}' is not supported; use gelu_new, gelu, relu or silu`);
}
