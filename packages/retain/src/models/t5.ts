// T5 and Flan-T5 (encoder-decoder) in Hugging Face's layout, so that parameter names are the checkpoint keys:
//
//   shared                                           token embedding, also encoder.embed_tokens / decoder.embed_tokens
//   encoder.block.N.layer.0.SelfAttention.{q,k,v,o}  (+ relative_attention_bias in block 0), layer.0.layer_norm
//   encoder.block.N.layer.1.DenseReluDense.{wi,wo}   (relu, T5 v1.0) or {wi_0, wi_1, wo} (gated, T5 v1.1 / Flan-T5)
//   encoder.block.N.layer.1.layer_norm, encoder.final_layer_norm
//   decoder.block.N.layer.{0: SelfAttention, 1: EncDecAttention, 2: DenseReluDense}, decoder.final_layer_norm
//   lm_head                                          untied in Flan-T5; tied to shared when tie_word_embeddings
//
// What sets T5 apart: its layer norm only rescales (RMS, no mean subtraction, no bias); attention logits are not
// divided by √d (the scaling is folded into the initialisation); positions enter only as a learned bias per head over
// bucketed relative distances, computed in the first block of each stack and shared by the others (bidirectional
// buckets in the encoder, causal ones in the decoder); projections have no biases; T5 v1.0's tied head rescales the
// decoder output by d_model^-0.5 (scale_decoder_outputs).
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { sampleNext, type GenerateOptions } from './generate.js';
import { checkBoolean, checkPositiveInt, checkPositiveNumber, checkProbability, checkTokenId, ModelConfigError } from './weights.js';

const { nn } = torch;

/** The fields of a Hugging Face T5 config.json that this architecture reads (others are kept and ignored). */
export interface T5Config {
  model_type?: 't5' | string;
  vocab_size: number;
  d_model: number;
  /** Width of each attention head. */
  d_kv: number;
  d_ff: number;
  num_layers: number;
  /** Decoder depth; absent or null means num_layers. */
  num_decoder_layers?: number | null;
  num_heads: number;
  relative_attention_num_buckets?: number;
  relative_attention_max_distance?: number;
  dropout_rate?: number;
  layer_norm_epsilon?: number;
  initializer_factor?: number;
  /** 'relu' (T5 v1.0), 'gated-gelu' (T5 v1.1, Flan-T5; gelu_new), 'gated-relu', 'gated-silu', 'gelu', 'silu'. */
  feed_forward_proj?: string;
  tie_word_embeddings?: boolean;
  /**
   * Multiply the decoder output by d_model^-0.5 before the head. transformers 5 writes it (and always
   * tie_word_embeddings: true); absent, it follows tie_word_embeddings as in earlier versions (T5 v1.0 ties and scales,
   * T5 v1.1 / Flan-T5 do neither).
   */
  scale_decoder_outputs?: boolean;
  decoder_start_token_id?: number;
  pad_token_id?: number;
  eos_token_id?: number;
  [k: string]: unknown;
}

interface Resolved {
  decoderLayers: number;
  buckets: number;
  maxDistance: number;
  dropout: number;
  eps: number;
  factor: number;
  gated: boolean;
  act: 'relu' | 'gelu' | 'gelu_new' | 'silu';
  tied: boolean;
  scaleOutput: boolean;
}

function resolve(c: T5Config): Resolved {
  const proj = c.feed_forward_proj ?? 'relu';
  const parts = proj.split('-');
  const gated = parts.length === 2 && parts[0] === 'gated';
  const name = parts[parts.length - 1];
  if (!(parts.length === 1 || gated) || !['relu', 'gelu', 'silu'].includes(name)) {
    throw new ModelConfigError(`feed_forward_proj '${proj}' is not supported; use relu, gelu, silu or gated-{relu,gelu,silu}`);
  }
  // HF maps 'gated-gelu' to the tanh approximation (gelu_new), as the original Mesh TensorFlow code did.
  const act = proj === 'gated-gelu' ? 'gelu_new' : (name as Resolved['act']);
  return {
    decoderLayers: c.num_decoder_layers ?? c.num_layers,
    buckets: c.relative_attention_num_buckets ?? 32,
    maxDistance: c.relative_attention_max_distance ?? 128,
    dropout: c.dropout_rate ?? 0.1,
    eps: c.layer_norm_epsilon ?? 1e-6,
    factor: c.initializer_factor ?? 1.0,
    gated,
    act,
    tied: c.tie_word_embeddings ?? true,
    scaleOutput: c.scale_decoder_outputs ?? c.tie_word_embeddings ?? true,
  };
}

