// `retain demo`: the embedded stories260K (a real pretrained TinyStories Llama) learns arithmetic it cannot do, once
// per recipe — standard fine-tuning, mixing 1:1 with TinyStories replay, FLOW, L2-SP, LoRA, WiSE-FT, a combination
// and the best recipe the frontier study found for this setup — and every result is scored on the same general probe (TinyStories next-token accuracy and loss on
// held-out stories) and target probe (exact match on held-out problems). Everything it reads ships in assets/.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadEvalModel } from '../eval/model.js';
import { evaluate } from '../eval/harness.js';
import { resolveTasks, type ResolvedTask } from '../eval/tasks.js';
import type { CompareResults, EvalResults } from '../eval/results.js';
import { arithmeticProblems } from './arith.js';
import { exactMatchTaskYaml, finishResults, methodNames, runDirOf, selectRecipes, trainRecipe, writeJsonl } from './common.js';
import { demoRecipes, STORIES_BEST, type Interval, type Recipe, type StudyBest } from './recipes.js';

export const ASSETS = resolve(new URL('../../assets', import.meta.url).pathname);

/** The first `n` shipped held-out TinyStories stories (blank-line separated in the file). */
export function heldOutStories(n: number): string[] {
  return readFileSync(join(ASSETS, 'data', 'tinystories-eval.txt'), 'utf8').split(/\n\s*\n/).slice(0, n);
}
export const DEFAULT_MODEL = join(ASSETS, 'stories260K', 'stories260K.bin');
/** TinyStories text apart from the held-out probe: the demo's replay and Fisher data. */
export const DEMO_REPLAY = join(ASSETS, 'data', 'tinystories-replay.txt');

export interface DemoOptions {
  outDir: string;
  model?: string;
  steps?: number;
  trainSize?: number;
  testSize?: number;
  /** Probe evaluations during training (the dynamics chart). */
  monitorEvery?: number;
  recipes?: Recipe[];
  /** Only recipes whose label is listed. */
  only?: string[];
  progress?: boolean;
  seed?: number;
  /** Reuse finished runs whose recipe and settings are unchanged (recipe.json beside results.json). */
  reuse?: boolean;
  /** Record a failing recipe in failed.json and go on with the others. */
  keepGoing?: boolean;
  /** The held-out text of the general probes (default: the shipped TinyStories stories); a larger model may want fewer. */
  generalText?: string;
}


/** Writes the demo's data and task files under outDir and returns the resolved tasks (general first). */
export function prepareDemoData(outDir: string, o: { trainSize: number; testSize: number; seed: number; generalText?: string }): { train: string; replay: string; tasks: ResolvedTask[] } {
  const dir = join(outDir, 'data');
  mkdirSync(dir, { recursive: true });
  const test = arithmeticProblems(o.testSize, o.seed + 1000);
  const train = arithmeticProblems(o.trainSize, o.seed, { exclude: new Set(test.map((p) => p.prompt.slice(10, -8))) });
  const trainPath = join(dir, 'arith-train.jsonl');
  writeJsonl(trainPath, train);
  writeJsonl(join(dir, 'arith-test.jsonl'), test);
  const text = JSON.stringify(o.generalText ?? join(ASSETS, 'data', 'tinystories-eval.txt'));
  writeFileSync(join(dir, 'tasks.yaml'), [
    '# Written by retain demo. General: held-out TinyStories text; target: held-out arithmetic, exact match.',
    '- name: tinystories_heldout',
    '  kind: perplexity',
    `  data: ${text}`,
    '  split: blank_lines',
    '  primary: next_token_acc',
    '  role: general',
    '- name: tinystories_loss',
    '  kind: perplexity',
    `  data: ${text}`,
    '  split: blank_lines',
    '  primary: ce',
    '  role: general',
    ...exactMatchTaskYaml('arithmetic', 'arith-test.jsonl', 'target'),
    '',
  ].join('\n'));
  return { train: trainPath, replay: DEMO_REPLAY, tasks: resolveTasks([join(dir, 'tasks.yaml')]) };
}


