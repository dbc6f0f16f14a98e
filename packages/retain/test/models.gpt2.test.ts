import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { GPT2LMHeadModel, gpt2CheckpointKeys, type GPT2Config } from '../src/models/gpt2.js';
import { generate } from '../src/models/generate.js';
import { loadWeights } from '../src/models/weights.js';
import type { Tokenizer } from '../src/tokenizers/types.js';
import { needPython } from '../../torch/test/helpers.js';
import { assertTensorClose, pyTensors, randomise } from './pyref.js';

function tiny(over: Partial<GPT2Config> = {}): GPT2Config {
  return {
    model_type: 'gpt2', vocab_size: 53, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 4,
    resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0, ...over,
  };
}

const IDS = [[1, 5, 9, 22, 3, 52, 7, 7, 12], [4, 4, 8, 15, 16, 23, 42, 0, 1]];

const cases: [string, Partial<GPT2Config>][] = [
  ['tied head, gelu_new', {}],
  ['untied head, n_inner, scale by inverse layer index', { tie_word_embeddings: false, n_inner: 48, scale_attn_by_inverse_layer_idx: true }],
];

for (const [name, over] of cases) {
  test(`GPT-2 logits and gradients match python3-torch (bench/py/gpt2_ref.py): ${name}`, { skip: needPython() }, () => {
    const c = tiny(over);
    torch.manualSeed(11);
    const model = new GPT2LMHeadModel(c).to('float64');
    randomise(model, 0.2);
    const ref = pyTensors(`
from gpt2_ref import GPT2LMHeadModel
m = GPT2LMHeadModel(inp['c']).double()
m.load_state_dict(W, strict=True)
ids = torch.tensor(inp['ids'])
logits = m(ids)
loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
loss.backward()
OUT['logits'] = logits
OUT['loss'] = loss.reshape(1)
for k, p in m.named_parameters():
    OUT['grad.' + k] = p.grad
`, model.stateDict(), { c, ids: IDS });
    torch.tidy(() => {
      const x = torch.tensor(IDS);
      const logits = model.forward(x); // [2, 9, V]
      assertTensorClose(logits, ref.tensors.get('logits'), { rtol: 1e-10, atol: 1e-12, msg: 'logits' });
      const loss = torch.crossEntropy(logits.narrow(1, 0, 8).reshape(-1, c.vocab_size), x.narrow(1, 1, 8).reshape(-1));
      assertTensorClose(loss.reshape(1), ref.tensors.get('loss'), { rtol: 1e-12, msg: 'loss' });
      loss.backward();
      const names = model.namedParameters().map(([k]) => k);
      assert.equal(names.length, [...ref.tensors.keys()].filter((k) => k.startsWith('grad.')).length, 'same number of trainable tensors');
      for (const [k, p] of model.namedParameters()) assertTensorClose(p.grad!, ref.tensors.get(`grad.${k}`), { rtol: 1e-8, atol: 1e-11, msg: `grad ${k}` });
    });
    model.dispose();
    torch.dispose(ref.tensors.values());
  });
}

test('GPT-2: the key/value cache gives the logits of a full forward', () => {
  torch.manualSeed(3);
  const model = new GPT2LMHeadModel(tiny()).to('float64').eval();
  randomise(model, 0.2);
  torch.noGrad(() => torch.tidy(() => {
    const ids = torch.tensor([[1, 5, 9, 22, 3, 52, 7]]);
    const full = model.forward(ids); // [1, 7, V]
    const cache = model.newCache(1, 16);
    const a = model.forward(ids.narrow(1, 0, 4), { cache }); // prefill 4
    const b = model.forward(ids.narrow(1, 4, 2), { cache }); // a chunk of 2 at an offset
    const d = model.forward(ids.narrow(1, 6, 1), { cache, lastOnly: true }); // one token
    assert.equal(cache.length, 7);
    assertTensorClose(torch.cat([a, b, d], 1), full, { rtol: 1e-10, atol: 1e-12, msg: 'cached vs full logits' });
    cache.dispose();
  }));
  model.dispose();
});

