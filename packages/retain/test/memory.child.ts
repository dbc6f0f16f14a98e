// Child process for peak-memory measurements (train.chunked, train.checkpointing, bench/memory.ts): builds a random
// Llama of the given shape, trains one SGD step on B random sequences of T tokens through the real trainer, and prints
// one JSON line with the growth of the resident set's high-water mark (VmHWM, reset after the model and data exist
// by writing 5 to /proc/self/clear_refs) over the resident set at that point: what the step itself allocated.
// A first step on one short sequence initialises the libraries' own buffers (BLAS, thread pools) before the reset.
// Run with MALLOC_MMAP_THRESHOLD_ set (peakMiB below does), so that freed tensors leave the resident set at once
// instead of being kept by malloc for later ones, which would hide their reuse from the high-water mark.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { train, type TrainOptions } from '../src/train/trainer.js';
import type { Example } from '../src/data/formats.js';

export interface MemoryCase {
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  batch: number;
  seq: number;
  /** Extra trainer options (lossChunk, gradientCheckpointing). */
  options?: Partial<TrainOptions>;
  /**
   * 'step' (default): SGD, the growth over the resident set once the model exists (what the step allocates).
   * 'total': AdamW, the growth over the resident set before the model is built (weights, gradients, optimizer state
   * and activations: a training run's peak), after a warm-up step on a separate tiny model.
   */
  measure?: 'step' | 'total';
}

function statusKiB(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : NaN;
}

function resetPeak(): number {
  (globalThis as { gc?: () => void }).gc?.();
  writeFileSync('/proc/self/clear_refs', '5');
  return statusKiB('VmRSS');
}

/** The Llama config of a case (as the memory prediction reads it). */
export function caseConfig(c: MemoryCase): LlamaConfig {
  return {
    model_type: 'llama', vocab_size: c.vocab, hidden_size: c.hidden, intermediate_size: c.intermediate, num_hidden_layers: c.layers,
    num_attention_heads: c.heads, num_key_value_heads: c.heads, max_position_embeddings: c.seq, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  };
}

async function main(c: MemoryCase): Promise<void> {
  torch.setNumThreads(1);
  torch.manualSeed(0);
  if (c.measure === 'total') {
    const tiny: MemoryCase = { vocab: 64, hidden: 16, layers: 1, heads: 2, intermediate: 32, batch: 1, seq: 8, options: c.options };
    await stepOf(tiny, 'adamw');
    const base = resetPeak();
    const r = await stepOf(c, 'adamw');
    process.stdout.write(JSON.stringify({ peakMiB: (statusKiB('VmHWM') - base) / 1024, loss: r.loss, ms: r.ms }) + '\n');
    return;
  }
  const r = await stepOf(c, 'sgd', true);
  process.stdout.write(JSON.stringify({ peakMiB: r.peakMiB, loss: r.loss, ms: r.ms }) + '\n');
}

/** Builds the case's model and data and trains one step; with `warm`, first one step on a short sequence, then measures. */
async function stepOf(c: MemoryCase, opt: 'sgd' | 'adamw', warm = false): Promise<{ loss: number; ms: number; peakMiB: number }> {
  const model = new LlamaForCausalLM(caseConfig(c));
  let s = 1;
  const rand = () => (s = (s * 1103515245 + 12345) % 2 ** 31) % c.vocab;
  const examples: Example[] = Array.from({ length: c.batch }, (_, i) => {
    const ids = Array.from({ length: c.seq + 1 }, rand);
    return { id: `m${i}`, ids, lossMask: ids.map(() => 1), source: 'train' };
  });
  const optimizer = { kind: opt } as const;
  const run = (ex: Example[], batchSize: number) => train({ model, optimizer, examples: ex, batchSize, maxSteps: 1, schedule: { kind: 'constant', lr: 1e-3 }, clipGradNorm: null, progress: false, ...c.options });
  if (warm) await run([{ ...examples[0], ids: examples[0].ids.slice(0, 9), lossMask: examples[0].lossMask.slice(0, 9) }], 1);
  const base = warm ? resetPeak() : 0;
  const t0 = performance.now();
  const r = await run(examples, c.batch);
  const out = { loss: r.finalLoss, ms: performance.now() - t0, peakMiB: (statusKiB('VmHWM') - base) / 1024 };
  model.dispose();
  return out;
}

/** Runs a case in a fresh child process and returns what it printed. */
export function measureStep(c: MemoryCase): { peakMiB: number; loss: number; ms: number } {
  const child = new URL(import.meta.url).pathname;
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', child, JSON.stringify(c)], {
    encoding: 'utf8', timeout: 600_000, env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '2' },
  });
  if (r.status !== 0) throw new Error(`memory child failed (status ${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

if (process.argv[1] === new URL(import.meta.url).pathname) await main(JSON.parse(process.argv[2]) as MemoryCase);