function activate(act: Resolved['act'], x: Tensor): Tensor {
  if (act === 'relu') return x.relu();
  if (act === 'gelu') return torch.gelu(x);
  if (act === 'gelu_new') return torch.gelu(x, 'tanh');
  return torch.silu(x);
}

/** The most negative finite value of a dtype: T5 masks with it (not -inf) so that fully masked rows stay finite. */
export function lowest(dtype: torch.DType): number {
  if (dtype === 'float16') return -65504;
  if (dtype === 'bfloat16') return -3.3895313892515355e38;
  if (dtype === 'float32') return -3.4028234663852886e38;
  return -Number.MAX_VALUE;
}

/**
 * T5's bucket of each relative distance (key position − query position), int64 like the input. Distances below
 * half the buckets get one bucket each; longer ones share logarithmically wider buckets up to maxDistance, beyond
 * which everything lands in the last. Bidirectional buckets give the sign half of the range. The logarithm runs in
 * float32 exactly as the reference implementation does, so bucket boundaries agree bit for bit.
 */
export function relativePositionBucket(rel: Tensor, bidirectional: boolean, numBuckets: number, maxDistance: number): Tensor {
  return torch.tidy(() => {
    let n = numBuckets;
    let base: Tensor | null = null;
    let dist: Tensor;
    if (bidirectional) {
      n = Math.floor(n / 2);
      base = rel.gt(0).long().mul(n); // keys after the query use the upper half
      dist = rel.abs();
    } else {
      dist = rel.clamp(null, 0).neg(); // future keys (masked anyway) collapse to distance 0
    }
    const maxExact = Math.floor(n / 2);
    const isSmall = dist.lt(maxExact);
    const large = dist.float().div(maxExact).log().div(Math.log(maxDistance / maxExact)).mul(n - maxExact).long().add(maxExact).clamp(null, n - 1);
    const bucket = torch.where(isSmall, dist, large);
    return base ? bucket.add(base) : bucket;
  });
}

export class T5Attention extends nn.Module {
  q: torch.nn.Linear;
  k: torch.nn.Linear;
  v: torch.nn.Linear;
  o: torch.nn.Linear;
  relative_attention_bias: torch.nn.Embedding | null = null;
  readonly nHeads: number;
  readonly dkv: number;

  constructor(readonly c: T5Config, readonly r: Resolved, hasRelativeBias: boolean, readonly bidirectional: boolean) {
    super();
    this.nHeads = c.num_heads;
    this.dkv = c.d_kv;
    const inner = c.num_heads * c.d_kv;
    this.q = this.registerModule('q', new nn.Linear(c.d_model, inner, { bias: false }));
    this.k = this.registerModule('k', new nn.Linear(c.d_model, inner, { bias: false }));
    this.v = this.registerModule('v', new nn.Linear(c.d_model, inner, { bias: false }));
    this.o = this.registerModule('o', new nn.Linear(inner, c.d_model, { bias: false }));
    if (hasRelativeBias) this.relative_attention_bias = this.registerModule('relative_attention_bias', new nn.Embedding(r.buckets, c.num_heads));
    // Mesh TensorFlow's initialisation: the 1/√d_kv of attention lives in q's scale instead of in the logits.
    const f = r.factor;
    nn.init.normal_(this.q.weight, 0, f * (c.d_model * c.d_kv) ** -0.5);
    nn.init.normal_(this.k.weight, 0, f * c.d_model ** -0.5);
    nn.init.normal_(this.v.weight, 0, f * c.d_model ** -0.5);
    nn.init.normal_(this.o.weight, 0, f * inner ** -0.5);
    if (this.relative_attention_bias) nn.init.normal_(this.relative_attention_bias.weight, 0, f * c.d_model ** -0.5);
  }

