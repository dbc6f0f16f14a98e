// Gemma 2 (google/gemma-2-*), in Hugging Face's layout so that parameter names are the checkpoint keys:
// model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm,
// pre_feedforward_layernorm, mlp.{gate,up,down}_proj, post_feedforward_layernorm}, model.norm, lm_head (tied to the
// embedding unless tie_word_embeddings is false).
//
// What differs from Llama (llama.ts, whose RoPE tables, rotation and key/value cache this reuses):
// - token embeddings are multiplied by sqrt(hidden_size), rounded to the weights' dtype first as transformers does;
// - RMSNorm scales by (1 + weight), in float32, and there is a norm after attention and after the MLP too;
// - the MLP is GeGLU (tanh-approximated GELU on the gate);
// - queries are scaled by query_pre_attn_scalar^-1/2 instead of head_dim^-1/2;
// - attention logits and the final logits are soft-capped, cap·tanh(x / cap);
// - layers alternate between local attention (the last sliding_window positions) and global attention.
// Gemma 3's text model (gemma3.ts) is this with q/k norms and a RoPE base per layer type; GemmaLayout holds what
// the two differ in, so the modules below serve both.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { applyRope, KVCache, ropeTables, validateLlamaConfig, type ForwardOptions, type LlamaConfig, type RopeScaling } from './llama.js';
import { checkBoolean, checkPositiveInt, checkPositiveNumber, checkTokenId, ModelConfigError, tieHead } from './weights.js';
import { lowest } from './t5.js';
import { shown } from '../errors.js';

const { nn } = torch;

export const LAYER_TYPES = ['sliding_attention', 'full_attention'] as const;
export type LayerType = (typeof LAYER_TYPES)[number];

/** The fields of a Gemma 2 config.json that this architecture reads, besides Llama's sizes. */
export interface Gemma2Config extends LlamaConfig {
  query_pre_attn_scalar?: number;
  sliding_window?: number | null;
  /** transformers ≥ 4.53 writes one entry per layer; older configs alternate local/global from layer 0. */
  layer_types?: LayerType[];
  attn_logit_softcapping?: number | null;
  final_logit_softcapping?: number | null;
  hidden_activation?: string;
  pad_token_id?: number | null;
  /** transformers 5 writes {rope_type, rope_theta, ...} here instead of rope_theta / rope_scaling. */
  rope_parameters?: Record<string, unknown> | null;
  use_bidirectional_attention?: boolean | null;
}

/** Everything the modules read, resolved from a config with transformers' defaults for the keys it leaves out. */
export interface GemmaLayout {
  /** The config with head_dim and num_key_value_heads filled in (for the cache and the attention shapes). */
  base: LlamaConfig;
  layerTypes: LayerType[];
  /** Per layer type, a config whose rope_theta / rope_scaling ropeTables reads. */
  rope: Record<LayerType, LlamaConfig>;
  window: number;
  /** query_pre_attn_scalar^-1/2 */
  scale: number;
  attnCap: number | null;
  finalCap: number | null;
  gelu: 'tanh' | 'none';
  padId: number | null;
  tied: boolean;
  /** RMSNorm on each query and key head (Gemma 3). */
  qkNorm: boolean;
  /**
   * What a query that may see no key gets (only a padding position can, through a caller's mask): transformers'
   * eager attention, Gemma 2's only one, averages all values; its SDPA path, Gemma 3's default, gives zeros.
   */
  keyless: 'mean' | 'zero';
}

/** Gemma2Config's defaults in transformers, for keys a config.json may leave out. */
const GEMMA2_DEFAULTS = {
  head_dim: 256, num_key_value_heads: 4, query_pre_attn_scalar: 256, sliding_window: 4096, attn_logit_softcapping: 50,
  final_logit_softcapping: 30, rms_norm_eps: 1e-6, hidden_activation: 'gelu_pytorch_tanh', pad_token_id: 0, tie_word_embeddings: true,
};

// ACT2FN's GELUs: gelu_pytorch_tanh and gelu_new are the tanh approximation, gelu the exact erf form.
const ACTIVATIONS: Record<string, 'tanh' | 'none'> = { gelu_pytorch_tanh: 'tanh', gelu_new: 'tanh', gelu: 'none' };
const ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3'];

/**
 * A RoPE parameter set ({rope_type, rope_theta, factor, ...}) as a config ropeTables reads; `theta` applies where the
 * set has no rope_theta of its own, and `where` names the set in errors.
 */
