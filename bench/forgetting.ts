// npm run bench:forgetting — the forgetting suite: every method of docs/METHODS.md on real pretrained models, each
// result scored on the skill to keep (general) and the skill to gain (target), with a report per suite. The recipes
// come from the catalogue, packages/retain/src/suite/recipes.ts.
//   stories   stories260K → arithmetic (the demo's setup, more steps): every method alone and every pair of methods
//             (pairs that cannot compose are listed with the reason they were refused)
//   charlstm  char-LSTM Shakespeare → Darwin (general: Shakespeare bits/char; target: Darwin bits/char)
//   mnist     MNIST MLP → rotated digits (same head), and → a new-head task with linear probe and FLOW's vision variant
//   mixstudy  the mixed-training study at small scale: NLI model → linear equations, math-only vs 1:1 … 15:1
//   minilm    all-MiniLM-L6-v2 → SICK entailment through a new head (general: SICK-R Spearman, C4 retrieval)
//   effnet    EfficientNet-Lite0 → a new MNIST head (general: agreement with the base model's ImageNet top-1)
//   smollm2   SmolLM2-135M-Instruct → arithmetic (general: arc_easy, hellaswag, held-out TinyStories; target:
//             exact match), with distillation replay and SDFT besides the catalogue's methods
//             (the real models come from the models folder: `.refenv/bin/python scripts/models.py`)
// Usage: npm run bench:forgetting -- [--only stories,charlstm,mnist,mixstudy,minilm,effnet,smollm2] [--steps N] [--no-pairs] [--out dir]
//        [--recipes 'FT,L2']  (only these recipes of the suite, by label; not the stories suite)
//        [--limit N]      (smollm2: at most N items of every task, for a quick smoke run; by default the suite's sizes)
//        [--fresh]        (retrain every recipe; by default finished runs with unchanged settings are reused)
//        [--write-docs]   (replaces the suite's block in docs/RESULTS.md with the table, command, machine and date)
//        [--summary [--summary-file f]]  (prints docs/forgetting-summary.json, the frontier study's per-suite verdicts,
//                         as one JSON object and trains nothing; bench/forgetting-summary.ts says what it holds)
// Prints one JSON object (per suite: seconds, runs, refused pairs, the Pareto-best runs) on stdout; progress on stderr.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { ASSETS, DEMO_REPLAY, runDemo } from '../packages/retain/src/suite/demo.js';
import { CHARLSTM_NOT_RUN, EFFNET_NOT_RUN, MINILM_NOT_RUN, MNIST_NOT_RUN, SMOLLM2_NOT_RUN, STORIES_NOT_RUN, storiesRecipes } from '../packages/retain/src/suite/recipes.js';
import type { CompareResults, EvalResults } from '../packages/retain/src/eval/results.js';
import { forgettingTable } from '../packages/retain/src/report/table.js';
import { writeReport } from '../packages/retain/src/report/report.js';
import { paretoFrontier } from '../packages/retain/src/report/charts.js';
import { modelPath, needModel } from './models.js';
import { writeResultsBlock } from './results-doc.js';
import { SUMMARY_FILE, summaryObject } from './forgetting-summary.js';
import { EFFNET, MINILM, MINILM_PUBLISHED_SICK_R, minilmSickR, naturalCrops, needEffnetSuite, SMOLLM2 } from './parity/real_models.js';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
if (flag('--summary')) {
  try {
    console.log(JSON.stringify(summaryObject(opt('--summary-file') ?? SUMMARY_FILE), null, 2));
    process.exit(0);
  } catch (e) {
    console.error(`bench:forgetting --summary: ${(e as Error).message}`);
    process.exit(1);
  }
}
const SUITES = ['stories', 'charlstm', 'mnist', 'mixstudy', 'minilm', 'effnet', 'smollm2'] as const;
/** The suites on a real model from the models folder, and which one. */
const REAL_MODEL: Record<string, string> = { minilm: MINILM, effnet: EFFNET, smollm2: SMOLLM2 };
/** The catalogue's methods each suite leaves out, and why (listed under the suite's block). */
const NOT_RUN: Record<string, Record<string, string>> = {
  stories: STORIES_NOT_RUN, charlstm: CHARLSTM_NOT_RUN, mnist: MNIST_NOT_RUN, minilm: MINILM_NOT_RUN, effnet: EFFNET_NOT_RUN, smollm2: SMOLLM2_NOT_RUN,
};
const only = (opt('--only') ?? SUITES.join(',')).split(',').map((s) => s.trim());
for (const s of only) if (!(SUITES as readonly string[]).includes(s)) throw new Error(`--only: unknown suite '${s}'; suites: ${SUITES.join(', ')}`);
const steps = opt('--steps') ? Number(opt('--steps')) : undefined;
const limit = opt('--limit') ? Number(opt('--limit')) : undefined;
/** Some of a suite's recipes by label (the stories suite takes all of its own). */
const recipeList = opt('--recipes')?.split(',').map((s) => s.trim());
const outRoot = resolve(opt('--out') ?? 'runs/forgetting');
const root = new URL('..', import.meta.url).pathname;

// Data-oblivious replay (issue #7) reads text the base model wrote itself from BOS (`retain synth`, shipped in assets).
const SYNTH = join(ASSETS, 'data', 'stories260k-synth.jsonl');

/**
 * The runs on the Pareto frontier of general vs target (base left out). Unlike the report's chart, which averages
 * accuracy-like metrics only, lower-is-better primaries (bits/char) count here, negated, so the char-LSTM suite has a
 * frontier too.
 */
