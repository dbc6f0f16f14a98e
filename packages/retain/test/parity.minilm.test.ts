// all-MiniLM-L6-v2, a real pretrained BERT-family encoder brought by scripts/models.py, against sentence-transformers
// in the reference environment (bench/parity/real_models.ts): the same token ids (WordPiece, [CLS]/[SEP], the cut to
// max_seq_length), and embeddings and cosine similarities of SICK pairs within 1e-5, in padded batches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needRefenv } from '../../../bench/refenv.js';
import { minilmParity, needMinilm } from '../../../bench/parity/real_models.js';

const skip = needRefenv('sentence_transformers') || needMinilm();

test('all-MiniLM-L6-v2: token ids equal, embeddings and SICK pair cosines within 1e-5 of sentence-transformers', { skip, timeout: 600_000 }, async () => {
  const r = await minilmParity(64, 16);
  assert.equal(r.texts, 129);
  assert.equal(r.id_mismatches, 0);
  // The long text is cut to max_seq_length (256) on both sides.
  assert.deepEqual(r.longest, [256, 256]);
  assert.equal(r.parameters, 22_713_216);
  assert.ok(r.max_embedding_diff <= 1e-5, `embeddings differ by ${r.max_embedding_diff}`);
  assert.ok(r.max_cosine_diff <= 1e-5, `cosines differ by ${r.max_cosine_diff}`);
  // Spearman with ties (SICK scores repeat) as scipy.stats.spearmanr computes it, on the same cosines.
  assert.ok(Math.abs(r.spearman[0] - r.spearman[1]) < 1e-12, `Spearman ${r.spearman[0]} vs scipy's ${r.spearman[1]}`);
  // Related and unrelated pairs: a model that mapped every text to one point would match nothing here.
  assert.ok(r.cosine_range[0] < 0.4 && r.cosine_range[1] > 0.95, `reference cosines span only ${r.cosine_range}`);
});
