// The Llama family (Llama 2/3, Qwen2, SmolLM, TinyLlama, llama2.c's stories models), in Hugging Face's layout so
// that parameter names are the checkpoint keys: model.embed_tokens, model.layers.N.{input_layernorm, self_attn.
// {q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head.
//
// RMSNorm, rotary position embeddings (rotate-half convention, with linear / dynamic-NTK / llama3 scaling),
// grouped-query attention, SwiGLU MLP, tied or untied output head, and a key/value cache for generation.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { checkBoolean, checkPositiveInt, checkPositiveNumber, ModelConfigError } from './weights.js';

const { nn } = torch;

export interface RopeScaling {
  /** HF writes `type` in older configs and `rope_type` in newer ones. */
  type?: 'linear' | 'dynamic' | 'llama3' | 'default';
  rope_type?: 'linear' | 'dynamic' | 'llama3' | 'default';
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/** The fields of a Hugging Face config.json that this architecture reads (others are kept and ignored). */
export interface LlamaConfig {
  model_type: 'llama' | 'qwen2' | 'mistral' | string;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  head_dim?: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta?: number;
  rope_scaling?: RopeScaling | null;
  tie_word_embeddings?: boolean;
  /** Qwen2 has biases on q/k/v; Llama may have them on all four projections. */
  attention_bias?: boolean;
  mlp_bias?: boolean;
  bos_token_id?: number | number[] | null;
  eos_token_id?: number | number[] | null;
  torch_dtype?: string;
  [k: string]: unknown;
}

function headDim(c: LlamaConfig): number {
  return c.head_dim ?? c.hidden_size / c.num_attention_heads;
}

/** Inverse frequencies of the rotary embedding, with the config's scaling rule applied (except dynamic NTK). */
export function ropeInvFreq(c: LlamaConfig, seqLen?: number): Float64Array {
  const hd = headDim(c);
  let theta = c.rope_theta ?? 10000;
  const sc = c.rope_scaling ?? null;
  const kind = sc?.rope_type ?? sc?.type ?? 'default';
  const factor = sc?.factor ?? 1;
  if (kind === 'dynamic' && seqLen !== undefined && seqLen > c.max_position_embeddings) {
    // NTK-aware: grow the base with the length beyond the trained context.
    theta = theta * ((factor * seqLen) / c.max_position_embeddings - (factor - 1)) ** (hd / (hd - 2));
  }
  const inv = new Float64Array(hd / 2);
  for (let i = 0; i < hd / 2; i++) inv[i] = 1 / theta ** ((2 * i) / hd);
  if (kind === 'linear') for (let i = 0; i < inv.length; i++) inv[i] /= factor;
  if (kind === 'llama3') {
    const low = sc?.low_freq_factor ?? 1;
    const high = sc?.high_freq_factor ?? 4;
    const orig = sc?.original_max_position_embeddings ?? 8192;
    const lowWavelen = orig / low;
    const highWavelen = orig / high;
    for (let i = 0; i < inv.length; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      if (wavelen > lowWavelen) inv[i] /= factor;
      else if (wavelen >= highWavelen) {
        const smooth = (orig / wavelen - low) / (high - low);
        inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i];
      }
    }
  }
  return inv;
}

/**
 * cos and signed-sin tables [T, hd] for positions start..start+T-1 (the two halves repeat the hd/2 frequencies).
 * The sin table's first half is negated so that rotate_half(x)·sin = roll(x, hd/2)·sin± (see applyRope).
 */
export function ropeTables(c: LlamaConfig, start: number, T: number, device: string, dtype: torch.DType): [Tensor, Tensor] {
  return torch.tidy(() => {
    const inv = torch.tensor(ropeInvFreq(c, start + T), { dtype: 'float64' });
    const pos = torch.arange(start, start + T, 1, { dtype: 'float64' });
    const freqs = pos.unsqueeze(1).mul(inv.unsqueeze(0)); // [T, hd/2]
    const emb = torch.cat([freqs, freqs], 1); // [T, hd]
    const cos = emb.cos().to({ dtype, device });
    const sin = torch.cat([freqs.sin().neg(), freqs.sin()], 1).to({ dtype, device });
    return [cos, sin] as [Tensor, Tensor];
  });
}

