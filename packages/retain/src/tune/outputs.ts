// What a finished search leaves: tune.json (every candidate's scores, the frontier, the best with intervals),
// best.yaml (the chosen recipe as a config `retain train` runs as it is) and the report of the full-length runs.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import type { TrainConfig } from '../config.js';
import type { CompareResults, EvalResults } from '../eval/results.js';
import { averageGroup, forgettingAndTarget, isFractionMetric, metricName, primaryRows } from '../eval/results.js';
import { interval, type CandidateState, type Score, type TuneResult } from './search.js';

export interface FrontierPoint {
  id: string;
  label: string;
  status: CandidateState['status'];
  steps: number;
  lr: number;
  methods: CandidateState['methods'];
  /** The last rung reached. */
  step: number;
  forgetting: number;
  target: number;
  /** On the Pareto frontier of the full-length runs (no other run both forgets less and gains more). */
  pareto: boolean;
  note?: string;
  /** Mean and 95% interval over the seeds, for candidates rerun with more seeds. */
  seeded?: SeededScore;
}

export interface Summary {
  format: 'retain.tune/1';
  max_forgetting: number;
  base_target: number;
  /** How forgetting and target read back as the metrics' own values (a summary states general = base − forgetting). */
  units: MonitorUnits;
  ft: SeededScore;
  best: (SeededScore & { label: string; methods: CandidateState['methods']; lr: number; steps: number; target_gain_of_ft: number }) | null;
  frontier: FrontierPoint[];
  seconds: number;
}

export interface SeededScore {
  forgetting: { mean: number; half: number | null };
  target: { mean: number; half: number | null };
  seeds: number;
}

/**
 * The monitor's units: forgetting is points lost (fractions ×100) on the averageable general rows, target the mean of
 * the target rows signed so that higher is better. `base` is the base model's general value in that unit.
 */
export interface MonitorUnits {
  general: { base: number; unit: string; higher_is_better: boolean };
  target: { unit: string; higher_is_better: boolean };
}

export function monitorUnits(base: EvalResults): MonitorUnits {
  const rows = primaryRows(base);
  const g = averageGroup(rows.filter((x) => x.role === 'general').map((x) => ({ ...x, higherIsBetter: x.higher_is_better })));
  const t = rows.filter((x) => x.role === 'target');
  const unit = (metric: string) => (isFractionMetric(metric) ? 'points' : metricName(metric));
  return {
    general: g
      ? { base: (g.tasks.reduce((s, x) => s + x.value, 0) / g.tasks.length) * (g.fraction ? 100 : 1), unit: g.fraction ? 'points' : g.metric, higher_is_better: g.higherIsBetter }
      : { base: NaN, unit: 'none', higher_is_better: true },
    target: { unit: t.length ? unit(t[0].metric) : 'none', higher_is_better: t.every((x) => x.higher_is_better) },
  };
}

function seeded(c: CandidateState): SeededScore {
  const all: Score[] = [c.scores.at(-1)!, ...(c.seeds ?? [])];
  return { forgetting: interval(all.map((s) => s.forgetting)), target: interval(all.map((s) => s.target)), seeds: all.length };
}

export function summarize(r: TuneResult, maxForgetting: number): Summary {
  const ran = r.state.candidates.filter((c) => c.scores.length);
  const full = ran.filter((c) => c.status === 'done');
  const dominated = (c: CandidateState) => full.some((d) => d !== c && d.scores.at(-1)!.forgetting <= c.scores.at(-1)!.forgetting && d.scores.at(-1)!.target >= c.scores.at(-1)!.target &&
    (d.scores.at(-1)!.forgetting < c.scores.at(-1)!.forgetting || d.scores.at(-1)!.target > c.scores.at(-1)!.target));
  const frontier = ran.map((c) => ({
    id: c.id, label: c.label, status: c.status, steps: c.steps, lr: c.lr, methods: c.methods,
    step: c.scores.at(-1)!.step, forgetting: c.scores.at(-1)!.forgetting, target: c.scores.at(-1)!.target,
    pareto: c.status === 'done' && !dominated(c), ...(c.note ? { note: c.note } : {}), ...(c.seeds?.length ? { seeded: seeded(c) } : {}),
  }));
  const baseTarget = forgettingAndTarget(primaryRows(r.base), primaryRows(r.base)).target ?? NaN;
  const ft = seeded(r.ft);
  const best = r.best && { ...seeded(r.best), label: r.best.label, methods: r.best.methods, lr: r.best.lr, steps: r.best.steps };
  return {
    format: 'retain.tune/1', max_forgetting: maxForgetting, base_target: baseTarget, units: monitorUnits(r.base), ft,
    best: best && { ...best, target_gain_of_ft: (best.target.mean - baseTarget) / (ft.target.mean - baseTarget) },
    frontier, seconds: +r.elapsedSeconds.toFixed(1),
  };
}

/** best.yaml: the user's config with the chosen methods, learning rate and steps, writing to outDir/best. */
export function bestConfig(cfg: TrainConfig, best: Summary['best'], outDir: string): string | null {
  if (!best) return null;
  const c = { ...cfg, output_dir: join(resolve(outDir), 'best'), methods: best.methods, training: { ...cfg.training, lr: best.lr, max_steps: best.steps } };
  return `# Written by retain tune: ${best.label}, forgetting ${fmt(best.forgetting)}, target ${fmt(best.target)} over ${best.seeds} seed(s).\n${toYaml(c)}`;
}

const fmt = (x: { mean: number; half: number | null }) => `${x.mean.toFixed(2)}${x.half === null ? '' : ` ± ${x.half.toFixed(2)}`}`;

/** The comparison the report draws: the base and every full-length run (labelled as in the search). */
export function comparison(r: TuneResult, outDir: string): CompareResults {
  const tuned: EvalResults[] = [];
  for (const c of r.state.candidates.filter((x) => x.status === 'done')) {
    const f = join(resolve(outDir), 'runs', c.id, 'results.json');
    if (existsSync(f)) tuned.push({ ...(JSON.parse(readFileSync(f, 'utf8')) as EvalResults), label: c.label });
  }
  return { format: 'retain.compare/1', date: new Date().toISOString(), base: r.base, tuned };
}

export function printSummary(s: Summary): string {
  const lines = ['run                         status    step   forgetting     target'];
  for (const p of [...s.frontier].sort((a, b) => b.target - a.target)) {
    lines.push(`${p.label.padEnd(26)}  ${p.status.padEnd(8)} ${String(p.step).padStart(5)}  ${p.forgetting.toFixed(2).padStart(10)}  ${p.target.toFixed(2).padStart(9)}${p.pareto ? '  ◆' : ''}`);
  }
  lines.push('', `FT: forgetting ${fmt(s.ft.forgetting)}, target ${fmt(s.ft.target)} (${s.ft.seeds} seed(s)); base target ${s.base_target.toFixed(2)}`);
  if (s.best) lines.push(`best within ${s.max_forgetting}: ${s.best.label}: forgetting ${fmt(s.best.forgetting)}, target ${fmt(s.best.target)} (${(100 * s.best.target_gain_of_ft).toFixed(1)}% of FT's target gain; ${s.best.seeds} seed(s))`);
  else lines.push(`no candidate finished within ${s.max_forgetting} points of forgetting`);
  return lines.join('\n');
}

export function writeOutputs(cfg: TrainConfig, s: Summary, outDir: string): void {
  writeFileSync(join(outDir, 'tune.json'), JSON.stringify(s, null, 2) + '\n');
  const y = bestConfig(cfg, s.best, outDir);
  if (y) writeFileSync(join(outDir, 'best.yaml'), y);
}
