// Data-parallel step time and how much of the gradient all-reduce backward hides (issue #8). A d=256 Llama (4 layers,
// vocab 512, seq 128), global batch 16, AdamW, float32 on CPU with one thread per process, on the same batches:
//   one       1 process, the whole global batch
//   two       2 ranks (Gloo, loopback), each on its half; steps alternate between the two ways of summing gradients,
//             so that both see the same machine load (the shared VM's load drifts between runs):
//               overlap  during backward, by c10d's Reducer (GradReducer: prepare, then backward returns summed)
//               post     after backward (reduceGradients: flatten into buckets, all-reduce, copy back)
// A post step's backward is pure compute and its reduce time is the whole all-reduce on the critical path; an
// overlap step's backward is that compute plus whatever communication it could not hide, so
//   hidden_fraction = 1 − (backward_overlap − backward_post) / reduce_post.
// Prints one JSON object. Usage: npm run bench:dist (BENCH_DIST_STEPS per way, BENCH_DIST_BUCKET_MB; both ways use
// the same bucket size).
import { spawn } from 'node:child_process';
import { cpus } from 'node:os';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../packages/retain/src/models/llama.js';

const STEPS = Number(process.env.BENCH_DIST_STEPS ?? 12);
const WARMUP = 2;
const BUCKET_MB = Number(process.env.BENCH_DIST_BUCKET_MB ?? 2);
const BATCH = 16;
const SEQ = 128;
const CONFIG: LlamaConfig = {
  model_type: 'llama', vocab_size: 512, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 4, max_position_embeddings: SEQ,
};
type Mode = 'one' | 'two';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function worker(): void {
  const mode = process.env.BENCH_DIST_MODE as Mode;
  const rank = Number(process.env.RANK ?? 0);
  const world = Number(process.env.WORLD_SIZE ?? 1);
  torch.setNumThreads(1);
  if (world > 1) torch.distributed.initProcessGroup({ rank, worldSize: world, masterAddr: '127.0.0.1', masterPort: Number(process.env.MASTER_PORT), timeoutMs: 120_000 });
  torch.manualSeed(0);
  const model = new LlamaForCausalLM(CONFIG);
  const params = model.parameters();
  const opt = new torch.optim.AdamW(params, { lr: 1e-3, weightDecay: 0 });
  const bucketBytes = Math.round(BUCKET_MB * 2 ** 20);
  const reducer = world > 1 ? new torch.distributed.GradReducer(params, { bucketBytes }) : null;
  const [lo, hi] = [Math.floor((rank * BATCH) / world), Math.floor(((rank + 1) * BATCH) / world)];
  const t: Record<'step' | 'backward' | 'reduce', number[]>[] = [{ step: [], backward: [], reduce: [] }, { step: [], backward: [], reduce: [] }];
  // One process runs as many steps as the two ranks together, so that all end on the same weights.
  const total = 2 * (STEPS + WARMUP);
  for (let s = 0; s < total; s++) {
    // Even steps sum during backward, odd ones after it (2 ranks); the same global batch on every rank, seeded per
    // step, of which each rank takes its rows.
    const overlap = reducer !== null && s % 2 === 0;
    torch.manualSeed(1000 + s);
    const ids = torch.randint(0, CONFIG.vocab_size, [BATCH, SEQ + 1]);
    const t0 = performance.now();
    let tb = 0;
    let tr = 0;
    torch.tidy(() => {
      for (const p of params) p.grad = null;
      const mine = ids.narrow(0, lo, hi - lo);
      const x = mine.narrow(1, 0, SEQ);
      const y = mine.narrow(1, 1, SEQ);
      const logits = model.forward(x) as Tensor;
      // Σ token losses / tokens of the GLOBAL batch: the ranks' gradients sum to the one-process gradient.
      let loss = torch.crossEntropy(logits.reshape(-1, CONFIG.vocab_size), y.reshape(-1), { reduction: 'sum' }).div(BATCH * SEQ);
      if (overlap) [loss] = reducer!.prepare([loss]);
      const b0 = performance.now();
      loss.backward();
      const b1 = performance.now();
      tb = b1 - b0;
      if (reducer && !overlap) {
        torch.distributed.reduceGradients(params, { bucketBytes });
        tr = performance.now() - b1;
      }
      opt.step();
    });
    ids.dispose();
    const k = world > 1 ? s % 2 : 1;
    if (s >= 2 * WARMUP) {
      t[k].step.push(performance.now() - t0);
      t[k].backward.push(tb);
      t[k].reduce.push(tr);
    }
  }
  // A checksum of the weights, so the report can show that overlap and post train the same model as one process.
  const sum = torch.noGrad(() => params.reduce((a, p) => a + p.to({ dtype: 'float64' }).abs().sum().item(), 0));
  const buckets = reducer?.bucketCount ?? null;
  reducer?.dispose();
  if (world > 1) {
    torch.distributed.barrier();
    torch.distributed.destroyProcessGroup();
  }
  const med = (x: Record<string, number[]>) => ({ step_ms: median(x.step), backward_ms: median(x.backward), reduce_ms: median(x.reduce) });
  process.stdout.write(JSON.stringify({ rank, overlap: world > 1 ? med(t[0]) : null, post: med(t[1]), weight_abs_sum: sum, buckets }) + '\n');
}


