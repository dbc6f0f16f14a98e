// Reader for llama2.c's legacy checkpoint (`stories260K.bin`, `stories15M.bin`, ...).
// Layout: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means
// an unshared classifier follows), then float32 arrays: token embedding, attention RMSNorm weights (all layers), wq, wk,
// wv, wo, FFN RMSNorm weights, w1, w2, w3, final RMSNorm, two RoPE tables (ignored: RoPE is computed), and the
// classifier when unshared. Tensors come out under Hugging Face Llama names, so the model file and a saved HF
// checkpoint use one set of keys.
import { readFileSync } from 'node:fs';
import * as torch from '@retain/torch';
import type { LlamaConfig } from './llama.js';

export function readLlama2c(path: string): { config: LlamaConfig; weights: Map<string, torch.Tensor> } {
  const buf = readFileSync(path);
  if (buf.byteLength < 28) throw new Error(`${path}: too short for a llama2.c checkpoint (${buf.byteLength} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const [dim, hidden, nLayers, nHeads, nKv, vocabRaw, seqLen] = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true));
  const shared = vocabRaw > 0;
  const vocab = Math.abs(vocabRaw);
  for (const [k, v] of Object.entries({ dim, hidden, nLayers, nHeads, nKv, vocab, seqLen })) {
    if (!(v > 0 && v < 1 << 24)) throw new Error(`${path}: header field ${k}=${v} is not a plausible size; is this a llama2.c legacy .bin?`);
  }
  if (dim % nHeads !== 0 || nHeads % nKv !== 0) throw new Error(`${path}: dim ${dim} / heads ${nHeads} / kv heads ${nKv} do not divide`);
  const headDim = dim / nHeads;
  const kvDim = headDim * nKv;
  const floats = (buf.byteLength - 28) / 4;
  const expected =
    vocab * dim + nLayers * (dim + dim * dim + 2 * dim * kvDim + dim * dim + dim + 3 * dim * hidden) + dim +
    seqLen * headDim + (shared ? 0 : vocab * dim);
  if (!Number.isInteger(floats) || floats < expected) {
    throw new Error(`${path}: holds ${floats} floats but the header (dim ${dim}, ${nLayers} layers, vocab ${vocab}) needs ${expected}`);
  }
  let off = 28;
  // Copies each array out of the file buffer: [n] → tensor of `shape`.
  const take = (shape: number[]): torch.Tensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = torch.fromBytes(buf.subarray(off, off + n * 4), 'float32', shape);
    off += n * 4;
    return t;
  };
  const perLayer = (name: string, shape: number[], heads = 0) => {
    for (let l = 0; l < nLayers; l++) {
      let t = take(shape);
      // llama2.c rotates interleaved pairs (2i, 2i+1); the HF layout rotates halves. Reordering the rows of each
      // head of wq/wk ([h, hd/2, 2, in] → [h, 2, hd/2, in]) makes the two conventions compute the same attention.
      if (heads) t = t.view(heads, headDim / 2, 2, dim).transpose(1, 2).reshape(shape).contiguous();
      w.set(`model.layers.${l}.${name}`, t);
    }
  };
  const w = new Map<string, torch.Tensor>();
  torch.tidy(() => {
    w.set('model.embed_tokens.weight', take([vocab, dim]));
    perLayer('input_layernorm.weight', [dim]);
    // llama2.c stores nn.Linear weights as [out, in], as PyTorch does.
    perLayer('self_attn.q_proj.weight', [dim, dim], nHeads);
    perLayer('self_attn.k_proj.weight', [kvDim, dim], nKv);
    perLayer('self_attn.v_proj.weight', [kvDim, dim]);
    perLayer('self_attn.o_proj.weight', [dim, dim]);
    perLayer('post_attention_layernorm.weight', [dim]);
    perLayer('mlp.gate_proj.weight', [hidden, dim]); // w1
    perLayer('mlp.down_proj.weight', [dim, hidden]); // w2
    perLayer('mlp.up_proj.weight', [hidden, dim]); // w3
    w.set('model.norm.weight', take([dim]));
    off += seqLen * headDim * 4; // freq_cis_real + freq_cis_imag, half a head each
    if (!shared) w.set('lm_head.weight', take([vocab, dim]));
    torch.keep([...w.values()]);
  });
  const config: LlamaConfig = {
    model_type: 'llama',
    vocab_size: vocab,
    hidden_size: dim,
    intermediate_size: hidden,
    num_hidden_layers: nLayers,
    num_attention_heads: nHeads,
    num_key_value_heads: nKv,
    max_position_embeddings: seqLen,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: shared,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  return { config, weights: w };
}
