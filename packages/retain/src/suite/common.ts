// Pieces the forgetting suites share (char-LSTM, MNIST): recipe selection, one training run per recipe through
// `retain train`'s own path (runTraining, so the suites exercise what users run), and the per-run results file.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseTrainConfig } from '../config.js';
import { runTraining, type RunResult } from '../train/run.js';
import type { EvalResults } from '../eval/results.js';
import type { Recipe } from './recipes.js';

export interface SuiteOptions {
  outDir: string;
  /** Optimizer steps per recipe. */
  steps?: number;
  /** Only recipes whose label is listed. */
  only?: string[];
  progress?: boolean;
  seed?: number;
  /** Reuse finished runs whose settings are unchanged (suites that support it; see reusedRun). */
  reuse?: boolean;
}

export function writeJsonl(path: string, rows: unknown[]): void {
  writeFileSync(path, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

/** The recipes named by `only` (all when absent); an unknown label is an error listing the known ones. */
export function selectRecipes(recipes: Recipe[], only?: string[]): Recipe[] {
  if (!only?.length) return recipes;
  const unknown = only.filter((l) => !recipes.some((r) => r.label === l));
  if (unknown.length) throw new Error(`unknown recipe ${unknown.map((u) => `'${u}'`).join(', ')}; recipes: ${recipes.map((r) => `'${r.label}'`).join(', ')}`);
  return recipes.filter((r) => only.includes(r.label));
}

export function methodNames(r: Recipe): string[] {
  return r.methods.map((m) => (typeof m === 'string' ? m : String(m.name)));
}

/** Task-file lines for exact-match generation of the record's `answer` after its `prompt`: greedy, ≤ 8 tokens, trimmed. */
export function exactMatchTaskYaml(name: string, data: string, role: 'general' | 'target'): string[] {
  return [`- name: ${name}`, '  kind: generate', `  data: ${data}`, '  prompt: "{prompt}"', '  answer: answer', '  generation: { max_new_tokens: 8, stop: ["\\n"], extract: trim }', `  role: ${role}`];
}

export function runDirOf(outDir: string, label: string): string {
  return join(outDir, 'runs', label.replace(/[^\w.-]+/g, '_'));
}

/**
 * Trains one recipe from `model` with the given train config sections and returns the run (final model in
 * res.finalDir). The run directory starts empty: a stale checkpoint must not be resumed into another recipe.
 */
export async function trainRecipe(o: { model: string; runDir: string; data: unknown; training: Record<string, unknown>; monitor?: unknown; progress: boolean }, r: Recipe): Promise<RunResult> {
  if (existsSync(o.runDir)) rmSync(o.runDir, { recursive: true });
  const cfg = parseTrainConfig({
    model: { path: o.model },
    data: o.data,
    training: { ...o.training, ...r.training },
    ...(o.monitor ? { monitor: o.monitor } : {}),
    output_dir: o.runDir,
    resume: false,
    methods: r.methods,
  }, `suite recipe '${r.label}'`);
  return runTraining(cfg, undefined, { progress: o.progress });
}

/** Adds the run's dynamics (monitor points, training loss) to its results and writes runDir/results.json. */
export function finishResults(ev: EvalResults, res: RunResult, runDir: string): EvalResults {
  ev.monitor = res.monitor?.points ?? [];
  ev.train = res.history.filter((h) => typeof h.loss === 'number').map((h) => ({ step: Number(h.step), loss: Number(h.loss) }));
  writeFileSync(join(runDir, 'results.json'), JSON.stringify(ev, null, 2) + '\n');
  return ev;
}

/** One row's primary value of a task, or NaN. */
export function primaryValue(r: EvalResults, task: string): number {
  return r.rows.find((x) => x.task === task && x.primary)?.value ?? NaN;
}

/**
 * A finished run's results when its recipe.json holds the same key (everything that decides the result), else null:
 * a long suite, stopped or split over processes, resumes where it stopped. `markFinished` writes the key last.
 */
export function reusedRun(runDir: string, key: string): EvalResults | null {
  const done = join(runDir, 'results.json');
  const keyFile = join(runDir, 'recipe.json');
  if (!existsSync(done) || !existsSync(keyFile) || readFileSync(keyFile, 'utf8') !== key) return null;
  return JSON.parse(readFileSync(done, 'utf8')) as EvalResults;
}

export function markFinished(runDir: string, key: string): void {
  writeFileSync(join(runDir, 'recipe.json'), key);
}

/** What a run scores: LoRA's merged model when it wrote one beside the adapter, else the final folder. */
export function scoredDir(finalDir: string): string {
  return existsSync(join(finalDir, 'merged')) ? join(finalDir, 'merged') : finalDir;
}

/**
 * The real-model suites' loop: each recipe trained from the suite's data and scored by the suite's own scorer, with
 * its wall time; a finished run whose key (recipe and settings) is unchanged is reused instead.
 */
export async function trainAndScore(o: {
  outDir: string;
  recipes: Recipe[];
  reuse?: boolean;
  key: (r: Recipe) => string;
  say: (m: string) => void;
  train: (r: Recipe, runDir: string) => Promise<RunResult>;
  score: (finalDir: string, r: Recipe) => Promise<EvalResults>;
  summary: (ev: EvalResults) => string;
}): Promise<EvalResults[]> {
  const tuned: EvalResults[] = [];
  for (const r of o.recipes) {
    const t0 = performance.now();
    const runDir = runDirOf(o.outDir, r.label);
    const key = o.key(r);
    const old = o.reuse ? reusedRun(runDir, key) : null;
    if (old) {
      tuned.push(old);
      o.say(`  ${r.label}: reused ${runDir}`);
      continue;
    }
    o.say(`  training ${r.label}${r.methods.length ? ` (${methodNames(r).join(' + ')})` : ''} …`);
    const res = await o.train(r, runDir);
    const ev = await o.score(scoredDir(res.finalDir), r);
    ev.wall_seconds = +((performance.now() - t0) / 1000).toFixed(1);
    tuned.push(finishResults(ev, res, runDir));
    markFinished(runDir, key);
    o.say(`  ${r.label}: ${o.summary(ev)} (${ev.wall_seconds} s)`);
  }
  return tuned;
}
