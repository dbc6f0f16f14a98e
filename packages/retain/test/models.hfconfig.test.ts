// config.json as transformers 5 writes it (rope_parameters, dtype, T5's scale_decoder_outputs) and Phi-3's fused
// projections; the same behaviour is checked against transformers itself in parity.arch.test.ts when the reference
// environment is there, these hold without it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';

const { nn } = torch;
import { LlamaForCausalLM, ropeAttentionScale, ropeInvFreq, type LlamaConfig } from '../src/models/llama.js';
import { Phi3ForCausalLM } from '../src/models/phi3.js';
import { T5ForConditionalGeneration } from '../src/models/t5.js';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { ModelConfigError } from '../src/models/weights.js';

function tiny(over: Partial<LlamaConfig> = {}): LlamaConfig {
  return {
    model_type: 'llama', vocab_size: 50, hidden_size: 32, intermediate_size: 40, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, max_position_embeddings: 64, rms_norm_eps: 1e-5, ...over,
  };
}

test('rope_parameters (transformers 5) is read as rope_theta + rope_scaling are', () => {
  // head_dim 4: inverse frequencies theta^0 and theta^-1/2
  const c = { hidden_size: 16, num_attention_heads: 4 };
  assert.deepEqual([...ropeInvFreq(tiny({ ...c, rope_parameters: { rope_type: 'default', rope_theta: 10000 } }))], [1, 0.01]);
  assert.deepEqual([...ropeInvFreq(tiny({ ...c, rope_parameters: { rope_type: 'linear', factor: 2, rope_theta: 100 } }))], [0.5, 0.05]);
  const llama3 = { rope_type: 'llama3' as const, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 };
  const wide = { hidden_size: 64, num_attention_heads: 2 };
  assert.deepEqual(
    [...ropeInvFreq(tiny({ ...wide, rope_parameters: { ...llama3, rope_theta: 500000 } }))],
    [...ropeInvFreq(tiny({ ...wide, rope_theta: 500000, rope_scaling: llama3 }))],
  );
  // Without scaling, llama3's smoothing is what makes the two differ; this keeps the comparison above meaningful.
  assert.notDeepEqual([...ropeInvFreq(tiny({ ...wide, rope_parameters: { ...llama3, rope_theta: 500000 } }))], [...ropeInvFreq(tiny({ ...wide, rope_theta: 500000 }))]);
  // partial_rotary_factor 0.5 of head_dim 8: frequencies of a 4-wide rotation
  assert.deepEqual([...ropeInvFreq(tiny({ hidden_size: 32, num_attention_heads: 4, rope_parameters: { rope_theta: 10000, partial_rotary_factor: 0.5 } }))], [1, 0.01]);
  assert.throws(() => new LlamaForCausalLM(tiny({ rope_parameters: { rope_type: 'yarn' as 'linear', rope_theta: 1e4 } })), (e: Error) => e instanceof ModelConfigError && e.message === "rope_parameters type 'yarn' is not supported; use default, linear, dynamic, llama3, longrope");
  assert.throws(() => new LlamaForCausalLM(tiny({ hidden_act: 'gelu' })), /hidden_act 'gelu' is not supported; the Llama family's MLP uses silu/);
  assert.throws(() => new LlamaForCausalLM(tiny({ partial_rotary_factor: 0.375 })), { message: 'the rotated width of each head (3: head dimension 8 × partial_rotary_factor 0.375) must be even for rotary embeddings' });
  assert.throws(() => new LlamaForCausalLM(tiny({ partial_rotary_factor: 0 })), { message: 'partial_rotary_factor must be a number in (0, 1], got 0' });
});

test("Phi-3's fused qkv_proj and gate_up_proj give the logits of Llama's separate projections", () => {
  const c = tiny({ model_type: 'phi3', rope_parameters: { rope_theta: 10000, partial_rotary_factor: 0.5 } });
  torch.manualSeed(1);
  const llama = new LlamaForCausalLM(c).eval();
  const phi = new Phi3ForCausalLM(c).eval();
  // Phi-3's rows: q heads, then k heads, then v heads; gate, then up.
  const sd = new Map<string, torch.Tensor>();
  for (const [k, t] of llama.stateDict()) {
    const m = k.match(/^(.*)\.(self_attn\.[qkv]_proj|mlp\.(gate|up)_proj)\.weight$/);
    if (!m) sd.set(k, t);
    else if (k.endsWith('q_proj.weight')) sd.set(`${m[1]}.self_attn.qkv_proj.weight`, torch.cat(['q', 'k', 'v'].map((x) => llama.stateDict().get(`${m[1]}.self_attn.${x}_proj.weight`)!), 0));
    else if (k.endsWith('gate_proj.weight')) sd.set(`${m[1]}.mlp.gate_up_proj.weight`, torch.cat(['gate', 'up'].map((x) => llama.stateDict().get(`${m[1]}.mlp.${x}_proj.weight`)!), 0));
  }
  phi.loadStateDict(sd);
  torch.tidy(() => {
    const ids = torch.tensor([[1, 7, 30, 2, 44, 9]]);
    const diff = phi.forward(ids).sub(llama.forward(ids)).abs().max().item();
    assert.ok(diff < 1e-5, `phi3 and llama logits differ by ${diff}`);
  });
  assert.throws(() => new Phi3ForCausalLM(tiny({ model_type: 'phi3', attention_bias: true })), /attention_bias is true, but Phi-3 has no biases/);
});

test('a sliding window hides keys window positions back, in a full forward and through the cache', () => {
  // One layer: position p sees tokens p-2..p only, so changing token 0 changes positions 0-2 and nothing after.
  const c = tiny({ model_type: 'mistral', num_hidden_layers: 1, sliding_window: 3 });
  torch.manualSeed(4);
  const m = new LlamaForCausalLM(c).eval();
  torch.noGrad(() => torch.tidy(() => {
    const a = m.forward(torch.tensor([[5, 7, 30, 2, 44, 9, 11]]));
    const b = m.forward(torch.tensor([[6, 7, 30, 2, 44, 9, 11]]));
    const changed = Array.from({ length: 7 }, (_, t) => a.i(0, t).sub(b.i(0, t)).abs().max().item() > 0);
    assert.deepEqual(changed, [true, true, true, false, false, false, false]);
    // Token by token through the key/value cache: the same logits as the full forward.
    const cache = m.newCache(1, 8);
    const ids = [5, 7, 30, 2, 44, 9, 11];
    const steps = ids.map((t) => m.forward(torch.tensor([[t]]), { cache }));
    const diff = torch.cat(steps, 1).sub(a).abs().max().item();
    cache.dispose();
    assert.ok(diff < 1e-5, `cached decoding differs from the full forward by ${diff}`);
  }));
  // Llama has no sliding window in transformers; Qwen2 only on the layers its config marks.
  assert.equal(new LlamaForCausalLM(tiny({ sliding_window: 3 })).model.layers.get(0).self_attn.window, null);
  const q = new LlamaForCausalLM(tiny({ model_type: 'qwen2', sliding_window: 3, layer_types: ['full_attention', 'sliding_attention'] }));
  assert.deepEqual([...q.model.layers].map((l) => l.self_attn.window), [null, 3]);
  const old = new LlamaForCausalLM(tiny({ model_type: 'qwen2', sliding_window: 3, use_sliding_window: true, max_window_layers: 1 }));
  assert.deepEqual([...old.model.layers].map((l) => l.self_attn.window), [null, 3]);
});

test('Phi-3 LongRoPE: short factors within the original context, long ones beyond it, for the whole text as transformers reruns it', () => {
  const longrope = { rope_type: 'longrope' as const, rope_theta: 10000, short_factor: [1, 1.5], long_factor: [2, 5] };
  const c = tiny({ model_type: 'phi3', hidden_size: 16, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32, original_max_position_embeddings: 4, rope_parameters: longrope });
  assert.deepEqual([...ropeInvFreq(c, 4)], [1, 0.01 / 1.5]);
  assert.deepEqual([...ropeInvFreq(c, 5)], [1 / 2, 0.01 / 5]);
  assert.equal(ropeAttentionScale(c), Math.sqrt(1 + Math.log(32 / 4) / Math.log(4)));
  torch.manualSeed(7);
  const m = new Phi3ForCausalLM(c).eval();
  nn.init.normal_(m.model.layers.get(0).self_attn.qkv_proj.weight, 0, 0.5); // positions must matter
  const ids = [3, 17, 9, 30, 2, 41, 5];
  torch.noGrad(() => torch.tidy(() => {
    const cache = m.newCache(1, 8);
    ids.forEach((t, n) => {
      // One token at a time through the cache: what a full forward over the text so far gives at its last position.
      const step = m.forward(torch.tensor([[t]]), { cache, lastOnly: true });
      const full = m.forward(torch.tensor([ids.slice(0, n + 1)]), { lastOnly: true });
      const diff = step.sub(full).abs().max().item();
      assert.ok(diff < 1e-5, `token ${n + 1}: cached ${diff} away from the full forward`);
    });
    cache.dispose();
  }));
  assert.throws(() => new Phi3ForCausalLM({ ...c, rope_parameters: { ...longrope, long_factor: [2] } }), { message: 'rope_parameters.long_factor must list 2 positive numbers (one per rotary frequency) for longrope, got [2]' });
});

test("T5: scale_decoder_outputs (transformers 5) decides the head's d_model^-0.5, not tie_word_embeddings", () => {
  const base = { model_type: 't5', vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 24, num_layers: 1, num_heads: 4, relative_attention_num_buckets: 8, dropout_rate: 0 };
  torch.manualSeed(2);
  const scaled = new T5ForConditionalGeneration({ ...base, tie_word_embeddings: true }).eval();
  const plain = new T5ForConditionalGeneration({ ...base, tie_word_embeddings: true, scale_decoder_outputs: false }).eval();
  assert.deepEqual(plain.tiedKeys(), scaled.tiedKeys(), 'both tie the head');
  plain.loadStateDict(scaled.stateDict());
  torch.tidy(() => {
    const ids = torch.tensor([[5, 9, 3, 1]]);
    const labels = torch.tensor([[4, 2, 1]]);
    const ratio = scaled.forward(ids, { labels }).div(plain.forward(ids, { labels }));
    assert.ok(ratio.sub(16 ** -0.5).abs().max().item() < 1e-6, 'the scaled head is the unscaled one times d_model^-0.5');
  });
  // Absent, it follows tie_word_embeddings as before transformers 5 (released Flan-T5: false, T5 v1.0: true).
  const flan = new T5ForConditionalGeneration({ ...base, tie_word_embeddings: false });
  assert.deepEqual(flan.tiedKeys().map(([a]) => a), ['encoder.embed_tokens.weight', 'decoder.embed_tokens.weight']);
  assert.throws(() => new T5ForConditionalGeneration({ ...base, scale_decoder_outputs: 'no' as unknown as boolean }), /scale_decoder_outputs must be true or false, got/);
});

test('a head the checkpoint stores with values of its own stays untied, whatever tie_word_embeddings says (as transformers)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-ownhead-'));
  try {
    // Flan-T5 saved again by transformers 5: tie_word_embeddings true, scale_decoder_outputs false, its own lm_head.
    const t5 = { model_type: 't5', vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 24, num_layers: 1, num_heads: 4, relative_attention_num_buckets: 8, dropout_rate: 0, feed_forward_proj: 'gated-gelu', tie_word_embeddings: true, scale_decoder_outputs: false };
    torch.manualSeed(6);
    const m = new T5ForConditionalGeneration({ ...t5, tie_word_embeddings: false });
    const drop = new Set(['encoder.embed_tokens.weight', 'decoder.embed_tokens.weight']);
    torch.io.saveSafetensors(join(dir, 'model.safetensors'), new Map([...m.stateDict()].filter(([k]) => !drop.has(k))));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(t5));
    const p = await loadPretrained(dir);
    const loaded = p.model as unknown as T5ForConditionalGeneration;
    assert.ok(loaded.lm_head.weight.equal(m.lm_head.weight), "the file's lm_head, not the embedding");
    assert.ok(!loaded.shared.weight.equal(loaded.lm_head.weight));
    assert.deepEqual([p.config.tie_word_embeddings, p.config.scale_decoder_outputs], [false, false]);
    torch.noGrad(() => torch.tidy(() => {
      const ids = torch.tensor([[5, 9, 3, 1]]);
      const labels = torch.tensor([[4, 2, 1]]);
      assert.ok(loaded.eval().forward(ids, { labels }).equal(m.eval().forward(ids, { labels })));
    }));
    p.model.dispose();
    m.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a model stored in bfloat16 and saved in float32 says float32 under dtype (transformers 5) and torch_dtype', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-dtype-'));
  try {
    const c = tiny();
    torch.manualSeed(3);
    const m = new LlamaForCausalLM(c);
    torch.io.saveSafetensors(join(dir, 'model.safetensors'), new Map([...m.stateDict()].map(([k, t]) => [k, t.to('bfloat16')] as [string, torch.Tensor])));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...c, dtype: 'bfloat16', torch_dtype: 'bfloat16' }));
    const p = await loadPretrained(dir);
    savePretrained(p, join(dir, 'out'));
    const saved = JSON.parse(readFileSync(join(dir, 'out', 'config.json'), 'utf8'));
    assert.deepEqual([saved.dtype, saved.torch_dtype], ['float32', 'float32']);
    p.model.dispose();
    m.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
