// The forgetting table: one row per run (base first), one column per task's primary metric, general tasks then their
// average, target tasks, then the overall average. Tuned cells carry "tuned − base" in brackets.
//
// The table is first built as a model (numbers, not strings) so that Markdown, terminal text and HTML render the
// same figures and the same rounding.
import { averageGroup, isFractionMetric, metricName, type AverageGroup, type EvalResults, type ResultRow, type Role } from '../eval/results.js';

export { isFractionMetric, metricName };

/** Unicode minus: a hyphen reads as a dash in a table of numbers and misaligns in proportional fonts. */
export const MINUS = '\u2212';

export interface Column {
  kind: 'task' | 'avg';
  /** Task name, or 'general avg' / 'overall avg'. */
  name: string;
  role: Role | null;
  metric: string;
  fraction: boolean;
  higherIsBetter: boolean;
}

export interface Cell {
  value: number | null;
  /** Standard error of the value in the column's display unit (points for fractions); null when not known. */
  stderr: number | null;
  /** value − base value in the column's display unit (points for fractions); null for the base row or when missing. */
  delta: number | null;
  text: string;
  deltaText: string | null;
  /** Whether the change is an improvement in the metric's own direction (null when no delta or no change). */
  better: boolean | null;
}

export interface TableRow {
  label: string;
  isBase: boolean;
  cells: Cell[];
}

export interface ForgettingTable {
  columns: Column[];
  rows: TableRow[];
  /** Tasks left out of the averages, with the reason; empty when every task counted. */
  leftOut: { task: string; metric: string; reason: string }[];
  footnote: string | null;
}

export interface TableOptions {
  /** Decimals for percentages (default 1). */
  pctDigits?: number;
  /** Decimals for raw metrics such as losses (default 3). */
  rawDigits?: number;
  /** Write each score's standard error after it ("62.3 ± 1.2"); default off (terminal tables stay narrow). */
  stderr?: boolean;
}

interface TaskInfo {
  task: string;
  metric: string;
  role: Role;
  higherIsBetter: boolean;
}

/** Tasks in column order: every task any run has (base first decides order and role), general before target. */
function taskColumns(runs: EvalResults[]): TaskInfo[] {
  const seen = new Map<string, TaskInfo>();
  for (const r of runs) {
    for (const row of r.rows) {
      if (!row.primary || seen.has(row.task)) continue;
      seen.set(row.task, { task: row.task, metric: row.metric, role: row.role, higherIsBetter: row.higher_is_better });
    }
  }
  const all = [...seen.values()];
  return [...all.filter((t) => t.role === 'general'), ...all.filter((t) => t.role !== 'general')];
}

function primaryOf(r: EvalResults, task: string): ResultRow | undefined {
  return r.rows.find((x) => x.primary && x.task === task);
}

/** The tasks each average column is taken over (averageGroup), from the columns of `runs`. */
export function averageGroups(runs: EvalResults[]): { general: AverageGroup<TaskInfo> | null; target: AverageGroup<TaskInfo> | null; overall: AverageGroup<TaskInfo> | null } {
  const tasks = taskColumns(runs);
  return {
    general: averageGroup(tasks.filter((t) => t.role === 'general')),
    target: averageGroup(tasks.filter((t) => t.role === 'target')),
    overall: averageGroup(tasks),
  };
}

/**
 * Mean of the averageable primary metrics of a run over a role (or all roles), as a fraction; null when none.
 * Only tasks in `tasks` count, so that every run is averaged over the same tasks and a run missing one is not
 * silently compared on an easier subset: such a run gets null.
 */
function meanOf(r: EvalResults, tasks: TaskInfo[]): number | null {
  if (!tasks.length) return null;
  let s = 0;
  for (const t of tasks) {
    const row = primaryOf(r, t.task);
    if (!row || row.metric !== t.metric || !Number.isFinite(row.value)) return null;
    s += row.value;
  }
  return s / tasks.length;
}

/**
 * Standard error of meanOf: the tasks' errors combined as independent, √(Σ se²) / k; null when a task has none
 * (perplexity) or is missing.
 */
function meanStderr(r: EvalResults, tasks: TaskInfo[]): number | null {
  if (!tasks.length) return null;
  let v = 0;
  for (const t of tasks) {
    const se = primaryOf(r, t.task)?.stderr;
    if (typeof se !== 'number' || !Number.isFinite(se)) return null;
    v += se * se;
  }
  return Math.sqrt(v) / tasks.length;
}

