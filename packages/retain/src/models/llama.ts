// The Llama family (Llama 2/3, Qwen2, SmolLM, TinyLlama, llama2.c's stories models), in Hugging Face's layout so
// that parameter names are the checkpoint keys: model.embed_tokens, model.layers.N.{input_layernorm, self_attn.
// {q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head.
//
// RMSNorm, rotary position embeddings (rotate-half convention, with linear / dynamic-NTK / llama3 scaling),
// grouped-query attention, SwiGLU MLP, tied or untied output head, and a key/value cache for generation.
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { checkBoolean, checkPositiveInt, checkPositiveNumber, ModelConfigError, tieHead } from './weights.js';
import { shown } from '../errors.js';

const { nn } = torch;

export interface RopeScaling {
  /** HF writes `type` in older configs and `rope_type` in newer ones. */
  type?: 'linear' | 'dynamic' | 'llama3' | 'longrope' | 'default';
  rope_type?: 'linear' | 'dynamic' | 'llama3' | 'longrope' | 'default';
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
  /** LongRoPE (Phi-3 128k, Phi-3.5, Phi-4-mini): per-frequency divisors within / beyond the original context. */
  short_factor?: number[];
  long_factor?: number[];
  /** LongRoPE's scale of cos and sin; default √(1 + ln(factor) / ln(original context)). */
  attention_factor?: number;
}

const ROPE_KINDS = ['default', 'linear', 'dynamic', 'llama3', 'longrope'];

/** LongRoPE's original context: in the rope settings (transformers 5) or at the top of the config (Phi-3's own key). */
export function longropeOriginal(c: LlamaConfig, sc: RopeScaling): number {
  return sc.original_max_position_embeddings ?? (c.original_max_position_embeddings as number | undefined) ?? c.max_position_embeddings;
}

/** The factor transformers multiplies cos and sin by: LongRoPE's attention_factor, else 1. */
export function ropeAttentionScale(c: LlamaConfig): number {
  const sc = ropeSettings(c).scaling;
  if ((sc?.rope_type ?? sc?.type) !== 'longrope') return 1;
  if (sc!.attention_factor != null) return sc!.attention_factor;
  const orig = longropeOriginal(c, sc!);
  const factor = sc!.factor ?? c.max_position_embeddings / orig;
  return factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(orig));
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
  /** transformers 5 writes rope_theta and the scaling together here: {rope_type, rope_theta, factor, ...}. */
  rope_parameters?: (RopeScaling & { rope_theta?: number; partial_rotary_factor?: number }) | null;
  /** Rotate only this fraction of each head (Phi-3 family); read from here or from rope_parameters. */
  partial_rotary_factor?: number;
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

/**
 * The rotary settings wherever the config keeps them: rope_theta and rope_scaling (transformers 4 and configs made
 * in code) win when present, else rope_parameters (what transformers 5 writes). `key` names the object for errors.
 */
export function ropeSettings(c: LlamaConfig): { theta: number; scaling: RopeScaling | null; key: 'rope_scaling' | 'rope_parameters'; partial: number } {
  const params = c.rope_parameters ?? null;
  const legacy = c.rope_scaling !== undefined;
  const scaling = legacy ? c.rope_scaling ?? null : params;
  const theta = c.rope_theta ?? params?.rope_theta ?? 10000;
  return { theta, scaling, key: legacy ? 'rope_scaling' : 'rope_parameters', partial: c.partial_rotary_factor ?? params?.partial_rotary_factor ?? 1 };
}

/** Width of the rotated part of each head: all of it, or partial_rotary_factor of it as transformers rounds it. */
export function rotaryDim(c: LlamaConfig): number {
  return Math.floor(headDim(c) * ropeSettings(c).partial);
}

