// How many parameters a config.json claims, worked out from its numbers before any tensor is made. A config that
// lies (num_hidden_layers 1000000, vocab_size 4000000 over a 1 MB checkpoint) would otherwise have the model built
// first — gigabytes of freshly initialised weights, minutes of work — only for the shape check to refuse it after.
// Each count is a lower bound (the big matrices; biases and norms left out), so that an honest config never fails it.
// Where an architecture's own checks can run without building, they run first, so a bad value is named as such
// (layer_norm_epsilon 0) rather than reported as a size that does not fit.
import { validateLlamaConfig, type LlamaConfig } from './llama.js';
import { validateGPT2Config, type GPT2Config } from './gpt2.js';
import { validateT5Config, type T5Config } from './t5.js';
import { validateBertConfig, type BertConfig } from './bert.js';

type Fields = Record<string, unknown>;

/** A config value as a size, or NaN when it is absent or no size (the architecture's own checks then name it). */
function n(c: Fields, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : NaN;
}

/** Embedding matrices are counted once: a tied head shares the embedding's storage, an untied one only adds to it. */
const COUNTS = new Map<string, (c: Fields) => number>([
  ['llama', (c) => {
    validateLlamaConfig(c as unknown as LlamaConfig);
    return llamaCount(c);
  }],
  ['gpt2', (c) => {
    validateGPT2Config(c as unknown as GPT2Config);
    const e = n(c, 'n_embd');
    const inner = n(c, 'n_inner', 4 * e);
    return (n(c, 'vocab_size') + n(c, 'n_positions')) * e + n(c, 'n_layer') * (4 * e * e + 2 * e * inner);
  }],
  ['t5', (c) => {
    validateT5Config(c as unknown as T5Config);
    const d = n(c, 'd_model');
    const attention = 4 * d * n(c, 'num_heads') * n(c, 'd_kv');
    const ff = 2 * d * n(c, 'd_ff');
    const layers = n(c, 'num_layers');
    const decoder = Number.isNaN(n(c, 'num_decoder_layers')) ? layers : n(c, 'num_decoder_layers');
    return n(c, 'vocab_size') * d + layers * (attention + ff) + decoder * (2 * attention + ff);
  }],
  ['bert', (c) => {
    validateBertConfig(c as unknown as BertConfig);
    const h = n(c, 'hidden_size');
    const embeddings = (n(c, 'vocab_size') + n(c, 'max_position_embeddings') + n(c, 'type_vocab_size', 2)) * h;
    return embeddings + n(c, 'num_hidden_layers') * (4 * h * h + 2 * h * n(c, 'intermediate_size')) + h * h;
  }],
  ['charlstm', (c) => {
    const h = n(c, 'hidden_size');
    const e = n(c, 'embedding_size');
    const v = n(c, 'vocab_size');
    return v * e + (e + h) * 4 * h + (n(c, 'num_layers') - 1) * 2 * h * 4 * h + h * v;
  }],
  ['mnist_mlp', (c) => {
    const s = c.sizes;
    if (!Array.isArray(s) || !s.every((x) => Number.isInteger(x) && x > 0)) return NaN;
    return s.slice(1).reduce((a: number, x: number, i: number) => a + x * (s[i] as number), 0);
  }],
]);
// Qwen2 and Mistral are built by Llama's class (and checked by it); Phi-3 fuses q/k/v and gate/up, which changes no
// count, and Gemma gives head_dim: their own checks differ from Llama's, so only the count is shared.
for (const t of ['qwen2', 'mistral']) COUNTS.set(t, COUNTS.get('llama')!);
for (const t of ['phi3', 'gemma2', 'gemma3_text']) COUNTS.set(t, llamaCount);

function llamaCount(c: Fields): number {
  const h = n(c, 'hidden_size');
  const heads = n(c, 'num_attention_heads');
  const hd = n(c, 'head_dim', h / heads);
  const kv = n(c, 'num_key_value_heads', heads);
  const attention = 2 * h * heads * hd + 2 * h * kv * hd; // q, o; k, v
  return n(c, 'vocab_size') * h + n(c, 'num_hidden_layers') * (attention + 3 * h * n(c, 'intermediate_size'));
}

/** The parameters `config` describes (a lower bound), or NaN when the architecture is unknown here or a size is missing. */
export function claimedParameters(config: Fields): number {
  return COUNTS.get(String(config.model_type))?.(config) ?? NaN;
}

/** Lets an architecture registered elsewhere say how many parameters its configs describe. */
export function registerParameterCount(modelType: string, count: (c: Fields) => number): void {
  COUNTS.set(modelType, count);
}
