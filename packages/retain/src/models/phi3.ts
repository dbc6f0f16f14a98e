// Phi-3 (and Phi-3.5 / Phi-4-mini, model_type 'phi3'): Llama's decoder with fused projections, in Hugging Face's
// layout so that parameter names are the checkpoint keys: model.layers.N.self_attn.{qkv_proj, o_proj} and
// model.layers.N.mlp.{gate_up_proj, down_proj}; the rest as in llama.ts. qkv_proj's rows are the query heads, then
// the key heads, then the value heads; gate_up_proj's are the gate, then the up projection. Rotary embeddings may
// cover only part of each head (partial_rotary_factor, 0.75 in Phi-4-mini), and every layer attends within
// sliding_window when the config sets one (2047 in Phi-3-mini-4k); llama.ts's rotaryAttention does both. LongRoPE
// (Phi-3 128k, Phi-3.5) reruns the text once generation outgrows the original context, as transformers does.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LlamaForCausalLM, longropeOriginal, ropeSettings, rotaryAttention, slidingWindow, type HeadLayout, type KVCache, type LayerParts, type LlamaConfig } from './llama.js';
import { ModelConfigError } from './weights.js';

const { nn } = torch;

export class Phi3Attention extends nn.Module implements HeadLayout {
  qkv_proj: torch.nn.Linear;
  o_proj: torch.nn.Linear;
  readonly nHeads: number;
  readonly nKv: number;
  readonly hd: number;
  readonly window: number | null;

  constructor(c: LlamaConfig, readonly layerIdx: number) {
    super();
    this.nHeads = c.num_attention_heads;
    this.nKv = c.num_key_value_heads ?? c.num_attention_heads;
    this.hd = c.head_dim ?? c.hidden_size / c.num_attention_heads;
    this.window = slidingWindow(c, layerIdx);
    this.qkv_proj = this.registerModule('qkv_proj', new nn.Linear(c.hidden_size, (this.nHeads + 2 * this.nKv) * this.hd, { bias: false }));
    this.o_proj = this.registerModule('o_proj', new nn.Linear(this.nHeads * this.hd, c.hidden_size, { bias: false }));
  }

  forward(x: Tensor, cos: Tensor, sin: Tensor, cache?: KVCache, mask?: Tensor | null): Tensor {
    // [B, T, C] -> [B, T, (H + 2·kvH)·hd] -> q [B, T, H·hd], k and v [B, T, kvH·hd] (views, no copies)
    const qkv = this.qkv_proj.forward(x);
    const q = this.nHeads * this.hd;
    const kv = this.nKv * this.hd;
    const y = rotaryAttention(this, qkv.narrow(-1, 0, q), qkv.narrow(-1, q, kv), qkv.narrow(-1, q + kv, kv), cos, sin, cache, mask);
    return this.o_proj.forward(y);
  }
}

export class Phi3MLP extends nn.Module {
  gate_up_proj: torch.nn.Linear;
  down_proj: torch.nn.Linear;

  constructor(readonly c: LlamaConfig) {
    super();
    this.gate_up_proj = this.registerModule('gate_up_proj', new nn.Linear(c.hidden_size, 2 * c.intermediate_size, { bias: false }));
    this.down_proj = this.registerModule('down_proj', new nn.Linear(c.intermediate_size, c.hidden_size, { bias: false }));
  }

  forward(x: Tensor): Tensor {
    // SwiGLU from one GEMM: [B, T, 2·I] -> gate, up [B, T, I] -> down(silu(gate) * up)
    const gu = this.gate_up_proj.forward(x);
    const I = this.c.intermediate_size;
    return this.down_proj.forward(torch.silu(gu.narrow(-1, 0, I)).mul(gu.narrow(-1, I, I)));
  }
}

const PHI3_PARTS: LayerParts<Phi3Attention, Phi3MLP> = { attention: (c, i) => new Phi3Attention(c, i), mlp: (c) => new Phi3MLP(c) };

export class Phi3ForCausalLM extends LlamaForCausalLM<Phi3Attention, Phi3MLP> {
  constructor(config: LlamaConfig) {
    // transformers' Phi-3 has no biases (it ignores these keys); a config asking for them describes another model.
    for (const k of ['attention_bias', 'mlp_bias']) {
      if (config[k] === true) throw new ModelConfigError(`${k} is true, but Phi-3 has no biases on its projections; remove the key or set it to false`);
    }
    super(config, PHI3_PARTS);
  }

  /**
   * Under LongRoPE transformers' Phi-3 runs the whole text again when it first outgrows the original context (its
   * prepare_inputs_for_generation drops the cache), so every position then rotates with the long factors; the cached
   * keys had the short ones.
   */
  override rerunPast(): number | null {
    const sc = ropeSettings(this.config).scaling;
    return (sc?.rope_type ?? sc?.type) === 'longrope' ? longropeOriginal(this.config, sc!) : null;
  }
}