// x·cos + rotate_half(x)·sin with rotate_half(x) = (-x2, x1): rolling x by hd/2 gives (x2, x1), and the sign lives
// in the sin table, so the rotation costs three passes (mul, roll, addcmul) instead of five.
export function applyRope(x: Tensor, cos: Tensor, sinSigned: Tensor): Tensor {
  // x [B, H, T, hd]; cos/sin [T, hd] broadcast over B and H
  const hd = x.shape[x.ndim - 1];
  return torch.ops.addcmul(x.mul(cos), x.roll(hd / 2, -1), sinSigned);
}

/** Per-layer key/value buffers [B, kvH, maxLen, hd], written in place as tokens arrive. */
export class KVCache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  length = 0;

  constructor(readonly c: LlamaConfig, readonly batch: number, readonly maxLen: number, device = 'cpu', dtype: torch.DType = 'float32') {
    const kv = c.num_key_value_heads ?? c.num_attention_heads;
    for (let l = 0; l < c.num_hidden_layers; l++) {
      this.k.push(torch.keep(torch.zeros([batch, kv, maxLen, headDim(c)], { dtype, device })));
      this.v.push(torch.keep(torch.zeros([batch, kv, maxLen, headDim(c)], { dtype, device })));
    }
  }

  /**
   * Writes a chunk's keys and values [B, kvH, T, hd] for `layer` at the current length into the preallocated
   * buffers and returns everything held so far, [B, kvH, length + T, hd]; the forward advances `length` after all layers.
   */
  append(layer: number, k: Tensor, v: Tensor): [Tensor, Tensor] {
    const end = this.length + k.shape[2];
    this.k[layer].narrow(2, this.length, k.shape[2]).copy_(k);
    this.v[layer].narrow(2, this.length, v.shape[2]).copy_(v);
    return [this.k[layer].narrow(2, 0, end), this.v[layer].narrow(2, 0, end)];
  }

  dispose(): void {
    torch.dispose([...this.k, ...this.v]);
  }
}

export class LlamaAttention extends nn.Module {
  q_proj: torch.nn.Linear;
  k_proj: torch.nn.Linear;
  v_proj: torch.nn.Linear;
  o_proj: torch.nn.Linear;
  readonly nHeads: number;
  readonly nKv: number;
  readonly hd: number;

  constructor(readonly c: LlamaConfig, readonly layerIdx: number) {
    super();
    this.nHeads = c.num_attention_heads;
    this.nKv = c.num_key_value_heads ?? c.num_attention_heads;
    this.hd = headDim(c);
    const qkvBias = c.model_type === 'qwen2' || c.attention_bias === true;
    this.q_proj = this.registerModule('q_proj', new nn.Linear(c.hidden_size, this.nHeads * this.hd, { bias: qkvBias }));
    this.k_proj = this.registerModule('k_proj', new nn.Linear(c.hidden_size, this.nKv * this.hd, { bias: qkvBias }));
    this.v_proj = this.registerModule('v_proj', new nn.Linear(c.hidden_size, this.nKv * this.hd, { bias: qkvBias }));
    this.o_proj = this.registerModule('o_proj', new nn.Linear(this.nHeads * this.hd, c.hidden_size, { bias: c.attention_bias === true }));
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: KVCache, mask?: Tensor | null): Tensor {
    const [B, T] = x.shape;
    // [B, T, C] -> [B, H, T, hd]
    const q = applyRope(this.q_proj.forward(x).view(B, T, this.nHeads, this.hd).transpose(1, 2), cos, sin);
    let k = applyRope(this.k_proj.forward(x).view(B, T, this.nKv, this.hd).transpose(1, 2), cos, sin);
    let v = this.v_proj.forward(x).view(B, T, this.nKv, this.hd).transpose(1, 2);
    let causal = true;
    if (cache) {
      // Attend over everything so far, this chunk included.
      [k, v] = cache.append(this.layerIdx, k, v);
      causal = T > 1;
    }
    if (this.nKv !== this.nHeads) {
      // Grouped-query attention: each key/value head serves nHeads/nKv query heads. [B, kvH, S, hd] -> [B, H, S, hd]
      const rep = this.nHeads / this.nKv;
      k = k.repeatInterleave(rep, 1);
      v = v.repeatInterleave(rep, 1);
    }
    // With a cache offset and several new tokens the causal mask is bottom-right aligned; pass it explicitly.
    const y = mask
      ? torch.scaledDotProductAttention(q, k, v, { mask })
      : cache && cache.length > 0 && T > 1
        ? torch.scaledDotProductAttention(q, k, v, { mask: torch.ones([T, cache.length + T], { dtype: 'bool' }).tril(cache.length) })
        : torch.scaledDotProductAttention(q, k, v, { causal });
    // [B, H, T, hd] -> [B, T, C]
    return this.o_proj.forward(y.transpose(1, 2).reshape(B, T, this.nHeads * this.hd));
  }
}