/** Standard errors of runAverages, as stored (fractions for accuracies). */
export function runAverageErrors(r: EvalResults, columnsFrom: EvalResults[] = [r]): { general: number | null; target: number | null; overall: number | null } {
  const g = averageGroups(columnsFrom);
  const se = (x: AverageGroup<TaskInfo> | null) => (x ? meanStderr(r, x.tasks) : null);
  return { general: se(g.general), target: se(g.target), overall: se(g.overall) };
}

/** Averages of one run over averageGroups(columnsFrom), as stored (fractions for accuracies, raw otherwise). */
export function runAverages(r: EvalResults, columnsFrom: EvalResults[] = [r]): { general: number | null; target: number | null; overall: number | null } {
  const g = averageGroups(columnsFrom);
  const mean = (x: AverageGroup<TaskInfo> | null) => (x ? meanOf(r, x.tasks) : null);
  return { general: mean(g.general), target: mean(g.target), overall: mean(g.overall) };
}

function fmtNumber(x: number, digits: number): string {
  const s = Math.abs(x).toFixed(digits);
  // A value that rounds to zero gets no sign, so "−0.0" never appears.
  if (Number(s) === 0) return s;
  return (x < 0 ? MINUS : '') + s;
}

function fmtDelta(d: number, digits: number): string {
  const s = Math.abs(d).toFixed(digits);
  if (Number(s) === 0) return s;
  return (d < 0 ? MINUS : '+') + s;
}

export function buildForgettingTable(base: EvalResults, tuned: EvalResults[], opts: TableOptions = {}): ForgettingTable {
  const pct = opts.pctDigits ?? 1;
  const raw = opts.rawDigits ?? 3;
  const runs = [base, ...tuned];
  const tasks = taskColumns(runs);
  const groups = averageGroups(runs);
  const columns: Column[] = [];
  const getters: ((r: EvalResults) => number | null)[] = [];
  const errors: ((r: EvalResults) => number | null)[] = [];
  const taskCol = (t: TaskInfo) => {
    columns.push({ kind: 'task', name: t.task, role: t.role, metric: metricName(t.metric), fraction: isFractionMetric(t.metric), higherIsBetter: t.higherIsBetter });
    getters.push((r) => {
      const row = primaryOf(r, t.task);
      // A run whose primary metric for the task differs (another task file version) cannot be compared in this column.
      return row && row.metric === t.metric && Number.isFinite(row.value) ? row.value : null;
    });
    errors.push((r) => {
      const se = primaryOf(r, t.task)?.stderr;
      return typeof se === 'number' && Number.isFinite(se) ? se : null;
    });
  };
  const avgCol = (name: string, role: Role | null, g: AverageGroup<TaskInfo> | null) => {
    columns.push({ kind: 'avg', name, role, metric: g?.metric ?? 'mean', fraction: g?.fraction ?? true, higherIsBetter: g?.higherIsBetter ?? true });
    getters.push((r) => (g ? meanOf(r, g.tasks) : null));
    errors.push((r) => (g ? meanStderr(r, g.tasks) : null));
  };
  for (const t of tasks.filter((x) => x.role === 'general')) taskCol(t);
  avgCol('general avg', 'general', groups.general);
  for (const t of tasks.filter((x) => x.role !== 'general')) taskCol(t);
  avgCol('overall avg', null, groups.overall);

  const baseValues = getters.map((g) => g(base));
  const rows: TableRow[] = runs.map((r, ri) => {
    const isBase = ri === 0;
    const cells = columns.map((c, ci): Cell => {
      const v = getters[ci](r);
      const scale = c.fraction ? 100 : 1;
      const digits = c.fraction ? pct : raw;
      if (v === null) return { value: null, stderr: null, delta: null, text: '–', deltaText: null, better: null };
      const se = errors[ci](r);
      const stderr = se === null ? null : se * scale;
      const text = fmtNumber(v * scale, digits) + (opts.stderr && stderr !== null ? ` ± ${stderr.toFixed(digits)}` : '');
      const b = baseValues[ci];
      if (isBase || b === null) return { value: v, stderr, delta: null, text, deltaText: null, better: null };
      const delta = (v - b) * scale;
      const deltaText = fmtDelta(delta, digits);
      const better = Number(Math.abs(delta).toFixed(digits)) === 0 ? null : (delta > 0) === c.higherIsBetter;
      return { value: v, stderr, delta, text, deltaText, better };
    });
    return { label: r.label, isBase, cells };
  });

  const leftOut = tasks.flatMap((t) => {
    const inOverall = !!groups.overall?.tasks.some((x) => x.task === t.task);
    const inGeneral = t.role === 'general' && !!groups.general?.tasks.some((x) => x.task === t.task);
    if (inOverall && (t.role !== 'general' || inGeneral)) return [];
    const why = (g: AverageGroup<TaskInfo> | null) => (!g ? 'the tasks report different metrics' : !t.higherIsBetter ? 'lower is better' : 'not a fraction');
    return [{ task: t.task, metric: metricName(t.metric), reason: inGeneral ? `${why(groups.overall)}; in general avg only` : why(groups.overall) }];
  });
  const footnote = leftOut.length
    ? `Averages leave out ${leftOut.map((x) => `${x.task} (${x.metric}: ${x.reason})`).join(', ')}; an average takes the higher-is-better fraction metrics when there are any, else one metric all its tasks share.`
    : null;
  return { columns, rows, leftOut, footnote };
}

