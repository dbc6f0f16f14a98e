import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { T5ForConditionalGeneration, relativePositionBucket, type T5Config } from '../src/models/t5.js';
import { loadWeights } from '../src/models/weights.js';
import { needPython, py } from '../../torch/test/helpers.js';
import { REF, assertTensorClose, pyTensors, randomise } from './pyref.js';

function tiny(over: Partial<T5Config> = {}): T5Config {
  return {
    model_type: 't5', vocab_size: 47, d_model: 24, d_kv: 8, d_ff: 40, num_layers: 2, num_decoder_layers: 3, num_heads: 3,
    relative_attention_num_buckets: 8, relative_attention_max_distance: 20, dropout_rate: 0, layer_norm_epsilon: 1e-6,
    feed_forward_proj: 'gated-gelu', tie_word_embeddings: false, decoder_start_token_id: 0, pad_token_id: 0, eos_token_id: 1, ...over,
  };
}

// Row 1 is padded after 9 tokens; labels use -100 for positions that do not count.
const INPUT = [[5, 9, 22, 3, 46, 7, 7, 12, 30, 31, 2, 1], [4, 4, 8, 15, 16, 23, 42, 11, 1, 0, 0, 0]];
const MASK = [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]];
const LABELS = [[6, 13, 2, 40, 9, 1, -100], [17, 3, 3, 1, -100, -100, -100]];

const cases: [string, Partial<T5Config>][] = [
  ['Flan-T5 style: gated-gelu, untied head, deeper decoder', {}],
  ['T5 v1.0 style: relu FFN, tied head rescaled by d_model^-0.5', { feed_forward_proj: 'relu', tie_word_embeddings: true, num_decoder_layers: null }],
];

for (const [name, over] of cases) {
  test(`T5 logits, loss and gradients match python3-torch (bench/py/t5_ref.py): ${name}`, { skip: needPython() }, () => {
    const c = tiny(over);
    torch.manualSeed(17);
    const model = new T5ForConditionalGeneration(c).to('float64');
    randomise(model, 0.3);
    const ref = pyTensors(`
from t5_ref import T5, shift_right
m = T5(inp['c']).double()
m.load_state_dict(W, strict=True)
ids, mask, labels = torch.tensor(inp['ids']), torch.tensor(inp['mask']), torch.tensor(inp['labels'])
logits = m(ids, shift_right(labels), attention_mask=mask)
loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
loss.backward()
OUT['logits'] = logits
OUT['loss'] = loss.reshape(1)
for k, p in m.named_parameters():
    OUT['grad.' + k] = p.grad
`, model.stateDict(), { c, ids: INPUT, mask: MASK, labels: LABELS });
    torch.tidy(() => {
      const ids = torch.tensor(INPUT);
      const mask = torch.tensor(MASK);
      const labels = torch.tensor(LABELS);
      const logits = model.forward(ids, { labels, attentionMask: mask }); // [2, 7, V]
      assertTensorClose(logits, ref.tensors.get('logits'), { rtol: 1e-10, atol: 1e-12, msg: 'logits' });
      const loss = model.loss(ids, labels, { attentionMask: mask });
      assertTensorClose(loss.reshape(1), ref.tensors.get('loss'), { rtol: 1e-12, msg: 'loss' });
      loss.backward();
      const ours = model.namedParameters();
      assert.equal(ours.length, [...ref.tensors.keys()].filter((k) => k.startsWith('grad.')).length, 'same number of trainable tensors');
      for (const [k, p] of ours) assertTensorClose(p.grad!, ref.tensors.get(`grad.${k}`), { rtol: 1e-8, atol: 1e-11, msg: `grad ${k}` });
    });
    model.dispose();
    torch.dispose(ref.tensors.values());
  });
}

test('T5 relative position buckets equal the reference bit for bit (default 32 buckets, distance 128)', { skip: needPython() }, () => {
  const rel = Array.from({ length: 1201 }, (_, i) => i - 600);
  const ref = py(`
sys.path.insert(0, ${JSON.stringify(REF)})
from t5_ref import bucket
r = torch.tensor(inp)
out['bi'] = bucket(r, True, 32, 128)
out['causal'] = bucket(r, False, 32, 128)
`, rel);
  torch.tidy(() => {
    const r = torch.tensor(rel);
    assert.deepEqual(relativePositionBucket(r, true, 32, 128).toArray(), ref.bi);
    assert.deepEqual(relativePositionBucket(r, false, 32, 128).toArray(), ref.causal);
  });
});

