// Gemma 3's text model (model_type gemma3_text: google/gemma-3-1b-*, and the language half of the larger ones), in
// Hugging Face's layout: Gemma 2's (gemma2.ts) plus model.layers.N.self_attn.{q_norm, k_norm}.
//
// What differs from Gemma 2, all of it in the layout the shared modules read:
// - each query and key head goes through its own RMSNorm (1 + weight) before the rotation;
// - local and global layers rotate with different bases (rope_local_base_freq, default 10000, and rope_theta,
//   default 1000000), and rope_scaling (linear ×8 in the 4B and larger) applies to the global layers only;
// - five local layers to one global by default (sliding_window_pattern 6);
// - attention logits are never soft-capped (transformers reads attn_logit_softcapping but does not apply it) and
//   final logits only when final_logit_softcapping is set (it is null in the released models);
// - transformers runs it through SDPA, where a query with no key to see (padding) gets zeros, not the mean.
import { gemmaLayout, Gemma2ForCausalLM, ropeConfig, type Gemma2Config, type GemmaLayout } from './gemma2.js';
import { checkPositiveInt, checkPositiveNumber, ModelConfigError } from './weights.js';
import { shown } from '../options.js';

export interface Gemma3TextConfig extends Gemma2Config {
  /** RoPE base of the local layers in files written before transformers 5 (rope_theta is the global one). */
  rope_local_base_freq?: number;
  /** Every Nth layer is global; replaced by layer_types in newer files. */
  sliding_window_pattern?: number;
}

/** Gemma3TextConfig's defaults in transformers, for keys a config.json may leave out. */
const GEMMA3_DEFAULTS = {
  head_dim: 256, num_key_value_heads: 4, query_pre_attn_scalar: 256, sliding_window: 4096, attn_logit_softcapping: null,
  final_logit_softcapping: null, rms_norm_eps: 1e-6, hidden_activation: 'gelu_pytorch_tanh', pad_token_id: 0, tie_word_embeddings: true,
};

export function gemma3Layout(config: Gemma3TextConfig): GemmaLayout {
  const c = { ...GEMMA3_DEFAULTS, ...config } as Gemma3TextConfig;
  checkPositiveInt(c, 'sliding_window_pattern', { optional: true });
  checkPositiveNumber(c, 'rope_local_base_freq', { optional: true, hint: 'Gemma 3 uses 10000' });
  // Layer i is global when (i + 1) is a multiple of the pattern: layers 5, 11, 17, ... with the default 6.
  const every = c.sliding_window_pattern ?? (c._sliding_window_pattern as number | undefined) ?? 6;
  const types = c.layer_types ?? Array.from({ length: c.num_hidden_layers }, (_, i) => ((i + 1) % every === 0 ? 'full_attention' : 'sliding_attention'));
  const layout = gemmaLayout(c, types, (base) => {
    const rp = c.rope_parameters ?? {};
    if (typeof rp !== 'object' || Array.isArray(rp)) throw new ModelConfigError(`rope_parameters must be an object {"full_attention": {...}, "sliding_attention": {...}}, got ${shown(rp)}`);
    // rope_scaling, when a file has it, is laid over the global set as transformers does.
    const global = c.rope_scaling ? { ...(rp.full_attention as object | undefined), ...c.rope_scaling } : rp.full_attention;
    return {
      full_attention: ropeConfig(base, global, c.rope_theta ?? 1e6, c.rope_parameters ? 'rope_parameters.full_attention' : 'rope_scaling'),
      sliding_attention: ropeConfig(base, rp.sliding_attention, c.rope_local_base_freq ?? 1e4, 'rope_parameters.sliding_attention'),
    };
  }, true);
  return { ...layout, attnCap: null, keyless: 'zero' };
}

export class Gemma3ForCausalLM extends Gemma2ForCausalLM {
  constructor(config: Gemma3TextConfig) {
    super(config, gemma3Layout(config));
  }
}
