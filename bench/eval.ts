// npm run bench:eval — multiple-choice scoring throughput (examples/s; an example is one question with all its
// choices) of retain's evaluation harness against PyTorch eager in Python scoring the same token windows with the same
// weights, batch size, threads and batching policy, measured in the same run. Prints one JSON object; per model:
//   ratio       ours examples/s ÷ Python's (higher is better)
//   time_ratio  our median pass time ÷ Python's (lower is better)
//   cpu_ratio, cpu_time_ratio  the same from each process's CPU time (one thread: the work done), which other load on
//               a shared machine does not inflate as it does wall time
//   max_logprob_diff  largest |Δ| between the two sides' summed continuation log-likelihoods (float32: ~1e-4)
// Ours is timed through the harness's multiple-choice path (scoreDocs → loglikelihood), tokenisation included: a
// user of `retain eval` pays for it. Python gets the id windows our encoder produced and is timed from there; the
// share of our time spent tokenising is reported beside the ratio.
// Models: a random-weight Llama (d=256, 4 layers, 4 heads, vocab 512, max length 512, seed 0) and the embedded
// stories260K. Data: ARC-Easy (built-in task arc_easy) when ../shared/data has it, else a synthetic multiple-choice
// set from assets/data/arith.jsonl.
// Environment: BENCH_N (300 questions), BENCH_BATCH (16), BENCH_THREADS (1), BENCH_REPEATS (3), BENCH_WARMUP (1),
// EVAL_BENCH_ONLY=llama256|stories.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../packages/retain/src/models/llama.js';
import { Llama2cTokenizer } from '../packages/retain/src/tokenizers/llama2c.js';
import { causalLmEvalModel, loadEvalModel, type EvalModel } from '../packages/retain/src/eval/model.js';
import { encodeRequest, loglikelihood, type LoglikRequest } from '../packages/retain/src/eval/score.js';
import { loadDocs, scoreDocs } from '../packages/retain/src/eval/harness.js';
import { parseTaskSpec, resolveTasks, type Doc, type TaskSpec } from '../packages/retain/src/eval/tasks.js';

const threads = Number(process.env.BENCH_THREADS ?? 1);
const nQuestions = Number(process.env.BENCH_N ?? 300);
const batchSize = Number(process.env.BENCH_BATCH ?? 16);
const repeats = Number(process.env.BENCH_REPEATS ?? 3);
const warmup = Number(process.env.BENCH_WARMUP ?? 1);
const PYTHON = process.env.RETAIN_TEST_PYTHON ?? '/usr/bin/python3';
const assets = new URL('../packages/retain/assets/', import.meta.url).pathname;

// OpenMP and OpenBLAS read their thread counts when libtorch loads, before any code here runs; at::set_num_threads
// does not govern OpenBLAS. So the process re-runs itself once with both set, as the Python peer is started.
const threadEnv = { OMP_NUM_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
if (process.env.OMP_NUM_THREADS !== threadEnv.OMP_NUM_THREADS || process.env.OPENBLAS_NUM_THREADS !== threadEnv.OPENBLAS_NUM_THREADS) {
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, ...threadEnv } });
  process.exit(r.status ?? 1);
}

