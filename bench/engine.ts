// npm run bench:engine — the engine against Python PyTorch on the same libtorch and thread count, and against TF.js.
// Prints one JSON object:
//   op_overhead_ratio  tiny add, our ns/op ÷ Python's (best of 5 rounds each)             target ≤ 1.0
//   step_ratio         Llama-style training step (d=256, 4 layers, 4 heads, seq 128, batch 16, AdamW), our median
//                      ms ÷ Python's                                                       target ≤ 0.95
//   tfjs_ratio         the same step in TF.js (best backend installable offline) ÷ ours   target ≥ 5
//   step_ratio_torch2_eager / _compile  the same step ÷ transformers' LlamaForCausalLM (sdpa attention) on the
//                      reference environment's PyTorch 2.x, eager and under torch.compile (where it runs); null
//                      without the reference environment. For a same-libtorch comparison run the bench on the 2.x
//                      addon: RETAIN_TORCH_ADDON=packages/torch/build-torch2/Release/retain_torch.node
// Environment: BENCH_THREADS (default 1), BENCH_STEPS (default 6), BENCH_TFJS_STEPS (default 2, 0 skips TF.js),
// BENCH_TFJS_BACKEND (wasm | cpu; default wasm, the faster of the two here), BENCH_TFJS_INSTALL=0 (skip TF.js, naming
// it, rather than install it: it lives in bench/tfjs/, installed there on first use, not by the workspace's npm ci).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';
import * as torch from '@retain/torch';
import { needRefenv, REFENV_PYTHON } from './refenv.js';
import { LlamaForCausalLM, type LlamaConfig } from '../packages/retain/src/models/llama.js';

const threads = Number(process.env.BENCH_THREADS ?? 1);
const steps = Number(process.env.BENCH_STEPS ?? 6);
const tfjsSteps = Number(process.env.BENCH_TFJS_STEPS ?? 2);
const tfjsBackend = process.env.BENCH_TFJS_BACKEND ?? 'wasm';
const PYTHON = process.env.RETAIN_TEST_PYTHON ?? '/usr/bin/python3';

const shape = { vocab_size: 512, dim: 256, n_layers: 4, n_heads: 4, n_kv_heads: 4, hidden_dim: 688, seq_len: 128, batch: 16, eps: 1e-5, rope_theta: 10000 };
const config: LlamaConfig = {
  model_type: 'llama', vocab_size: shape.vocab_size, hidden_size: shape.dim, intermediate_size: shape.hidden_dim,
  num_hidden_layers: shape.n_layers, num_attention_heads: shape.n_heads, num_key_value_heads: shape.n_kv_heads,
  max_position_embeddings: shape.seq_len, rms_norm_eps: shape.eps, rope_theta: shape.rope_theta, tie_word_embeddings: false,
};

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function opOverheadNs(n: number): number {
  const a = torch.ones([1]);
  // Ops run in scopes of 100, the way a loop body in a tidy() runs them.
  const round = (count: number) => {
    for (let i = 0; i < count; i += 100) torch.tidy(() => { for (let j = 0; j < 100; j++) a.add(a); });
  };
  round(10000);
  // CPU time of this process, as the Python peer measures: robust to other load on a shared machine.
  let best = Infinity;
  for (let r = 0; r < 5; r++) {
    const c = process.cpuUsage();
    round(n);
    const d = process.cpuUsage(c);
    best = Math.min(best, ((d.user + d.system) * 1000) / n);
  }
  a.dispose();
  return best;
}

function stepTimesMs(n: number): { ms: number[]; cpu: number[]; loss: number } {
  torch.manualSeed(0);
  const model = new LlamaForCausalLM(config);
  const opt = new torch.optim.AdamW(model.parameters(), { lr: 1e-3, weightDecay: 0.1 });
  const data = torch.randint(0, shape.vocab_size, [shape.batch, shape.seq_len + 1]);
  const x = data.narrow(1, 0, shape.seq_len);
  const y = data.narrow(1, 1, shape.seq_len).reshape(-1);
  const ms: number[] = [];
  const cpu: number[] = [];
  let loss = NaN;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const c = process.cpuUsage();
    torch.tidy(() => {
      const logits = model.forward(x); // [B, T, V]
      const l = torch.crossEntropy(logits.reshape(-1, shape.vocab_size), y);
      l.backward();
      opt.step();
      opt.zeroGrad();
      loss = l.item();
    });
    ms.push(performance.now() - t);
    const d = process.cpuUsage(c);
    cpu.push((d.user + d.system) / 1000);
  }
  torch.dispose([data, x, y]);
  model.dispose();
  return { ms, cpu, loss };
}

