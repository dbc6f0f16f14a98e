// A small-scale replica of the mixed-training study (Reynolds 2025, arXiv 2512.13706; docs/METHODS.md §2): a model that
// can do NLI is fine-tuned on algebra linear_1d problems, with and without NLI examples mixed into every batch.
//
// Stage 0 makes the base: the embedded stories260K has no NLI skill, so the suite first teaches it SICK (the only
// NLI set in ../shared) and caches the result under outDir, keyed by a hash of everything that shapes it.
// Stage 1 fine-tunes that base on generated linear_1d problems: math-only, then mixing m:n with SICK train as the
// general source at 1:1, 3:1, 7:1 and 15:1. The forgetting monitor probes NLI (and math) during every run.
//
// Scheme: the study's — the target set is traversed the same number of times in every run and the general set
// cycles, so an m:n run has (m+n)/m times the optimizer steps of math-only (`steps` is the math-only count).
//
// Scoring follows the study: greedy generation of at most 8 tokens, exact match after trim + lower-case. SICK's
// labels are verbalised as yes / maybe / no because the 512-token vocabulary spells "contradiction" in 11 tokens,
// more than the 8-token budget. SICK test is majority-neutral (57%), so NLI is scored on a class-balanced subset
// where any constant answer scores 1/3 and accuracy equals the macro-averaged recall.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { stringify as toYaml } from 'yaml';
import { join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import { parseTrainConfig } from '../config.js';
import { runTraining } from '../train/run.js';
import { loadEvalModel, type EvalModel } from '../eval/model.js';
import { evaluate } from '../eval/harness.js';
import { dataDirs, resolveData, resolveTasks, type ResolvedTask } from '../eval/tasks.js';
import type { CompareResults, EvalResults } from '../eval/results.js';
import { exactMatchTaskYaml } from './common.js';
import { arithmeticProblems } from './arith.js';
import { DEFAULT_MODEL } from './demo.js';
import { mulberry32 as rng } from '../data/random.js';

/** SICK judgement → the word the model answers with. */
export const NLI_LABELS: Record<string, string> = { ENTAILMENT: 'yes', NEUTRAL: 'maybe', CONTRADICTION: 'no' };

export const nliPrompt = (a: string, b: string) => `premise: ${a.toLowerCase()}\nhypothesis: ${b.toLowerCase()}\nanswer:`;

export interface MixStudyOptions {
  outDir: string;
  /** Optimizer steps of the math-only run; an m:n run takes enough steps to see as many math problems. */
  steps?: number;
  /** Only these runs (labels 'math-only', 'mix 1:1', … — or just '1:1'). */
  only?: string[];
  progress?: boolean;
  seed?: number;
  /** Stage 0 (SICK) optimizer steps. */
  baseSteps?: number;
  /** Balanced NLI evaluation: this many pairs per class from SICK test. */
  nliPerClass?: number;
  mathTrain?: number;
  mathTest?: number;
  /** Monitor probes every N steps (default: about ten points over the math-only run). */
  monitorEvery?: number;
}

/**
 * Settings of both stages (stage 0's part goes into the cache key). The study's recipe scaled down: AdamW, wd 0.01,
 * cosine, 6% warm-up, clip 1.0, batch 16 instead of 256; the learning rates are 10× the study's 3e-4 because a
 * 260K-parameter model at 3e-4 barely moves in a few hundred steps (2e-3 is also what the demo's arithmetic uses).
 */
const STAGE0 = { lr: 3e-3, batch_size: 16, max_length: 160, weight_decay: 0.01, warmup_ratio: 0.06, clip_grad_norm: 1.0 };
const STAGE1 = { lr: 2e-3, batch_size: 16, max_length: 160, weight_decay: 0.01, warmup_ratio: 0.06, clip_grad_norm: 1.0 };
const DEFAULTS = { steps: 120, baseSteps: 500, nliPerClass: 100, mathTrain: 600, mathTest: 200 };
export const RATIOS = ['1:1', '3:1', '7:1', '15:1'] as const;

interface SickRow { id: string; a: string; b: string; label: string }

function readSick(path: string): SickRow[] {
  const lines = readFileSync(path, 'utf8').split(/\r?\n/).filter((l) => l.trim());
  const head = lines[0].split('\t');
  const col = (n: string) => {
    const i = head.indexOf(n);
    if (i < 0) throw new Error(`${path}: no column '${n}' in the header (${head.join(', ')})`);
    return i;
  };
  const [id, a, b, j] = [col('pair_ID'), col('sentence_A'), col('sentence_B'), col('entailment_judgment')];
  return lines.slice(1).map((l, k) => {
    const f = l.split('\t');
    const label = NLI_LABELS[f[j]?.trim()];
    if (!label) throw new Error(`${path}:${k + 2}: entailment_judgment '${f[j]}' is not one of ${Object.keys(NLI_LABELS).join(', ')}`);
    return { id: f[id], a: f[a], b: f[b], label };
  });
}


function shuffled<T>(xs: T[], seed: number): T[] {
  const r = rng(seed);
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function writeJsonl(path: string, rows: unknown[]): void {
  writeFileSync(path, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

export interface MixStudyData {
  sickTrain: string;
  tasksFile: string;
  tasks: ResolvedTask[];
  mathTrain: string;
  /** Share of the majority class in the whole SICK test set (what a constant 'maybe' would score there). */
  majorityFull: { label: string; share: number; n: number };
  /** SHA-256 of the stage 0 training file as written (template, labels, balancing), for the cache key. */
  sickHash: string;
}

/** Writes the study's data and task files under outDir/data. */
export function prepareMixStudyData(outDir: string, o: { seed: number; nliPerClass: number; mathTrain: number; mathTest: number; dataDir?: string }): MixStudyData {
  const dir = join(outDir, 'data');
  mkdirSync(dir, { recursive: true });
  const dirs = dataDirs(o.dataDir);
  const trainPath = resolveData('sick/SICK_train.txt', dirs);
  const testPath = resolveData('sick/SICK_test_annotated.txt', dirs);
  const train = readSick(trainPath);
  const test = readSick(testPath);

  // Class-balanced by upsampling (each class cycled to the size of the largest): trained on SICK's natural mix
  // (57% neutral) the tiny model learns to answer 'maybe' to nearly everything — 49% balanced accuracy after 800
  // steps against 59% with this file. Stage 1 replays the same file, the data the base was trained on.
  const sickTrain = join(dir, 'sick-train.jsonl');
  const trainByClass = Object.values(NLI_LABELS).map((l) => shuffled(train.filter((r) => r.label === l), o.seed + 23));
  const most = Math.max(...trainByClass.map((c) => c.length));
  const upsampled = trainByClass.flatMap((c) => Array.from({ length: most }, (_, k) => ({ r: c[k % c.length], k })));
  writeJsonl(sickTrain, upsampled.map(({ r, k }) => ({ id: `sick-${r.id}-${k}`, prompt: nliPrompt(r.a, r.b), completion: ` ${r.label}` })));
  // Interleaved by class so the monitor's first-N probe is balanced too.
  const byClass = Object.values(NLI_LABELS).map((l) => shuffled(test.filter((r) => r.label === l), o.seed + 17));
  const per = Math.min(o.nliPerClass, ...byClass.map((c) => c.length));
  const balanced: SickRow[] = [];
  for (let i = 0; i < per; i++) for (const c of byClass) balanced.push(c[i]);
  writeJsonl(join(dir, 'sick-test-balanced.jsonl'), balanced.map((r) => ({ id: `sick-${r.id}`, prompt: nliPrompt(r.a, r.b), answer: r.label })));
  const counts = new Map<string, number>();
  for (const r of test) counts.set(r.label, (counts.get(r.label) ?? 0) + 1);
  const [majLabel, majN] = [...counts].sort((a, b) => b[1] - a[1])[0];

  const mathTest = arithmeticProblems(o.mathTest, o.seed + 1000, { families: ['linear_1d'] });
  // The prompt is 'question: <q>\nanswer:'; the exclusion set holds the bare questions.
  const held = new Set(mathTest.map((p) => p.prompt.slice('question: '.length, -'\nanswer:'.length)));
  const mathTrain = arithmeticProblems(o.mathTrain, o.seed, { families: ['linear_1d'], exclude: held });
  writeJsonl(join(dir, 'math-train.jsonl'), mathTrain);
  writeJsonl(join(dir, 'math-test.jsonl'), mathTest);

  const tasksFile = join(dir, 'tasks.yaml');
  writeFileSync(tasksFile, [
    '# Written by the mixed-training study (src/suite/mixstudy.ts): general = SICK NLI on a class-balanced subset of',
    '# SICK test; target = held-out linear_1d problems. Both: greedy, at most 8 tokens, exact match after trim + lower-case.',
    ...exactMatchTaskYaml('sick_nli', 'sick-test-balanced.jsonl', 'general'),
    '  description: SICK test, equal numbers of entailment / neutral / contradiction, answered yes / maybe / no',
    ...exactMatchTaskYaml('linear_1d', 'math-test.jsonl', 'target'),
    '',
  ].join('\n'));
  return {
    sickTrain,
    tasksFile,
    tasks: resolveTasks([tasksFile]),
    mathTrain: join(dir, 'math-train.jsonl'),
    majorityFull: { label: majLabel, share: majN / test.length, n: test.length },
    sickHash: sha(readFileSync(sickTrain)),
  };
}

/** Confusion counts gold → predicted over the balanced NLI set (predictions outside the labels count as 'other'). */
export function nliConfusion(m: EvalModel, tasksDir: string): Record<string, Record<string, number>> {
  const rows = readFileSync(join(tasksDir, 'sick-test-balanced.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { prompt: string; answer: string });
  const words = new Set(Object.values(NLI_LABELS));
  const out: Record<string, Record<string, number>> = {};
  const wasTraining = m.module.training;
  m.module.eval();
  torch.inferenceMode(() => {
    for (const r of rows) {
      const p = m.generate(r.prompt, { maxNewTokens: 8, stop: ['\n'] }).trim().toLowerCase();
      const k = words.has(p) ? p : 'other';
      (out[r.answer] ??= {})[k] = (out[r.answer][k] ?? 0) + 1;
    }
  });
  if (wasTraining) m.module.train();
  return out;
}

const get = (r: EvalResults, task: string, metric = 'exact_match') => r.rows.find((x) => x.task === task && x.metric === metric)?.value ?? NaN;

export interface Stage0Info {
  key: string;
  reused: boolean;
  dir: string;
  model: string;
  settings: Record<string, unknown>;
  seconds: number;
  /** The pretrained model before stage 0, on the same tasks. */
  pretrained: { nli: number; math: number };
  /** The stage 0 model (the study's base). */
  base: { nli: number; math: number; confusion: Record<string, Record<string, number>> };
  /** The monitor's last NLI probe during stage 0 (first examples of the balanced set). */
  monitorEnd: number | null;
  majority: { balanced: number; full_test: MixStudyData['majorityFull'] };
}

/** Stage 0: trains (or reuses) the SICK model that every stage 1 run starts from. */
export async function ensureNliBase(outDir: string, data: MixStudyData, o: { steps: number; seed: number; progress: boolean }): Promise<Stage0Info> {
  const say = (m: string) => o.progress && process.stderr.write(m + '\n');
  const settings = { ...STAGE0, steps: o.steps, seed: o.seed, schedule: 'cosine', prompt: nliPrompt('{a}', '{b}'), labels: NLI_LABELS };
  const key = sha(JSON.stringify({ v: 1, model: sha(readFileSync(DEFAULT_MODEL)), sick: data.sickHash, settings })).slice(0, 12);
  const dir = join(outDir, 'base', key);
  const infoPath = join(dir, 'stage0.json');
  // stage0.json is written last, so its presence means the model beside it is complete.
  if (existsSync(infoPath) && existsSync(join(dir, 'run', 'final', 'model.safetensors'))) {
    const info = JSON.parse(readFileSync(infoPath, 'utf8')) as Stage0Info;
    say(`  stage 0: reusing the SICK base ${dir} (NLI ${(info.base.nli * 100).toFixed(1)}%)`);
    // Paths from where it is now, so a moved outDir still works.
    return { ...info, reused: true, dir, model: join(dir, 'run', 'final') };
  }
  if (existsSync(dir)) rmSync(dir, { recursive: true });
  const t0 = performance.now();
  const pre = await loadEvalModel(DEFAULT_MODEL);
  const preEval = await evaluate(pre, data.tasks, { label: 'stories260K', progress: false });
  pre.module.dispose();
  say(`  stage 0: teaching stories260K SICK NLI (${o.steps} steps; before: NLI ${(get(preEval, 'sick_nli') * 100).toFixed(1)}%)`);
  const cfg = parseTrainConfig({
    model: { path: DEFAULT_MODEL },
    data: { train: { path: data.sickTrain, format: { type: 'prompt_completion' }, max_length: STAGE0.max_length, name: 'sick' } },
    training: {
      max_steps: o.steps, batch_size: STAGE0.batch_size, lr: STAGE0.lr, schedule: 'cosine', warmup_ratio: STAGE0.warmup_ratio,
      weight_decay: STAGE0.weight_decay, clip_grad_norm: STAGE0.clip_grad_norm, seed: o.seed, log_every: 10,
    },
    monitor: { every: Math.max(1, Math.round(o.steps / 8)), tasks: [data.tasksFile], limit: 60 },
    output_dir: join(dir, 'run'),
    resume: false,
  }, 'mixed-training study, stage 0');
  const res = await runTraining(cfg, undefined, { progress: o.progress });
  const em = await loadEvalModel(res.finalDir);
  const ev = await evaluate(em, data.tasks, { label: 'base', progress: false });
  const confusion = nliConfusion(em, join(outDir, 'data'));
  em.module.dispose();
  const nliPoints = (res.monitor?.points ?? []).filter((p) => p.task === 'sick_nli');
  const info: Stage0Info = {
    key,
    reused: false,
    dir,
    model: res.finalDir,
    settings,
    seconds: +((performance.now() - t0) / 1000).toFixed(1),
    pretrained: { nli: get(preEval, 'sick_nli'), math: get(preEval, 'linear_1d') },
    base: { nli: get(ev, 'sick_nli'), math: get(ev, 'linear_1d'), confusion },
    monitorEnd: nliPoints.length ? nliPoints[nliPoints.length - 1].value : null,
    majority: { balanced: 1 / 3, full_test: data.majorityFull },
  };
  writeFileSync(join(dir, 'train.json'), JSON.stringify({ monitor: res.monitor?.points ?? [], train: lossCurve(res.history) }, null, 2) + '\n');
  writeFileSync(infoPath, JSON.stringify(info, null, 2) + '\n');
  say(`  stage 0: NLI ${(info.base.nli * 100).toFixed(1)}% on the balanced set (constant answer: 33.3%; majority on all of SICK test: ${(data.majorityFull.share * 100).toFixed(1)}%) in ${info.seconds.toFixed(0)} s`);
  return info;
}

function lossCurve(history: Record<string, number | string>[]): { step: number; loss: number }[] {
  return history.filter((h) => typeof h.loss === 'number').map((h) => ({ step: Number(h.step), loss: Number(h.loss) }));
}

export interface StudyRun {
  label: string;
  ratio: string | null;
  /** Optimizer steps: math-only's count × (m+n)/m, so every run sees as many math problems. */
  steps: number;
}

export function studyRuns(steps: number, batch = STAGE1.batch_size): StudyRun[] {
  return [
    { label: 'math-only', ratio: null, steps },
    ...RATIOS.map((r) => {
      const [m, n] = r.split(':').map(Number);
      const target = Math.round((batch * m) / (m + n));
      return { label: `mix ${r}`, ratio: r, steps: Math.ceil((steps * batch) / target) };
    }),
  ];
}

/** Stage 1's training section (`steps` optimizer steps). */
function stage1Training(steps: number, seed: number): Record<string, unknown> {
  return {
    max_steps: steps, batch_size: STAGE1.batch_size, lr: STAGE1.lr, schedule: 'cosine', warmup_ratio: STAGE1.warmup_ratio,
    weight_decay: STAGE1.weight_decay, clip_grad_norm: STAGE1.clip_grad_norm, seed, log_every: 5,
  };
}

const stage1Data = (data: MixStudyData) => ({ train: { path: data.mathTrain, format: { type: 'prompt_completion' }, max_length: STAGE1.max_length, name: 'linear_1d' } });
const sickGeneral = (data: MixStudyData) => ({ path: data.sickTrain, format: { type: 'prompt_completion' }, max_length: STAGE1.max_length, name: 'sick' });

/**
 * Stage 1 as a config `retain tune` runs: the SICK base (stage 0, trained or reused under `dataDir`) → linear_1d,
 * the monitor probing NLI to keep and linear_1d to gain; SICK train is the replay data. Written to
 * configDir/mixstudy-config.yaml.
 */
export async function writeMixStudyTuneConfig(dataDir: string, configDir: string, steps = DEFAULTS.steps, o: Omit<MixStudyOptions, 'outDir' | 'steps' | 'only' | 'monitorEvery'> = {}): Promise<{ config: string; replay: Record<string, unknown> }> {
  const seed = o.seed ?? 0;
  const data = prepareMixStudyData(resolve(dataDir), { seed, nliPerClass: o.nliPerClass ?? DEFAULTS.nliPerClass, mathTrain: o.mathTrain ?? DEFAULTS.mathTrain, mathTest: o.mathTest ?? DEFAULTS.mathTest });
  const stage0 = await ensureNliBase(resolve(dataDir), data, { steps: o.baseSteps ?? DEFAULTS.baseSteps, seed, progress: o.progress !== false });
  const cfg = {
    model: { path: stage0.model },
    data: stage1Data(data),
    training: stage1Training(steps, seed),
    monitor: { every: Math.max(1, Math.round(steps / 10)), tasks: [data.tasksFile], target: ['linear_1d'], limit: 60 },
    output_dir: join(resolve(configDir), 'mixstudy-run'),
  };
  mkdirSync(resolve(configDir), { recursive: true });
  const config = join(resolve(configDir), 'mixstudy-config.yaml');
  writeFileSync(config, `# Written by the mixed-training study: the SICK base (stage 0) → linear_1d.\n${toYaml(cfg)}`);
  return { config, replay: sickGeneral(data) };
}

export interface MixStudySummary {
  stage0: Stage0Info;
  scheme: string;
  settings: Record<string, unknown>;
  rows: { label: string; steps: number; math: number; nli: number; seconds: number | null }[];
  seconds: number;
}

/** Runs the study (stage 0 when not cached, then stage 1); writes compare.json and mixstudy.json under outDir. */
export async function runMixStudySuite(o: MixStudyOptions): Promise<CompareResults> {
  const t0 = performance.now();
  const seed = o.seed ?? 0;
  const progress = o.progress !== false;
  const say = (m: string) => progress && process.stderr.write(m + '\n');
  const outDir = resolve(o.outDir);
  const steps = o.steps ?? DEFAULTS.steps;
  const data = prepareMixStudyData(outDir, {
    seed,
    nliPerClass: o.nliPerClass ?? DEFAULTS.nliPerClass,
    mathTrain: o.mathTrain ?? DEFAULTS.mathTrain,
    mathTest: o.mathTest ?? DEFAULTS.mathTest,
  });
  let runs = studyRuns(steps);
  if (o.only?.length) {
    const pick = (l: string) => runs.find((r) => r.label === l || r.ratio === l);
    const unknown = o.only.filter((l) => !pick(l));
    if (unknown.length) throw new Error(`unknown run ${unknown.map((u) => `'${u}'`).join(', ')}; runs: ${runs.map((r) => `'${r.label}'`).join(', ')}`);
    runs = runs.filter((r) => o.only!.some((l) => pick(l) === r));
  }
  say(`mixed-training study (stories260K → SICK NLI base → linear_1d; ${runs.map((r) => `${r.label} ${r.steps} steps`).join(', ')})`);
  const stage0 = await ensureNliBase(outDir, data, { steps: o.baseSteps ?? DEFAULTS.baseSteps, seed, progress });

  const bm = await loadEvalModel(stage0.model);
  const base = await evaluate(bm, data.tasks, { label: 'base', progress: false });
  bm.module.dispose();
  say(`  base (after stage 0): ${summary(base)}`);

  const monitorEvery = o.monitorEvery ?? Math.max(1, Math.round(steps / 10));
  const general = sickGeneral(data);
  const tuned: EvalResults[] = [];
  const rows: MixStudySummary['rows'] = [];
  for (const r of runs) {
    const ts = performance.now();
    const runDir = join(outDir, 'runs', r.label.replace(/[^\w.-]+/g, '_'));
    if (existsSync(runDir)) rmSync(runDir, { recursive: true });
    const methods = r.ratio ? [{ name: 'mixing', ratio: r.ratio, general, seed }] : [];
    say(`  training ${r.label} (${r.steps} steps) …`);
    const cfg = parseTrainConfig({
      model: { path: stage0.model },
      data: stage1Data(data),
      training: stage1Training(r.steps, seed),
      monitor: { every: monitorEvery, tasks: [data.tasksFile], target: ['linear_1d'], limit: 60 },
      output_dir: runDir,
      resume: false,
      methods,
    }, `mixed-training study, run '${r.label}'`);
    const res = await runTraining(cfg, undefined, { progress });
    const em = await loadEvalModel(res.finalDir);
    const ev = await evaluate(em, data.tasks, { label: r.label, methods: r.ratio ? ['mixing'] : [], progress: false });
    em.module.dispose();
    ev.monitor = res.monitor?.points ?? [];
    ev.train = lossCurve(res.history);
    writeFileSync(join(runDir, 'results.json'), JSON.stringify(ev, null, 2) + '\n');
    tuned.push(ev);
    const seconds = +((performance.now() - ts) / 1000).toFixed(1);
    rows.push({ label: r.label, steps: r.steps, math: get(ev, 'linear_1d'), nli: get(ev, 'sick_nli'), seconds });
    say(`  ${r.label}: ${summary(ev)} (${seconds.toFixed(0)} s)`);
    torch.dispose([]);
  }
  const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
  const s: MixStudySummary = {
    stage0,
    scheme: 'same target epochs: every run sees as many linear_1d problems; an m:n run has (m+n)/m times the optimizer steps of math-only, and SICK cycles',
    settings: { stage0: { ...STAGE0, steps: stage0.settings.steps }, stage1: { ...STAGE1, steps_math_only: steps, optimizer: 'adamw', schedule: 'cosine', monitor_every: monitorEvery } },
    rows: [{ label: 'base', steps: 0, math: get(base, 'linear_1d'), nli: get(base, 'sick_nli'), seconds: null }, ...rows],
    seconds: +((performance.now() - t0) / 1000).toFixed(1),
  };
  writeFileSync(join(outDir, 'mixstudy.json'), JSON.stringify(s, null, 2) + '\n');
  return out;
}

function summary(r: EvalResults): string {
  return `linear_1d exact match ${(get(r, 'linear_1d') * 100).toFixed(1)}%, SICK NLI ${(get(r, 'sick_nli') * 100).toFixed(1)}% (balanced)`;
}
