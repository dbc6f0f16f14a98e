// The sequential protocol, as staged configs for `retain train` (train/stages.ts). A recipe's methods apply to every
// stage, each stage starting from the model the one before it wrote.
//   stories260K: three arithmetic families in turn (addition/subtraction, then multiplication, then linear equations),
//     scored after every stage on all three (exact match on held-out problems) and on held-out TinyStories (general).
//   MNIST MLP: the digits rotated 90°, then 180°, then 270° (same 10-class head), scored after every stage on the
//     held-out digits in each rotation and upright (general), on the MNIST suite's split (suite/mnist.ts).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { arithmeticProblems, type ArithProblem } from './arith.js';
import { ASSETS, DEFAULT_MODEL, heldOutStories } from './demo.js';
import { exactMatchTaskYaml, writeJsonl } from './common.js';
import { HELD_OUT, imageTaskYaml, MNIST_MODEL, mnistTraining, rotate, splitDigits, type IdDigit } from './mnist.js';

export const FAMILY_STAGES = [
  { name: 'add_sub', family: 'add_or_sub' },
  { name: 'mul', family: 'mul' },
  { name: 'linear', family: 'linear_1d' },
] as const;

/**
 * Writes the stages' data, the task file and a staged config under outDir; returns the config's path. By default the
 * stories260K setting; `model`, `training` (merged into the defaults), `stories` (held-out stories scored, else all)
 * and `monitorEvery` (else four probes a stage) size it for a larger model (bench:sequential --suite smollm2).
 */
export function writeSequentialConfig(outDir: string, o: { steps: number; methods?: unknown[]; seed?: number; trainSize?: number; testSize?: number; model?: string; training?: Record<string, unknown>; stories?: number; monitorEvery?: number }): string {
  const out = resolve(outDir);
  const dir = join(out, 'data');
  mkdirSync(dir, { recursive: true });
  const seed = o.seed ?? 0;
  const general = o.stories === undefined ? join(ASSETS, 'data', 'tinystories-eval.txt') : join(dir, `tinystories-eval-${o.stories}.txt`);
  if (o.stories !== undefined) writeFileSync(general, heldOutStories(o.stories).join('\n\n') + '\n');
  const tasks: string[] = ['# Written by the sequential protocol: general = held-out TinyStories; one exact-match task per family.',
    '- name: tinystories_heldout', '  kind: perplexity', `  data: ${JSON.stringify(general)}`, '  split: blank_lines', '  primary: next_token_acc', '  role: general'];
  // Multiplication of 0..12 in three phrasings has 507 distinct problems: 400 train beside 60 held out.
  const stages = FAMILY_STAGES.map((s, k) => {
    const fam = [s.family] as ArithProblem['family'][];
    const test = arithmeticProblems(o.testSize ?? 60, seed + 1000 + k, { families: fam });
    const train = arithmeticProblems(o.trainSize ?? 400, seed + k, { families: fam, exclude: new Set(test.map((p) => p.prompt.slice(10, -8))) });
    writeJsonl(join(dir, `${s.name}-train.jsonl`), train);
    writeJsonl(join(dir, `${s.name}-test.jsonl`), test);
    tasks.push(...exactMatchTaskYaml(s.name, `${s.name}-test.jsonl`, 'target'));
    return { name: s.name, skill: s.name, data: { train: { path: join(dir, `${s.name}-train.jsonl`), format: { type: 'prompt_completion' }, max_length: 64 } } };
  });
  writeFileSync(join(dir, 'tasks.yaml'), tasks.join('\n') + '\n');
  const cfg = {
    model: { path: o.model ?? DEFAULT_MODEL },
    training: { max_steps: o.steps, batch_size: 16, lr: 0.002, schedule: 'cosine', warmup_ratio: 0.06, weight_decay: 0.01, clip_grad_norm: 1.0, seed, log_every: 10, ...o.training },
    monitor: { every: o.monitorEvery ?? Math.max(1, Math.round(o.steps / 4)), tasks: [join(dir, 'tasks.yaml')], limit: 60 },
    output_dir: join(out, 'run'),
    methods: o.methods ?? [],
    stages,
  };
  const file = join(out, 'sequential.yaml');
  writeFileSync(file, `# Written by the sequential protocol (suite/sequential.ts).\n${toYaml(cfg)}`);
  return file;
}

export const ROTATION_STAGES = [
  { name: 'rot90', turns: 1 },
  { name: 'rot180', turns: 2 },
  { name: 'rot270', turns: 3 },
] as const;

/**
 * Writes the rotated digits, the task file and a staged MNIST config under outDir; returns the config's path.
 * `trainSize`/`testSize` cut the suite's 8,000/2,000 split (tests); `methods` gets the upright training digits' file,
 * the general data of replay and EWC.
 */
export function writeMnistSequentialConfig(outDir: string, o: { steps: number; methods?: (original: string) => unknown[]; seed?: number; trainSize?: number; testSize?: number }): string {
  const out = resolve(outDir);
  const dir = join(out, 'data');
  mkdirSync(dir, { recursive: true });
  const seed = o.seed ?? 0;
  const split = splitDigits(seed);
  const train = split.train.slice(0, o.trainSize);
  const held = split.held.slice(0, o.testSize ?? HELD_OUT);
  const rows = (xs: IdDigit[], turns: number) => xs.map((d) => ({ id: d.id, image: rotate(d.pixels, turns), label: d.label }));
  const original = join(dir, 'mnist-train.jsonl');
  writeJsonl(original, rows(train, 0));
  writeJsonl(join(dir, 'mnist-test.jsonl'), rows(held, 0));
  const tasks = ['# Written by the sequential protocol: general = the upright held-out digits; one task per rotation.',
    imageTaskYaml('mnist', 'mnist-test.jsonl', 'general', `10-class accuracy on ${held.length} held-out upright digits`)];
  const stages = ROTATION_STAGES.map((s) => {
    writeJsonl(join(dir, `${s.name}-train.jsonl`), rows(train, s.turns));
    writeJsonl(join(dir, `${s.name}-test.jsonl`), rows(held, s.turns));
    tasks.push(imageTaskYaml(s.name, `${s.name}-test.jsonl`, 'target', `10-class accuracy on the same ${held.length} held-out digits turned ${90 * s.turns}° counter-clockwise`));
    return { name: s.name, skill: s.name, data: { train: { path: join(dir, `${s.name}-train.jsonl`), format: { type: 'image_classification', num_classes: 10 }, name: s.name } } };
  });
  writeFileSync(join(dir, 'tasks.yaml'), tasks.join('\n') + '\n');
  const cfg = {
    model: { path: MNIST_MODEL },
    training: mnistTraining(o.steps, seed),
    // Probing the whole held-out set costs milliseconds on this MLP, so the matrix is scored on all of it.
    monitor: { every: Math.max(1, Math.round(o.steps / 4)), tasks: [join(dir, 'tasks.yaml')], limit: held.length, batch_size: 500 },
    output_dir: join(out, 'run'),
    methods: o.methods?.(original) ?? [],
    stages,
  };
  const file = join(out, 'sequential.yaml');
  writeFileSync(file, `# Written by the sequential protocol (suite/sequential.ts).\n${toYaml(cfg)}`);
  return file;
}
