// Peak memory of one training step on CPU, predicted from a decoder config (`retain inspect --memory`, bench/memory.ts).
//
// The peak is the larger of two moments:
//   backward starts:  weights + gradients + the activations autograd saved + the loss's logits
//   optimizer step:   weights + gradients + optimizer state + one parameter-sized temporary (AdamW's √v̂ + ε)
// Saved activations per decoder layer, in units of one [B, T, C] tensor (a), one [B, T, I] (f) and one attention
// matrix [B, H, T, T] (s), as the layers' autograd graph holds them: 4f (gate, its SiLU, up, their product); 1s (the
// softmax output, which the product with v shares) where attention is composed from matmul and softmax (libtorch
// 1.13, RETAIN_SDPA=0), none with the fused kernel (2.x, which keeps a [B, H, T] log-sum-exp); and about 7a: the graph
// lists 8 (layer input, the two norms' outputs, rotated q and k, v, the attention output, the residual), 7 fits the
// measured peaks of bench:memory's shapes better on both libtorch versions (some are views of one another).
// The loss holds the logits, their log-softmax and their gradient: 3 × [B·T, V] (3 × [chunk, V] with loss_chunk).
// With checkpointing a checkpointed layer keeps only its input (1a) and one layer is recomputed at a time.
import * as torch from '@retain/torch';
import type { DType } from '@retain/torch';

export interface MemoryOptions {
  batch: number;
  seq: number;
  /** full: every parameter trains; lora: rank-r adapters on q/k/v/o and the MLP, the rest frozen. */
  method?: 'full' | 'lora';
  loraRank?: number;
  /** bf16: bfloat16 weights, gradients and activations with float32 master weights and moments (precision: bf16 on CPU). */
  precision?: 'fp32' | 'bf16';
  /** Layers checkpointed: all of them (true), or none. */
  checkpointing?: boolean;
  /** Positions per chunk of the cross-entropy, or null for the whole batch at once. */
  lossChunk?: number | null;
  /** Attention through the fused kernel (no [B, H, T, T] kept); default: where this torch has it and RETAIN_SDPA is not 0. */
  fusedAttention?: boolean;
}

export interface MemoryPrediction {
  parameters: number;
  trainable: number;
  /** Bytes. */
  weights: number;
  gradients: number;
  optimizer: number;
  activations: number;
  peak: number;
  /** Which moment the peak is: 'backward' or 'optimizer'. */
  at: 'backward' | 'optimizer';
}

interface Shape { V: number; C: number; L: number; H: number; kv: number; hd: number; I: number; tied: boolean }

function num(c: Record<string, unknown>, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw new Error(`config.json: ${key} is ${JSON.stringify(v)}; the memory prediction needs a positive integer`);
  return v;
}

/** The sizes of a Llama-family (Llama, Qwen2, Mistral, Phi-3, Gemma) config. */
export function decoderShape(c: Record<string, unknown>): Shape {
  if (c.hidden_size === undefined || c.num_hidden_layers === undefined) {
    throw new Error(`the memory prediction covers decoder-only models with Llama's config keys (hidden_size, num_hidden_layers, ...); model_type '${String(c.model_type)}' has none`);
  }
  const C = num(c, 'hidden_size');
  const H = num(c, 'num_attention_heads');
  return {
    V: num(c, 'vocab_size'), C, L: num(c, 'num_hidden_layers'), H, kv: num(c, 'num_key_value_heads', H), hd: num(c, 'head_dim', C / H),
    I: num(c, 'intermediate_size'), tied: c.tie_word_embeddings === true || (c.tie_word_embeddings === undefined && String(c.model_type).startsWith('gemma')),
  };
}

const BYTES: Record<string, number> = { float32: 4, bfloat16: 2 };

export function predictMemory(config: Record<string, unknown>, o: MemoryOptions): MemoryPrediction {
  const s = decoderShape(config);
  const { batch: B, seq: T } = o;
  const q = s.H * s.hd;
  const perLayerParams = s.C * q * 2 + s.C * s.kv * s.hd * 2 + 3 * s.C * s.I + 2 * s.C;
  const parameters = s.L * perLayerParams + s.V * s.C * (s.tied ? 1 : 2) + s.C;
  const r = o.loraRank ?? 8;
  const trainable = o.method === 'lora' ? s.L * r * (4 * s.C + 2 * q + 2 * s.kv * s.hd + 3 * (s.C + s.I)) : parameters;
  const dtype: DType = o.precision === 'bf16' ? 'bfloat16' : 'float32';
  const e = BYTES[dtype];
  const weights = parameters * e + (o.method === 'lora' ? trainable * 4 : 0);
  const gradients = (o.method === 'lora' ? 4 : e) * trainable;
  // AdamW: two float32 moments; with bf16 a float32 master copy as well.
  const optimizer = trainable * 4 * (o.precision === 'bf16' && o.method !== 'lora' ? 3 : 2);
  const a = B * T * s.C * e;
  const f = B * T * s.I * e;
  const fused = o.fusedAttention ?? (torch.hasFusedAttention() && process.env.RETAIN_SDPA !== '0');
  const att = fused ? 0 : B * s.H * T * T * e;
  const layer = 7 * a + 4 * f + att;
  const saved = o.checkpointing ? s.L * a + layer : s.L * layer;
  const rows = o.lossChunk ? Math.min(o.lossChunk, B * T) : B * T;
  const logits = 3 * rows * s.V * e;
  const activations = saved + logits;
  const backward = weights + gradients + activations;
  const step = weights + gradients + optimizer + trainable * 4;
  return { parameters, trainable, weights, gradients, optimizer, activations, peak: Math.max(backward, step), at: backward >= step ? 'backward' : 'optimizer' };
}
