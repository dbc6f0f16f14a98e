// npm run -s bench:sequential — the sequential protocol (suite/sequential.ts), each recipe a staged `retain train`
// config (train/stages.ts) run from scratch; prints each recipe's matrix (skills after every stage, the general probe)
// with average accuracy, backward transfer and average forgetting, and one JSON object.
//   --suite stories (default): stories260K learns addition/subtraction, then multiplication, then linear equations.
//   --suite mnist: the ml5 MNIST MLP learns the digits turned 90°, then 180°, then 270° (same head).
//   --suite smollm2: SmolLM2-135M-Instruct learns the three arithmetic families in turn (FT, replay, distill, SDFT, LoRA).
// Usage: npm run -s bench:sequential -- [--suite stories|mnist|smollm2] [--steps N] [--out dir] [--only FT,replay]
//        [--write-docs]   (mnist: replaces its block in docs/RESULTS.md with the table, command, machine, date, commit)
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { writeMnistSequentialConfig, writeSequentialConfig } from '../packages/retain/src/suite/sequential.js';
import { runStages, sequenceEvals, sequenceRow, sequenceTable, type Sequence, type SequenceRow, type Stage } from '../packages/retain/src/train/stages.js';
import { DEMO_REPLAY } from '../packages/retain/src/suite/demo.js';
import { mnistSetup, sequentialRecipes, smollm2SequentialRecipes, storiesSetup, type MethodEntry, type Recipe } from '../packages/retain/src/suite/recipes.js';
import { modelPath, needModel } from './models.js';
import { SMOLLM2 } from './parity/real_models.js';
import { selectRecipes } from '../packages/retain/src/suite/common.js';
import { writeResultsBlock } from './results-doc.js';

interface SuiteDef {
  steps: number;
  /** The recipes, given the general data's file (replay's and EWC's). */
  recipes: (general: string) => Recipe[];
  /** Writes the staged config under dir with the recipe's methods; returns its path. */
  write: (dir: string, steps: number, methods: (general: string) => MethodEntry[]) => string;
  about: string;
}

const SUITES: Record<string, SuiteDef> = {
  stories: {
    steps: 100,
    recipes: (g) => sequentialRecipes(storiesSetup(g)),
    write: (dir, steps, methods) => writeSequentialConfig(dir, { steps, methods: methods(DEMO_REPLAY) }),
    about: 'stories260K, batch 16, lr 0.002',
  },
  smollm2: {
    steps: 40,
    recipes: (g) => smollm2SequentialRecipes(g),
    write: (dir, steps, methods) => writeSequentialConfig(dir, {
      steps, methods: methods(DEMO_REPLAY), model: modelPath(SMOLLM2), stories: 20, monitorEvery: steps,
      training: { batch_size: 8, lr: 3e-4, warmup_ratio: 0.1, weight_decay: 0, log_every: 5 },
    }),
    about: 'SmolLM2-135M-Instruct (the smollm2 suite\'s model, batch 8, lr 3e-4 cosine); scored after each stage on 60 held-out problems per family and 20 held-out TinyStories stories',
  },
  mnist: {
    steps: 300,
    recipes: (g) => sequentialRecipes(mnistSetup(g), ['ewc']),
    write: (dir, steps, methods) => writeMnistSequentialConfig(dir, { steps, methods }),
    about: 'ml5 MNIST MLP 784-128-32-10, 8,000 training digits per rotation, batch 64, lr 0.001 cosine; scored on the 2,000 held-out digits',
  },
};

const args = process.argv.slice(2);
const opt = (n: string) => (args.includes(n) ? args[args.indexOf(n) + 1] : undefined);
const suiteName = opt('--suite') ?? 'stories';
const suite = SUITES[suiteName];
if (!suite) throw new Error(`unknown --suite '${suiteName}'; suites: ${Object.keys(SUITES).join(', ')}`);
const missing = suiteName === 'smollm2' && needModel(SMOLLM2);
if (missing) {
  console.error(`bench:sequential --suite smollm2 ${missing}`);
  process.exit(1);
}
const steps = Number(opt('--steps') ?? suite.steps);
const outRoot = resolve(opt('--out') ?? (suiteName === 'stories' ? 'runs/sequential' : `runs/sequential-${suiteName}`));
const labels = selectRecipes(suite.recipes('(general data)'), opt('--only')?.split(',')).map((r) => r.label);

// The commit the run starts from: files edited while it runs are not what it measured.
const source = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim() +
  (execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim() ? ' + uncommitted changes' : '');

type Result = Sequence & { base: SequenceRow; seconds: number };
const out: Record<string, Result> = {};
for (const label of labels) {
  const t0 = performance.now();
  const dir = join(outRoot, label.replace(/\W+/g, '_'));
  // From scratch: runStages skips finished stages, and a folder left by other --steps would be reused silently.
  rmSync(dir, { recursive: true, force: true });
  const cfg = suite.write(dir, steps, (g) => suite.recipes(g).find((r) => r.label === label)!.methods);
  const raw = parseYaml(readFileSync(cfg, 'utf8'));
  const r = await runStages(raw, dirname(cfg), cfg, { progress: false });
  const base = sequenceRow('base', raw.stages as Stage[], sequenceEvals(r.root, r.sequence.stages)[0]);
  out[label] = { ...r.sequence, base, seconds: +((performance.now() - t0) / 1000).toFixed(0) };
  process.stderr.write(`\n${label} (${out[label].seconds} s):\n${sequenceTable(r.sequence)}\n`);
}
console.log(JSON.stringify({ benchmark: 'sequential', suite: suiteName, steps_per_stage: steps, recipes: out }, null, 2));
if (args.includes('--write-docs')) writeDocs();

/** The docs block: one line per recipe, each stage's row as skills / general, then the metrics and the wall time. */
function writeDocs(): void {
  const f = (x: number | null | undefined) => (x === null || x === undefined ? '—' : x.toFixed(1).replace('-', '−'));
  const first = Object.values(out)[0];
  if (!first) return;
  const cells = (s: Sequence, r: SequenceRow) => [...s.stages.map((n) => f(r.skills[n])), f(r.general)].join(' / ');
  const command = ['npm run -s bench:sequential --', ...args.filter((a) => a !== '--write-docs')].join(' ');
  const body = [
    `\`${command}\` — ${steps} steps per stage, ${suite.about}; one seed. ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}, commit ${source}.`,
    `Before any stage: ${cells(first, first.base)} (${first.stages.join(' / ')} / general).`,
    '',
    `| recipe | after ${first.stages[0]} (${first.stages.join(' / ')} / general) | ${first.stages.slice(1).map((n) => `after ${n}`).join(' | ')} | avg acc | BWT | avg forgetting | wall |`,
    `|---|${first.stages.map(() => '---').join('|')}|---:|---:|---:|---:|`,
    ...Object.entries(out).map(([label, s]) => `| ${label} | ${s.rows.map((r) => cells(s, r)).join(' | ')} | ${f(s.average_accuracy)} | ${f(s.backward_transfer)} | ${f(s.average_forgetting)} | ${s.seconds} s |`),
  ].join('\n');
  writeResultsBlock(`sequential:${suiteName}`, body, `## Skills learned in sequence: ${suiteName}`);
}
