// Gemma-2 / Gemma-3 cases for the architecture parity harness (arch.ts). The harness keeps transformers' random
// initialisation, so initializer_range is raised until the soft-caps bind and the prediction is no longer the current
// token's own embedding: at 0.25 turning off the final cap moves these logits by ~5, the attention cap by ~3.7
// (Gemma 2), and making every layer global by ~5.5 (parity.gemma.test.ts asserts such effects on its own cases).
// The caps are not whole numbers because the harness sends the config as JSON, where 3.0 arrives as 3 and
// transformers' strict configs refuse an integer for these float fields.
import type { ArchCase } from './arch.js';

const SMALL = {
  vocab_size: 320, hidden_size: 64, intermediate_size: 112, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2,
  // head_dim is not hidden/heads, and the window (4) is shorter than the batch (12) and the generation (6 + 32).
  head_dim: 32, max_position_embeddings: 128, sliding_window: 4, query_pre_attn_scalar: 24, initializer_range: 0.25,
};

export const GEMMA_CASES: ArchCase[] = [
  {
    // Local, global, local; attention logits capped at 5.5 and final logits at 3.5; its own lm_head.
    name: 'gemma2-softcap-window',
    hf: { model_type: 'gemma2', ...SMALL, attn_logit_softcapping: 5.5, final_logit_softcapping: 3.5 },
    variant: { tied: false },
  },
  {
    // As released: head tied to the embedding, transformers' default caps (50, 30); sharded, MHA.
    name: 'gemma2-tied-sharded',
    hf: { model_type: 'gemma2', ...SMALL, num_key_value_heads: 4, num_hidden_layers: 4 },
    variant: { tied: true, shards: true },
  },
  {
    // q/k norms, local layers rotating with base 100 and global ones with 10000 interpolated ×2, one global layer in
    // two, final cap 3.5, one key/value head.
    name: 'gemma3-text-rope-per-layer-type',
    hf: {
      model_type: 'gemma3_text', ...SMALL, num_hidden_layers: 4, num_key_value_heads: 1, final_logit_softcapping: 3.5, sliding_window_pattern: 2,
      rope_theta: 10000, rope_local_base_freq: 100, rope_scaling: { rope_type: 'linear', factor: 2 },
    },
    variant: { tied: false },
  },
];