export class LlamaMLP extends nn.Module {
  gate_proj: torch.nn.Linear;
  up_proj: torch.nn.Linear;
  down_proj: torch.nn.Linear;

  constructor(c: LlamaConfig) {
    super();
    const bias = c.mlp_bias === true;
    this.gate_proj = this.registerModule('gate_proj', new nn.Linear(c.hidden_size, c.intermediate_size, { bias }));
    this.up_proj = this.registerModule('up_proj', new nn.Linear(c.hidden_size, c.intermediate_size, { bias }));
    this.down_proj = this.registerModule('down_proj', new nn.Linear(c.intermediate_size, c.hidden_size, { bias }));
  }

  forward(x: Tensor): Tensor {
    // SwiGLU: down(silu(gate(x)) * up(x))
    return this.down_proj.forward(torch.silu(this.gate_proj.forward(x)).mul(this.up_proj.forward(x)));
  }
}

export class LlamaDecoderLayer extends nn.Module {
  input_layernorm: torch.nn.RMSNorm;
  self_attn: LlamaAttention;
  post_attention_layernorm: torch.nn.RMSNorm;
  mlp: LlamaMLP;

  constructor(c: LlamaConfig, idx: number) {
    super();
    this.input_layernorm = this.registerModule('input_layernorm', new nn.RMSNorm(c.hidden_size, { eps: c.rms_norm_eps }));
    this.self_attn = this.registerModule('self_attn', new LlamaAttention(c, idx));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new nn.RMSNorm(c.hidden_size, { eps: c.rms_norm_eps }));
    this.mlp = this.registerModule('mlp', new LlamaMLP(c));
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: KVCache, mask?: Tensor | null): Tensor {
    // A scope per layer: intermediates that autograd does not save are freed here, as Python's reference counting
    // would, instead of at the end of the whole step (autograd holds its own references to what backward needs).
    return torch.tidy(() => {
      const h = x.add(this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, cache, mask));
      return h.add(this.mlp.forward(this.post_attention_layernorm.forward(h)));
    });
  }
}

export class LlamaModel extends nn.Module {
  embed_tokens: torch.nn.Embedding;
  layers: torch.nn.ModuleList<LlamaDecoderLayer>;
  norm: torch.nn.RMSNorm;

  constructor(c: LlamaConfig) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new nn.Embedding(c.vocab_size, c.hidden_size));
    this.layers = this.registerModule('layers', new nn.ModuleList(Array.from({ length: c.num_hidden_layers }, (_, i) => new LlamaDecoderLayer(c, i))));
    this.norm = this.registerModule('norm', new nn.RMSNorm(c.hidden_size, { eps: c.rms_norm_eps }));
  }
}

export interface ForwardOptions {
  cache?: KVCache;
  /** Only compute logits for the last position (generation). */
  lastOnly?: boolean;
  /** Return the final hidden states [B, T, C] instead of logits. */
  hidden?: boolean;
  /** Extra attention mask, bool [T, S] or [B, 1, T, S] (true = may attend), e.g. for left padding. */
  mask?: Tensor | null;
}

export class LlamaForCausalLM extends nn.Module {
  model: LlamaModel;
  lm_head: torch.nn.Linear;
  readonly kind = 'causal-lm' as const;

  constructor(readonly config: LlamaConfig) {
    super();
    validateLlamaConfig(config);
    this.model = this.registerModule('model', new LlamaModel(config));
    this.lm_head = this.registerModule('lm_head', new nn.Linear(config.hidden_size, config.vocab_size, { bias: false }));
    if (config.tie_word_embeddings) this.tieWeights();
  }

