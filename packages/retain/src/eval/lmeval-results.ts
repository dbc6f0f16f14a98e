// Results files of lm-evaluation-harness (`lm_eval --output_path out` writes out/<model>/results_<time>.json) read as
// retain's EvalResults, so evaluations a user already ran become runs of a forgetting report or comparison.
//
// Each leaf task of the file is one task of the run; groups (lm-eval's aggregates over their subtasks) are not
// columns of their own, since their subtasks are, but --target may name a group for all of its subtasks.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { EvalResults, ResultRow, Role } from './results.js';

/** A problem with an lm-eval results input; the message names the file and what is wrong. */
export class LmevalResultsError extends Error {}

const RESULTS_FILE = /^results_.*\.json$/;

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Whether a parsed JSON document is an lm-eval results file (it has no `format`, and lm-eval's blocks). */
export function isLmevalResults(x: unknown): x is Record<string, unknown> {
  return isObj(x) && x.format === undefined && isObj(x.results) && isObj(x.configs);
}

/** The results files a path names: the file itself, or those in a folder and in its model folders, oldest first. */
export function lmevalResultsFiles(path: string): string[] {
  if (!existsSync(path)) return [];
  if (!statSync(path).isDirectory()) return [path];
  const here = readdirSync(path).filter((f) => RESULTS_FILE.test(f)).map((f) => join(path, f));
  if (here.length) return here.sort();
  // lm_eval --output_path DIR puts each model's files in DIR/<model name with / as __>/.
  return readdirSync(path)
    .map((d) => join(path, d))
    .filter((d) => statSync(d).isDirectory())
    .flatMap((d) => readdirSync(d).filter((f) => RESULTS_FILE.test(f)).map((f) => join(d, f)))
    .sort();
}

/** Whether `path` is an lm-eval results file or a folder of them (rather than a model or a retain results file). */
export function looksLikeLmevalResults(path: string): boolean {
  if (!existsSync(path)) return false;
  if (statSync(path).isDirectory()) return !existsSync(join(path, 'config.json')) && lmevalResultsFiles(path).length > 0;
  return RESULTS_FILE.test(basename(path));
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new LmevalResultsError(`${file}: not valid JSON (${(e as Error).message})`);
  }
}

/** The number lm-eval stores for a metric, or null for its "N/A" (no standard error) and for a missing one. */
const num = (v: unknown): number | null => (typeof v === 'number' ? v : null);

/** A label for a model path or hub id: its last component, as retain labels its own runs. */
export function modelLabel(modelName: string): string {
  return modelName.split('/').filter(Boolean).pop() ?? modelName;
}

/** Tasks that are lm-eval groups, with their subtasks (nested groups flattened to leaf tasks). */
function groupLeaves(data: Record<string, unknown>): Map<string, string[]> {
  const subs = isObj(data.group_subtasks) ? (data.group_subtasks as Record<string, string[]>) : {};
  const leaves = (g: string, seen: Set<string>): string[] => (subs[g] ?? []).flatMap((t) => (subs[t]?.length && !seen.has(t) ? leaves(t, new Set([...seen, t])) : [t]));
  return new Map(Object.keys(subs).filter((g) => subs[g]?.length).map((g) => [g, leaves(g, new Set([g]))]));
}

/** One task's rows: every metric of its results block ("acc,none", "exact_match,strict-match"), the first primary. */
function taskRows(file: string, data: Record<string, unknown>, task: string, role: Role): ResultRow[] {
  const block = (data.results as Record<string, Record<string, unknown>>)[task];
  const hib = isObj(data.higher_is_better) && isObj(data.higher_is_better[task]) ? (data.higher_is_better[task] as Record<string, unknown>) : {};
  const nSamples = isObj(data['n-samples']) ? (data['n-samples'] as Record<string, { effective?: unknown }>)[task] : undefined;
  const n = num(nSamples?.effective) ?? num(block.sample_len) ?? 0;
  const rows: ResultRow[] = [];
  for (const [key, value] of Object.entries(block)) {
    const comma = key.indexOf(',');
    if (comma < 0 || key.slice(0, comma).endsWith('_stderr')) continue;
    const [metric, filter] = [key.slice(0, comma), key.slice(comma + 1)];
    if (typeof value !== 'number') throw new LmevalResultsError(`${file}: results.${task}["${key}"] must be a number, got ${JSON.stringify(value)}`);
    // lm-eval's own filter is "none"; any other (gsm8k's strict-match) stays in the name so both filters show.
    rows.push({
      task, metric: filter === 'none' ? metric : key, value, stderr: num(block[`${metric}_stderr,${filter}`]),
      higher_is_better: hib[metric] === undefined ? true : hib[metric] === true, n, role, primary: rows.length === 0,
    });
  }
  if (!rows.length) throw new LmevalResultsError(`${file}: results.${task} has no metrics (keys like "acc,none")`);
  return rows;
}

/** lm-eval's `date` is seconds since 1970 (a float); retain's is an ISO string. */
function isoDate(d: unknown): string {
  return typeof d === 'number' ? new Date(d * 1000).toISOString() : typeof d === 'string' ? d : new Date(0).toISOString();
}

