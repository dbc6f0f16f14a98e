// npm run -s bench:sdft — SDFT against standard fine-tuning, replay and distillation replay on a model with
// in-context ability: SmolLM2-135M-Instruct (.models, from scripts/models.py), whose teacher-with-demonstration beats
// its student on the demo's held-out arithmetic (bench/sdft_teacher.ts --model .models/SmolLM2-135M-Instruct-Q4_1:
// greedy exact 0.65 against 0.133). The demo's setup otherwise (retain demo's data, probes and report): general =
// held-out TinyStories next-token accuracy, target = exact match on held-out problems.
// Usage: npm run -s bench:sdft -- [--steps 40] [--out runs/sdft-smollm2] [--only "SFT,SDFT"]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ASSETS, runDemo, DEMO_REPLAY } from '../packages/retain/src/suite/demo.js';
import type { Recipe } from '../packages/retain/src/suite/recipes.js';
import { forgettingTableText } from '../packages/retain/src/report/table.js';

const args = process.argv.slice(2);
const opt = (n: string) => (args.includes(n) ? args[args.indexOf(n) + 1] : undefined);
const root = new URL('..', import.meta.url).pathname;
const model = join(process.env.RETAIN_MODELS ?? join(root, '.models'), 'SmolLM2-135M-Instruct-Q4_1');
if (!existsSync(model)) {
  console.error(`bench:sdft: ${model} is missing; bring it with .refenv/bin/python scripts/models.py SmolLM2-135M-Instruct-Q4_1`);
  process.exit(2);
}

const general = { path: DEMO_REPLAY, format: { type: 'text' }, max_length: 64, name: 'tinystories' };
// A 135M instruct model: a full fine-tune's learning rate, not the 260K demo model's.
const training = { lr: 3e-5, batch_size: 8, warmup_ratio: 0.1 };
const RECIPES: Recipe[] = [
  { label: 'SFT', methods: [], training },
  { label: 'mix 1:1', methods: [{ name: 'mixing', ratio: '1:1', general }], training },
  { label: 'distill', methods: [{ name: 'distill', data: general }], training },
  { label: 'SDFT', methods: [{ name: 'sdft', max_tokens: 6 }], training },
  { label: 'SDFT + mix 1:1', methods: [{ name: 'sdft', max_tokens: 6 }, { name: 'mixing', ratio: '1:1', general }], training },
];

// The first 30 held-out stories: a 135M model scores the whole file in minutes per evaluation on a busy CPU.
const outDir = resolve(opt('--out') ?? 'runs/sdft-smollm2');
mkdirSync(outDir, { recursive: true });
const generalText = join(outDir, 'tinystories-eval-30.txt');
writeFileSync(generalText, readFileSync(join(ASSETS, 'data', 'tinystories-eval.txt'), 'utf8').split(/\n\s*\n/).slice(0, 30).join('\n\n') + '\n');
const steps = Number(opt('--steps') ?? 40);
const t0 = performance.now();
const c = await runDemo({
  outDir,
  generalText,
  monitorEvery: steps,
  model,
  steps,
  trainSize: 400,
  testSize: 40,
  recipes: RECIPES,
  only: opt('--only')?.split(','),
  reuse: true,
  keepGoing: true,
});
console.log(forgettingTableText(c.base, c.tuned));
console.log(JSON.stringify({ benchmark: 'sdft_smollm2', model, seconds: +((performance.now() - t0) / 1000).toFixed(0), runs: c.tuned.map((r) => ({ label: r.label, rows: r.rows.filter((x) => x.primary).map((x) => ({ task: x.task, metric: x.metric, value: x.value, stderr: x.stderr })) })) }));
