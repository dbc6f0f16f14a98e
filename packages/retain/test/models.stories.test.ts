import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import { readLlama2c } from '../src/models/llama2c.js';
import { LlamaForCausalLM } from '../src/models/llama.js';
import { generate } from '../src/models/generate.js';
import { loadWeights } from '../src/models/weights.js';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';
import { needShared, sharedPath } from './helpers.js';

const skip = needShared('models', 'stories260K', 'stories260K.bin');

test('stories260K: greedy text from BOS equals the published opening', { skip }, () => {
  const { config, weights } = readLlama2c(sharedPath('models', 'stories260K', 'stories260K.bin'));
  assert.equal(config.hidden_size, 64);
  assert.equal(config.num_hidden_layers, 5);
  assert.equal(config.num_attention_heads, 8);
  assert.equal(config.num_key_value_heads, 4);
  assert.equal(config.intermediate_size, 172);
  assert.equal(config.vocab_size, 512);
  const model = new LlamaForCausalLM(config);
  loadWeights(model, weights);
  torch.dispose(weights.values());
  const tok = Llama2cTokenizer.fromFile(sharedPath('models', 'stories260K', 'tok512.bin'));
  const g = generate(model, tok, '', { maxNewTokens: 40 });
  assert.ok(
    g.text.startsWith('Once upon a time, there was a little girl named Lily. She loved to play outside in the park.'),
    `got: ${g.text}`,
  );
  model.dispose();
});

test('stories260K: tokenizer round trip and byte fallback', { skip }, () => {
  const tok = Llama2cTokenizer.fromFile(sharedPath('models', 'stories260K', 'tok512.bin'));
  const text = 'Once upon a time, there was a little girl named Lily.';
  const ids = tok.encode(text);
  assert.equal(ids[0], tok.bosId);
  assert.equal(tok.decode(ids), text);
  // Characters outside the 512-token vocabulary fall back to byte tokens and still decode exactly.
  const odd = 'naïve café ☃';
  assert.equal(tok.decode(tok.encode(odd)), odd);
});