  /** Keys that share storage when the head is tied: a checkpoint may hold only the second of each pair. */
  tiedKeys(): [string, string][] {
    return this.config.tie_word_embeddings ? [['lm_head.weight', 'model.embed_tokens.weight']] : [];
  }

  /** Ties the output head to the token embedding: one tensor under both names, as PyTorch does. */
  tieWeights(): void {
    const w = this.model.embed_tokens.weight;
    this.lm_head._parameters.set('weight', w);
    this.lm_head.weight = w;
  }

  /** ids [B, T] int64 -> logits [B, T, V] (or [B, 1, V] with lastOnly). */
  forward(ids: Tensor, opts: ForwardOptions = {}): Tensor {
    const [, T] = ids.shape;
    const start = opts.cache?.length ?? 0;
    if (start + T > (opts.cache?.maxLen ?? Infinity)) throw new RangeError(`sequence of ${start + T} tokens exceeds the cache of ${opts.cache!.maxLen}`);
    let x = this.model.embed_tokens.forward(ids); // [B, T, C]
    const [cos, sin] = ropeTables(this.config, start, T, x.device, x.dtype);
    for (const layer of this.model.layers) {
      const next = layer.forward(x, cos, sin, opts.cache, opts.mask);
      // The previous hidden state's handle is no longer needed (autograd keeps what it saved).
      if (x !== next) x.dispose();
      x = next;
    }
    if (opts.cache) opts.cache.length += T;
    x = this.model.norm.forward(x);
    if (opts.hidden) return x;
    if (opts.lastOnly) x = x.narrow(1, T - 1, 1);
    return this.lm_head.forward(x); // [B, T, V]
  }

  newCache(batch: number, maxLen?: number): KVCache {
    const p = this.model.embed_tokens.weight;
    return new KVCache(this.config, batch, maxLen ?? this.config.max_position_embeddings, p.device, p.dtype);
  }
}

export function validateLlamaConfig(c: LlamaConfig): void {
  for (const k of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings']) checkPositiveInt(c, k);
  checkPositiveInt(c, 'num_key_value_heads', { optional: true });
  checkPositiveInt(c, 'head_dim', { optional: true });
  // Absent means RMSNorm's default (1e-6, as transformers); a zero or negative one turns every norm into NaN or noise.
  checkPositiveNumber(c, 'rms_norm_eps', { optional: true, hint: 'Llama uses 1e-5 or 1e-6' });
  checkPositiveNumber(c, 'rope_theta', { optional: true, hint: 'usually 10000 to 1000000' });
  for (const k of ['tie_word_embeddings', 'attention_bias', 'mlp_bias']) checkBoolean(c, k);
  const kv = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % kv !== 0) throw new ModelConfigError(`num_attention_heads (${c.num_attention_heads}) must be a multiple of num_key_value_heads (${kv})`);
  if (c.head_dim == null && c.hidden_size % c.num_attention_heads !== 0) throw new ModelConfigError(`hidden_size (${c.hidden_size}) must divide by num_attention_heads (${c.num_attention_heads})`);
  if (headDim(c) % 2 !== 0) throw new ModelConfigError(`the head dimension (${headDim(c)}) must be even for rotary embeddings`);
  const sc = c.rope_scaling;
  if (sc == null) return;
  if (typeof sc !== 'object' || Array.isArray(sc)) throw new ModelConfigError(`rope_scaling must be an object such as {"rope_type": "linear", "factor": 2} or null, got ${JSON.stringify(sc)}`);
  const kind = sc.rope_type ?? sc.type;
  if (kind && !['linear', 'dynamic', 'llama3', 'default'].includes(kind)) throw new ModelConfigError(`rope_scaling type '${kind}' is not supported; use linear, dynamic or llama3`);
  const fields = sc as Record<string, unknown>;
  for (const k of ['factor', 'low_freq_factor', 'high_freq_factor']) checkPositiveNumber(fields, k, { optional: true, in: 'rope_scaling' });
  checkPositiveInt(fields, 'original_max_position_embeddings', { optional: true, in: 'rope_scaling' });
}
