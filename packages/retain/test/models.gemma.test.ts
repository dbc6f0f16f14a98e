// Gemma 2 / Gemma 3 text without the reference environment: the cache against full forwards past the sliding
// window, the window's reach, config checks, and a config.json round trip that keeps floats floats. Numerical
// parity with transformers is in parity.gemma.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { Gemma2ForCausalLM, type Gemma2Config } from '../src/models/gemma2.js';
import { Gemma3ForCausalLM } from '../src/models/gemma3.js';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { assertClose } from '../../torch/test/helpers.js';

function tiny(over: Partial<Gemma2Config> = {}): Gemma2Config {
  return {
    model_type: 'gemma2', vocab_size: 40, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 3, num_attention_heads: 4,
    num_key_value_heads: 2, head_dim: 8, max_position_embeddings: 32, rms_norm_eps: 1e-6, query_pre_attn_scalar: 8,
    sliding_window: 3, attn_logit_softcapping: 5.0, final_logit_softcapping: 3.0, ...over,
  };
}

function randomised<M extends torch.nn.Module>(m: M): M {
  torch.noGrad(() => {
    for (const p of m.parameters()) p.normal_(0, 0.5);
  });
  return m;
}

for (const [name, make] of [
  ['Gemma 2', () => new Gemma2ForCausalLM(tiny())],
  ['Gemma 3', () => new Gemma3ForCausalLM(tiny({ model_type: 'gemma3_text', sliding_window_pattern: 2, rope_local_base_freq: 100 }))],
] as const) {
  test(`${name}: the key/value cache gives the logits of a full forward, past the sliding window`, () => {
    torch.manualSeed(3);
    const model = randomised(make().to('float64'));
    torch.noGrad(() => torch.tidy(() => {
      const ids = torch.tensor([[1, 5, 9, 22, 3, 30, 7, 11, 2]]);
      const full = model.forward(ids); // [1, 9, V]
      const cache = model.newCache(1, 16);
      const parts = [model.forward(ids.narrow(1, 0, 4), { cache })]; // prefill beyond the window of 3
      parts.push(model.forward(ids.narrow(1, 4, 2), { cache })); // a chunk at an offset
      for (let t = 6; t < 9; t++) parts.push(model.forward(ids.narrow(1, t, 1), { cache })); // one token at a time
      // Gemma's norms run in float32 even in a float64 model (as transformers' do), so chunking shows at ~1e-7;
      // a cache or mask error shows at ~1e-1.
      assertClose(torch.cat(parts, 1), full.toArray(), { rtol: 1e-5, atol: 1e-5 });
      cache.dispose();
    }));
    model.dispose();
  });

  test(`${name}: left padding leaves the real tokens' logits as they are unpadded, past the sliding window`, () => {
    // The first padded query sees no key at all in local layers; a NaN there would reach the real tokens through the
    // next layer's values even though their weights on it are zero.
    torch.manualSeed(4);
    const model = randomised(make().to('float64'));
    torch.noGrad(() => torch.tidy(() => {
      const real = [1, 5, 9, 22, 3, 30, 7];
      const alone = model.forward(torch.tensor([real])); // [1, 7, V]
      const padded = torch.tensor([[0, 0, 0, ...real]]);
      const seen = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]]).ne(0).view(1, 1, 1, 10); // keys that are real
      const out = model.forward(padded, { mask: seen }); // [1, 10, V]
      assert.ok(!out.isnan().any().item(), 'no NaN');
      assertClose(out.narrow(1, 3, 7), alone.toArray(), { rtol: 1e-5, atol: 1e-5 });
    }));
    model.dispose();
  });
}

test('Gemma 2: a local layer sees exactly the last sliding_window positions', () => {
  // One local layer: changing the token 3 back from the last leaves the last logits alone with a window of 3,
  // and changes them with a window of 4.
  torch.manualSeed(5);
  for (const [window, changes] of [[3, false], [4, true]] as const) {
    const model = randomised(new Gemma2ForCausalLM(tiny({ num_hidden_layers: 1, sliding_window: window, layer_types: ['sliding_attention'] })).to('float64'));
    torch.noGrad(() => torch.tidy(() => {
      const a = model.forward(torch.tensor([[4, 8, 15, 16, 23, 30]])).i(0, -1);
      const b = model.forward(torch.tensor([[4, 8, 39, 16, 23, 30]])).i(0, -1);
      assert.equal(a.sub(b).abs().max().item() > 1e-6, changes, `window ${window}`);
    }));
    model.dispose();
  }
});

