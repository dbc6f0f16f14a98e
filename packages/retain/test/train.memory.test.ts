// The memory prediction (train/memory.ts, `retain inspect --memory`): Llama 3.2 1B's parameter count as published,
// the parts of a prediction, one shape against its measured peak (bench:memory does three), and the CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { predictMemory } from '../src/train/memory.js';
import { caseConfig, measureStep, type MemoryCase } from './memory.child.js';
import { needShared, sharedPath } from './helpers.js';

const LLAMA_3_2_1B = {
  model_type: 'llama', vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32,
  num_key_value_heads: 8, head_dim: 64, tie_word_embeddings: true,
};
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

test('Llama 3.2 1B: 1,235,814,400 parameters; bf16 halves weights and activations, keeps 12 bytes of AdamW state per parameter; checkpointing and loss chunks shrink activations', () => {
  const full = predictMemory(LLAMA_3_2_1B, { batch: 1, seq: 2048 });
  assert.equal(full.parameters, 1_235_814_400);
  assert.equal(full.weights, 4 * full.parameters);
  assert.equal(full.optimizer, 8 * full.parameters);
  const bf16 = predictMemory(LLAMA_3_2_1B, { batch: 1, seq: 2048, precision: 'bf16' });
  assert.equal(bf16.weights, 2 * full.parameters);
  assert.equal(bf16.optimizer, 12 * full.parameters);
  assert.equal(bf16.activations, full.activations / 2);
  const lean = predictMemory(LLAMA_3_2_1B, { batch: 1, seq: 2048, checkpointing: true, lossChunk: 256 });
  assert.ok(lean.activations < full.activations / 8, `${lean.activations} vs ${full.activations}`);
  const lora = predictMemory(LLAMA_3_2_1B, { batch: 1, seq: 2048, method: 'lora', loraRank: 8 });
  assert.ok(lora.trainable < full.parameters / 100 && lora.optimizer === lora.trainable * 8);
  assert.throws(() => predictMemory({ model_type: 't5', d_model: 512 }, { batch: 1, seq: 8 }), /model_type 't5' has none/);
});

test('prediction within 15% of the measured peak of a 4-layer training step, plain and checkpointed (RSS high-water mark in a child)', () => {
  const s: MemoryCase = { vocab: 4096, hidden: 256, layers: 4, heads: 4, intermediate: 688, batch: 4, seq: 256 };
  for (const checkpointing of [false, true]) {
    const measured = measureStep({ ...s, measure: 'total', options: { gradientCheckpointing: checkpointing, lossChunk: 'off' } }).peakMiB;
    const predicted = predictMemory(caseConfig(s) as never, { batch: s.batch, seq: s.seq, checkpointing }).peak / 2 ** 20;
    console.log(`checkpointing ${checkpointing}: measured ${measured.toFixed(1)} MiB, predicted ${predicted.toFixed(1)} MiB`);
    assert.ok(Math.abs(predicted - measured) < 0.15 * measured, `predicted ${predicted} MiB, measured ${measured} MiB`);
  }
});

test('retain inspect --memory on stories260K: the parts, JSON with the model\'s own parameter count; a bad --method is named', { skip: needShared('models', 'stories260K', 'stories260K.bin') }, () => {
  const model = sharedPath('models', 'stories260K', 'stories260K.bin');
  const r = spawnSync(process.execPath, [CLI, 'inspect', model, '--memory', '--batch', '4', '--seq', '256', '--json'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.parameters, 260_032);
  assert.equal(j.peak, Math.max(j.weights + j.gradients + j.activations, j.weights + j.gradients + j.optimizer + 4 * j.trainable));
  const text = spawnSync(process.execPath, [CLI, 'inspect', model, '--memory', '--checkpointing', '--precision', 'bf16'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /one full training step, batch 1 × 512 tokens, bf16, every layer checkpointed/);
  assert.match(text.stdout, /peak +[\d.]+ MiB/);
  const bad = spawnSync(process.execPath, [CLI, 'inspect', model, '--memory', '--method', 'qlora'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(bad.status, 1);
  assert.equal(bad.stderr.trim(), "retain: --method 'qlora' is not one of full, lora");
});