  /** [B, T, C] -> [B, H, T, d_kv] through one of the projections. */
  heads(x: Tensor, proj: torch.nn.Linear): Tensor {
    const [B, T] = x.shape;
    return proj.forward(x).view(B, T, this.nHeads, this.dkv).transpose(1, 2);
  }

  /** Position bias [1, H, T, S] for queries at positions start..start+T-1 over keys 0..S-1. */
  positionBias(start: number, T: number, S: number, device: string): Tensor {
    const emb = this.relative_attention_bias;
    if (!emb) throw new Error('T5Attention: this layer has no relative_attention_bias (only the first block of a stack does)');
    return torch.tidy(() => {
      const ctx = torch.arange(start, start + T, 1, { device }).unsqueeze(1); // [T, 1]
      const mem = torch.arange(0, S, 1, { device }).unsqueeze(0); // [1, S]
      const buckets = relativePositionBucket(mem.sub(ctx), this.bidirectional, this.r.buckets, this.r.maxDistance); // [T, S]
      return emb.forward(buckets).permute(2, 0, 1).unsqueeze(0); // [T, S, H] -> [1, H, T, S]
    });
  }

  /** Attention of q [B, H, T, d] over k, v [B, H, S, d] with an additive bias broadcast to [B, H, T, S]. */
  attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
    const [B, , T] = q.shape;
    const y = torch.scaledDotProductAttention(q, k, v, { mask: bias, scale: 1, dropout: this.training ? this.r.dropout : 0 }); // [B, H, T, d]
    return this.o.forward(y.transpose(1, 2).reshape(B, T, this.nHeads * this.dkv)); // [B, T, C]
  }
}

export class T5LayerSelfAttention extends nn.Module {
  SelfAttention: T5Attention;
  layer_norm: torch.nn.RMSNorm;
  dropout: torch.nn.Dropout;

  constructor(c: T5Config, r: Resolved, hasRelativeBias: boolean, isDecoder: boolean) {
    super();
    this.SelfAttention = this.registerModule('SelfAttention', new T5Attention(c, r, hasRelativeBias, !isDecoder));
    this.layer_norm = this.registerModule('layer_norm', newNorm(c, r));
    this.dropout = this.registerModule('dropout', new nn.Dropout(r.dropout));
  }

  forward(x: Tensor, bias: Tensor, cache?: T5Cache, layer = 0): Tensor {
    const a = this.SelfAttention;
    const h = this.layer_norm.forward(x);
    const q = a.heads(h, a.q);
    let k = a.heads(h, a.k);
    let v = a.heads(h, a.v);
    if (cache) {
      // Write this chunk's keys and values into the preallocated buffers, then attend over everything so far.
      const start = cache.length;
      const T = x.shape[1];
      cache.k[layer].narrow(2, start, T).copy_(k);
      cache.v[layer].narrow(2, start, T).copy_(v);
      k = cache.k[layer].narrow(2, 0, start + T);
      v = cache.v[layer].narrow(2, 0, start + T);
    }
    return x.add(this.dropout.forward(a.attend(q, k, v, bias)));
  }
}

export class T5LayerCrossAttention extends nn.Module {
  EncDecAttention: T5Attention;
  layer_norm: torch.nn.RMSNorm;
  dropout: torch.nn.Dropout;

  constructor(c: T5Config, r: Resolved) {
    super();
    this.EncDecAttention = this.registerModule('EncDecAttention', new T5Attention(c, r, false, true));
    this.layer_norm = this.registerModule('layer_norm', newNorm(c, r));
    this.dropout = this.registerModule('dropout', new nn.Dropout(r.dropout));
  }