export function cellString(c: Cell): string {
  return c.deltaText === null ? c.text : `${c.text} (${c.deltaText})`;
}

export function columnHeader(c: Column): string {
  if (c.kind === 'avg' && c.metric === 'mean') return c.name;
  return `${c.name} ${c.metric}${c.higherIsBetter ? '' : ' ↓'}`;
}

/** The footnote marker on the average columns when some task was left out of them. */
export function mark(t: ForgettingTable, c: Column): string {
  return c.kind === 'avg' && t.footnote ? '*' : '';
}

/** Escapes text for a Markdown table cell: pipes would split the cell, and raw HTML must not pass to a renderer. */
export function mdEscape(s: string): string {
  return s.replace(/[\\|<>*[\]`]/g, (ch) => '\\' + ch).replace(/\r?\n/g, ' ');
}

/** The forgetting table as GitHub Markdown (with a footnote line when a task is left out of the averages). */
export function forgettingTable(base: EvalResults, tuned: EvalResults[], opts: TableOptions = {}): string {
  return tableMarkdown(buildForgettingTable(base, tuned, opts));
}

export function tableMarkdown(t: ForgettingTable): string {
  const head = ['run', ...t.columns.map((c) => columnHeader(c) + mark(t, c))].map(mdEscape);
  const lines = [
    `| ${head.join(' | ')} |`,
    `|${['---', ...t.columns.map(() => '---:')].join('|')}|`,
    ...t.rows.map((r) => `| ${[mdEscape(r.label), ...r.cells.map(cellString)].join(' | ')} |`),
  ];
  if (t.footnote) lines.push('', `\\* ${mdEscape(t.footnote)}`);
  return lines.join('\n') + '\n';
}

/** The forgetting table for a terminal: two header lines (task, metric), columns padded to align. */
export function forgettingTableText(base: EvalResults, tuned: EvalResults[], opts: TableOptions = {}): string {
  const t = buildForgettingTable(base, tuned, opts);
  const head1 = ['run', ...t.columns.map((c) => c.name + mark(t, c))];
  const head2 = ['', ...t.columns.map((c) => (c.kind === 'avg' && c.metric === 'mean' ? '' : `${c.metric}${c.higherIsBetter ? '' : ' ↓'}`))];
  const body = t.rows.map((r) => [r.label.replace(/\s+/g, ' '), ...r.cells.map(cellString)]);
  const all = [head1, head2, ...body];
  const width = head1.map((_, i) => Math.max(...all.map((row) => [...row[i]].length)));
  const pad = (s: string, i: number) => (i === 0 ? s + ' '.repeat(width[i] - [...s].length) : ' '.repeat(width[i] - [...s].length) + s);
  const line = (row: string[]) => row.map(pad).join('  ').trimEnd();
  const out = [line(head1), line(head2), width.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)];
  if (t.footnote) out.push(`* ${t.footnote}`);
  return out.join('\n') + '\n';
}
