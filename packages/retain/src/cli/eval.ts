// `retain eval` and `retain compare`.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { loadEvalModel, MIN_MAX_LENGTH } from '../eval/model.js';
import { evaluate, type Sample } from '../eval/harness.js';
import { resolveTasks, type ResolvedTask } from '../eval/tasks.js';
import type { CompareResults, EvalResults, Role } from '../eval/results.js';
import { applyTargets, looksLikeLmevalResults, readLmevalRuns } from '../eval/lmeval-results.js';
import { forgettingTableText } from '../report/table.js';
import { int, nonNegativeInt, positiveInt } from './args.js';
import { lockOutputFile, whileLocked } from '../lock.js';

const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);

function maxLength(v: string): number {
  const n = positiveInt(v);
  if (n < MIN_MAX_LENGTH) throw new InvalidArgumentError(`'${v}' is too small: a ${n}-token window shows the model each scored token's predecessor alone, so every prompt would be cut to its last token; use at least ${MIN_MAX_LENGTH} (and enough for the tasks' prompts)`);
  return n;
}

/** --tuned entries: 'name=path' or a bare path (labelled by its last path component, as the results are). */
function tunedModels(entries: string[]): { label: string; explicit: boolean; path: string }[] {
  return entries.map((t) => {
    const eq = t.indexOf('=');
    if (eq > 0 && !t.startsWith('/')) return { label: t.slice(0, eq), explicit: true, path: t.slice(eq + 1) };
    return { label: t.split('/').filter(Boolean).pop() ?? t, explicit: false, path: t };
  });
}

function writeJson(path: string, v: unknown): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(v, null, 2) + '\n');
}

interface CommonOpts {
  tasks?: string[];
  target?: string[];
  limit?: number;
  batchSize: number;
  dataDir?: string;
  maxLength?: number;
  tokenizer?: string;
  seed: number;
  numFewshot?: number;
  applyChatTemplate?: boolean;
}

function tasksFrom(o: CommonOpts): ResolvedTask[] {
  if (!o.tasks) throw new Error("--tasks is required to evaluate models (only lm-evaluation-harness results given as --base and --tuned need none)");
  const role: Record<string, Role> = {};
  for (const t of o.target ?? []) role[t] = 'target';
  const tasks = resolveTasks(o.tasks, { dataDir: o.dataDir, role, numFewshot: o.numFewshot });
  // A name given to --target that is not among the tasks is a typo, not a no-op.
  for (const t of o.target ?? []) if (!tasks.some((x) => x.spec.name === t)) throw new Error(`--target ${t}: not one of the tasks (${tasks.map((x) => x.spec.name).join(', ')})`);
  return tasks;
}

/** `--log-samples`: each task's scored items as samples_<task>.jsonl beside the results file, as lm-evaluation-harness does. */
function sampleWriter(output: string): (task: string, samples: Sample[]) => void {
  return (task, samples) => {
    const file = join(dirname(output), `samples_${task}.jsonl`);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, samples.map((x) => JSON.stringify(x) + '\n').join(''));
    process.stderr.write(`${task}: wrote ${samples.length} samples to ${file}\n`);
  };
}

async function evalOne(path: string, tasks: ResolvedTask[], o: CommonOpts, label?: string, methods: string[] = [], onSamples?: (task: string, s: Sample[]) => void, adapterBase?: string): Promise<EvalResults> {
  const m = await loadEvalModel(path, { tokenizer: o.tokenizer, maxLength: o.maxLength, tokenizerOption: '--tokenizer', adapterBase });
  try {
    return await evaluate(m, tasks, { limit: o.limit, batchSize: o.batchSize, seed: o.seed, label, methods, progress: true, onSamples, keepGoing: true, applyChatTemplate: o.applyChatTemplate });
  } finally {
    m.module.dispose();
  }
}