const say = (msg: string) => process.stderr.write(`bench:eval: ${msg}\n`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** ARC-Easy through the built-in task, or (without the shared data) arithmetic questions with numeric distractors. */
async function dataset(): Promise<{ name: string; spec: TaskSpec; docs: Doc[] }> {
  try {
    const [t] = resolveTasks(['arc_easy']);
    const { docs } = await loadDocs(t, nQuestions);
    return { name: 'arc_easy', spec: t.spec, docs };
  } catch (e) {
    say(`ARC-Easy unavailable (${(e as Error).message.split('\n')[0]}); using synthetic multiple choice from arith.jsonl`);
  }
  const spec = parseTaskSpec({ name: 'arith_mc', kind: 'multiple_choice', data: 'arith.jsonl', prompt: '{prompt}', choices: 'choices', answer: 'gold' }, 'bench');
  const recs = readFileSync(join(assets, 'data/arith.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: string; prompt: string; completion: string });
  const docs = recs.slice(0, nQuestions).map((r, i) => {
    const ans = Number(r.completion.trim());
    // Four choices, the gold one at a position that cycles so the set is not biased to one index.
    const wrong = [ans + 1, ans - 1, ans + 10].map(String);
    const gold = i % 4;
    const choices = [...wrong.slice(0, gold), String(ans), ...wrong.slice(gold)];
    return { id: r.id, prompt: r.prompt, choices, gold };
  });
  return { name: 'synthetic-arith (assets/data/arith.jsonl)', spec, docs };
}

/** The requests runMultipleChoice builds (zero-shot: no few-shot prefix). */
function requests(spec: TaskSpec, docs: Doc[]): LoglikRequest[] {
  if (spec.num_fewshot !== 0) throw new Error('bench:eval rebuilds zero-shot requests only');
  return docs.flatMap((d) => d.choices!.map((c, j) => ({ context: d.contexts ? d.contexts[j] : d.prompt, continuation: spec.target_delimiter + c })));
}

/** The windows loglikelihood() scores: input ids and continuation targets, left-truncated to the model's window. */
function windows(m: EvalModel, reqs: LoglikRequest[]): [number[], number[]][] {
  const contexts = new Map<string, number[]>();
  return reqs.map((r) => {
    const { ids, contLen } = encodeRequest(m, r, contexts);
    const keep = ids.slice(-(m.maxLength + 1));
    // As loglikelihood(): a continuation longer than the window keeps the tokens that fit.
    return [keep.slice(0, -1), keep.slice(-Math.min(contLen, keep.length - 1))];
  });
}

function randomLlama(): EvalModel {
  const config: LlamaConfig = {
    model_type: 'llama', vocab_size: 512, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4,
    num_key_value_heads: 4, max_position_embeddings: 512, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  };
  torch.manualSeed(0);
  const model = new LlamaForCausalLM(config);
  model.eval();
  // stories260K's 512-token vocabulary, so the random model reads the same kind of ids as the real one.
  const tokenizer = Llama2cTokenizer.fromFile(join(assets, 'stories260K/tok512.bin'));
  return causalLmEvalModel({ model, config: config as unknown as Record<string, unknown>, tokenizer, source: { path: 'random', format: 'hf' }, tokenizerFiles: [] }, 'llama256 (random, seed 0)');
}

async function runRow(name: string, m: EvalModel, spec: TaskSpec, docs: Doc[]) {
  const reqs = requests(spec, docs);
  const c0 = process.cpuUsage();
  const win = windows(m, reqs);
  const ct = process.cpuUsage(c0);
  const tokenizeCpu = (ct.user + ct.system) / 1e6;
  const tokens = win.reduce((s, [inp]) => s + inp.length, 0);
  say(`${name}: ${docs.length} questions, ${reqs.length} continuations, ${tokens} input tokens (longest ${Math.max(...win.map(([i]) => i.length))})`);

  // Both models are Llamas (LlamaForCausalLM); its config gives the peer the shape.
  const c = (m.module as LlamaForCausalLM).config;
  const dir = mkdtempSync(join(tmpdir(), 'retain-bench-eval-'));
  try {
    const weights = join(dir, 'weights.safetensors');
    torch.io.saveSafetensors(weights, new Map(m.module.stateDict()));
    const jobFile = join(dir, 'job.json');
    writeFileSync(jobFile, JSON.stringify({
      threads, batch_size: batchSize, warmup, repeats, weights, windows: win,
      model: {
        vocab_size: c.vocab_size, dim: c.hidden_size, hidden_dim: c.intermediate_size, n_layers: c.num_hidden_layers, n_heads: c.num_attention_heads,
        n_kv_heads: c.num_key_value_heads ?? c.num_attention_heads, seq_len: c.max_position_embeddings, eps: c.rms_norm_eps, rope_theta: c.rope_theta ?? 10000,
        tie: c.tie_word_embeddings === true,
      },
    }));
    say(`${name}: Python peer (${warmup} warm-up, ${repeats} timed passes)`);
    const py = JSON.parse(execFileSync(PYTHON, ['bench/py/eval_peer.py', jobFile], { encoding: 'utf8', maxBuffer: 1 << 28, env: { ...process.env, ...threadEnv } }).trim().split('\n').pop()!);

    say(`${name}: retain (${warmup} warm-up, ${repeats} timed passes)`);
    // Parity on the same windows: the summed log-likelihood of every continuation, both sides.
    const ours = loglikelihood(m, reqs, batchSize);
    let maxDiff = 0;
    let greedyAgree = 0;
    ours.forEach((o, i) => {
      maxDiff = Math.max(maxDiff, Math.abs(o.logprob - py.logprobs[i]));
      if (o.greedy === py.greedy[i]) greedyAgree++;
    });
    for (let i = 0; i < warmup; i++) scoreDocs(m, spec, docs, docs, { batchSize });
    const times: number[] = [];
    const cpu: number[] = [];
    let acc = NaN;
    for (let i = 0; i < repeats; i++) {
      const t = performance.now();
      const c0 = process.cpuUsage();
      const rows = scoreDocs(m, spec, docs, docs, { batchSize });
      times.push((performance.now() - t) / 1000);
      const dc = process.cpuUsage(c0);
      cpu.push((dc.user + dc.system) / 1e6);
      acc = rows.find((r) => r.metric === 'acc')!.value;
    }
    // The same accuracy from Python's numbers shows the requests rebuilt here are the harness's own.
    let k = 0;
    let pyCorrect = 0;
    for (const d of docs) {
      const lls = (py.logprobs as number[]).slice(k, k + d.choices!.length);
      k += d.choices!.length;
      if (lls.reduce((bi, x, j) => (x > lls[bi] ? j : bi), 0) === d.gold) pyCorrect++;
    }
    const oursS = median(times);
    const pyS = median(py.seconds as number[]);
    const oursCpu = median(cpu);
    const pyCpu = median(py.cpu_seconds as number[]);
    return {
      model: name,
      n_examples: docs.length,
      n_continuations: reqs.length,
      input_tokens: tokens,
      batch_size: batchSize,
      ours_examples_per_s: +(docs.length / oursS).toFixed(1),
      python_examples_per_s: +(docs.length / pyS).toFixed(1),
      ratio: +(pyS / oursS).toFixed(3),
      time_ratio: +(oursS / pyS).toFixed(3),
      cpu_ratio: +(pyCpu / oursCpu).toFixed(3),
      cpu_time_ratio: +(oursCpu / pyCpu).toFixed(3),
      ours_examples_per_cpu_s: +(docs.length / oursCpu).toFixed(1),
      python_examples_per_cpu_s: +(docs.length / pyCpu).toFixed(1),
      ours_median_s: +oursS.toFixed(4),
      python_median_s: +pyS.toFixed(4),
      ours_tokenize_cpu_s: +tokenizeCpu.toFixed(4),
      tokenize_share_of_ours: +(tokenizeCpu / oursCpu).toFixed(3),
      ours_s: times.map((v) => +v.toFixed(4)),
      python_s: (py.seconds as number[]).map((v) => +v.toFixed(4)),
      ours_cpu_s: cpu.map((v) => +v.toFixed(4)),
      python_cpu_s: (py.cpu_seconds as number[]).map((v) => +v.toFixed(4)),
      max_logprob_diff: +maxDiff.toExponential(2),
      greedy_agree: `${greedyAgree}/${reqs.length}`,
      acc_ours: +acc.toFixed(4),
      acc_python: +(pyCorrect / docs.length).toFixed(4),
      python_torch: py.torch as string,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  torch.setNumThreads(threads);
  const data = await dataset();
  const only = process.env.EVAL_BENCH_ONLY;
  const rows = [];
  if (!only || 'llama256'.startsWith(only)) {
    const m = randomLlama();
    rows.push(await runRow('llama256 (random, seed 0)', m, data.spec, data.docs));
    m.module.dispose();
  }
  if (!only || 'stories260K'.startsWith(only)) {
    const m = await loadEvalModel(join(assets, 'stories260K/stories260K.bin'));
    rows.push(await runRow('stories260K', m, data.spec, data.docs));
    m.module.dispose();
  }
  console.log(JSON.stringify({
    benchmark: 'eval',
    data: data.name,
    threads,
    date: new Date().toISOString(),
    machine: { host: hostname(), cpus: cpus().length, model: cpus()[0]?.model, loadavg_1m: +loadavg()[0].toFixed(2) },
    torch: torch.torchVersion(),
    repeats,
    policy: 'longest first, batches of B, right-pad with 0, one forward per batch, log_softmax over continuation rows, gather (+ argmax for greedy)',
    rows,
  }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
