// lm-evaluation-harness task files run by both sides: the YAML tasks of packages/retain/test/fixtures/lmeval-tasks
// (every output type, few-shot from the scored split and from a training split, both samplers, Jinja and field
// names, CSV and JSON lines) scored by lm_eval 0.4.13 (--model hf) and by `retain eval --tasks <file>.yaml` on one
// small random Llama with Llama-2's tokenizer, once as plain text and once through a chat template
// (--apply_chat_template / --apply-chat-template). Both log every sample; this compares the requests (prompts,
// continuations, generation arguments), each response (log-likelihoods, generated text) and every metric.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REFENV_PYTHON, ROOT, refPy } from '../refenv.js';
import { TOKENIZER_DIR } from './lmeval.js';

export const TASK_DIR = join(ROOT, 'packages', 'retain', 'test', 'fixtures', 'lmeval-tasks');
export const YAML_TASKS = ['tiny_mc', 'tiny_gen', 'tiny_ppl', 'tiny_ll', 'tiny_split', 'tiny_shots'];
/** Tasks whose prompts a chat template changes (a rolling log-likelihood has no prompt). */
export const CHAT_TASKS = ['tiny_mc', 'tiny_gen', 'tiny_ll', 'tiny_split'];
/** Log-likelihoods and scores of the two sides may differ by this much (float32 sums over short continuations). */
export const MAX_DIFF = 1e-4;

/** A template that starts with BOS text (lm_eval then adds no second BOS) and ends in a header and newline. */
const CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/** A random float32 Llama (as bench/parity/lmeval.ts builds it) whose tokenizer config carries CHAT_TEMPLATE. */
function makeModel(dir: string): void {
  refPy(`
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
c = LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.05, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2)
LlamaForCausalLM(c).float().save_pretrained(inp['dir'], safe_serialization=True)
`, { dir });
  copyFileSync(join(TOKENIZER_DIR, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const config = JSON.parse(readFileSync(join(TOKENIZER_DIR, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: CHAT_TEMPLATE }));
}

interface Sample {
  args: unknown;
  /** Every number among the responses (log-likelihoods), and the text ones (generations). */
  numbers: number[];
  texts: string[];
  /** Per-sample metric values (a perplexity's is its [log-likelihood, count] pair). */
  metrics: Record<string, number[]>;
}

type Side = Map<string, { samples: Sample[]; results: Record<string, number> }>;

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? filesUnder(join(dir, f)) : [join(dir, f)]));
}

/** lm_eval writes numbers and booleans in responses as strings; both sides' are read as numbers, texts kept. */
function flatten(x: unknown, numbers: number[], texts: string[]): void {
  if (Array.isArray(x)) for (const y of x) flatten(y, numbers, texts);
  else if (typeof x === 'number') numbers.push(x);
  else if (typeof x === 'string' && x !== 'True' && x !== 'False' && x.trim() !== '' && Number.isFinite(Number(x))) numbers.push(Number(x));
  else if (typeof x === 'string' && x !== 'True' && x !== 'False') texts.push(x);
}

function parseSample(s: any, metricNames: string[]): Sample {
  const numbers: number[] = [];
  const texts: string[] = [];
  flatten(s.filtered_resps, numbers, texts);
  // The target (lm_eval writes it as text) is compared with the requests.
  return { args: { arguments: s.arguments, target: String(s.target) }, numbers, texts, metrics: Object.fromEntries(metricNames.map((m) => [m, [s[m]].flat().map(Number)])) };
}

