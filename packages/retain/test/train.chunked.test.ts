// Chunked cross-entropy (train/chunked.ts): the same per-sample losses and the same gradients as the plain loss,
// under any weighting of the sums (FLOW weights, the step's token count), for Llama, tied GPT-2 and soft-capped
// Gemma 2; the same training run through the trainer with FLOW and mixing; and a lower peak memory on a 32K vocabulary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { collate } from '../src/data/loader.js';
import { LlamaForCausalLM } from '../src/models/llama.js';
import { GPT2LMHeadModel } from '../src/models/gpt2.js';
import { Gemma2ForCausalLM } from '../src/models/gemma2.js';
import { causalLmLoss, train } from '../src/train/trainer.js';
import { chunkedLoss, chunkPositions, AUTO_CHUNK_ABOVE, AUTO_CHUNK_ELEMENTS } from '../src/train/chunked.js';
import type { TrainableModel } from '../src/train/hooks.js';
import { Flow } from '../src/methods/flow.js';
import { Mixing } from '../src/methods/mixing.js';
import { constant, tokenExamples } from './methods-a.fixtures.js';
import { measureStep, type MemoryCase } from './memory.child.js';

const V = 64;
function models(): [string, () => TrainableModel][] {
  return [
    ['llama', () => (torch.manualSeed(1), new LlamaForCausalLM({ model_type: 'llama', vocab_size: V, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, max_position_embeddings: 32, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false }))],
    ['gpt2 (tied head)', () => (torch.manualSeed(2), new GPT2LMHeadModel({ model_type: 'gpt2', vocab_size: V, n_positions: 32, n_embd: 16, n_layer: 2, n_head: 2, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 } as never))],
    ['gemma2 (soft-capped, tied)', () => (torch.manualSeed(3), new Gemma2ForCausalLM({ model_type: 'gemma2', vocab_size: V, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8, query_pre_attn_scalar: 8, sliding_window: 4, max_position_embeddings: 32, final_logit_softcapping: 3, attn_logit_softcapping: 5 } as never))],
  ];
}

/** d(Σ u_b·sums_b + penalty)/dθ for every parameter, through the given loss. */
function grads(model: TrainableModel, loss: ReturnType<typeof chunkedLoss>, u: number[]): { sums: number[]; g: Map<string, number[]> } {
  const b = collate(tokenExamples(5, 11));
  for (const p of model.parameters()) p.grad = null;
  const sl = loss(model, b);
  const total = sl.sums.mul(torch.tensor(u)).sum();
  total.backward();
  sl.completeBackward?.();
  const g = new Map(model.namedParameters().map(([n, p]) => [n, p.grad ? (p.grad.flatten().toArray() as number[]) : []]));
  return { sums: sl.sums.toArray() as number[], g };
}

/** Largest difference, relative where |b| > 1 (the float32 rounding of a sum of 20 nats is ~2e-6). */
function maxDiff(a: number[], b: number[]): number {
  assert.equal(a.length, b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]) / Math.max(1, Math.abs(b[i]))), 0);
}

for (const [name, make] of models()) {
  test(`chunked cross-entropy, ${name}: per-sample sums and weighted gradients equal the plain loss's (1e-6)`, () => {
    const model = make();
    model.train();
    const u = [0.3, 0, 1.7, 0.05, 1];
    const plain = grads(model, causalLmLoss, u);
    let worstAll = 0;
    for (const chunk of [1, 7, 16]) {
      const chunked = grads(model, chunkedLoss(causalLmLoss, chunk), u);
      assert.ok(maxDiff(plain.sums, chunked.sums) < 1e-6, `chunk ${chunk}: sums ${chunked.sums} vs ${plain.sums}`);
      let worst = 0;
      for (const [n, g] of plain.g) {
        assert.ok(g.length > 0, `${n} has no gradient`);
        // Relative to the tensor's largest gradient where that exceeds 1 (Gemma's ×4 embedding scale: ~10).
        const c = chunked.g.get(n)!;
        const scale = Math.max(1, ...g.map(Math.abs));
        worst = Math.max(worst, g.reduce((m, x, i) => Math.max(m, Math.abs(x - c[i])), 0) / scale);
      }
      assert.ok(worst < 1e-6, `chunk ${chunk}: gradients differ by ${worst}`);
      worstAll = Math.max(worstAll, worst);
    }
    console.log(`${name}: chunked vs plain gradients differ by at most ${worstAll.toExponential(2)}`);
    // Without grad it only computes the values, and defers nothing.
    const b = collate(tokenExamples(3, 4));
    const sl = torch.noGrad(() => chunkedLoss(causalLmLoss, 4)(model, b));
    assert.equal(sl.completeBackward, undefined);
    assert.ok(maxDiff(sl.sums.toArray() as number[], torch.noGrad(() => causalLmLoss(model, b)).sums.toArray() as number[]) < 1e-6);
  });
}