type Times = { step_ms: number; backward_ms: number; reduce_ms: number };
type Out = { rank: number; overlap: Times | null; post: Times; weight_abs_sum: number; buckets: number | null };

async function runMode(mode: Mode): Promise<Out[]> {
  const world = mode === 'one' ? 1 : 2;
  const port = await torch.distributed.freePort();
  return Promise.all(Array.from({ length: world }, (_, rank) => new Promise<Out>((res, rej) => {
    const env = { ...process.env, BENCH_DIST_WORKER: '1', BENCH_DIST_MODE: mode, RANK: String(rank), WORLD_SIZE: String(world), MASTER_PORT: String(port), OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
    const p = spawn(process.execPath, [...process.execArgv, new URL(import.meta.url).pathname], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? res(JSON.parse(out.trim().split('\n').pop()!)) : rej(new Error(`${mode} rank ${rank} exited ${code}`))));
  })));
}

async function main(): Promise<void> {
  const [one] = await runMode('one');
  const two = await runMode('two');
  // A step ends when the slower rank's does; backward and reduce are rank 0's.
  const step = (k: 'overlap' | 'post') => Math.max(...two.map((o) => o[k]!.step_ms));
  const ov = two[0].overlap!;
  const post = two[0].post;
  const exposed = ov.backward_ms - post.backward_ms;
  const round = (x: number, d = 2) => +x.toFixed(d);
  console.log(JSON.stringify({
    bench: 'dist',
    model: 'llama d=256, 4 layers, vocab 512, seq 128 (float32, CPU)',
    global_batch: BATCH,
    steps_timed_per_way: STEPS,
    bucket_mb: BUCKET_MB,
    buckets: two[0].buckets,
    cpus: cpus().length,
    threads_per_process: 1,
    step_ms: { one_process: round(one.post.step_ms), two_ranks_overlap: round(step('overlap')), two_ranks_post: round(step('post')) },
    speedup_vs_one_process: { overlap: round(one.post.step_ms / step('overlap'), 3), post: round(one.post.step_ms / step('post'), 3) },
    overlap_vs_post: round(step('post') / step('overlap'), 3),
    backward_ms: { post_compute_only: round(post.backward_ms), overlap_with_allreduce: round(ov.backward_ms) },
    allreduce_ms_post: round(post.reduce_ms),
    exposed_allreduce_ms_overlap: round(exposed),
    hidden_fraction: round(1 - exposed / post.reduce_ms, 3),
    // Both ways train one model (alternating steps), and it must be the one-process model.
    weights_rel_diff_vs_one_process: Math.abs(two[0].weight_abs_sum - one.weight_abs_sum) / one.weight_abs_sum,
    ranks_agree: two.every((o) => o.weight_abs_sum === two[0].weight_abs_sum),
  }));
}

if (process.env.BENCH_DIST_WORKER) worker();
else await main();
