// The results JSON that `retain eval` and `retain compare` write and `retain report` reads. Reports are rendered
// only from these files (as lm-evaluation-harness does), so everything a table or chart shows must be in here.
//
// The `results` / `higher_is_better` / `n-samples` / `versions` / `configs` blocks follow lm-evaluation-harness's
// layout (metric keys carry the filter name: "acc,none"); `rows` repeats the same numbers flat for easy reading.

export type Role = 'general' | 'target';

/** One measured number. */
export interface ResultRow {
  task: string;
  metric: string;
  value: number;
  /** Standard error of the mean over examples (null when not defined, e.g. perplexity). */
  stderr: number | null;
  higher_is_better: boolean;
  /** Examples scored. */
  n: number;
  /** What the task measures in a forgetting study: skill to keep ('general') or skill to gain ('target'). */
  role: Role;
  /** True for the task's headline metric (the one tables and charts use). */
  primary: boolean;
  /** Examples whose prompt was longer than the model's context and lost its start (absent when none). */
  truncated?: number;
}

/** A point of the forgetting monitor during training: probe values at an optimizer step. */
export interface MonitorPoint {
  step: number;
  task: string;
  metric: string;
  value: number;
  role: Role;
  higher_is_better?: boolean;
}

export interface EvalResults {
  format: 'retain.eval/1';
  /** Display name of this run in tables and charts (base, FT, FLOW, mix 1:1, ...). */
  label: string;
  model: { path: string; name: string; hash: string; parameters: number };
  /** Methods the model was trained with (empty for a base model). */
  methods: string[];
  date: string;
  config: { tasks: string[]; limit: number | null; batch_size: number; seed: number; device: string };
  rows: ResultRow[];
  results: Record<string, Record<string, number | string>>;
  higher_is_better: Record<string, Record<string, boolean>>;
  'n-samples': Record<string, { original: number; effective: number }>;
  versions: Record<string, number>;
  configs: Record<string, unknown>;
  /** Forgetting-monitor points from training, when the run had a monitor. */
  monitor?: MonitorPoint[];
  /** Training loss by step (from metrics.jsonl), when known. */
  train?: { step: number; loss: number }[];
  /** Seconds the evaluation took. */
  eval_seconds?: number;
  /** lm-evaluation-harness groups of a run read from its results file, with their tasks (--target may name one). */
  groups?: Record<string, string[]>;
  /** Seconds the whole run took, training and scoring (the forgetting suites set it). */
  wall_seconds?: number;
  /** Tasks that could not be scored (task → error); the other tasks' results are complete. */
  failed?: Record<string, string>;
}

/** `retain compare` output: the base and each tuned model on the same tasks. */
export interface CompareResults {
  format: 'retain.compare/1';
  date: string;
  base: EvalResults;
  tuned: EvalResults[];
}

// Accuracy-like metrics are stored as fractions 0..1 and shown as percentages (points); anything else (losses,
// perplexity, bits per char) is raw. Metric names may carry lm-evaluation-harness's filter suffix ("acc,none").
// A Spearman correlation is shown ×100 too, as MTEB reports STS scores (all-MiniLM-L6-v2's SICK-R: 77.58).
const FRACTION = new Set(['acc', 'acc_norm', 'exact_match', 'next_token_acc', 'accuracy', 'em', 'f1', 'spearman']);

export function metricName(metric: string): string {
  const i = metric.indexOf(',');
  return i < 0 ? metric : metric.slice(0, i);
}

export function isFractionMetric(metric: string): boolean {
  const m = metricName(metric);
  return FRACTION.has(m) || /_acc$/.test(m);
}

/** The primary row of each task, in task order. */
export function primaryRows(r: EvalResults): ResultRow[] {
  return r.rows.filter((x) => x.primary);
}

