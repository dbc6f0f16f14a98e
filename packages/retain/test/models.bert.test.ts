// The BERT-family encoder on small random weights: padding never reaches a real token's embedding, a checkpoint with
// the position_ids buffer older transformers versions saved loads, and config errors name the key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { BertModel, type BertConfig } from '../src/models/bert.js';
import { loadPretrained } from '../src/models/hub.js';
import { lengthOrder, meanPool, padBatch, SentenceEncoder } from '../src/models/sentence.js';
import type { Tokenizer } from '../src/tokenizers/types.js';

const tiny = (o: Partial<BertConfig> = {}): BertConfig => ({
  model_type: 'bert', vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 32,
  max_position_embeddings: 24, layer_norm_eps: 1e-12, ...o,
});

test('a text pooled alone and in a padded batch beside a longer one gives the same embedding', () => {
  torch.manualSeed(3);
  const model = new BertModel(tiny()).eval();
  const short = [2, 7, 9, 3];
  const long = [2, 11, 12, 13, 14, 15, 16, 17, 3];
  const pooled = (rows: number[][]) => torch.noGrad(() => {
    const { ids, mask } = padBatch(rows, 0);
    return meanPool(model.forward(ids, { attentionMask: mask }), mask).toArray() as number[][];
  });
  const alone = pooled([short])[0];
  const batched = pooled([short, long])[0];
  const diff = Math.max(...alone.map((v, i) => Math.abs(v - batched[i])));
  assert.ok(diff < 1e-6, `padding moved the short text's embedding by ${diff}`);
  // Without the mask the padded positions do reach it: the check above is not vacuous.
  const { ids } = padBatch([short, long], 0);
  const unmasked = torch.noGrad(() => model.forward(ids).narrow(1, 0, short.length).mean(1).toArray() as number[][])[0];
  assert.ok(Math.max(...alone.map((v, i) => Math.abs(v - unmasked[i]))) > 1e-3);
});

test('encode batches texts longest first and returns each embedding in the order the texts were given', () => {
  torch.manualSeed(5);
  const model = new BertModel(tiny()).eval();
  // One token per word (its length), between [CLS] = 2 and [SEP] = 3.
  const tok = { encode: (t: string) => [2, ...t.split(' ').map((w) => 3 + w.length), 3] } as unknown as Tokenizer;
  const enc = new SentenceEncoder(model, tok, { pooling: 'mean', normalize: true, maxSeqLength: 24 });
  const texts = ['a bb', 'a bb ccc dddd eeeee ffffff', 'a', 'a bb ccc dddd', 'a bb ccc'];
  assert.deepEqual(lengthOrder(texts.map((t) => tok.encode(t))), [1, 3, 4, 0, 2]);
  const together = enc.encode(texts, 2).toArray() as number[][]; // [5, H]
  texts.forEach((t, i) => {
    const alone = (enc.encode([t]).toArray() as number[][])[0];
    const diff = Math.max(...alone.map((v, j) => Math.abs(v - together[i][j])));
    assert.ok(diff < 1e-6, `text ${i} came back ${diff} away from its own embedding`);
  });
});

test('a checkpoint holding embeddings.position_ids loads, with every parameter equal', async () => {
  torch.manualSeed(4);
  const model = new BertModel(tiny());
  const dir = mkdtempSync(join(tmpdir(), 'retain-bert-'));
  try {
    const sd = new Map(model.stateDict());
    sd.set('embeddings.position_ids', torch.arange(0, 24, 1).view(1, 24));
    torch.io.saveSafetensors(join(dir, 'model.safetensors'), sd);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tiny()));
    const p = await loadPretrained(dir);
    for (const [k, t] of model.stateDict()) assert.deepEqual(p.model.stateDict().get(k)!.toArray(), t.toArray(), k);
    assert.ok(!p.model.stateDict().has('embeddings.position_ids'));
    // A config claiming more layers than the weights hold is refused from the safetensors headers, before building.
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tiny({ num_hidden_layers: 100_000 })));
    await assert.rejects(loadPretrained(dir), /config\.json: describes a model of 204,801,472 parameters or more, but the weights in .* hold 5,992 values/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad BERT configs name the key', () => {
  assert.throws(() => new BertModel(tiny({ hidden_size: 18 })), /hidden_size 18 must be a multiple of num_attention_heads 4/);
  assert.throws(() => new BertModel(tiny({ hidden_act: 'swish' as 'gelu' })), /hidden_act 'swish' is not supported; use gelu, gelu_new, relu/);
  assert.throws(() => new BertModel(tiny({ position_embedding_type: 'relative_key' })), /position_embedding_type 'relative_key' is not supported/);
  assert.throws(() => new BertModel(tiny({ num_hidden_layers: 0 })), /num_hidden_layers/);
});