/** Runs the demo; returns the comparison (base + one result per recipe). */
export async function runDemo(o: DemoOptions): Promise<CompareResults> {
  const seed = o.seed ?? 0;
  const model = o.model ?? DEFAULT_MODEL;
  const outDir = resolve(o.outDir);
  const data = prepareDemoData(outDir, { trainSize: o.trainSize ?? 1500, testSize: o.testSize ?? 200, seed, generalText: o.generalText });
  const tasksFile = join(outDir, 'data', 'tasks.yaml');
  const say = (m: string) => o.progress !== false && process.stderr.write(m + '\n');
  const recipes = selectRecipes(o.recipes ?? demoRecipes(data.replay), o.only);

  say(`retain demo: ${model}\n  target: arithmetic (${o.trainSize ?? 1500} training problems, ${o.testSize ?? 200} held out); general: held-out TinyStories`);
  const baseModel = await loadEvalModel(model);
  const base = await evaluate(baseModel, data.tasks, { label: 'base', progress: false });
  baseModel.module.dispose();
  say(`  base: ${summary(base)}`);

  const tuned: EvalResults[] = [];
  const failed: { label: string; error: string }[] = [];
  for (const r of recipes) {
    const t0 = performance.now();
    const runDir = runDirOf(outDir, r.label);
    const steps = o.steps ?? 300;
    // What decides a run's result; a finished run with the same key is reused (a long suite resumes where it stopped).
    const key = JSON.stringify({ recipe: r, steps, seed, model, monitorEvery: o.monitorEvery ?? 25, trainSize: o.trainSize ?? 1500, testSize: o.testSize ?? 200 });
    const done = join(runDir, 'results.json');
    if (o.reuse && existsSync(done) && existsSync(join(runDir, 'recipe.json')) && readFileSync(join(runDir, 'recipe.json'), 'utf8') === key) {
      tuned.push(JSON.parse(readFileSync(done, 'utf8')) as EvalResults);
      say(`  ${r.label}: reused ${done}`);
      continue;
    }
    say(`  training ${r.label}${r.methods.length ? ` (${methodNames(r).join(' + ')})` : ''} …`);
    try {
      const res = await trainRecipe({
        model,
        runDir,
        data: { train: { path: data.train, format: { type: 'prompt_completion' }, max_length: 64 } },
        training: { max_steps: steps, batch_size: 16, lr: 0.002, schedule: 'cosine', warmup_ratio: 0.06, weight_decay: 0.01, clip_grad_norm: 1.0, seed, log_every: 10 },
        monitor: { every: o.monitorEvery ?? 25, tasks: [tasksFile], target: ['arithmetic'], limit: 60 },
        progress: o.progress !== false,
      }, r);
      // LoRA writes the adapter as its final output; the merged model beside it is what gets scored.
      const finalModel = existsSync(join(res.finalDir, 'merged')) ? join(res.finalDir, 'merged') : res.finalDir;
      const em = await loadEvalModel(finalModel);
      const ev = await evaluate(em, data.tasks, { label: r.label, methods: methodNames(r), progress: false });
      em.module.dispose();
      finishResults(ev, res, runDir);
      writeFileSync(join(runDir, 'recipe.json'), key);
      tuned.push(ev);
      say(`  ${r.label}: ${summary(ev)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    } catch (e) {
      // One broken recipe must not cost the others; the demo (keepGoing false) stops at once.
      if (!o.keepGoing) throw e;
      failed.push({ label: r.label, error: (e as Error).message });
      say(`  ${r.label}: FAILED — ${(e as Error).message}`);
    }
  }
  if (failed.length) writeFileSync(join(outDir, 'failed.json'), JSON.stringify(failed, null, 2) + '\n');
  else rmSync(join(outDir, 'failed.json'), { force: true });
  const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
  return out;
}

function summary(r: EvalResults): string {
  const g = r.rows.find((x) => x.task === 'tinystories_heldout' && x.metric === 'next_token_acc')!;
  const ce = r.rows.find((x) => x.task === 'tinystories_heldout' && x.metric === 'ce')!;
  const t = r.rows.find((x) => x.task === 'arithmetic' && x.metric === 'exact_match')!;
  return `TinyStories next-token acc ${(g.value * 100).toFixed(2)}%, loss ${ce.value.toFixed(3)}; arithmetic exact match ${(t.value * 100).toFixed(1)}%`;
}

const iv = (x: Interval) => `${x.mean.toFixed(2)}${x.half === null ? '' : ` ± ${x.half.toFixed(2)}`}`;

/** The line the demo prints under its table: the best recipe's row and what the study measured for it. */
export function studyBestLine(b: StudyBest = STORIES_BEST): string {
  const i = b.interval;
  const measured = i
    ? `study interval (95%, ${i.seeds} seeds, ${i.steps} steps, ${i.protocol}, ${i.date}): forgetting ${iv(i.forgetting)} points, target ${iv(i.target)} points (${b.note})`
    : `interval: not measured yet — ${b.note}`;
  return `"${b.label}" is the best recipe found for this setup (${b.source}); ${measured}.`;
}