/** Tasks whose primary metrics average together, and the unit and direction of their mean. */
export interface AverageGroup<T> {
  tasks: T[];
  /** 'mean' for a mean of accuracy-like fractions, else the one metric every task reports. */
  metric: string;
  fraction: boolean;
  higherIsBetter: boolean;
}

/**
 * Which of `tasks` an average (and so forgetting and gain) is taken over. Points and raw losses do not add up: the
 * higher-is-better fractions when there are any; otherwise every task, when they all report one metric (a char-LSTM
 * suite's bits per char, lower is better); otherwise none (null).
 */
export function averageGroup<T extends { metric: string; higherIsBetter: boolean }>(tasks: T[]): AverageGroup<T> | null {
  const frac = tasks.filter((t) => t.higherIsBetter && isFractionMetric(t.metric));
  if (frac.length) return { tasks: frac, metric: 'mean', fraction: true, higherIsBetter: true };
  if (!tasks.length) return null;
  const [m, hib] = [metricName(tasks[0].metric), tasks[0].higherIsBetter];
  if (!tasks.every((t) => metricName(t.metric) === m && t.higherIsBetter === hib)) return null;
  return { tasks, metric: m, fraction: isFractionMetric(m), higherIsBetter: hib };
}

/** `to` − `from` in the display unit (points for fractions), signed so that positive is better in the metric's direction. */
export function improvement(g: { fraction: boolean; higherIsBetter: boolean }, from: number, to: number): number {
  return (to - from) * (g.fraction ? 100 : 1) * (g.higherIsBetter ? 1 : -1);
}

/** Mean of the primary metric over the averageable tasks of a role (as stored: fractions for accuracies), or null. */
export function roleAverage(r: EvalResults, role: Role): number | null {
  const g = averageGroup(primaryRows(r).filter((x) => x.role === role).map((x) => ({ ...x, higherIsBetter: x.higher_is_better })));
  return g ? g.tasks.reduce((s, x) => s + x.value, 0) / g.tasks.length : null;
}

/**
 * The forgetting monitor's rule, shared with `retain tune`: forgetting = mean over the averageable general rows of the
 * points lost against `base` (positive = worse); target = mean of the target rows in points, signed so that higher is
 * better (null without target rows). Rows are primary rows of the same tasks as `base`.
 */
export function forgettingAndTarget(base: ResultRow[], rows: ResultRow[]): { forgetting: number; target: number | null } {
  const allGen = rows.filter((r) => r.role === 'general').map((r) => ({ ...r, higherIsBetter: r.higher_is_better }));
  const gen = averageGroup(allGen)?.tasks ?? allGen;
  let lost = 0;
  for (const r of gen) {
    const b = base.find((x) => x.task === r.task && x.metric === r.metric);
    if (!b) throw new Error(`forgetting: no base score for ${r.task} ${r.metric}`);
    lost -= improvement({ fraction: isFractionMetric(r.metric), higherIsBetter: r.higher_is_better }, b.value, r.value);
  }
  const tgt = rows.filter((r) => r.role === 'target');
  const pts = (r: ResultRow) => (isFractionMetric(r.metric) ? r.value * 100 : r.value) * (r.higher_is_better ? 1 : -1);
  return { forgetting: gen.length ? lost / gen.length : 0, target: tgt.length ? tgt.reduce((s, r) => s + pts(r), 0) / tgt.length : null };
}

/**
 * One scored item, in lm-evaluation-harness's samples_<task>.jsonl layout: `arguments` holds each request's
 * arguments as {gen_args_i: {arg_j}}, `resps` each request's raw responses, `filtered_resps` what was scored, and
 * the item's metrics sit at the top level. Numbers and booleans stay JSON numbers and booleans (lm-eval writes them
 * as strings), so a reader can compare them without parsing.
 */
export interface Sample {
  doc_id: number;
  doc: Record<string, unknown>;
  target: string;
  arguments: Record<string, Record<string, unknown>>;
  resps: unknown[][];
  filtered_resps: unknown[];
  [metric: string]: unknown;
}