/** After the results are written: each task that failed, on stderr, and exit status 1. */
function reportFailures(results: EvalResults[], tasks: ResolvedTask[], output: string): void {
  const failed = results.flatMap((r) => Object.entries(r.failed ?? {}).map(([task, msg]) => `${results.length > 1 ? `${r.label}: ` : ''}${task}: ${msg}`));
  if (!failed.length) return;
  for (const f of failed) console.error(`retain: failed: ${f}`);
  const n = results.length * tasks.length;
  console.error(`retain: ${failed.length} of ${n} task evaluations failed; the other ${n - failed.length} are in ${output}`);
  process.exitCode = 1;
}

/**
 * Whether compare's inputs are lm-evaluation-harness results to read rather than models to evaluate; a mix is
 * refused (the results' tasks and settings would not be those the models are evaluated with).
 */
function resultsInputs(base: string, tuned: string[]): boolean {
  const all = [['--base', base], ...tuned.map((t) => ['--tuned', t])];
  const results = all.filter(([, p]) => looksLikeLmevalResults(p));
  if (results.length && results.length < all.length) {
    const models = all.filter(([, p]) => !looksLikeLmevalResults(p));
    throw new Error(`${results.map(([o, p]) => `${o} ${p}`).join(', ')} ${results.length > 1 ? 'are' : 'is'} lm-evaluation-harness results but ${models.map(([o, p]) => `${o} ${p}`).join(', ')} ${models.length > 1 ? 'are' : 'is'} not; give results for every model, or models for every one`);
  }
  return results.length > 0;
}

/** The one run in an lm-eval results path, its roles from --target and its tasks those of --tasks (when given). */
function oneRun(path: string, opt: string, o: CommonOpts): EvalResults {
  const runs = readLmevalRuns(path);
  if (runs.length !== 1) throw new Error(`${opt} ${path}: holds the results of ${runs.length} models (${runs.map((r) => r.model.path).join(', ')}); name one model's folder or file`);
  let [r] = o.target?.length ? applyTargets(runs, o.target) : runs;
  if (o.tasks) {
    const missing = o.tasks.filter((t) => !r.rows.some((x) => x.task === t));
    if (missing.length) throw new Error(`${opt} ${path}: no results for ${missing.join(', ')} (it has ${[...new Set(r.rows.map((x) => x.task))].join(', ')})`);
    r = { ...r, rows: r.rows.filter((x) => o.tasks!.includes(x.task)), config: { ...r.config, tasks: o.tasks } };
  }
  return r;
}

/** compare's runs read from lm-eval results: the base labelled 'base', each tuned run by name=path or its model. */
function readCompareRuns(o: CommonOpts & { base: string }, models: ReturnType<typeof tunedModels>): { base: EvalResults; tuned: EvalResults[] } {
  const base = { ...oneRun(o.base, '--base', o), label: 'base' };
  const tuned = models.map((m) => {
    const r = oneRun(m.path, '--tuned', o);
    return { ...r, label: m.explicit ? m.label : r.label, methods: ['fine-tuned'] };
  });
  return { base, tuned };
}

function common(c: Command, tasksRequired = true): Command {
  const tasksHelp = 'comma-separated built-in tasks, groups (commonsense) or task files';
  return (tasksRequired ? c.requiredOption('--tasks <list>', tasksHelp, list) : c.option('--tasks <list>', `${tasksHelp} (with lm-eval results: the tasks to compare, default all)`, list))
    .option('--target <list>', 'tasks that measure the new skill (the rest are general)', list)
    .option('--limit <n>', 'score at most n examples per task; a perplexity task scores at most n windows of the model\'s context from the start of its text', positiveInt)
    .option('--batch-size <n>', 'sequences per forward pass', positiveInt, 16)
    .option('--data-dir <dir>', 'folder holding the built-in tasks\' data (default: $RETAIN_DATA_DIR, ./data, ../shared/data)')
    .option('--max-length <n>', `cap on the model's context window (tokens, at least ${MIN_MAX_LENGTH})`, maxLength)
    .option('--tokenizer <path>', 'tokenizer file or directory')
    .option('--seed <n>', 'seed for few-shot sampling (lm-eval task files draw theirs as lm_eval does, with its seed 1234)', int, 0)
    .option('--num-fewshot <n>', "few-shot examples per prompt for every task, in place of each task's num_fewshot", nonNegativeInt)
    .option('--apply-chat-template', "put each prompt through the model's chat template as lm-eval 0.4.13's --apply_chat_template does (the description as the system turn, each few-shot example a user and an assistant turn, the question the last user turn)");
}