  /** Keys and values of the encoder output [B, S, C] -> [B, H, S, d] each; computed once per input. */
  memory(enc: Tensor): [Tensor, Tensor] {
    const a = this.EncDecAttention;
    return [a.heads(enc, a.k), a.heads(enc, a.v)];
  }

  forward(x: Tensor, k: Tensor, v: Tensor, bias: Tensor): Tensor {
    const a = this.EncDecAttention;
    const q = a.heads(this.layer_norm.forward(x), a.q);
    return x.add(this.dropout.forward(a.attend(q, k, v, bias)));
  }
}

/** relu / gelu FFN: wo(act(wi(x))). */
export class T5DenseActDense extends nn.Module {
  wi: torch.nn.Linear;
  wo: torch.nn.Linear;
  dropout: torch.nn.Dropout;

  constructor(c: T5Config, readonly r: Resolved) {
    super();
    this.wi = this.registerModule('wi', new nn.Linear(c.d_model, c.d_ff, { bias: false }));
    this.wo = this.registerModule('wo', new nn.Linear(c.d_ff, c.d_model, { bias: false }));
    this.dropout = this.registerModule('dropout', new nn.Dropout(r.dropout));
    nn.init.normal_(this.wi.weight, 0, r.factor * c.d_model ** -0.5);
    nn.init.normal_(this.wo.weight, 0, r.factor * c.d_ff ** -0.5);
  }

  forward(x: Tensor): Tensor {
    // [B, T, C] -> [B, T, d_ff] -> [B, T, C]
    return this.wo.forward(this.dropout.forward(activate(this.r.act, this.wi.forward(x))));
  }
}

/** Gated FFN (T5 v1.1, Flan-T5): wo(act(wi_0(x)) · wi_1(x)). */
export class T5DenseGatedActDense extends nn.Module {
  wi_0: torch.nn.Linear;
  wi_1: torch.nn.Linear;
  wo: torch.nn.Linear;
  dropout: torch.nn.Dropout;

  constructor(c: T5Config, readonly r: Resolved) {
    super();
    this.wi_0 = this.registerModule('wi_0', new nn.Linear(c.d_model, c.d_ff, { bias: false }));
    this.wi_1 = this.registerModule('wi_1', new nn.Linear(c.d_model, c.d_ff, { bias: false }));
    this.wo = this.registerModule('wo', new nn.Linear(c.d_ff, c.d_model, { bias: false }));
    this.dropout = this.registerModule('dropout', new nn.Dropout(r.dropout));
    nn.init.normal_(this.wi_0.weight, 0, r.factor * c.d_model ** -0.5);
    nn.init.normal_(this.wi_1.weight, 0, r.factor * c.d_model ** -0.5);
    nn.init.normal_(this.wo.weight, 0, r.factor * c.d_ff ** -0.5);
  }

  forward(x: Tensor): Tensor {
    // [B, T, C] -> 2 × [B, T, d_ff] -> [B, T, C]
    const g = activate(this.r.act, this.wi_0.forward(x)).mul(this.wi_1.forward(x));
    return this.wo.forward(this.dropout.forward(g));
  }
}

export class T5LayerFF extends nn.Module {
  DenseReluDense: T5DenseActDense | T5DenseGatedActDense;
  layer_norm: torch.nn.RMSNorm;
  dropout: torch.nn.Dropout;

  constructor(c: T5Config, r: Resolved) {
    super();
    this.DenseReluDense = this.registerModule('DenseReluDense', r.gated ? new T5DenseGatedActDense(c, r) : new T5DenseActDense(c, r));
    this.layer_norm = this.registerModule('layer_norm', newNorm(c, r));
    this.dropout = this.registerModule('dropout', new nn.Dropout(r.dropout));
  }

  forward(x: Tensor): Tensor {
    return x.add(this.dropout.forward(this.DenseReluDense.forward(this.layer_norm.forward(x))));
  }
}