test('GPT-2: generate() with the cache follows the greedy path of full forwards', () => {
  torch.manualSeed(5);
  const model = new GPT2LMHeadModel(tiny()).to('float64').eval();
  randomise(model, 0.3);
  // Ids spelled as numbers: a stand-in tokenizer, since generation only needs encode/decode/eos.
  const tok: Tokenizer = {
    bosId: 0, eosId: 52, vocabSize: 53,
    encode: (s: string) => s.split(' ').map(Number),
    decode: (ids: number[]) => ids.join(' '),
  } as unknown as Tokenizer;
  const prompt = [1, 5, 9];
  const g = generate(model, tok, prompt, { maxNewTokens: 8, stopTokens: [] });
  // The same continuation by re-running the whole sequence for every token.
  const seq = [...prompt];
  torch.noGrad(() => {
    for (let i = 0; i < g.ids.length; i++) {
      const next = torch.tidy(() => model.forward(torch.tensor([seq])).i(0, -1).argmax().item());
      seq.push(next);
    }
  });
  assert.ok(g.ids.length > 0);
  assert.deepEqual(g.ids, seq.slice(prompt.length));
  model.dispose();
});

test('GPT-2: a Hugging Face checkpoint layout loads (no transformer. prefix, mask buffers, lm_head omitted)', () => {
  torch.manualSeed(1);
  const src = new GPT2LMHeadModel(tiny());
  randomise(src, 0.1);
  const hf = new Map<string, torch.Tensor>();
  for (const [k, v] of src.stateDict()) if (k !== 'lm_head.weight') hf.set(k.replace(/^transformer\./, ''), v);
  // Older transformers saved each layer's causal mask; the model computes it and must ignore these.
  hf.set('h.0.attn.bias', torch.ones([1, 1, 16, 16]).tril());
  hf.set('h.0.attn.masked_bias', torch.tensor(-1e4));
  assert.ok(hf.has('h.1.attn.c_attn.weight'));
  assert.deepEqual(hf.get('h.1.attn.c_attn.weight')!.shape, [32, 96], 'Conv1D weight is [in, out]');
  const dst = new GPT2LMHeadModel(tiny());
  loadWeights(dst, gpt2CheckpointKeys(hf));
  torch.noGrad(() => torch.tidy(() => {
    const ids = torch.tensor([IDS[0]]);
    assertTensorClose(dst.eval().forward(ids), src.eval().forward(ids), { rtol: 0, atol: 0, msg: 'same logits' });
    assert.ok(dst.lm_head.weight === dst.transformer.wte.weight, 'head stays tied');
  }));
  src.dispose();
  dst.dispose();
});

test('GPT-2: loadStateDict names the key of a wrong shape; bad configs name the field', () => {
  const model = new GPT2LMHeadModel(tiny());
  const sd = model.stateDict();
  sd.set('transformer.h.1.mlp.c_fc.weight', torch.zeros([128, 32])); // transposed: nn.Linear's layout
  assert.throws(() => model.loadStateDict(sd), /size mismatch for transformer\.h\.1\.mlp\.c_fc\.weight: copying a param with shape \[128, 32\] from checkpoint, the shape in current model is \[32, 128\]/);
  sd.delete('transformer.ln_f.bias');
  assert.throws(() => model.loadStateDict(sd), /Missing key\(s\) in state_dict: "transformer\.ln_f\.bias"/);
  model.dispose();
  assert.throws(() => new GPT2LMHeadModel(tiny({ n_embd: 30 })), /n_embd \(30\) must divide by n_head \(4\)/);
  assert.throws(() => new GPT2LMHeadModel(tiny({ activation_function: 'swish' as 'relu' })), /activation_function 'swish' is not supported/);
});