test('T5: the decoder cache gives the logits of a full decode; generate() follows the greedy path', () => {
  torch.manualSeed(9);
  const model = new T5ForConditionalGeneration(tiny()).to('float64').eval();
  randomise(model, 0.4);
  torch.noGrad(() => torch.tidy(() => {
    const ids = torch.tensor(INPUT);
    const mask = torch.tensor(MASK);
    const dec = torch.tensor([[0, 6, 13, 2, 40, 9, 1], [0, 17, 3, 3, 1, 5, 5]]);
    const enc = model.encode(ids, mask);
    const full = model.decode(dec, enc, { encoderMask: mask }); // [2, 7, V]
    const cache = model.newCache(enc, 10, mask);
    const a = model.decode(dec.narrow(1, 0, 3), null, { cache }); // prefill 3
    const b = model.decode(dec.narrow(1, 3, 3), null, { cache }); // a chunk of 3 at an offset
    const d = model.decode(dec.narrow(1, 6, 1), null, { cache, lastOnly: true }); // one token
    assert.equal(cache.length, 7);
    assertTensorClose(torch.cat([a, b, d], 1), full, { rtol: 1e-10, atol: 1e-12, msg: 'cached vs full decoder logits' });
    cache.dispose();
  }));
  // Greedy generation with the cache against re-decoding the whole prefix at every step.
  const gen = model.generate(torch.tensor(INPUT), { attentionMask: torch.tensor(MASK), maxNewTokens: 6, eosTokenId: 999 });
  torch.noGrad(() => {
    for (let b = 0; b < 2; b++) {
      const seq = [0];
      torch.tidy(() => {
        const enc = model.encode(torch.tensor([INPUT[b]]), torch.tensor([MASK[b]]));
        for (let s = 0; s < 6; s++) seq.push(model.decode(torch.tensor([seq]), enc, { encoderMask: torch.tensor([MASK[b]]) }).i(0, -1).argmax().item());
      });
      assert.deepEqual(gen[b], seq.slice(1), `row ${b}`);
    }
  });
  // Sampling is reproducible with a seed and stops at EOS.
  const s1 = model.generate(torch.tensor(INPUT), { attentionMask: torch.tensor(MASK), maxNewTokens: 5, temperature: 1, seed: 3 });
  const s2 = model.generate(torch.tensor(INPUT), { attentionMask: torch.tensor(MASK), maxNewTokens: 5, temperature: 1, seed: 3 });
  assert.deepEqual(s1, s2);
  for (const row of s1) assert.ok(!row.includes(1), 'EOS is not part of the output');
  model.dispose();
});

test('T5: tied keys fill a checkpoint without the embed_tokens copies; shape errors name the key', () => {
  const src = new T5ForConditionalGeneration(tiny({ tie_word_embeddings: true }));
  const sd = src.stateDict();
  const keys = [...sd.keys()];
  for (const k of ['shared.weight', 'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight',
    'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight', 'decoder.block.0.layer.1.EncDecAttention.q.weight',
    'decoder.block.2.layer.2.DenseReluDense.wi_0.weight', 'decoder.block.2.layer.2.layer_norm.weight', 'encoder.final_layer_norm.weight']) {
    assert.ok(keys.includes(k), `state dict has ${k}`);
  }
  assert.ok(!keys.includes('encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight'), 'only block 0 has the position bias');
  assert.ok(!keys.some((k) => k.endsWith('layer_norm.bias')), 'T5 layer norms have no bias');
  const ckpt = new Map(sd);
  ckpt.delete('encoder.embed_tokens.weight');
  ckpt.delete('decoder.embed_tokens.weight');
  ckpt.delete('lm_head.weight');
  const dst = new T5ForConditionalGeneration(tiny({ tie_word_embeddings: true }));
  loadWeights(dst, ckpt);
  assert.ok(dst.decoder.embed_tokens.weight === dst.shared.weight && dst.lm_head.weight === dst.shared.weight);
  torch.tidy(() => assert.ok(dst.shared.weight.equal(src.shared.weight)));
  const bad = new Map(sd);
  bad.set('decoder.block.1.layer.1.EncDecAttention.k.weight', torch.zeros([24, 25]));
  assert.throws(() => dst.loadStateDict(bad), /size mismatch for decoder\.block\.1\.layer\.1\.EncDecAttention\.k\.weight/);
  assert.throws(() => new T5ForConditionalGeneration(tiny({ feed_forward_proj: 'gated-swish' })), /feed_forward_proj 'gated-swish' is not supported/);
  src.dispose();
  dst.dispose();
});