function paretoBest(c: CompareResults): string[] {
  const score = (r: EvalResults, role: 'general' | 'target') => {
    const rows = r.rows.filter((x) => x.primary && x.role === role);
    const up = rows.filter((x) => x.higher_is_better);
    const use = up.length ? up : rows;
    return use.reduce((s, x) => s + (x.higher_is_better ? x.value : -x.value), 0) / use.length;
  };
  const pts = c.tuned.map((r) => ({ label: r.label, general: score(r, 'general'), target: score(r, 'target') }));
  const front = new Set(paretoFrontier(pts));
  return pts.filter((p) => front.has(p)).map((p) => p.label);
}

function machine(): string {
  return `${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, Node ${process.version}`;
}

/** Replaces the suite's block in docs/RESULTS.md (appends it if absent). */
function writeDocs(suite: string, body: string): void {
  writeResultsBlock(`forgetting:${suite}`, body);
}

const summary: Record<string, unknown> = {};
const t00 = performance.now();
for (const suite of only) {
  const t0 = performance.now();
  const outDir = join(outRoot, suite);
  mkdirSync(outDir, { recursive: true });
  let c: CompareResults;
  let refused: { label: string; reason: string }[] = [];
  const notRun = NOT_RUN[suite] ?? {};
  process.stderr.write(`\n== ${suite} ==\n`);
  if (suite === 'stories') {
    const r = storiesRecipes(DEMO_REPLAY, SYNTH, !flag('--no-pairs'));
    refused = r.refused;
    c = await runDemo({ outDir, recipes: r.recipes, steps: steps ?? 400, monitorEvery: 50, reuse: !flag('--fresh'), keepGoing: true });
  } else {
    const file = { charlstm: 'charlstm', mnist: 'mnist', mixstudy: 'mixstudy', minilm: 'minilm', effnet: 'effnet', smollm2: 'smollm2' }[suite]!;
    const path = join(root, 'packages/retain/src/suite', `${file}.ts`);
    if (!existsSync(path)) throw new Error(`suite '${suite}' is not built yet (${path} is missing)`);
    const mod = await import(path);
    const fn = Object.values(mod).find((v) => typeof v === 'function' && /^run\w*Suite$/.test((v as { name: string }).name)) as (o: { outDir: string; steps?: number; limit?: number; stories?: number; testSize?: number; model?: string; natural?: string; reuse?: boolean; only?: string[] }) => Promise<CompareResults>;
    const real = REAL_MODEL[suite];
    const missing = suite === 'effnet' ? needEffnetSuite() : real && needModel(real);
    if (missing) throw new Error(`suite '${suite}' ${missing}`);
    // The effnet suite's natural images: seeded crops of scikit-learn's two photographs, cut in the reference environment.
    const natural = suite === 'effnet' ? { natural: naturalCrops(join(outDir, 'natural-crops.safetensors'), 64) } : {};
    c = await fn({ outDir, steps, ...(limit ? { limit, stories: limit, testSize: limit } : {}), reuse: !flag('--fresh'), ...(recipeList ? { only: recipeList } : {}), ...(real ? { model: modelPath(real) } : {}), ...natural });
  }
  await writeReport(c, outDir);
  const seconds = +((performance.now() - t0) / 1000).toFixed(1);
  const table = forgettingTable(c.base, c.tuned);
  const best = paretoBest(c);
  const failedFile = join(outDir, 'failed.json');
  const failed: { label: string; error: string }[] = existsSync(failedFile) ? JSON.parse(readFileSync(failedFile, 'utf8')) : [];
  summary[suite] = { seconds, runs: c.tuned.length, refused, failed, pareto: best, out: outDir };
  writeFileSync(join(outDir, 'table.md'), table + '\n');
  // MTEB scores SICK-R over all 9,927 pairs; the suite's general column uses SICK test alone.
  const sickR = suite === 'minilm' ? await minilmSickR() : null;
  if (flag('--write-docs')) {
    const cmd = `npm run bench:forgetting -- --only ${suite}${steps ? ` --steps ${steps}` : ''}${limit ? ` --limit ${limit}` : ''}${recipeList ? ` --recipes '${recipeList.join(',')}'` : ''}${flag('--no-pairs') ? ' --no-pairs' : ''} --write-docs`;
    const refusedMd = (refused.length ? `\n\nRefused pairs (checked before training):\n${refused.map((r) => `- ${r.label}: ${r.reason}`).join('\n')}` : '') +
      (failed.length ? `\n\nRuns that failed:\n${failed.map((r) => `- ${r.label}: ${r.error}`).join('\n')}` : '') +
      (Object.keys(notRun).length ? `\n\nNot run:\n${Object.entries(notRun).map(([k, v]) => `- ${k}: ${v}`).join('\n')}` : '');
    const walls = c.tuned.filter((r) => r.wall_seconds !== undefined);
    const wallMd = walls.length ? `\n\nWall time per run (training and scoring): ${walls.map((r) => `${r.label} ${Math.round(r.wall_seconds!)} s`).join(', ')}.` : '';
    const sickMd = sickR ? `\n\nBase SICK-R over all ${sickR.pairs.toLocaleString('en')} SICK pairs (MTEB's set): ${(sickR.spearman * 100).toFixed(2)}; MTEB's published figure for all-MiniLM-L6-v2: ${(MINILM_PUBLISHED_SICK_R * 100).toFixed(2)}.` : '';
    writeDocs(suite, `Command: \`${cmd}\` · machine: ${machine()} · date: ${new Date().toISOString().slice(0, 10)} · ${seconds} s. Report: \`${join('runs/forgetting', suite, 'report.html')}\`.\n\n${table}${sickMd}\n\nOn the Pareto frontier (general vs target): ${best.join(', ')}.${wallMd}${refusedMd}`);
  }
}
console.log(JSON.stringify({ suites: summary, seconds: +((performance.now() - t00) / 1000).toFixed(1), machine: machine(), date: new Date().toISOString() }, null, 2));