export function ropeConfig(base: LlamaConfig, params: unknown, theta: number, where: string): LlamaConfig {
  if (params == null) params = {};
  if (typeof params !== 'object' || Array.isArray(params)) throw new ModelConfigError(`${where} must be an object such as {"rope_type": "default", "rope_theta": 10000}, got ${shown(params)}`);
  const p: Record<string, unknown> = { rope_theta: theta, ...(params as Record<string, unknown>) };
  const kind = p.rope_type ?? p.type ?? 'default';
  if (typeof kind !== 'string' || !ROPE_TYPES.includes(kind)) throw new ModelConfigError(`${where}.rope_type ${shown(kind)} is not supported; use ${ROPE_TYPES.join(', ')}`);
  checkPositiveNumber(p, 'rope_theta', { in: where, hint: 'usually 10000 to 1000000' });
  for (const k of ['factor', 'low_freq_factor', 'high_freq_factor']) checkPositiveNumber(p, k, { optional: true, in: where });
  checkPositiveInt(p, 'original_max_position_embeddings', { optional: true, in: where });
  // Only these two keys, so that llama.ts never reads a Gemma 3 file's per-layer-type rope_parameters.
  return { ...base, rope_theta: p.rope_theta as number, rope_scaling: kind === 'default' ? null : (p as RopeScaling), rope_parameters: null };
}

/**
 * The checks and defaults both Gemma generations share; `layerTypes` and `rope` are where they differ. `c` already
 * holds the generation's defaults under the file's own values.
 */
export function gemmaLayout(c: Gemma2Config, layerTypes: unknown, rope: (base: LlamaConfig) => Record<LayerType, LlamaConfig>, qkNorm: boolean): GemmaLayout {
  // The sizes and heads as Llama checks them; the rotary settings are checked per layer type below.
  validateLlamaConfig({ ...c, rope_scaling: null, rope_parameters: null });
  checkPositiveNumber(c, 'query_pre_attn_scalar', { hint: 'Gemma uses head_dim or hidden_size / num_attention_heads' });
  for (const k of ['attn_logit_softcapping', 'final_logit_softcapping']) checkPositiveNumber(c, k, { optional: true, hint: 'Gemma 2 uses 50 and 30; null turns capping off' });
  checkTokenId(c, 'pad_token_id', c.vocab_size);
  checkBoolean(c, 'use_bidirectional_attention');
  if (c.use_bidirectional_attention) throw new ModelConfigError('use_bidirectional_attention is true (an embedding model, not a causal LM); retain supports only causal Gemma models');
  const act = c.hidden_activation;
  if (typeof act !== 'string' || !(act in ACTIVATIONS)) {
    throw new ModelConfigError(`hidden_activation ${shown(act)} is not supported; Gemma uses gelu_pytorch_tanh (also accepted: ${Object.keys(ACTIVATIONS).join(', ')})`);
  }
  if (!Array.isArray(layerTypes) || layerTypes.length !== c.num_hidden_layers || !layerTypes.every((t) => LAYER_TYPES.includes(t))) {
    throw new ModelConfigError(`layer_types must list one of ${LAYER_TYPES.join(' or ')} for each of the ${c.num_hidden_layers} layers (num_hidden_layers), got ${shown(layerTypes)}`);
  }
  if (layerTypes.includes('sliding_attention')) checkPositiveInt(c, 'sliding_window');
  const base: LlamaConfig = { ...c, head_dim: c.head_dim ?? c.hidden_size / c.num_attention_heads };
  return {
    base,
    layerTypes: layerTypes as LayerType[],
    rope: rope(base),
    window: c.sliding_window ?? Infinity,
    scale: (c.query_pre_attn_scalar as number) ** -0.5,
    attnCap: c.attn_logit_softcapping ?? null,
    finalCap: c.final_logit_softcapping ?? null,
    gelu: ACTIVATIONS[act],
    padId: c.pad_token_id ?? null,
    tied: c.tie_word_embeddings === true,
    qkNorm,
    keyless: 'mean',
  };
}

export function gemma2Layout(config: Gemma2Config): GemmaLayout {
  const c = { ...GEMMA2_DEFAULTS, ...config } as Gemma2Config;
  // Before layer_types existed, even layers were local and odd ones global.
  const types = c.layer_types ?? Array.from({ length: c.num_hidden_layers }, (_, i) => (i % 2 === 0 ? 'sliding_attention' : 'full_attention'));
  return gemmaLayout(c, types, (base) => {
    // transformers 5 writes rope_parameters; older files rope_theta and rope_scaling. Both layer types share one.
    const one = c.rope_parameters != null
      ? ropeConfig(base, c.rope_parameters, c.rope_theta ?? 10000, 'rope_parameters')
      : ropeConfig(base, c.rope_scaling, c.rope_theta ?? 10000, 'rope_scaling');
    return { sliding_attention: one, full_attention: one };
  }, false);
}