// T5's layer norm is RMSNorm without bias (statistics in float32 for half inputs, as HF's T5LayerNorm).
function newNorm(c: T5Config, r: Resolved): torch.nn.RMSNorm {
  const n = new nn.RMSNorm(c.d_model, { eps: r.eps });
  if (r.factor !== 1) torch.noGrad(() => n.weight!.fill_(r.factor));
  return n;
}

export class T5Block extends nn.Module {
  layer: torch.nn.ModuleList;
  readonly self: T5LayerSelfAttention;
  readonly cross: T5LayerCrossAttention | null;
  readonly ff: T5LayerFF;

  constructor(c: T5Config, r: Resolved, idx: number, isDecoder: boolean) {
    super();
    this.self = new T5LayerSelfAttention(c, r, idx === 0, isDecoder);
    this.cross = isDecoder ? new T5LayerCrossAttention(c, r) : null;
    this.ff = new T5LayerFF(c, r);
    this.layer = this.registerModule('layer', new nn.ModuleList<torch.nn.Module>(this.cross ? [this.self, this.cross, this.ff] : [this.self, this.ff]));
  }
}

export class T5Stack extends nn.Module {
  embed_tokens: torch.nn.Embedding;
  block: torch.nn.ModuleList<T5Block>;
  final_layer_norm: torch.nn.RMSNorm;
  dropout: torch.nn.Dropout;

  constructor(c: T5Config, r: Resolved, shared: torch.nn.Embedding, readonly isDecoder: boolean) {
    super();
    // The same Embedding object as the model's `shared`: one tensor under three checkpoint names, as HF ties them.
    this.embed_tokens = this.registerModule('embed_tokens', shared);
    const n = isDecoder ? r.decoderLayers : c.num_layers;
    this.block = this.registerModule('block', new nn.ModuleList(Array.from({ length: n }, (_, i) => new T5Block(c, r, i, isDecoder))));
    this.final_layer_norm = this.registerModule('final_layer_norm', newNorm(c, r));
    this.dropout = this.registerModule('dropout', new nn.Dropout(r.dropout));
  }

  get firstAttention(): T5Attention {
    return this.block.get(0).self.SelfAttention;
  }
}

/**
 * Decoder state for generation: self-attention keys/values per layer [B, H, maxLen, d_kv], written in place, and the
 * cross-attention keys/values of the encoder output, computed once when the cache is made.
 */
export class T5Cache {
  readonly k: Tensor[] = [];
  readonly v: Tensor[] = [];
  readonly crossK: Tensor[];
  readonly crossV: Tensor[];
  /** Additive encoder-padding bias [B, 1, 1, S] for cross-attention. */
  readonly crossBias: Tensor;
  length = 0;

  constructor(layers: number, heads: number, dkv: number, readonly batch: number, readonly maxLen: number, cross: [Tensor, Tensor][], crossBias: Tensor) {
    const p = cross[0][0];
    for (let l = 0; l < layers; l++) {
      this.k.push(torch.keep(torch.zeros([batch, heads, maxLen, dkv], { dtype: p.dtype, device: p.device })));
      this.v.push(torch.keep(torch.zeros([batch, heads, maxLen, dkv], { dtype: p.dtype, device: p.device })));
    }
    this.crossK = torch.keep(cross.map(([k]) => k));
    this.crossV = torch.keep(cross.map(([, v]) => v));
    this.crossBias = torch.keep(crossBias);
  }

  dispose(): void {
    torch.dispose([...this.k, ...this.v, ...this.crossK, ...this.crossV, this.crossBias]);
  }
}

export interface T5ForwardOptions {
  /** Encoder padding mask [B, S]: 1 (or true) for real tokens, 0 for padding. */
  attentionMask?: Tensor | null;
  /** Decoder inputs [B, T]; when absent they are the labels shifted right. */
  decoderInputIds?: Tensor | null;
  /** Targets [B, T] (-100 = ignored); used to make decoderInputIds when those are absent. */
  labels?: Tensor | null;
  /** Decoder padding mask [B, T] (1 = real token). */
  decoderAttentionMask?: Tensor | null;
}