export function registerEvalCommands(program: Command): void {
  common(program.command('eval'))
    .requiredOption('--model <path>', 'model directory (or org/name in the Hugging Face cache), LoRA adapter folder (merged into its base), llama2.c .bin, or ml5 folder')
    .option('--base <path>', 'with a LoRA adapter folder as --model: the base model to merge it into (default: the adapter\'s base_model_name_or_path)')
    .option('--label <name>', 'name of this run in tables and reports')
    .option('-o, --output <file>', 'results JSON path', 'results.json')
    .option('--log-samples', 'also write every scored item (prompt, choices, gold, per-choice log-likelihood, prediction) to samples_<task>.jsonl beside the results, in lm-evaluation-harness\'s layout')
    .action(async (o: CommonOpts & { model: string; base?: string; label?: string; output: string; logSamples?: boolean }) => {
      // Two evaluations writing one results file (and its samples) would interleave.
      await whileLocked(lockOutputFile(o.output), async () => {
        const tasks = tasksFrom(o);
        const r = await evalOne(o.model, tasks, o, o.label, [], o.logSamples ? sampleWriter(o.output) : undefined, o.base);
        writeJson(o.output, r);
        for (const row of r.rows.filter((x) => x.primary)) console.log(`${row.task}\t${row.metric}\t${row.value.toFixed(4)}${row.stderr !== null ? ` ± ${row.stderr.toFixed(4)}` : ''}\tn=${row.n}\t${row.role}`);
        console.log(`wrote ${o.output}`);
        reportFailures([r], tasks, o.output);
      });
    });

  common(program.command('compare'), false)
    .requiredOption('--base <path>', 'the model before fine-tuning, or its lm-evaluation-harness results (results_*.json or its model folder)')
    .requiredOption('--tuned <paths...>', 'fine-tuned models, LoRA adapter folders (merged into --base) or their lm-eval results (label them with name=path)')
    .option('-o, --output <file>', 'compare JSON path', 'compare.json')
    .action(async (o: CommonOpts & { base: string; tuned: string[]; output: string }) => {
      await whileLocked(lockOutputFile(o.output), async () => {
        const models = tunedModels(o.tuned);
        const readOnly = resultsInputs(o.base, models.map((m) => m.path));
        const tasks = readOnly ? [] : tasksFrom(o);
        // Checked before anything is evaluated: a typo in the last path should not cost the base model's evaluation.
        for (const [opt, path] of [['--base', o.base], ...models.map((m) => ['--tuned', m.path])]) {
          if (!existsSync(path)) throw new Error(`${opt} ${path}: model not found`);
        }
        // Rows and table columns are keyed by label, so two models under one label would be two rows of one name.
        const seen = new Map<string, string>([['base', `--base ${o.base}`]]);
        for (const m of models) {
          const given = `--tuned ${m.explicit ? `${m.label}=` : ''}${m.path}`;
          const prev = seen.get(m.label);
          if (prev !== undefined) {
            throw new Error(`two models are labelled '${m.label}' (${prev} and ${given}); ${m.label === 'base' ? "'base' is the base model's label; " : ''}give each tuned model its own label as name=path`);
          }
          seen.set(m.label, given);
        }
        let base: EvalResults;
        let tuned: EvalResults[] = [];
        if (readOnly) ({ base, tuned } = readCompareRuns(o, models));
        else {
          base = await evalOne(o.base, tasks, o, 'base');
          // A LoRA adapter is compared as --base with the adapter merged in, whatever base it names.
          for (const m of models) tuned.push(await evalOne(m.path, tasks, o, m.explicit ? m.label : undefined, ['fine-tuned'], undefined, o.base));
        }
        const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
        writeJson(o.output, out);
        console.log(forgettingTableText(base, tuned));
        console.log(`wrote ${o.output}`);
        if (!readOnly) reportFailures([base, ...tuned], tasks, o.output);
      });
    });
}
