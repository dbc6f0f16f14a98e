// Activation checkpointing per decoder layer (train/checkpointing.ts): the trainer's weights equal the plain run's for
// every layer, a list and every k-th layer, with dropout (the RNG replays in the recomputation), GQA, Gemma's masks
// and the chunked loss; resume is bit-identical; the peak memory of a step falls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LlamaForCausalLM } from '../src/models/llama.js';
import { GPT2LMHeadModel } from '../src/models/gpt2.js';
import { Gemma2ForCausalLM } from '../src/models/gemma2.js';
import { train, type TrainOptions } from '../src/train/trainer.js';
import { checkpointedLayers, type CheckpointingSetting } from '../src/train/checkpointing.js';
import type { TrainableModel } from '../src/train/hooks.js';
import { Flow } from '../src/methods/flow.js';
import { constant, tokenExamples } from './methods-a.fixtures.js';
import { measureStep, type MemoryCase } from './memory.child.js';
import { needShared, sharedPath } from './helpers.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

const V = 64;
const MODELS: Record<string, () => TrainableModel> = {
  llama: () => (torch.manualSeed(1), new LlamaForCausalLM({ model_type: 'llama', vocab_size: V, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 32, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false })),
  'gpt2 with dropout 0.2': () => (torch.manualSeed(2), new GPT2LMHeadModel({ model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 16, n_layer: 3, n_head: 2, resid_pdrop: 0.2, embd_pdrop: 0.2, attn_pdrop: 0.2 } as never)),
  gemma2: () => (torch.manualSeed(3), new Gemma2ForCausalLM({ model_type: 'gemma2', vocab_size: V, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 3, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8, query_pre_attn_scalar: 8, sliding_window: 4, max_position_embeddings: 32, final_logit_softcapping: 3, attn_logit_softcapping: 5 } as never)),
};

async function weights(make: () => TrainableModel, o: Partial<TrainOptions>): Promise<number[]> {
  const model = make();
  model.train();
  await train({ model, optimizer: { kind: 'sgd' }, examples: tokenExamples(16, 5), batchSize: 4, gradAccum: 2, maxSteps: 3, schedule: constant(0.5), seed: 7, progress: false, clipGradNorm: null, ...o });
  const w = model.parameters().flatMap((p: Tensor) => p.flatten().toArray() as number[]);
  return w;
}