/** RMSNorm as Gemma has it: x · rsqrt(mean(x²) + eps) · (1 + weight), in float32 and cast back afterwards. */
export class GemmaRMSNorm extends nn.Module {
  weight: Tensor;

  constructor(readonly dim: number, readonly eps: number) {
    super();
    // Zero is the identity scale here, as transformers initialises it.
    this.weight = this.registerParameter('weight', torch.zeros([dim]));
  }

  forward(x: Tensor): Tensor {
    // [..., dim] -> [..., dim]
    return torch.rmsNorm(x.float(), this.weight.float().add(1), this.eps).to(x.dtype);
  }
}

export class GemmaMLP extends nn.Module {
  gate_proj: torch.nn.Linear;
  up_proj: torch.nn.Linear;
  down_proj: torch.nn.Linear;

  constructor(c: LlamaConfig, readonly gelu: 'tanh' | 'none') {
    super();
    this.gate_proj = this.registerModule('gate_proj', new nn.Linear(c.hidden_size, c.intermediate_size, { bias: false }));
    this.up_proj = this.registerModule('up_proj', new nn.Linear(c.hidden_size, c.intermediate_size, { bias: false }));
    this.down_proj = this.registerModule('down_proj', new nn.Linear(c.intermediate_size, c.hidden_size, { bias: false }));
  }

  forward(x: Tensor): Tensor {
    // GeGLU: down(gelu(gate(x)) * up(x))
    return this.down_proj.forward(torch.gelu(this.gate_proj.forward(x), this.gelu).mul(this.up_proj.forward(x)));
  }
}

/** The keys a layer type may not attend to, and the queries left with none (only with a caller's mask). */
interface Blocked {
  keys: Tensor; // bool [T, S] or [B, 1, T, S]
  keyless: Tensor | null; // bool [T, 1] or [B, 1, T, 1]
}

/**
 * softmax(mask(cap·tanh(scale·QKᵀ / cap)))·V, q [B, H, T, hd], k/v [B, H, S, hd]. The cap sits between the product
 * and the mask, which the fused kernel cannot express, so this is composed as transformers' eager attention is: the
 * softmax in float32, and blocked keys set to the dtype's lowest value rather than -inf, so that a query with no key
 * to see averages all values instead of turning NaN (which would reach real tokens through the next layer's values).
 */
function attend(q: Tensor, k: Tensor, v: Tensor, blocked: Blocked, scale: number, cap: number | null): Tensor {
  let s = q.matmul(k.transpose(2, 3)).mul(scale); // [B, H, T, S]
  if (cap !== null) s = s.div(cap).tanh().mul(cap);
  // float64 stays float64: its lowest value would become -inf in float32, and a keyless row NaN.
  const p = s.maskedFill(blocked.keys, lowest(s.dtype)).softmax(-1, s.dtype === 'float64' ? 'float64' : 'float32').to(q.dtype);
  const y = p.matmul(v); // [B, H, T, hd]
  return blocked.keyless ? y.maskedFill(blocked.keyless, 0) : y;
}

export class GemmaAttention extends nn.Module {
  q_proj: torch.nn.Linear;
  k_proj: torch.nn.Linear;
  v_proj: torch.nn.Linear;
  o_proj: torch.nn.Linear;
  q_norm: GemmaRMSNorm | null = null;
  k_norm: GemmaRMSNorm | null = null;
  readonly nHeads: number;
  readonly nKv: number;
  readonly hd: number;