/** Inverse frequencies of the rotary embedding, with the config's scaling rule applied (except dynamic NTK). */
export function ropeInvFreq(c: LlamaConfig, seqLen?: number): Float64Array {
  const rd = rotaryDim(c);
  const rope = ropeSettings(c);
  let theta = rope.theta;
  const sc = rope.scaling;
  const kind = sc?.rope_type ?? sc?.type ?? 'default';
  const factor = sc?.factor ?? 1;
  if (kind === 'dynamic' && seqLen !== undefined && seqLen > c.max_position_embeddings) {
    // NTK-aware: grow the base with the length beyond the trained context.
    theta = theta * ((factor * seqLen) / c.max_position_embeddings - (factor - 1)) ** (rd / (rd - 2));
  }
  const inv = new Float64Array(rd / 2);
  for (let i = 0; i < rd / 2; i++) inv[i] = 1 / theta ** ((2 * i) / rd);
  if (kind === 'linear') for (let i = 0; i < inv.length; i++) inv[i] /= factor;
  if (kind === 'longrope') {
    // The long factors once the sequence outgrows the original context (the positions before keep their rotation).
    const ext = seqLen !== undefined && seqLen > longropeOriginal(c, sc!) ? sc!.long_factor! : sc!.short_factor!;
    for (let i = 0; i < inv.length; i++) inv[i] /= ext[i];
  }
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
 * cos and signed-sin tables [T, rd] for positions start..start+T-1 (the two halves repeat the rd/2 frequencies; rd is
 * rotaryDim, the head width unless partial_rotary_factor says otherwise).
 * The sin table's first half is negated so that rotate_half(x)·sin = roll(x, hd/2)·sin± (see applyRope).
 */
export function ropeTables(c: LlamaConfig, start: number, T: number, device: string, dtype: torch.DType): [Tensor, Tensor] {
  return torch.tidy(() => {
    const inv = torch.tensor(ropeInvFreq(c, start + T), { dtype: 'float64' });
    const pos = torch.arange(start, start + T, 1, { dtype: 'float64' });
    const freqs = pos.unsqueeze(1).mul(inv.unsqueeze(0)); // [T, rd/2]
    const emb = torch.cat([freqs, freqs], 1); // [T, rd]
    const scale = ropeAttentionScale(c);
    const cos = emb.cos().mul(scale).to({ dtype, device });
    const sin = torch.cat([freqs.sin().neg(), freqs.sin()], 1).mul(scale).to({ dtype, device });
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
  /** The ids fed so far [B, length], kept only for a model that may run them again (Phi-3 under LongRoPE). */
  ids: Tensor | null = null;

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

  /**
   * A cache of `batch` rows that each start with this one-row cache's positions, room for `maxLen`: the choices of a
   * multiple-choice question continue one context, which then runs once.
   */
  repeat(batch: number, maxLen: number): KVCache {
    if (this.batch !== 1 || this.ids) throw new Error('KVCache.repeat copies a one-row cache without kept ids');
    const out = new KVCache(this.c, batch, maxLen, this.k[0].device, this.k[0].dtype);
    torch.tidy(() => {
      for (let l = 0; l < this.k.length; l++) {
        const [, kvH, , hd] = this.k[l].shape;
        out.k[l].narrow(2, 0, this.length).copy_(this.k[l].narrow(2, 0, this.length).expand([batch, kvH, this.length, hd]));
        out.v[l].narrow(2, 0, this.length).copy_(this.v[l].narrow(2, 0, this.length).expand([batch, kvH, this.length, hd]));
      }
    });
    out.length = this.length;
    return out;
  }

  dispose(): void {
    torch.dispose([...this.k, ...this.v, ...(this.ids ? [this.ids] : [])]);
  }
}

export class LlamaAttention extends nn.Module implements HeadLayout {
  q_proj: torch.nn.Linear;
  k_proj: torch.nn.Linear;
  v_proj: torch.nn.Linear;
  o_proj: torch.nn.Linear;
  readonly nHeads: number;
  readonly nKv: number;
  readonly hd: number;
  readonly window: number | null;

  constructor(readonly c: LlamaConfig, readonly layerIdx: number) {
    super();
    this.nHeads = c.num_attention_heads;
    this.nKv = c.num_key_value_heads ?? c.num_attention_heads;
    this.hd = headDim(c);
    this.window = slidingWindow(c, layerIdx);
    const qkvBias = c.model_type === 'qwen2' || c.attention_bias === true;
    this.q_proj = this.registerModule('q_proj', new nn.Linear(c.hidden_size, this.nHeads * this.hd, { bias: qkvBias }));
    this.k_proj = this.registerModule('k_proj', new nn.Linear(c.hidden_size, this.nKv * this.hd, { bias: qkvBias }));
    this.v_proj = this.registerModule('v_proj', new nn.Linear(c.hidden_size, this.nKv * this.hd, { bias: qkvBias }));
    this.o_proj = this.registerModule('o_proj', new nn.Linear(this.nHeads * this.hd, c.hidden_size, { bias: c.attention_bias === true }));
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: KVCache, mask?: Tensor | null): Tensor {
    return this.o_proj.forward(rotaryAttention(this, this.q_proj.forward(x), this.k_proj.forward(x), this.v_proj.forward(x), cos, sin, cache, mask));
  }
}

/** What rotaryAttention needs to know of a layer's heads. */
export interface HeadLayout {
  readonly nHeads: number;
  readonly nKv: number;
  readonly hd: number;
  readonly layerIdx: number;
  /** Keys this many positions back or more are out of sight (a sliding-window layer), or null. */
  readonly window: number | null;
}

/**
 * The sliding window of layer `i`, as transformers applies it: Mistral and Phi-3 to every layer when sliding_window
 * is set; Qwen2 to the layers layer_types marks 'sliding_attention' (older configs: with use_sliding_window, the
 * layers from max_window_layers on). Llama has none.
 */
export function slidingWindow(c: LlamaConfig, i: number): number | null {
  const w = typeof c.sliding_window === 'number' ? c.sliding_window : null;
  if (w === null) return null;
  if (c.model_type === 'mistral' || c.model_type === 'phi3') return w;
  if (c.model_type !== 'qwen2') return null;
  if (Array.isArray(c.layer_types)) return c.layer_types[i] === 'sliding_attention' ? w : null;
  return c.use_sliding_window === true && i >= ((c.max_window_layers as number | undefined) ?? 28) ? w : null;
}

/** bool [T, S]: query start+t may see key j when j ≤ start+t and j > start+t − window. */
function windowMask(T: number, start: number, window: number, device: string): Tensor {
  return torch.tidy(() => {
    const ones = torch.ones([T, start + T], { dtype: 'bool', device });
    return ones.tril(start).logicalAnd(ones.triu(start - window + 1));
  });
}

// Rotary embedding of x [B, H, T, hd] over the width of the tables (rd); the rest of each head passes unrotated.
function rotate(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const rd = cos.shape[1];
  const hd = x.shape[x.ndim - 1];
  if (rd === hd) return applyRope(x, cos, sin);
  return torch.cat([applyRope(x.narrow(-1, 0, rd), cos, sin), x.narrow(-1, rd, hd - rd)], -1);
}

/**
 * Causal attention from the projections q [B, T, H·hd] and k, v [B, T, kvH·hd]: rotary positions, the layer's cache,
 * grouped-query heads, an optional mask -> [B, T, H·hd] for the output projection. Shared by every layout of the
 * projections (Llama's separate q/k/v, Phi-3's fused qkv).
 */
export function rotaryAttention(a: HeadLayout, qp: Tensor, kp: Tensor, vp: Tensor, cos: Tensor, sin: Tensor, cache?: KVCache, mask?: Tensor | null): Tensor {
  const [B, T] = qp.shape;
  const start = cache?.length ?? 0;
  // [B, T, H·hd] -> [B, H, T, hd]
  const q = rotate(qp.view(B, T, a.nHeads, a.hd).transpose(1, 2), cos, sin);
  let k = rotate(kp.view(B, T, a.nKv, a.hd).transpose(1, 2), cos, sin);
  let v = vp.view(B, T, a.nKv, a.hd).transpose(1, 2);
  let causal = true;
  if (cache) {
    // Attend over everything so far, this chunk included.
    [k, v] = cache.append(a.layerIdx, k, v);
    causal = T > 1;
  }
  if (a.nKv !== a.nHeads) {
    // Grouped-query attention: each key/value head serves nHeads/nKv query heads. [B, kvH, S, hd] -> [B, H, S, hd]
    const rep = a.nHeads / a.nKv;
    k = k.repeatInterleave(rep, 1);
    v = v.repeatInterleave(rep, 1);
  }
  if (a.window !== null && start + T > a.window) {
    const w = windowMask(T, start, a.window, q.device); // [T, S], causal too
    mask = mask ? mask.logicalAnd(w) : w;
  }
  // With a cache offset and several new tokens the causal mask is bottom-right aligned; pass it explicitly.
  const y = mask
    ? torch.scaledDotProductAttention(q, k, v, { mask })
    : cache && cache.length > 0 && T > 1
      ? torch.scaledDotProductAttention(q, k, v, { mask: torch.ones([T, cache.length + T], { dtype: 'bool' }).tril(cache.length) })
      : torch.scaledDotProductAttention(q, k, v, { causal });
  // [B, H, T, hd] -> [B, T, H·hd]
  return y.transpose(1, 2).reshape(B, T, a.nHeads * a.hd);
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

export type AttentionModule = torch.nn.Module & { forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: KVCache, mask?: Tensor | null): Tensor };
export type MLPModule = torch.nn.Module & { forward(x: Tensor): Tensor };

/** The attention and MLP a decoder layer is made of: Llama's, or a variant's with the same forwards (Phi-3's fused ones). */
export interface LayerParts<A extends AttentionModule = LlamaAttention, M extends MLPModule = LlamaMLP> {
  attention(c: LlamaConfig, layerIdx: number): A;
  mlp(c: LlamaConfig): M;
}

export const LLAMA_PARTS: LayerParts = { attention: (c, i) => new LlamaAttention(c, i), mlp: (c) => new LlamaMLP(c) };

// The default parts fit the default type parameters; TypeScript cannot see that for a generic default value.
function llamaParts<A extends AttentionModule, M extends MLPModule>(): LayerParts<A, M> {
  return LLAMA_PARTS as unknown as LayerParts<A, M>;
}

export class LlamaDecoderLayer<A extends AttentionModule = LlamaAttention, M extends MLPModule = LlamaMLP> extends nn.Module {
  input_layernorm: torch.nn.RMSNorm;
  self_attn: A;
  post_attention_layernorm: torch.nn.RMSNorm;
  mlp: M;

  constructor(c: LlamaConfig, idx: number, parts: LayerParts<A, M> = llamaParts()) {
    super();
    this.input_layernorm = this.registerModule('input_layernorm', new nn.RMSNorm(c.hidden_size, { eps: c.rms_norm_eps }));
    this.self_attn = this.registerModule('self_attn', parts.attention(c, idx));
    this.post_attention_layernorm = this.registerModule('post_attention_layernorm', new nn.RMSNorm(c.hidden_size, { eps: c.rms_norm_eps }));
    this.mlp = this.registerModule('mlp', parts.mlp(c));
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

export class LlamaModel<A extends AttentionModule = LlamaAttention, M extends MLPModule = LlamaMLP> extends nn.Module {
  embed_tokens: torch.nn.Embedding;
  layers: torch.nn.ModuleList<LlamaDecoderLayer<A, M>>;
  norm: torch.nn.RMSNorm;

  constructor(c: LlamaConfig, parts: LayerParts<A, M> = llamaParts()) {
    super();
    this.embed_tokens = this.registerModule('embed_tokens', new nn.Embedding(c.vocab_size, c.hidden_size));
    this.layers = this.registerModule('layers', new nn.ModuleList(Array.from({ length: c.num_hidden_layers }, (_, i) => new LlamaDecoderLayer(c, i, parts))));
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

export class LlamaForCausalLM<A extends AttentionModule = LlamaAttention, M extends MLPModule = LlamaMLP> extends nn.Module {
  model: LlamaModel<A, M>;
  lm_head: torch.nn.Linear;
  readonly kind = 'causal-lm' as const;

  constructor(readonly config: LlamaConfig, parts: LayerParts<A, M> = llamaParts()) {
    super();
    validateLlamaConfig(config);
    // The MLP is SwiGLU; transformers reads hidden_act, so a file naming another activation is another model.
    if (config.hidden_act != null && config.hidden_act !== 'silu') throw new ModelConfigError(`hidden_act '${String(config.hidden_act)}' is not supported; the Llama family's MLP uses silu`);
    this.model = this.registerModule('model', new LlamaModel(config, parts));
    this.lm_head = this.registerModule('lm_head', new nn.Linear(config.hidden_size, config.vocab_size, { bias: false }));
    if (config.tie_word_embeddings) this.tieWeights();
  }

  /** Keys that share storage when the head is tied: a checkpoint may hold only the second of each pair. */
  tiedKeys(): [string, string][] {
    return this.config.tie_word_embeddings ? [['lm_head.weight', 'model.embed_tokens.weight']] : [];
  }

  /** Ties the output head to the token embedding: one tensor under both names, as PyTorch does. */
  tieWeights(): void {
    tieHead(this.lm_head, this.model.embed_tokens.weight);
  }

  /**
   * A cached length past which the whole text must run again through the cache, or null (Llama). Phi-3 under LongRoPE
   * says its original context (phi3.ts).
   */
  rerunPast(): number | null {
    return null;
  }

  // Keeps the cached ids where rerunPast asks for them; once the text outgrows that length, empties the cache and
  // returns every id so far [B, length + T] to run again, else `ids`.
  private withPast(ids: Tensor, cache: KVCache): Tensor {
    const at = this.rerunPast();
    if (at === null) return ids;
    const all = torch.keep(cache.ids ? torch.cat([cache.ids, ids], 1) : ids.clone());
    cache.ids?.dispose();
    cache.ids = all;
    if (cache.length === 0 || cache.length > at || cache.length + ids.shape[1] <= at) return ids;
    cache.length = 0;
    return all;
  }

  /** ids [B, T] int64 -> logits [B, T, V] (or [B, 1, V] with lastOnly). */
  forward(newIds: Tensor, opts: ForwardOptions = {}): Tensor {
    const ids = opts.cache ? this.withPast(newIds, opts.cache) : newIds;
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
    // A rerun gives every position; the caller asked for its own.
    if (T !== newIds.shape[1]) x = x.narrow(1, T - newIds.shape[1], newIds.shape[1]);
    x = this.model.norm.forward(x);
    if (opts.hidden) return x;
    if (opts.lastOnly) x = x.narrow(1, x.shape[1] - 1, 1);
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
  checkPositiveInt(c, 'sliding_window', { optional: true });
  // Absent means RMSNorm's default (1e-6, as transformers); a zero or negative one turns every norm into NaN or noise.
  checkPositiveNumber(c, 'rms_norm_eps', { optional: true, hint: 'Llama uses 1e-5 or 1e-6' });
  checkPositiveNumber(c, 'rope_theta', { optional: true, hint: 'usually 10000 to 1000000' });
  for (const k of ['tie_word_embeddings', 'attention_bias', 'mlp_bias']) checkBoolean(c, k);
  const kv = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % kv !== 0) throw new ModelConfigError(`num_attention_heads (${c.num_attention_heads}) must be a multiple of num_key_value_heads (${kv})`);
  if (c.head_dim == null && c.hidden_size % c.num_attention_heads !== 0) throw new ModelConfigError(`hidden_size (${c.hidden_size}) must divide by num_attention_heads (${c.num_attention_heads})`);
  const params = c.rope_parameters;
  if (params != null && (typeof params !== 'object' || Array.isArray(params))) {
    throw new ModelConfigError(`rope_parameters must be an object such as {"rope_type": "default", "rope_theta": 10000} or null, got ${JSON.stringify(params)}`);
  }
  checkPositiveNumber((params ?? {}) as Record<string, unknown>, 'rope_theta', { optional: true, in: 'rope_parameters', hint: 'usually 10000 to 1000000' });
  const { scaling: sc, key, partial } = ropeSettings(c);
  if (!(typeof partial === 'number' && partial > 0 && partial <= 1)) throw new ModelConfigError(`partial_rotary_factor must be a number in (0, 1], got ${JSON.stringify(partial)}`);
  if (rotaryDim(c) % 2 !== 0) throw new ModelConfigError(`the rotated width of each head (${rotaryDim(c)}: head dimension ${headDim(c)} × partial_rotary_factor ${partial}) must be even for rotary embeddings`);
  if (sc == null) return;
  if (typeof sc !== 'object' || Array.isArray(sc)) throw new ModelConfigError(`${key} must be an object such as {"rope_type": "linear", "factor": 2} or null, got ${JSON.stringify(sc)}`);
  const kind = sc.rope_type ?? sc.type;
  if (kind && !ROPE_KINDS.includes(kind)) throw new ModelConfigError(`${key} type '${kind}' is not supported; use ${ROPE_KINDS.join(', ')}`);
  const fields = sc as Record<string, unknown>;
  for (const k of ['factor', 'low_freq_factor', 'high_freq_factor', 'attention_factor']) checkPositiveNumber(fields, k, { optional: true, in: key });
  checkPositiveInt(fields, 'original_max_position_embeddings', { optional: true, in: key });
  if (kind !== 'longrope') return;
  for (const k of ['short_factor', 'long_factor']) {
    const f = fields[k];
    if (!Array.isArray(f) || f.length !== rotaryDim(c) / 2 || !f.every((x) => typeof x === 'number' && x > 0)) {
      throw new ModelConfigError(`${key}.${k} must list ${rotaryDim(c) / 2} positive numbers (one per rotary frequency) for longrope, got ${shown(f)}`);
    }
  }
}