function maxDiff(a: number[], b: number[]): number {
  assert.equal(a.length, b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

test('checkpointed layers: which the settings select, and the error for a layer that does not exist', () => {
  assert.deepEqual(checkpointedLayers(true, 4), [0, 1, 2, 3]);
  assert.deepEqual(checkpointedLayers([3, 1, 1], 4), [1, 3]);
  assert.deepEqual(checkpointedLayers({ every: 2 }, 5), [0, 2, 4]);
  assert.throws(() => checkpointedLayers([4], 4), { message: 'training.gradient_checkpointing: layer 4 does not exist; the model has layers 0..3' });
});

for (const [name, make] of Object.entries(MODELS)) {
  test(`gradient checkpointing, ${name}: 3 SGD steps give the plain run's weights (all, a list, every 2nd; with the chunked loss; with FLOW)`, async () => {
    const plain = await weights(make, {});
    const cases: [string, Partial<TrainOptions>][] = [
      ['all', { gradientCheckpointing: true }],
      ['[1]', { gradientCheckpointing: [1] }],
      ['every 2', { gradientCheckpointing: { every: 2 } }],
      ['all + loss_chunk 5', { gradientCheckpointing: true, lossChunk: 5 }],
    ];
    const report: string[] = [];
    for (const [label, o] of cases) {
      const d = maxDiff(plain, await weights(make, o));
      report.push(`${label} ${d.toExponential(2)}`);
      assert.ok(d < 1e-6, `${label}: weights differ from the plain run's by ${d}`);
    }
    const flow = (s: CheckpointingSetting | undefined) => weights(make, { gradientCheckpointing: s, methods: [new Flow({ batch_size: 4 })] });
    const dFlow = maxDiff(await flow(undefined), await flow(true));
    assert.ok(dFlow < 1e-6, `FLOW: weights differ by ${dFlow}`);
    console.log(`${name}: checkpointed vs plain weights after 3 steps: ${report.join(', ')}, FLOW ${dFlow.toExponential(2)}`);
  });
}

test('gradient checkpointing resumes bit-identically (GPT-2 with dropout: the RNG state is the plain run\'s after each step)', async () => {
  const make = MODELS['gpt2 with dropout 0.2'];
  const dirs = [mkdtempSync(join(tmpdir(), 'retain-ckpt-a-')), mkdtempSync(join(tmpdir(), 'retain-ckpt-b-'))];
  try {
    const whole = await weights(make, { gradientCheckpointing: true, outputDir: dirs[0], saveEvery: 2, resume: true, maxSteps: 4 });
    await weights(make, { gradientCheckpointing: true, outputDir: dirs[1], saveEvery: 2, resume: true, maxSteps: 2 });
    const resumed = await weights(make, { gradientCheckpointing: true, outputDir: dirs[1], saveEvery: 2, resume: true, maxSteps: 4 });
    assert.deepEqual(resumed, whole);
    const plain = await weights(make, { maxSteps: 4 });
    assert.ok(maxDiff(plain, whole) < 1e-6, 'the checkpointed run is the plain run');
  } finally {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
});

const peakMiB = (c: Record<string, unknown>) => measureStep(c as unknown as MemoryCase);

test('peak memory of one step of a 12-layer model: checkpointing every layer cuts it (RSS high-water mark in a child)', () => {
  const shape = { vocab: 256, hidden: 128, layers: 12, heads: 4, intermediate: 512, batch: 4, seq: 256 };
  const plain = peakMiB(shape);
  const every = peakMiB({ ...shape, options: { gradientCheckpointing: true } });
  const half = peakMiB({ ...shape, options: { gradientCheckpointing: { every: 2 } } });
  console.log(`peak growth of one step, 12 layers, C=128, 4×256 tokens: plain ${plain.peakMiB.toFixed(1)} MiB, every 2nd layer ${half.peakMiB.toFixed(1)} MiB, every layer ${every.peakMiB.toFixed(1)} MiB`);
  assert.ok(Math.abs(plain.loss - every.loss) < 1e-5);
  assert.ok(every.peakMiB < half.peakMiB && half.peakMiB < plain.peakMiB, 'more checkpointed layers, less memory');
  assert.ok(plain.peakMiB > 3 * every.peakMiB, `plain ${plain.peakMiB} MiB vs checkpointed ${every.peakMiB} MiB`);
});

test('retain train on stories260K with gradient_checkpointing and loss_chunk: the losses of the plain run; config errors name the key', { skip: needShared('models', 'stories260K', 'stories260K.bin') }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-ckpt-cli-'));
  try {
    const rows = Array.from({ length: 12 }, (_, i) => ({ prompt: `Tom had ${i % 7} apples.`, completion: ` Now he has ${i % 5}.` }));
    writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
    const run = (name: string, training: Record<string, unknown>) => {
      const cfg = {
        model: { path: sharedPath('models', 'stories260K', 'stories260K.bin') },
        data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 48 } },
        training: { max_steps: 3, batch_size: 4, lr: 0.002, seed: 1, threads: 1, ...training },
        output_dir: name,
      };
      writeFileSync(join(dir, `${name}.yaml`), JSON.stringify(cfg));
      const r = spawnSync(process.execPath, [CLI, 'train', `${name}.yaml`], { encoding: 'utf8', cwd: dir, timeout: 120_000 });
      const losses = r.status === 0 ? readFileSync(join(dir, name, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss as number) : [];
      return { ...r, losses };
    };
    const plain = run('plain', {});
    assert.equal(plain.status, 0, plain.stderr);
    const both = run('both', { gradient_checkpointing: { every: 2 }, loss_chunk: 7 });
    assert.equal(both.status, 0, both.stderr);
    assert.equal(both.losses.length, 3);
    both.losses.forEach((l, i) => assert.ok(Math.abs(l - plain.losses[i]) < 1e-5, `step ${i + 1}: ${l} vs ${plain.losses[i]}`));
    const bad = run('bad', { gradient_checkpointing: [7] });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /training\.gradient_checkpointing: layer 7 does not exist; the model has layers 0\.\.4/);
    const typo = run('typo', { gradient_checkpointing: 'yes' });
    assert.equal(typo.status, 1);
    assert.match(typo.stderr, /training\.gradient_checkpointing: expected true \(every decoder layer\), a list of layer indices such as \[0, 2, 4\], or \{every: k\}/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