function python(cfg: object, interpreter = PYTHON): any {
  const out = execFileSync(interpreter, ['bench/py/engine_peer.py', JSON.stringify(cfg)], { encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  return JSON.parse(out.trim().split('\n').pop()!);
}

/** The step on PyTorch 2.x (the reference environment), eager or compiled: median CPU and wall ms after warm-up. */
function torch2Step(compiled: boolean): { torch: string; median_step_ms: number; median_step_cpu_ms: number; step_ms: number[]; final_loss: number } | { skipped: string } {
  const missing = needRefenv('transformers');
  if (missing) return { skipped: missing };
  try {
    // torch.compile spends its first steps compiling: give it more and drop them.
    const r = python({ threads, steps: compiled ? steps + 2 : steps, model: shape, hf: true, compile: compiled }, REFENV_PYTHON);
    const warm = compiled ? 4 : Math.min(2, steps - 1);
    return { torch: r.torch, median_step_ms: +median(r.step_ms.slice(warm)).toFixed(1), median_step_cpu_ms: +median(r.step_cpu_ms.slice(warm)).toFixed(1), step_ms: r.step_ms.map((v: number) => +v.toFixed(1)), final_loss: r.final_loss };
  } catch (e) {
    return { skipped: `${compiled ? 'torch.compile' : 'eager'} peer failed: ${String((e as Error).message).split('\n').slice(-2).join(' ')}` };
  }
}

async function main() {
  torch.setNumThreads(threads);
  const opN = 200000;
  // Interleave the peers so slow drift of a shared machine hits both alike.
  const pyOp1 = python({ threads, op_n: opN }).op_ns as number;
  const ourOp1 = opOverheadNs(opN);
  const pyOp2 = python({ threads, op_n: opN }).op_ns as number;
  const ourOp2 = opOverheadNs(opN);
  const pyOp = Math.min(pyOp1, pyOp2);
  const ourOp = Math.min(ourOp1, ourOp2);

  const pyStep = python({ threads, steps, model: shape });
  const ours = stepTimesMs(steps);
  // Warm-up steps (allocator, first-touch pages) are excluded from both medians.
  const warm = Math.min(2, steps - 1);
  const pyMs = median((pyStep.step_ms as number[]).slice(warm));
  const ourMs = median(ours.ms.slice(warm));
  // With one thread, CPU time is the robust measure on a shared machine; wall time is reported beside it.
  const pyCpu = median((pyStep.step_cpu_ms as number[]).slice(warm));
  const ourCpu = median(ours.cpu.slice(warm));

  const eager2 = torch2Step(false);
  const compiled2 = torch2Step(true);
  const ratio2 = (p: typeof eager2) => ('skipped' in p ? null : +(threads === 1 ? ourCpu / p.median_step_cpu_ms : ourMs / p.median_step_ms).toFixed(3));

  let tfjs: { backend: string; step_ms: number[]; median_ms: number; loss: number } | { skipped: string } | null = null;
  if (tfjsSteps > 0) {
    const peer = await loadTfjsPeer();
    if ('skipped' in peer) tfjs = peer;
    else {
      const r = await peer.tfjsStepMs(shape, tfjsBackend, tfjsSteps);
      tfjs = { backend: r.backend, step_ms: r.stepMs, median_ms: median(r.stepMs.slice(tfjsSteps > 1 ? 1 : 0)), loss: r.loss };
    }
  }

  const result = {
    benchmark: 'engine',
    machine: { cpus: cpus().length, model: cpus()[0]?.model, threads },
    torch: { ours: torch.torchVersion(), python: pyStep.torch },
    op_overhead_ratio: +(ourOp / pyOp).toFixed(3),
    step_ratio: +((threads === 1 ? ourCpu / pyCpu : ourMs / pyMs)).toFixed(3),
    step_ratio_wall: +(ourMs / pyMs).toFixed(3),
    measure: threads === 1 ? 'process CPU time (one thread), medians after 2 warm-up steps' : 'wall time, medians after 2 warm-up steps',
    step_ratio_torch2_eager: ratio2(eager2),
    step_ratio_torch2_compile: ratio2(compiled2),
    tfjs_ratio: tfjs && 'median_ms' in tfjs ? +(tfjs.median_ms / ourMs).toFixed(2) : null,
    targets: { op_overhead_ratio: '<= 1.0', step_ratio: '<= 0.95', tfjs_ratio: '>= 5' },
    ours: { op_ns: +ourOp.toFixed(1), op_ns_rounds: [ourOp1, ourOp2].map((v) => +v.toFixed(1)), step_ms: ours.ms.map((v) => +v.toFixed(1)), median_step_ms: +ourMs.toFixed(1), median_step_cpu_ms: +ourCpu.toFixed(1), final_loss: ours.loss },
    python: { op_ns: +pyOp.toFixed(1), op_ns_rounds: [pyOp1, pyOp2].map((v) => +v.toFixed(1)), step_ms: (pyStep.step_ms as number[]).map((v) => +v.toFixed(1)), median_step_ms: +pyMs.toFixed(1), median_step_cpu_ms: +pyCpu.toFixed(1), final_loss: pyStep.final_loss },
    torch2_eager: eager2,
    torch2_compile: compiled2,
    tfjs,
    model: shape,
  };
  console.log(JSON.stringify(result, null, 2));
}

interface TfjsPeer {
  tfjsStepMs(c: typeof shape, backend: string, steps: number): Promise<{ stepMs: number[]; backend: string; loss: number }>;
}

/** bench/tfjs/llama.ts with TF.js installed beside it (on first use), or why it is skipped. */
async function loadTfjsPeer(): Promise<TfjsPeer | { skipped: string }> {
  const dir = new URL('./tfjs/', import.meta.url).pathname;
  if (!existsSync(join(dir, 'node_modules', '@tensorflow', 'tfjs'))) {
    const how = `npm install --prefix ${dir} (or BENCH_TFJS_STEPS=0)`;
    if (process.env.BENCH_TFJS_INSTALL === '0') return { skipped: `TF.js is not installed in ${dir}: ${how}` };
    console.error(`bench: installing TF.js 4.22 into ${dir} (once, about 286 MB)`);
    const r = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--no-package-lock'], { cwd: dir, stdio: ['ignore', 2, 2] });
    if (r.status !== 0) return { skipped: `TF.js could not be installed in ${dir} (npm install: ${r.error?.message ?? `status ${r.status}`}); ${how}` };
  }
  // A specifier the type checker does not follow: the peer is checked by bench/tfjs/tsconfig.json once TF.js is there.
  const peer = './tfjs/llama.js';
  return (await import(peer)) as TfjsPeer;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