test('loss_chunk settings: a number chunks when the batch has more positions, auto only above the logits threshold, off never', () => {
  assert.equal(chunkPositions(8, 2, 16, 100), 8);
  assert.equal(chunkPositions(32, 2, 16, 100), null);
  assert.equal(chunkPositions('off', 64, 8192, 128256), null);
  assert.equal(chunkPositions('auto', 8, 512, 32000), null); // 131M logits: below 2^27
  assert.ok(8 * 512 * 32000 <= AUTO_CHUNK_ABOVE);
  // Llama 3 at 8K tokens: 1.05G logits, chunks of 261 positions (each chunk ≤ 2^25 logits).
  assert.equal(chunkPositions('auto', 1, 8192, 128256), Math.floor(AUTO_CHUNK_ELEMENTS / 128256));
});

async function run(lossChunk: 'off' | number, methods: () => unknown[]): Promise<number[]> {
  const [, make] = models()[0];
  const model = make();
  // SGD: AdamW would magnify rounding where a gradient is ~0.
  await train({
    model, optimizer: { kind: 'sgd' }, examples: tokenExamples(16, 5), batchSize: 4, gradAccum: 2, maxSteps: 3, schedule: constant(0.5), seed: 7,
    progress: false, lossChunk, methods: methods() as never,
  });
  const w = model.parameters().flatMap((p: Tensor) => p.flatten().toArray() as number[]);
  return w;
}

test('the trainer with loss_chunk gives the plain run\'s weights under FLOW weights and mixing (1e-6)', async () => {
  const flowPlain = await run('off', () => [new Flow({ batch_size: 4 })]);
  const flowChunked = await run(5, () => [new Flow({ batch_size: 4 })]);
  const d1 = maxDiff(flowPlain, flowChunked);
  assert.ok(d1 < 1e-6, `FLOW: weights differ by ${d1}`);
  const mix = () => [new Mixing({ ratio: '1:1', general: tokenExamples(12, 9, 'general', 'g') })];
  const mixPlain = await run('off', mix);
  const mixChunked = await run(3, mix);
  const d2 = maxDiff(mixPlain, mixChunked);
  assert.ok(d2 < 1e-6, `mixing: weights differ by ${d2}`);
  console.log(`chunked vs plain weights after 3 SGD steps: FLOW ${d1.toExponential(2)}, mixing ${d2.toExponential(2)}`);
});

const peakMiB = (c: Record<string, unknown>) => measureStep(c as unknown as MemoryCase);

test('peak memory of one training step on a 32K vocabulary: chunked well below plain (RSS high-water mark in a child)', () => {
  const shape = { vocab: 32768, hidden: 64, layers: 2, heads: 4, intermediate: 128, batch: 4, seq: 256 };
  const plain = peakMiB({ ...shape, options: { lossChunk: 'off' } });
  const chunked = peakMiB({ ...shape, options: { lossChunk: 128 } });
  const logitsMiB = (shape.batch * shape.seq * shape.vocab * 4) / 2 ** 20;
  console.log(`peak growth of one step, vocab 32768, 4×256 tokens (float32 logits ${logitsMiB} MiB): plain ${plain.peakMiB.toFixed(1)} MiB, chunked (128 positions) ${chunked.peakMiB.toFixed(1)} MiB`);
  assert.ok(Math.abs(plain.loss - chunked.loss) < 1e-5, `loss ${chunked.loss} vs ${plain.loss}`);
  // The plain step holds the logits, their log-softmax and their gradient (≥ 3 × 128 MiB); the chunked one a 16 MiB chunk.
  assert.ok(plain.peakMiB - chunked.peakMiB > 1.5 * logitsMiB, `plain ${plain.peakMiB} MiB vs chunked ${chunked.peakMiB} MiB`);
});
