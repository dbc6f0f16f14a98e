// `retain tune --max-forgetting X`: sweeps the knobs that trade target skill for general skill (FLOW's τ scale, the
// mixing ratio, WiSE-FT's α, SAM's ρ, LoRA's rank) on the demo's setup (stories260K → arithmetic) and returns the
// configuration with the best target score among those whose forgetting stays within X points, with the Pareto
// chart of every point tried.
import { join, resolve } from 'node:path';
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { nonNegative, positiveInt } from '../cli/args.js';
import { stringify as toYaml } from 'yaml';
import { ASSETS, runDemo, type Recipe } from './demo.js';
import type { CompareResults, EvalResults } from '../eval/results.js';

export const KNOBS = ['flow', 'mixing', 'wise', 'sam', 'lora'] as const;
export type Knob = (typeof KNOBS)[number];

export function tuneRecipes(knobs: readonly Knob[], replay = join(ASSETS, 'data', 'tinystories-replay.txt')): Recipe[] {
  const general = { path: replay, format: { type: 'text' }, max_length: 64, name: 'tinystories' };
  const out: Recipe[] = [{ label: 'FT', methods: [] }];
  for (const k of knobs) {
    if (k === 'flow') for (const s of [0.5, 1, 2]) out.push({ label: `FLOW τ×${s}`, methods: [{ name: 'flow', tau_scale: s }] });
    if (k === 'mixing') for (const r of ['1:1', '3:1', '7:1', '15:1']) out.push({ label: `mix ${r}`, methods: [{ name: 'mixing', ratio: r, general }] });
    if (k === 'wise') for (const a of [0.3, 0.5, 0.7]) out.push({ label: `WiSE α=${a}`, methods: [{ name: 'wise', alpha: a }] });
    if (k === 'sam') for (const rho of [0.02, 0.05, 0.1]) out.push({ label: `SAM ρ=${rho}`, methods: [{ name: 'sam', rho }] });
    if (k === 'lora') for (const r of [4, 16, 64]) out.push({ label: `LoRA r=${r}`, methods: [{ name: 'lora', r, save_merged: true }] });
  }
  return out;
}

export interface TunePoint {
  label: string;
  methods: Recipe['methods'];
  target: number;
  general: number;
  /** General points lost against the base (positive = forgot). */
  forgetting: number;
}

const pct = (r: EvalResults, task: string, metric: string) => 100 * (r.rows.find((x) => x.task === task && x.metric === metric)?.value ?? NaN);

/** Scores each run and picks the best target among those within the budget (null when none is). */
export function pickWithinBudget(c: CompareResults, recipes: Recipe[], maxForgetting: number): { points: TunePoint[]; best: TunePoint | null } {
  const g0 = pct(c.base, 'tinystories_heldout', 'next_token_acc');
  const points = c.tuned.map((r) => {
    const general = pct(r, 'tinystories_heldout', 'next_token_acc');
    return { label: r.label, methods: recipes.find((x) => x.label === r.label)!.methods, target: pct(r, 'arithmetic', 'exact_match'), general, forgetting: g0 - general };
  });
  const ok = points.filter((p) => p.forgetting <= maxForgetting);
  // Ties on target go to the one that forgot less.
  const best = ok.sort((a, b) => b.target - a.target || a.forgetting - b.forgetting)[0] ?? null;
  return { points, best };
}

export function registerTuneCommand(program: Command): void {
  program
    .command('tune')
    .requiredOption('--max-forgetting <points>', 'largest allowed drop of the general score (TinyStories next-token accuracy), in points', nonNegative)
    .option('--knobs <list>', `knobs to sweep (${KNOBS.join(', ')})`, (v) => v.split(',').map((s) => s.trim()), [...KNOBS])
    .option('--steps <n>', 'optimizer steps per run', positiveInt, 300)
    .option('--out <dir>', 'where runs, results and the report go', 'runs/tune')
    .action(async (o: { maxForgetting: number; knobs: string[]; steps: number; out: string }) => {
      const bad = o.knobs.filter((k) => !(KNOBS as readonly string[]).includes(k));
      if (bad.length) throw new Error(`--knobs: unknown ${bad.map((b) => `'${b}'`).join(', ')}; use ${KNOBS.join(', ')}`);
      const recipes = tuneRecipes(o.knobs as Knob[]);
      const c = await runDemo({ outDir: o.out, steps: o.steps, recipes });
      const { points, best } = pickWithinBudget(c, recipes, o.maxForgetting);
      const { writeReport } = await import('../report/report.js');
      await writeReport(c, o.out);
      console.log('\nrun                 target EM   general acc   forgetting');
      for (const p of [...points].sort((a, b) => b.target - a.target)) {
        console.log(`${p.label.padEnd(18)} ${p.target.toFixed(1).padStart(8)}%  ${p.general.toFixed(2).padStart(10)}%  ${p.forgetting.toFixed(2).padStart(10)}${p === best ? '   ← best within budget' : ''}`);
      }
      const summary = { max_forgetting: o.maxForgetting, best: best ? { label: best.label, methods: best.methods, target: best.target, forgetting: best.forgetting } : null, points };
      writeFileSync(join(resolve(o.out), 'tune.json'), JSON.stringify(summary, null, 2) + '\n');
      if (best) console.log(`\nbest within ${o.maxForgetting} points: ${best.label} (target ${best.target.toFixed(1)}%, forgetting ${best.forgetting.toFixed(2)})\nmethods:\n${toYaml(best.methods).trimEnd().replace(/^/gm, '  ')}`);
      else console.log(`\nno configuration stayed within ${o.maxForgetting} points of forgetting; the least forgetful was ${[...points].sort((a, b) => a.forgetting - b.forgetting)[0]?.label}`);
      console.log(`report: ${join(resolve(o.out), 'report.html')}`);
    });
}