test('Gemma configs that cannot work are refused with the key named', () => {
  const refused: [Partial<Gemma2Config>, RegExp][] = [
    [{ layer_types: ['sliding_attention'] as Gemma2Config['layer_types'] }, /layer_types must list one of sliding_attention or full_attention for each of the 3 layers \(num_hidden_layers\), got \["sliding_attention"\]/],
    [{ layer_types: ['sliding', 'full_attention', 'full_attention'] as unknown as Gemma2Config['layer_types'] }, /layer_types must list one of/],
    [{ hidden_activation: 'relu' }, /hidden_activation "relu" is not supported; Gemma uses gelu_pytorch_tanh/],
    [{ sliding_window: null }, /sliding_window must be a positive integer, got null/],
    [{ query_pre_attn_scalar: 0 }, /query_pre_attn_scalar must be a number > 0/],
    [{ final_logit_softcapping: -3 }, /final_logit_softcapping must be a number > 0 \(Gemma 2 uses 50 and 30; null turns capping off\), got -3/],
    [{ use_bidirectional_attention: true }, /use_bidirectional_attention is true/],
    [{ rope_parameters: { rope_type: 'yarn', rope_theta: 10000 } }, /rope_parameters.rope_type "yarn" is not supported; use default, linear, dynamic, llama3/],
    [{ rope_parameters: { rope_type: 'default', rope_theta: -1 } }, /rope_parameters.rope_theta must be a number > 0/],
    [{ pad_token_id: 40 }, /pad_token_id must be a token id in 0..39/],
    [{ num_key_value_heads: 3 }, /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/],
  ];
  for (const [over, message] of refused) assert.throws(() => new Gemma2ForCausalLM(tiny(over)), message, JSON.stringify(over));
  assert.throws(
    () => new Gemma3ForCausalLM(tiny({ model_type: 'gemma3_text', rope_parameters: { full_attention: { rope_type: 'longrope' } } })),
    /rope_parameters.full_attention.rope_type "longrope" is not supported/,
  );
  // No sliding layers: no window needed.
  new Gemma2ForCausalLM(tiny({ sliding_window: null, layer_types: ['full_attention', 'full_attention', 'full_attention'] })).dispose();
});

test('Gemma 3 layer types: every sliding_window_pattern-th layer is global, 6 by default', () => {
  const types = (over: Partial<Gemma2Config>) => new Gemma3ForCausalLM(tiny({ model_type: 'gemma3_text', num_hidden_layers: 7, ...over })).g.layerTypes.map((t) => t[0]).join('');
  assert.equal(types({}), 'sssssfs');
  assert.equal(types({ sliding_window_pattern: 2 }), 'sfsfsfs');
  assert.equal(new Gemma2ForCausalLM(tiny()).g.layerTypes.map((t) => t[0]).join(''), 'sfs');
});

test('a Gemma directory saves back with its floats written as floats (transformers 5 refuses 30 for a float key)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-gemma-'));
  try {
    torch.manualSeed(1);
    const model = new Gemma2ForCausalLM(tiny());
    mkdirSync(join(dir, 'in'));
    const sd = model.stateDict();
    sd.delete('lm_head.weight');
    torch.io.saveSharded(join(dir, 'in'), sd);
    const text = JSON.stringify(tiny(), null, 2).replace('"final_logit_softcapping": 3', '"final_logit_softcapping": 3.0').replace('"attn_logit_softcapping": 5', '"attn_logit_softcapping": 5.0');
    writeFileSync(join(dir, 'in', 'config.json'), text);
    const p = await loadPretrained(join(dir, 'in'));
    savePretrained(p, join(dir, 'out'));
    const saved = readFileSync(join(dir, 'out', 'config.json'), 'utf8');
    assert.match(saved, /"final_logit_softcapping": 3\.0,/);
    assert.match(saved, /"attn_logit_softcapping": 5\.0,/);
    // Integers stay integers.
    assert.match(saved, /"query_pre_attn_scalar": 8,/);
    assert.match(saved, /"sliding_window": 3,/);
    model.dispose();
    p.model.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
