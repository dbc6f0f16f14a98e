// docs/forgetting-summary.json: per suite and protocol, standard FT and the best recipe against the goal, as the
// frontier study measured them. `bench:frontier --write-docs` writes an entry per suite and protocol it ran (keeping
// the others); `bench:forgetting -- --summary` prints the file grouped by suite. Scores are in the monitor's units
// (points for accuracies, the metric itself otherwise) and read as the metrics' own values: general = the base
// model's general − forgetting, target as the target task reports it.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FrontierPoint, MonitorUnits, Summary } from '../packages/retain/src/tune/outputs.js';

export const SUMMARY_FILE = join(new URL('..', import.meta.url).pathname, 'docs', 'forgetting-summary.json');
const FORMAT = 'retain.forgetting-summary/1';
/** The command whose --write-docs runs produce the file (once per protocol). */
export const SUMMARY_COMMAND = 'npm run -s bench:frontier -- --only stories,charlstm,mnist --seeds 3 --write-docs (and again with --equal-passes)';

export interface Ci {
  mean: number;
  /** Half-width of the 95% Student-t interval over the seeds; null with one seed. */
  half: number | null;
}

export type Protocol = 'equal steps' | 'equal passes';

export interface Goal {
  max_forgetting: number;
  min_target_gain_of_ft: number;
}

export interface Scored {
  general: Ci;
  target: Ci;
  forgetting: Ci;
  steps: number;
  seeds: number;
}

export interface SuiteEntry {
  suite: string;
  protocol: Protocol;
  command: string;
  goal: Goal;
  units: MonitorUnits;
  ft: Scored;
  /**
   * The goal's pick (bestAgainstGoal), with its recipe as a config fragment: the methods and training overrides.
   * target_gain_of_ft is null when FT itself gained nothing on the target (no share of it to keep).
   */
  best: (Scored & { label: string; why: string; config: { methods: FrontierPoint['methods']; training: { lr: number; max_steps: number } }; target_gain_of_ft: number | null; cost_steps_of_ft: number }) | null;
  goal_met: boolean;
}

export interface SummaryFile {
  format: typeof FORMAT;
  date: string;
  suites: SuiteEntry[];
}

const forgettingOf = (p: FrontierPoint) => p.seeded?.forgetting.mean ?? p.forgetting;
const targetOf = (p: FrontierPoint) => p.seeded?.target.mean ?? p.target;

/**
 * The goal's pick among the finished recipes (means over seeds): the most target gain within the forgetting goal;
 * else the least forgetting among those keeping 99% of FT's target gain; else the Pareto point forgetting least.
 */
export function bestAgainstGoal(s: Summary, goal: number): { point: FrontierPoint; why: string } | null {
  const ft = s.frontier.find((p) => p.id === 'FT')!;
  const gain = (p: FrontierPoint) => (targetOf(p) - s.base_target) / (targetOf(ft) - s.base_target);
  const runs = s.frontier.filter((p) => p.status === 'done' && p.id !== 'FT');
  const within = runs.filter((p) => forgettingOf(p) <= goal).sort((a, b) => targetOf(b) - targetOf(a));
  if (within[0]) return { point: within[0], why: `the most target among recipes forgetting at most ${goal}` };
  const keeping = runs.filter((p) => gain(p) >= 0.99).sort((a, b) => forgettingOf(a) - forgettingOf(b));
  if (keeping[0]) return { point: keeping[0], why: "none forgot within the goal: the least forgetting among recipes keeping 99% of FT's target gain" };
  const pareto = runs.filter((p) => p.pareto).sort((a, b) => forgettingOf(a) - forgettingOf(b))[0];
  return pareto ? { point: pareto, why: "none forgot within the goal or kept 99% of FT's gain: the Pareto point that forgot least" } : null;
}

/** A point's scores as the metrics' own values, with the intervals of its seeded reruns. */
export function scored(p: FrontierPoint, u: MonitorUnits): Scored {
  const f: Ci = p.seeded?.forgetting ?? { mean: p.forgetting, half: null };
  const t: Ci = p.seeded?.target ?? { mean: p.target, half: null };
  // Forgetting is positive when worse, whichever way the metric points; the monitor signs target so higher is better.
  const general = { mean: u.general.base + (u.general.higher_is_better ? -f.mean : f.mean), half: f.half };
  const target = u.target.higher_is_better ? t : { mean: -t.mean, half: t.half };
  return { general, target, forgetting: f, steps: p.steps, seeds: p.seeded?.seeds ?? 1 };
}

/** One suite's entry from its frontier run (tune's summary with every candidate trained and seeded). */
export function suiteEntry(s: Summary, o: { suite: string; protocol: Protocol; command: string; goal: number }): SuiteEntry {
  const ft = s.frontier.find((p) => p.id === 'FT');
  if (!ft) throw new Error(`frontier ${o.suite}: no FT run in the summary`);
  const goal: Goal = { max_forgetting: o.goal, min_target_gain_of_ft: 0.99 };
  const pick = bestAgainstGoal(s, o.goal);
  let best: SuiteEntry['best'] = null;
  if (pick) {
    const p = pick.point;
    const ftGain = targetOf(ft) - s.base_target;
    const gain = ftGain > 0 ? (targetOf(p) - s.base_target) / ftGain : null;
    best = {
      label: p.label, why: pick.why, config: { methods: p.methods, training: { lr: p.lr, max_steps: p.steps } },
      ...scored(p, s.units), target_gain_of_ft: gain, cost_steps_of_ft: p.steps / ft.steps,
    };
  }
  const met = !!best && best.forgetting.mean <= goal.max_forgetting && (best.target_gain_of_ft ?? -Infinity) >= goal.min_target_gain_of_ft;
  return { suite: o.suite, protocol: o.protocol, command: o.command, goal, units: s.units, ft: scored(ft, s.units), best, goal_met: met };
}

/** Writes the entries into the file, replacing those of the same suite and protocol and keeping the rest. */
export function writeSummary(entries: SuiteEntry[], file = SUMMARY_FILE): SummaryFile {
  const prev = existsSync(file) ? readSummary(file).suites : [];
  const keep = prev.filter((p) => !entries.some((x) => x.suite === p.suite && x.protocol === p.protocol));
  const out: SummaryFile = { format: FORMAT, date: new Date().toISOString(), suites: [...keep, ...entries] };
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  return out;
}

export function readSummary(file = SUMMARY_FILE): SummaryFile {
  if (!existsSync(file)) throw new Error(`${file} does not exist yet: the frontier study writes it — ${SUMMARY_COMMAND}`);
  const s = JSON.parse(readFileSync(file, 'utf8')) as SummaryFile;
  if (s.format !== FORMAT) throw new Error(`${file}: format '${s.format}' is not ${FORMAT}; rerun ${SUMMARY_COMMAND}`);
  return s;
}

/** What `bench:forgetting -- --summary` prints: the file's entries grouped by suite, then protocol. */
export function summaryObject(file = SUMMARY_FILE): Record<string, unknown> {
  const s = readSummary(file);
  const suites: Record<string, Record<string, Omit<SuiteEntry, 'suite' | 'protocol'>>> = {};
  for (const { suite, protocol, ...rest } of s.suites) (suites[suite] ??= {})[protocol] = rest;
  return { source: file, date: s.date, suites };
}
