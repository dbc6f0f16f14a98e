// npm run bench:train — tokens/s of retain's training loop against PyTorch eager in Python doing the same job in the
// same run: the same model shape (stories260K's, and the d=256 Llama), the same batches in the same order, AdamW,
// cosine schedule with warm-up, gradient clipping. Prints one JSON object; ratio = our median step time ÷ theirs
// (target ≤ 0.95). Both start from random weights: the work per step does not depend on the values.
// With the reference environment (scripts/refenv.sh) the same job also runs on its PyTorch 2.x, eager and under
// torch.compile: ratio_torch2_eager and ratio_torch2_compile (median step after the compile steps).
// Environment: BENCH_THREADS (1), BENCH_STEPS (12), TRAIN_BENCH_ONLY=stories|llama256, BENCH_COMPILE=0 skips compile.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../packages/retain/src/models/llama.js';
import { Llama2cTokenizer } from '../packages/retain/src/tokenizers/llama2c.js';
import { readText } from '../packages/retain/src/data/readers.js';
import { pack, toExample, type Example } from '../packages/retain/src/data/formats.js';
import { collate, DataLoader } from '../packages/retain/src/data/loader.js';
import { train } from '../packages/retain/src/train/trainer.js';
import { needRefenv, REFENV_PYTHON } from './refenv.js';

const threads = Number(process.env.BENCH_THREADS ?? 1);
const steps = Number(process.env.BENCH_STEPS ?? 12);
const PYTHON = process.env.RETAIN_TEST_PYTHON ?? '/usr/bin/python3';
const shared = new URL('../../shared/', import.meta.url).pathname;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Job { name: string; config: LlamaConfig; examples: Example[]; batch: number }

function jobs(): Job[] {
  const tok = Llama2cTokenizer.fromFile(join(shared, 'models/stories260K/tok512.bin'));
  const recs = readText(join(shared, 'data/text/tinystories_lowercase_sample.txt')).slice(0, 400);
  const docs = recs.map((r) => toExample(r, { type: 'text' }, { tokenizer: tok, source: 'tinystories' }));
  const base = { model_type: 'llama', vocab_size: 512, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false };
  return [
    { name: 'stories260K', batch: 32, examples: pack(docs, 257),
      config: { ...base, hidden_size: 64, intermediate_size: 172, num_hidden_layers: 5, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 512 } },
    { name: 'llama256', batch: 16, examples: pack(docs, 129),
      config: { ...base, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4, max_position_embeddings: 128 } },
  ].filter((j) => !process.env.TRAIN_BENCH_ONLY || j.name.startsWith(process.env.TRAIN_BENCH_ONLY));
}

async function runJob(j: Job) {
  const lr = 1e-3;
  const warmup = 2;
  // The batches our loader will draw, in order, for the Python peer.
  const loader = new DataLoader(j.examples.length, j.batch, 0);
  const batches: [number[][], number[][]][] = [];
  for (let s = 0; s < steps; s++) {
    const b = collate(loader.next().indices.map((i) => j.examples[i]));
    batches.push([b.ids.toArray(), b.targets.toArray()]);
    torch.dispose([b.ids, b.targets]);
  }
  const dir = mkdtempSync(join(tmpdir(), 'retain-bench-'));
  const jobFile = join(dir, 'job.json');
  const c = j.config;
  writeFileSync(jobFile, JSON.stringify({ threads, lr, warmup, steps, batches, model: { vocab_size: c.vocab_size, dim: c.hidden_size, hidden_dim: c.intermediate_size, n_layers: c.num_hidden_layers, n_heads: c.num_attention_heads, n_kv_heads: c.num_key_value_heads, seq_len: c.max_position_embeddings, eps: c.rms_norm_eps, rope_theta: 10000 } }));
  const peer = (python: string, compile = false) => {
    if (compile) writeFileSync(jobFile, JSON.stringify({ ...JSON.parse(readFileSync(jobFile, 'utf8')), compile: true, steps: steps + 2 }));
    return JSON.parse(execFileSync(python, ['bench/py/train_peer.py', jobFile], { encoding: 'utf8', maxBuffer: 1 << 28 }).trim().split('\n').pop()!);
  };
  const py = peer(PYTHON);
  const refMissing = needRefenv();
  const py2 = refMissing ? null : peer(REFENV_PYTHON);
  let py2c: { step_ms: number[] } | { skipped: string } | null = null;
  if (!refMissing && process.env.BENCH_COMPILE !== '0') {
    try {
      py2c = peer(REFENV_PYTHON, true);
    } catch (e) {
      py2c = { skipped: `torch.compile failed: ${String((e as Error).message).split('\n').slice(-2).join(' ')}` };
    }
  }
  torch.manualSeed(0);
  const model = new LlamaForCausalLM(j.config);
  const r = await train({ model, optimizer: { kind: 'adamw', weightDecay: 0 }, examples: j.examples, batchSize: j.batch, maxSteps: steps, schedule: { kind: 'cosine', lr, warmupSteps: warmup }, clipGradNorm: 1.0, seed: 0, progress: false });
  const ourMs = r.history.map((h) => h.step_ms as number);
  const tokensPerStep = batches.map(([, tg]) => tg.flat().filter((t) => t !== -100).length);
  const skip = Math.min(2, steps - 1);
  const ours = median(ourMs.slice(skip));
  const theirs = median((py.step_ms as number[]).slice(skip));
  const theirs2 = py2 ? median((py2.step_ms as number[]).slice(skip)) : null;
  // The compiled peer ran 2 extra steps; its first 4 (compilation) are left out.
  const theirs2c = py2c && 'step_ms' in py2c ? median(py2c.step_ms.slice(4)) : null;
  const tok = median(tokensPerStep);
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
  return {
    ratio: +(ours / theirs).toFixed(3),
    ratio_torch2_eager: theirs2 ? +(ours / theirs2).toFixed(3) : null,
    ratio_torch2_compile: theirs2c ? +(ours / theirs2c).toFixed(3) : null,
    torch2: refMissing ? { skipped: refMissing } : { torch: py2.torch, eager_median_step_ms: +theirs2!.toFixed(2), compile_median_step_ms: theirs2c ? +theirs2c.toFixed(2) : null, compile: py2c && 'skipped' in py2c ? py2c.skipped : undefined },
    ours: { median_step_ms: +ours.toFixed(2), tokens_per_s: Math.round((tok / ours) * 1000), step_ms: ourMs.map((v) => +v.toFixed(1)), losses: r.history.map((h) => h.loss) },
    python: { median_step_ms: +theirs.toFixed(2), tokens_per_s: Math.round((tok / theirs) * 1000), step_ms: (py.step_ms as number[]).map((v) => +v.toFixed(1)), losses: (py.losses as number[]).map((v) => +v.toFixed(6)) },
    batch: j.batch, tokens_per_step: tok,
  };
}

async function main() {
  if (!existsSync(shared)) throw new Error(`bench:train needs ${shared} (the shared data and models)`);
  torch.setNumThreads(threads);
  const results: Record<string, unknown> = {};
  for (const j of jobs()) results[j.name] = await runJob(j);
  console.log(JSON.stringify({ benchmark: 'train', machine: { cpus: cpus().length, model: cpus()[0]?.model, threads }, torch: torch.torchVersion(), steps, target: 'ratio <= 0.95', ...results }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
