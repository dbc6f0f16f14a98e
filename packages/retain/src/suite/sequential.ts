// The sequential protocol on stories260K: three arithmetic families learned in turn (addition/subtraction, then
// multiplication, then linear equations), each its own stage; after every stage the model is scored on all three
// families (exact match on held-out problems) and on held-out TinyStories (the general skill). A recipe's methods
// apply to every stage.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { arithmeticProblems, type ArithProblem } from './arith.js';
import { ASSETS, DEFAULT_MODEL } from './demo.js';
import { exactMatchTaskYaml, writeJsonl } from './common.js';

export const FAMILY_STAGES = [
  { name: 'add_sub', family: 'add_or_sub' },
  { name: 'mul', family: 'mul' },
  { name: 'linear', family: 'linear_1d' },
] as const;

/** Writes the stages' data, the task file and a staged config under outDir; returns the config's path. */
export function writeSequentialConfig(outDir: string, o: { steps: number; methods?: unknown[]; seed?: number; trainSize?: number; testSize?: number }): string {
  const out = resolve(outDir);
  const dir = join(out, 'data');
  mkdirSync(dir, { recursive: true });
  const seed = o.seed ?? 0;
  const tasks: string[] = ['# Written by the sequential protocol: general = held-out TinyStories; one exact-match task per family.',
    '- name: tinystories_heldout', '  kind: perplexity', `  data: ${JSON.stringify(join(ASSETS, 'data', 'tinystories-eval.txt'))}`, '  split: blank_lines', '  primary: next_token_acc', '  role: general'];
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
    model: { path: DEFAULT_MODEL },
    training: { max_steps: o.steps, batch_size: 16, lr: 0.002, schedule: 'cosine', warmup_ratio: 0.06, weight_decay: 0.01, clip_grad_norm: 1.0, seed, log_every: 10 },
    monitor: { every: Math.max(1, Math.round(o.steps / 4)), tasks: [join(dir, 'tasks.yaml')], limit: 60 },
    output_dir: join(out, 'run'),
    methods: o.methods ?? [],
    stages,
  };
  const file = join(out, 'sequential.yaml');
  writeFileSync(file, `# Written by the sequential protocol (suite/sequential.ts).\n${toYaml(cfg)}`);
  return file;
}