export interface T5GenerateOptions extends Omit<GenerateOptions, 'stop' | 'stopTokens'> {
  attentionMask?: Tensor | null;
  /** Ends a sequence; default config.eos_token_id (1). */
  eosTokenId?: number;
}

export class T5ForConditionalGeneration extends nn.Module {
  shared: torch.nn.Embedding;
  encoder: T5Stack;
  decoder: T5Stack;
  lm_head: torch.nn.Linear;
  readonly kind = 'seq2seq-lm' as const;
  private readonly r: Resolved;

  constructor(readonly config: T5Config) {
    super();
    validateT5Config(config);
    const r = (this.r = resolve(config));
    this.shared = this.registerModule('shared', new nn.Embedding(config.vocab_size, config.d_model));
    nn.init.normal_(this.shared.weight, 0, r.factor);
    this.encoder = this.registerModule('encoder', new T5Stack(config, r, this.shared, false));
    this.decoder = this.registerModule('decoder', new T5Stack(config, r, this.shared, true));
    this.lm_head = this.registerModule('lm_head', new nn.Linear(config.d_model, config.vocab_size, { bias: false }));
    nn.init.normal_(this.lm_head.weight, 0, r.factor);
    if (r.tied) {
      this.lm_head._parameters.set('weight', this.shared.weight);
      this.lm_head.weight = this.shared.weight;
    }
  }

  /** Aliases of shared tensors, [alias, source]: a checkpoint may hold only the source (safetensors drops copies). */
  tiedKeys(): [string, string][] {
    const keys: [string, string][] = [['encoder.embed_tokens.weight', 'shared.weight'], ['decoder.embed_tokens.weight', 'shared.weight']];
    if (this.r.tied) keys.push(['lm_head.weight', 'shared.weight']);
    return keys;
  }

  /** Encoder: ids [B, S] -> hidden states [B, S, C]. */
  encode(inputIds: Tensor, attentionMask?: Tensor | null): Tensor {
    const st = this.encoder;
    const [B, S] = inputIds.shape;
    let x = st.dropout.forward(st.embed_tokens.forward(inputIds)); // [B, S, C]
    // Relative-position bias of block 0, plus the padding mask, shared by every block: [B or 1, H, S, S]
    let bias = st.firstAttention.positionBias(0, S, S, x.device).to(x.dtype);
    if (attentionMask) bias = maskPadding(bias, attentionMask, B, S);
    for (const block of st.block) x = block.ff.forward(block.self.forward(x, bias));
    return st.dropout.forward(st.final_layer_norm.forward(x));
  }