function readSide(dir: string, tasks: string[], resultsOf: (file: string, task: string) => Record<string, number>, samplesFile: (files: string[], task: string) => string): Side {
  const files = filesUnder(dir);
  const side: Side = new Map();
  for (const t of tasks) {
    const results = resultsOf(files.find((f) => /results[^/]*\.json$/.test(f))!, t);
    const rows = readFileSync(samplesFile(files, t), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    side.set(t, { results, samples: rows.map((r) => parseSample(r, Object.keys(results))) });
  }
  return side;
}

/** Each task's metric values: lm_eval's "acc,none" keys (standard errors left out) as plain names. */
function metricValues(file: string, task: string): Record<string, number> {
  const block = JSON.parse(readFileSync(file, 'utf8')).results[task] as Record<string, unknown>;
  return Object.fromEntries(Object.entries(block).filter(([k, v]) => k.endsWith(',none') && !k.includes('_stderr') && typeof v === 'number').map(([k, v]) => [k.slice(0, -5), v as number]));
}

function runLmeval(model: string, out: string, tasks: string[], chat: boolean): Side {
  const r = spawnSync(REFENV_PYTHON, [
    '-m', 'lm_eval', 'run', '--model', 'hf', '--model_args', `pretrained=${model},dtype=float32`, '--device', 'cpu',
    '--tasks', tasks.join(','), '--include_path', TASK_DIR, '--batch_size', '4', '--log_samples', '--output_path', out,
    ...(chat ? ['--apply_chat_template'] : []),
  ], {
    // data_files paths in the task files are relative to the working directory, as datasets reads them.
    cwd: TASK_DIR, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000,
    env: { ...process.env, HF_HUB_OFFLINE: '1', HF_DATASETS_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false', OMP_NUM_THREADS: '1' },
  });
  if (r.status !== 0) throw new Error(`lm_eval failed (status ${r.status}):\n${(r.stderr || r.stdout || String(r.error)).trim().split('\n').slice(-20).join('\n')}`);
  return readSide(out, tasks, metricValues, (files, t) => files.find((f) => f.includes(`samples_${t}_`))!);
}

function runRetain(model: string, dir: string, tasks: string[], chat: boolean): Side {
  const bin = join(ROOT, 'packages', 'retain', 'bin', 'retain.mjs');
  const results = join(dir, 'results.json');
  // Run from the repository root: the data files are found beside the task files.
  const r = spawnSync(process.execPath, [bin, 'eval', '--model', model, '--tasks', tasks.map((t) => join(TASK_DIR, `${t}.yaml`)).join(','),
    '--batch-size', '4', '--log-samples', '-o', results, ...(chat ? ['--apply-chat-template'] : [])], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000 });
  if (r.status !== 0) throw new Error(`retain eval failed (status ${r.status}):\n${(r.stderr || String(r.error)).trim().split('\n').slice(-20).join('\n')}`);
  return readSide(dir, tasks, metricValues, (_, t) => join(dir, `samples_${t}.jsonl`));
}

export interface YamlCase {
  task: string;
  chat: boolean;
  n: number;
  /** Samples whose request arguments (prompts, continuations, generation settings) or targets differ. */
  prompt_mismatches: number;
  /** Samples whose generated texts differ. */
  text_mismatches: number;
  /** Largest difference between the two sides' response numbers (log-likelihoods). */
  max_loglik_diff: number;
  /** Samples with a per-sample metric that differs by more than MAX_DIFF. */
  metric_mismatches: number;
  /** Largest relative difference between the two sides' task scores. */
  max_score_diff: number;
  scores: { retain: Record<string, number>; lmeval: Record<string, number> };
  first_prompt_diff?: { retain: unknown; lmeval: unknown };
}

function compare(task: string, chat: boolean, ours: Side, ref: Side): YamlCase {
  const [o, r] = [ours.get(task)!, ref.get(task)!];
  const c: YamlCase = {
    task, chat, n: r.samples.length, prompt_mismatches: 0, text_mismatches: 0, max_loglik_diff: o.samples.length === r.samples.length ? 0 : Infinity,
    metric_mismatches: 0, max_score_diff: 0, scores: { retain: o.results, lmeval: r.results },
  };
  r.samples.forEach((x, i) => {
    const y = o.samples[i];
    if (!y) return;
    if (JSON.stringify(x.args) !== JSON.stringify(y.args)) {
      c.prompt_mismatches++;
      c.first_prompt_diff ??= { retain: y.args, lmeval: x.args };
    }
    if (JSON.stringify(x.texts) !== JSON.stringify(y.texts)) c.text_mismatches++;
    if (x.numbers.length !== y.numbers.length) c.max_loglik_diff = Infinity;
    else x.numbers.forEach((v, j) => (c.max_loglik_diff = Math.max(c.max_loglik_diff, Math.abs(v - y.numbers[j]))));
    if (Object.keys(x.metrics).some((m) => x.metrics[m].length !== y.metrics[m]?.length || x.metrics[m].some((v, j) => !(Math.abs(v - y.metrics[m][j]) <= MAX_DIFF)))) c.metric_mismatches++;
  });
  for (const [m, v] of Object.entries(r.results)) {
    const w = o.results[m];
    c.max_score_diff = Math.max(c.max_score_diff, w === undefined ? Infinity : Math.abs(v - w) / Math.max(1, Math.abs(v)));
  }
  return c;
}

export async function run(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-yaml-'));
  try {
    const model = join(dir, 'model');
    makeModel(model);
    const cases: YamlCase[] = [];
    const t0 = performance.now();
    for (const chat of [false, true]) {
      const tasks = chat ? CHAT_TASKS : YAML_TASKS;
      const ref = runLmeval(model, join(dir, `lmeval-${chat}`), tasks, chat);
      const ours = runRetain(model, join(dir, `retain-${chat}`), tasks, chat);
      for (const t of tasks) cases.push(compare(t, chat, ours, ref));
    }
    return {
      lmeval_yaml_cases: cases,
      lmeval_yaml_prompt_mismatches: cases.reduce((a, c) => a + c.prompt_mismatches, 0),
      lmeval_yaml_max_loglik_diff: Math.max(...cases.map((c) => c.max_loglik_diff)),
      lmeval_yaml_max_score_diff: Math.max(...cases.map((c) => c.max_score_diff)),
      lmeval_yaml_seconds: +((performance.now() - t0) / 1000).toFixed(1),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
