import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { assertClose, needPython, py } from '../../torch/test/helpers.js';

const REF = new URL('../../../bench/py/', import.meta.url).pathname;

function tiny(over: Partial<LlamaConfig> = {}): LlamaConfig {
  return {
    model_type: 'llama', vocab_size: 61, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 16, rms_norm_eps: 1e-5, rope_theta: 10000,
    tie_word_embeddings: false, ...over,
  };
}

// Logits and gradients of the same weights in python3-torch (bench/py/llama_ref.py, HF conventions).
function reference(c: LlamaConfig, model: LlamaForCausalLM, ids: number[][]): { logits: number[]; loss: number; grads: Record<string, number[]> } {
  const weights: Record<string, number[]> = {};
  for (const [k, v] of model.stateDict()) weights[k.replace(/^model\./, '')] = (v.double().toArray() as number[]).flat(Infinity as 1) as number[];
  const shapes: Record<string, number[]> = {};
  for (const [k, v] of model.stateDict()) shapes[k.replace(/^model\./, '')] = v.shape;
  return py(`
import sys; sys.path.insert(0, ${JSON.stringify(REF)})
from llama_ref import Llama
c = inp['c']
m = Llama(c).double()
sd = {k: torch.tensor(v, dtype=torch.float64).reshape(inp['shapes'][k]) for k, v in inp['w'].items()}
m.load_state_dict(sd, strict=True)
ids = torch.tensor(inp['ids'])
logits = m(ids)
loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
loss.backward()
out['logits'] = logits.reshape(-1)
out['loss'] = loss.item()
out['grads'] = {k: p.grad.reshape(-1) for k, p in m.named_parameters()}
`, {
    c: {
      vocab_size: c.vocab_size, dim: c.hidden_size, hidden_dim: c.intermediate_size, n_layers: c.num_hidden_layers, n_heads: c.num_attention_heads,
      n_kv_heads: c.num_key_value_heads, seq_len: c.max_position_embeddings, eps: c.rms_norm_eps, rope_theta: c.rope_theta,
      rope_scaling: c.rope_scaling ?? null, tie: !!c.tie_word_embeddings, qkv_bias: c.model_type === 'qwen2',
    },
    w: weights, shapes, ids,
  });
}

const cases: [string, Partial<LlamaConfig>][] = [
  ['GQA, untied head', {}],
  ['Qwen2 q/k/v biases, tied head', { model_type: 'qwen2', tie_word_embeddings: true }],
  ['llama3 RoPE scaling', { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 } }],
  ['linear RoPE scaling, MHA', { num_key_value_heads: 4, rope_scaling: { type: 'linear', factor: 2 } }],
];

for (const [name, over] of cases) {
  test(`Llama logits and gradients match python3-torch: ${name}`, { skip: needPython() }, () => {
    const c = tiny(over);
    torch.manualSeed(7);
    const model = new LlamaForCausalLM(c).to('float64');
    torch.noGrad(() => {
      // Biases start at zero in HF; randomise everything so each parameter's path is tested.
      for (const p of model.parameters()) p.normal_(0, 0.2);
    });
    const ids = [[1, 5, 9, 22, 3, 60, 7, 7, 12], [4, 4, 8, 15, 16, 23, 42, 0, 1]];
    const ref = reference(c, model, ids);
    torch.tidy(() => {
      const x = torch.tensor(ids);
      const logits = model.forward(x);
      assertClose(logits, ref.logits, { rtol: 1e-9, atol: 1e-10, msg: 'logits' });
      const V = c.vocab_size;
      const loss = torch.crossEntropy(logits.narrow(1, 0, 8).reshape(-1, V), x.narrow(1, 1, 8).reshape(-1));
      assertClose(loss, [ref.loss], { rtol: 1e-10 });
      loss.backward();
      for (const [k, p] of model.namedParameters()) {
        const key = k.replace(/^model\./, '');
        assert.ok(ref.grads[key], `python has a parameter ${key}`);
        assertClose(p.grad!, ref.grads[key], { rtol: 1e-7, atol: 1e-10, msg: `grad ${k}` });
      }
    });
    model.dispose();
  });
}

test('the key/value cache gives the logits of a full forward', () => {
  const c = tiny();
  torch.manualSeed(3);
  const model = new LlamaForCausalLM(c).to('float64');
  torch.noGrad(() => torch.tidy(() => {
    const ids = torch.tensor([[1, 5, 9, 22, 3, 60, 7]]);
    const full = model.forward(ids); // [1, 7, V]
    const cache = model.newCache(1, 16);
    const a = model.forward(ids.narrow(1, 0, 4), { cache }); // prefill 4
    const b = model.forward(ids.narrow(1, 4, 2), { cache }); // a chunk of 2 at an offset
    const d = model.forward(ids.narrow(1, 6, 1), { cache }); // one token
    assertClose(torch.cat([a, b, d], 1), full.toArray(), { rtol: 1e-10, atol: 1e-12 });
    cache.dispose();
  }));
  model.dispose();
});

test('configs that cannot work are refused with the field named', () => {
  assert.throws(() => new LlamaForCausalLM(tiny({ num_key_value_heads: 3 })), /num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)/);
  assert.throws(() => new LlamaForCausalLM(tiny({ hidden_size: 30 })), /hidden_size \(30\) must divide by num_attention_heads/);
  assert.throws(() => new LlamaForCausalLM(tiny({ rope_scaling: { type: 'yarn' as 'linear' } })), /rope_scaling type 'yarn' is not supported/);
});