  /**
   * Decoder: ids [B, T] over the encoder output -> logits [B, T, V] (or [B, 1, V] with lastOnly). With a cache the
   * encoder output comes from the cache (pass null) and ids continue after cache.length positions.
   */
  decode(decoderIds: Tensor, encoderHidden: Tensor | null, opts: { encoderMask?: Tensor | null; decoderMask?: Tensor | null; cache?: T5Cache; lastOnly?: boolean; hidden?: boolean } = {}): Tensor {
    const st = this.decoder;
    const [B, T] = decoderIds.shape;
    const cache = opts.cache;
    const start = cache?.length ?? 0;
    if (cache && start + T > cache.maxLen) throw new RangeError(`decoder sequence of ${start + T} tokens exceeds the cache of ${cache.maxLen}`);
    if (!cache && !encoderHidden) throw new Error('T5 decode: needs the encoder output or a cache made from it');
    const S = start + T;
    let x = st.dropout.forward(st.embed_tokens.forward(decoderIds)); // [B, T, C]
    // Causal self-attention bias [B or 1, H, T, S]: relative positions plus -∞-like entries above the diagonal.
    const future = torch.ones([T, S], { dtype: 'bool', device: x.device }).tril(start).logicalNot(); // [T, S]
    let selfBias = st.firstAttention.positionBias(start, T, S, x.device).to(x.dtype).maskedFill(future, lowest(x.dtype));
    if (opts.decoderMask) selfBias = maskPadding(selfBias, opts.decoderMask, B, S);
    let crossBias: Tensor;
    let memory: [Tensor, Tensor][];
    if (cache) {
      crossBias = cache.crossBias;
      memory = cache.crossK.map((k, l) => [k, cache.crossV[l]]);
    } else {
      const Se = encoderHidden!.shape[1];
      crossBias = torch.zeros([1, 1, 1, Se], { dtype: x.dtype, device: x.device });
      if (opts.encoderMask) crossBias = maskPadding(crossBias, opts.encoderMask, B, Se);
      memory = st.block.map((b) => b.cross!.memory(encoderHidden!));
    }
    let l = 0;
    for (const block of st.block) {
      x = block.self.forward(x, selfBias, cache, l);
      x = block.cross!.forward(x, memory[l][0], memory[l][1], crossBias);
      x = block.ff.forward(x);
      l++;
    }
    if (cache) cache.length += T;
    x = st.dropout.forward(st.final_layer_norm.forward(x));
    if (opts.hidden) return x;
    if (opts.lastOnly) x = x.narrow(1, T - 1, 1);
    // T5 v1.0's tied head reads the embedding matrix, whose scale is about 1; Mesh TensorFlow rescaled the input instead.
    if (this.r.scaleOutput) x = x.mul(this.config.d_model ** -0.5);
    return this.lm_head.forward(x); // [B, T, V]
  }

  /** Training forward: logits [B, T, V] of the decoder inputs (or of the labels shifted right) given inputIds [B, S]. */
  forward(inputIds: Tensor, opts: T5ForwardOptions = {}): Tensor {
    const dec = opts.decoderInputIds ?? (opts.labels ? this.shiftRight(opts.labels) : null);
    if (!dec) throw new Error('T5 forward: pass decoderInputIds or labels');
    const enc = this.encode(inputIds, opts.attentionMask);
    return this.decode(dec, enc, { encoderMask: opts.attentionMask, decoderMask: opts.decoderAttentionMask });
  }

  /** Mean cross entropy over the label positions that are not -100. */
  loss(inputIds: Tensor, labels: Tensor, opts: Omit<T5ForwardOptions, 'labels'> = {}): Tensor {
    const logits = this.forward(inputIds, { ...opts, labels });
    return torch.crossEntropy(logits.reshape(-1, this.config.vocab_size), labels.reshape(-1), { ignoreIndex: -100 });
  }

  /** Labels [B, T] -> decoder inputs: decoder_start_token_id first, the rest shifted one right, -100 read as pad. */
  shiftRight(labels: Tensor): Tensor {
    return torch.tidy(() => {
      const [B] = labels.shape;
      const startTok = torch.full([B, 1], this.config.decoder_start_token_id ?? 0, { dtype: labels.dtype, device: labels.device });
      const shifted = torch.cat([startTok, labels.narrow(1, 0, labels.shape[1] - 1)], 1);
      return shifted.maskedFill(shifted.eq(-100), this.config.pad_token_id ?? 0);
    });
  }

  /** A decoder cache over an encoder output [B, S, C] (cross-attention keys and values computed here, once). */
  newCache(encoderHidden: Tensor, maxLen: number, encoderMask?: Tensor | null): T5Cache {
    return torch.tidy(() => {
      const [B, S] = encoderHidden.shape;
      const memory = this.decoder.block.map((b) => b.cross!.memory(encoderHidden));
      const zero = torch.zeros([1, 1, 1, S], { dtype: encoderHidden.dtype, device: encoderHidden.device });
      const bias = encoderMask ? maskPadding(zero, encoderMask, B, S) : zero;
      return new T5Cache(this.r.decoderLayers, this.config.num_heads, this.config.d_kv, B, maxLen, memory, bias);
    });
  }