  constructor(readonly g: GemmaLayout, readonly layerIdx: number) {
    super();
    const c = g.base;
    this.nHeads = c.num_attention_heads;
    this.nKv = c.num_key_value_heads!;
    this.hd = c.head_dim!;
    const bias = c.attention_bias === true;
    this.q_proj = this.registerModule('q_proj', new nn.Linear(c.hidden_size, this.nHeads * this.hd, { bias }));
    this.k_proj = this.registerModule('k_proj', new nn.Linear(c.hidden_size, this.nKv * this.hd, { bias }));
    this.v_proj = this.registerModule('v_proj', new nn.Linear(c.hidden_size, this.nKv * this.hd, { bias }));
    this.o_proj = this.registerModule('o_proj', new nn.Linear(this.nHeads * this.hd, c.hidden_size, { bias }));
    if (g.qkNorm) {
      this.q_norm = this.registerModule('q_norm', new GemmaRMSNorm(this.hd, c.rms_norm_eps));
      this.k_norm = this.registerModule('k_norm', new GemmaRMSNorm(this.hd, c.rms_norm_eps));
    }
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, blocked: Blocked, cache?: KVCache): Tensor {
    const [B, T] = x.shape;
    // [B, T, C] -> [B, H, T, hd]
    let q = this.q_proj.forward(x).view(B, T, this.nHeads, this.hd).transpose(1, 2);
    let k = this.k_proj.forward(x).view(B, T, this.nKv, this.hd).transpose(1, 2);
    let v = this.v_proj.forward(x).view(B, T, this.nKv, this.hd).transpose(1, 2);
    if (this.q_norm && this.k_norm) {
      q = this.q_norm.forward(q);
      k = this.k_norm.forward(k);
    }
    q = applyRope(q, cos, sin);
    k = applyRope(k, cos, sin);
    if (cache) [k, v] = cache.append(this.layerIdx, k, v);
    if (this.nKv !== this.nHeads) {
      // Grouped-query attention: [B, kvH, S, hd] -> [B, H, S, hd]
      k = k.repeatInterleave(this.nHeads / this.nKv, 1);
      v = v.repeatInterleave(this.nHeads / this.nKv, 1);
    }
    const y = attend(q, k, v, blocked, this.g.scale, this.g.attnCap);
    // [B, H, T, hd] -> [B, T, H·hd] -> [B, T, C]
    return this.o_proj.forward(y.transpose(1, 2).reshape(B, T, this.nHeads * this.hd));
  }
}

export class GemmaDecoderLayer extends nn.Module {
  input_layernorm: GemmaRMSNorm;
  self_attn: GemmaAttention;
  post_attention_layernorm: GemmaRMSNorm;
  pre_feedforward_layernorm: GemmaRMSNorm;
  mlp: GemmaMLP;
  post_feedforward_layernorm: GemmaRMSNorm;

  constructor(g: GemmaLayout, idx: number) {
    super();
    const { hidden_size: C, rms_norm_eps: eps } = g.base;
    this.input_layernorm = this.registerModule('input_layernorm', new GemmaRMSNorm(C, eps));
    this.self_attn = this.registerModule('self_attn', new GemmaAttention(g, idx));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new GemmaRMSNorm(C, eps));
    this.pre_feedforward_layernorm = this.registerModule('pre_feedforward_layernorm', new GemmaRMSNorm(C, eps));
    this.mlp = this.registerModule('mlp', new GemmaMLP(g.base, g.gelu));
    this.post_feedforward_layernorm = this.registerModule('post_feedforward_layernorm', new GemmaRMSNorm(C, eps));
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, blocked: Blocked, cache?: KVCache): Tensor {
    // A scope per layer, as in llama.ts: what autograd does not save is freed here.
    return torch.tidy(() => {
      const a = this.self_attn.forward(this.input_layernorm.forward(x), cos, sin, blocked, cache);
      const h = x.add(this.post_attention_layernorm.forward(a));
      return h.add(this.post_feedforward_layernorm.forward(this.mlp.forward(this.pre_feedforward_layernorm.forward(h))));
    });
  }
}

export class GemmaModel extends nn.Module {
  embed_tokens: torch.nn.Embedding;
  layers: torch.nn.ModuleList<GemmaDecoderLayer>;
  norm: GemmaRMSNorm;

  constructor(g: GemmaLayout) {
    super();
    const c = g.base;
    // The padding row gets no gradient from the embedding lookup, as with transformers' padding_idx.
    this.embed_tokens = this.registerModule('embed_tokens', new nn.Embedding(c.vocab_size, c.hidden_size, { paddingIdx: g.padId ?? undefined }));
    this.layers = this.registerModule('layers', new nn.ModuleList(Array.from({ length: c.num_hidden_layers }, (_, i) => new GemmaDecoderLayer(g, i))));
    this.norm = this.registerModule('norm', new GemmaRMSNorm(c.hidden_size, c.rms_norm_eps));
  }
}

/**
 * Which keys each new position may not see, per layer type: bool [T, S] for queries at start..start+T-1 over keys
 * 0..S-1, S = start + T (or [B, 1, T, S] with a caller's mask, true = may attend). Global layers see every earlier
 * key; local ones only the last `window`, q - window < k ≤ q, as transformers' sliding-window mask. Queries left
 * with no key are marked only where the layout zeroes them; without a caller's mask each sees at least itself.
 */