/** One parsed lm-eval results document as a retain run, every task general (applyTargets sets the targets). */
export function fromLmevalResults(data: Record<string, unknown>, file: string): EvalResults {
  const groups = groupLeaves(data);
  const results = data.results as Record<string, unknown>;
  const tasks = Object.keys(results).filter((t) => !groups.has(t));
  for (const t of tasks) if (!isObj(results[t])) throw new LmevalResultsError(`${file}: results.${t} must be an object`);
  const config = isObj(data.config) ? data.config : {};
  const modelName = typeof data.model_name === 'string' && data.model_name ? data.model_name : basename(file);
  return {
    format: 'retain.eval/1',
    label: modelLabel(modelName),
    model: { path: modelName, name: modelLabel(modelName), hash: typeof config.model_sha === 'string' ? config.model_sha : '', parameters: num(config.model_num_parameters) ?? 0 },
    methods: [],
    date: isoDate(data.date),
    config: { tasks, limit: num(config.limit), batch_size: Number(config.batch_size) || 0, seed: num(config.random_seed) ?? 0, device: String(config.device ?? '') },
    rows: tasks.flatMap((t) => taskRows(file, data, t, 'general')),
    results: Object.fromEntries(tasks.map((t) => [t, results[t] as Record<string, number | string>])),
    higher_is_better: (data.higher_is_better ?? {}) as EvalResults['higher_is_better'],
    'n-samples': (data['n-samples'] ?? {}) as EvalResults['n-samples'],
    versions: (data.versions ?? {}) as EvalResults['versions'],
    configs: data.configs as Record<string, unknown>,
    ...(groups.size ? { groups: Object.fromEntries(groups) } : {}),
    ...(typeof data.total_evaluation_time_seconds === 'string' || typeof data.total_evaluation_time_seconds === 'number' ? { eval_seconds: Number(data.total_evaluation_time_seconds) } : {}),
  };
}

/**
 * The runs in an lm-eval results path: one per model, the earliest evaluated first. Files of one model (a folder's several results_<time>.json,
 * from evaluations run at different times) are merged task by task, the newest file's result winning.
 */
export function readLmevalRuns(path: string): EvalResults[] {
  const files = lmevalResultsFiles(path);
  if (!files.length) throw new LmevalResultsError(`${path}: no lm-evaluation-harness results (results_*.json) here or in its model folders`);
  const byModel = new Map<string, EvalResults>();
  for (const file of files) {
    const data = readJson(file);
    if (!isLmevalResults(data)) throw new LmevalResultsError(`${file}: not an lm-evaluation-harness results file (expected its "results" and "configs" blocks)`);
    const run = fromLmevalResults(data, file);
    const prev = byModel.get(run.model.path);
    byModel.set(run.model.path, prev ? mergeRuns(prev, run) : run);
  }
  // Oldest evaluation first: the report takes the first run as the base unless told (--base).
  return [...byModel.values()].sort((a, b) => a.date.localeCompare(b.date));
}

/** `newer`'s tasks replace `older`'s of the same name; the rest of `older` is kept. */
function mergeRuns(older: EvalResults, newer: EvalResults): EvalResults {
  const mine = new Set(newer.config.tasks);
  const keep = <T>(o: Record<string, T>, n: Record<string, T>) => ({ ...Object.fromEntries(Object.entries(o).filter(([k]) => !mine.has(k))), ...n });
  return {
    ...newer,
    config: { ...newer.config, tasks: [...older.config.tasks.filter((t) => !mine.has(t)), ...newer.config.tasks] },
    rows: [...older.rows.filter((r) => !mine.has(r.task)), ...newer.rows],
    results: keep(older.results, newer.results),
    higher_is_better: keep(older.higher_is_better, newer.higher_is_better),
    'n-samples': keep(older['n-samples'], newer['n-samples']),
    versions: keep(older.versions, newer.versions),
    configs: keep(older.configs, newer.configs),
    groups: { ...older.groups, ...newer.groups },
  };
}

/**
 * Sets each run's task roles from --target: the named tasks (and the tasks of named lm-eval groups) are targets, the
 * rest general. A name that no run has is a typo, not a no-op.
 */
export function applyTargets(runs: EvalResults[], target: string[]): EvalResults[] {
  const known = new Set(runs.flatMap((r) => r.rows.map((x) => x.task)));
  const groups = new Map(runs.flatMap((r) => Object.entries(r.groups ?? {})));
  for (const t of target) {
    if (!known.has(t) && !groups.has(t)) throw new LmevalResultsError(`--target ${t}: no run has that task${groups.size ? ' or group' : ''} (tasks: ${[...known].join(', ')}${groups.size ? `; groups: ${[...groups.keys()].join(', ')}` : ''})`);
  }
  const set = new Set(target.flatMap((t) => groups.get(t) ?? [t]));
  return runs.map((r) => ({ ...r, rows: r.rows.map((x) => ({ ...x, role: set.has(x.task) ? 'target' : 'general' })) }));
}