  /**
   * Greedy (temperature 0, the default) or sampled decoding from decoder_start_token_id, for each row of
   * inputIds [B, S]. Returns the new ids per row, without the start token and without the end-of-sequence token.
   */
  generate(inputIds: Tensor, o: T5GenerateOptions = {}): number[][] {
    const maxNew = o.maxNewTokens ?? 64;
    if (o.seed !== undefined) torch.manualSeed(o.seed);
    const eos = o.eosTokenId ?? this.config.eos_token_id ?? 1;
    const B = inputIds.shape[0];
    const out: number[][] = Array.from({ length: B }, () => []);
    const done = new Array<boolean>(B).fill(false);
    torch.inferenceMode(() => {
      const enc = torch.keep(this.encode(inputIds, o.attentionMask));
      const cache = this.newCache(enc, maxNew, o.attentionMask);
      enc.dispose();
      try {
        let cur = new Array<number>(B).fill(this.config.decoder_start_token_id ?? 0);
        for (let step = 0; step < maxNew && !done.every(Boolean); step++) {
          cur = torch.tidy(() => {
            const logits = this.decode(torch.tensor(cur.map((t) => [t]), { dtype: 'int64', device: inputIds.device }), null, { cache, lastOnly: true }); // [B, 1, V]
            return cur.map((_, b) => (done[b] ? this.config.pad_token_id ?? 0 : sampleNext(logits.i(b, 0), o)));
          });
          cur.forEach((t, b) => {
            if (done[b]) return;
            if (t === eos) done[b] = true;
            else out[b].push(t);
          });
        }
      } finally {
        cache.dispose();
      }
    });
    return out;
  }
}

// Sets the bias [1 or B, H or 1, T, S] to the dtype's lowest value at padded keys (mask [B, S], 0 = padding); the
// result broadcasts to [B, ., T, S]. Replacing rather than adding keeps already masked entries finite.
function maskPadding(bias: Tensor, mask: Tensor, B: number, S: number): Tensor {
  if (mask.ndim !== 2 || mask.shape[0] !== B || mask.shape[1] !== S) throw new RangeError(`attention mask must be [${B}, ${S}], got [${mask.shape.join(', ')}]`);
  return torch.where(mask.eq(0).view(B, 1, 1, S), lowest(bias.dtype), bias);
}

/** The same model with its head untied: the output scale it had stays as it was, now stated. */
export function untiedT5Config(c: T5Config): T5Config {
  return { ...c, tie_word_embeddings: false, scale_decoder_outputs: resolve(c).scaleOutput };
}

export function validateT5Config(c: T5Config): void {
  for (const k of ['vocab_size', 'd_model', 'd_kv', 'd_ff', 'num_layers', 'num_heads']) checkPositiveInt(c, k);
  checkPositiveInt(c, 'num_decoder_layers', { optional: true });
  // Bidirectional bucketing divides by a quarter of num_buckets, which is zero below 4.
  checkPositiveInt(c, 'relative_attention_num_buckets', { optional: true, min: 4 });
  checkPositiveInt(c, 'relative_attention_max_distance', { optional: true });
  checkPositiveNumber(c, 'layer_norm_epsilon', { optional: true, hint: 'T5 uses 1e-6' });
  checkPositiveNumber(c, 'initializer_factor', { optional: true });
  checkProbability(c, 'dropout_rate');
  checkBoolean(c, 'tie_word_embeddings');
  checkBoolean(c, 'scale_decoder_outputs');
  for (const k of ['decoder_start_token_id', 'pad_token_id', 'eos_token_id']) checkTokenId(c, k, c.vocab_size);
  if (c.feed_forward_proj != null && typeof c.feed_forward_proj !== 'string') throw new ModelConfigError(`feed_forward_proj must be a string such as "relu" or "gated-gelu", got ${JSON.stringify(c.feed_forward_proj)}`);
  resolve(c);
}