function blockedKeys(g: GemmaLayout, start: number, T: number, device: string, extra?: Tensor | null): Record<LayerType, Blocked> {
  const ones = () => torch.ones([T, start + T], { dtype: 'bool', device });
  let full = ones().tril(start);
  let local = Number.isFinite(g.window) ? full.logicalAnd(ones().triu(start - g.window + 1)) : full;
  if (extra) [full, local] = [full.logicalAnd(extra), local.logicalAnd(extra)];
  const blocked = (seen: Tensor): Blocked => ({
    keys: seen.logicalNot(),
    keyless: extra && g.keyless === 'zero' ? seen.any(-1, true).logicalNot() : null,
  });
  return { full_attention: blocked(full), sliding_attention: blocked(local) };
}

export class Gemma2ForCausalLM extends nn.Module {
  model: GemmaModel;
  lm_head: torch.nn.Linear;
  readonly kind = 'causal-lm' as const;
  readonly g: GemmaLayout;

  constructor(readonly config: Gemma2Config, layout?: GemmaLayout) {
    super();
    this.g = layout ?? gemma2Layout(config);
    this.model = this.registerModule('model', new GemmaModel(this.g));
    this.lm_head = this.registerModule('lm_head', new nn.Linear(this.g.base.hidden_size, this.g.base.vocab_size, { bias: false }));
    if (this.g.tied) this.tieWeights();
  }

  /** Keys that share storage when the head is tied: a checkpoint may hold only the second of each pair. */
  tiedKeys(): [string, string][] {
    return this.g.tied ? [['lm_head.weight', 'model.embed_tokens.weight']] : [];
  }

  /** Ties the output head to the token embedding: one tensor under both names, as PyTorch does. */
  tieWeights(): void {
    tieHead(this.lm_head, this.model.embed_tokens.weight);
  }

  /** sqrt(hidden_size) rounded to `dtype` (55.4256 becomes 55.5 in bfloat16), as transformers scales embeddings. */
  embedScale(dtype: torch.DType): number {
    return torch.tidy(() => torch.tensor([Math.sqrt(this.g.base.hidden_size)], { dtype: 'float64' }).to(dtype).item() as number);
  }

  /** ids [B, T] int64 -> logits [B, T, V] (or [B, 1, V] with lastOnly). */
  forward(ids: Tensor, opts: ForwardOptions = {}): Tensor {
    const [, T] = ids.shape;
    const start = opts.cache?.length ?? 0;
    if (start + T > (opts.cache?.maxLen ?? Infinity)) throw new RangeError(`sequence of ${start + T} tokens exceeds the cache of ${opts.cache!.maxLen}`);
    const e = this.model.embed_tokens.forward(ids); // [B, T, C]
    let x = e.mul(this.embedScale(e.dtype));
    e.dispose();
    const { rope, layerTypes } = this.g;
    const full = ropeTables(rope.full_attention, start, T, x.device, x.dtype);
    const tables = { full_attention: full, sliding_attention: rope.sliding_attention === rope.full_attention ? full : ropeTables(rope.sliding_attention, start, T, x.device, x.dtype) };
    const blocked = torch.tidy(() => blockedKeys(this.g, start, T, x.device, opts.mask));
    for (let i = 0; i < layerTypes.length; i++) {
      const [cos, sin] = tables[layerTypes[i]];
      const next = this.model.layers.get(i).forward(x, cos, sin, blocked[layerTypes[i]], opts.cache);
      // The previous hidden state's handle is no longer needed (autograd keeps what it saved).
      if (x !== next) x.dispose();
      x = next;
    }
    const masks = Object.values(blocked).flatMap((b) => (b.keyless ? [b.keys, b.keyless] : [b.keys]));
    torch.dispose([...masks, ...new Set([...tables.full_attention, ...tables.sliding_attention])]);
    if (opts.cache) opts.cache.length += T;
    x = this.model.norm.forward(x);
    if (opts.hidden) return x;
    if (opts.lastOnly) x = x.narrow(1, T - 1, 1);
    const logits = this.lm_head.forward(x); // [B, T, V]
    const cap = this.g.finalCap;
    return cap === null ? logits : torch.tidy(() => logits.div(cap).tanh().mul(cap));
  }

  newCache(batch: number, maxLen?: number): KVCache {
    const p = this.model.embed_tokens.weight;
    return new KVCache(this.g.base, batch, maxLen ?? this.g.base.max_position_embeddings, p.device, p.dtype);
  }
}
