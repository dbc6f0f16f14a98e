// `retain report`: results JSON → report.md, one self-contained report.html, and the charts as SVG and PNG.
// Everything shown comes from the results files (as lm-evaluation-harness renders its tables), so a report can be
// rebuilt anywhere from the JSON alone.
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { applyTargets, isLmevalResults, LmevalResultsError, looksLikeLmevalResults, readLmevalRuns } from '../eval/lmeval-results.js';
import { improvement, type CompareResults, type EvalResults, type MonitorPoint, type ResultRow } from '../eval/results.js';
import { averageGroups, buildForgettingTable, columnHeader, mark, isFractionMetric, mdEscape, metricName, runAverageErrors, runAverages, tableMarkdown, type ForgettingTable, MINUS } from './table.js';
import { dynamicsChart, lossChart, paretoChart, pngFonts, renderSvg, svgToPng, type ChartResult } from './charts.js';

/** A problem with a report input; the message names the file. */
export class ReportInputError extends Error {}

const EVAL_FORMAT = 'retain.eval/1';
const COMPARE_FORMAT = 'retain.compare/1';

function fail(where: string, what: string): never {
  throw new ReportInputError(`${where}: ${what}`);
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/**
 * Checks the fields a report reads, so that a hand-edited or truncated file fails here with the field's path rather
 * than as a NaN in a table.
 */
export function checkEvalResults(x: unknown, where: string): EvalResults {
  if (!isObj(x)) fail(where, 'not a results object');
  if (x.format !== EVAL_FORMAT) fail(where, `format must be '${EVAL_FORMAT}', got ${JSON.stringify(x.format)}`);
  if (typeof x.label !== 'string' || !x.label) fail(where, 'label must be a non-empty string');
  if (!Array.isArray(x.methods) || x.methods.some((m) => typeof m !== 'string')) fail(where, 'methods must be a list of strings');
  if (!isObj(x.model)) fail(where, 'model must be an object');
  if (!Array.isArray(x.rows)) fail(where, 'rows must be a list');
  x.rows.forEach((r: unknown, i: number) => {
    const at = `rows[${i}]`;
    if (!isObj(r)) fail(where, `${at} must be an object`);
    if (typeof r.task !== 'string' || typeof r.metric !== 'string') fail(where, `${at} must have string task and metric`);
    // null is how JSON writes a NaN or infinite score: shown as missing rather than refused.
    if (typeof r.value !== 'number' && r.value !== null) fail(where, `${at}.value must be a number, got ${JSON.stringify(r.value)}`);
    if (r.role !== 'general' && r.role !== 'target') fail(where, `${at}.role must be 'general' or 'target', got ${JSON.stringify(r.role)}`);
    if (typeof r.primary !== 'boolean' || typeof r.higher_is_better !== 'boolean') fail(where, `${at} must have boolean primary and higher_is_better`);
  });
  if (x.monitor !== undefined) checkMonitor(x.monitor, `${where}: monitor`);
  const point = (p: unknown) => isObj(p) && typeof p.step === 'number' && (typeof p.loss === 'number' || p.loss === null);
  if (x.train !== undefined && (!Array.isArray(x.train) || !x.train.every(point))) fail(where, 'train must be a list of {step, loss} points (numbers; loss may be null)');
  return x as unknown as EvalResults;
}

function checkMonitor(m: unknown, where: string): MonitorPoint[] {
  if (!Array.isArray(m)) fail(where, 'must be a list');
  m.forEach((p: unknown, i: number) => {
    if (!isObj(p) || typeof p.step !== 'number' || (typeof p.value !== 'number' && p.value !== null) || typeof p.task !== 'string' || typeof p.metric !== 'string' || (p.role !== 'general' && p.role !== 'target')) {
      fail(where, `point ${i} must have a numeric step and value (or null), string task and metric, role 'general' or 'target'`);
    }
  });
  return m as MonitorPoint[];
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(file, code === 'ENOENT' ? 'not found' : `cannot be read (${code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(file, `not valid JSON (${(e as Error).message})`);
  }
}

function readMonitorJsonl(file: string): MonitorPoint[] {
  const pts: unknown[] = [];
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    try {
      pts.push(JSON.parse(line));
    } catch (e) {
      fail(`${file}:${i + 1}`, `not valid JSON (${(e as Error).message})`);
    }
  });
  return checkMonitor(pts, file);
}

/**
 * The runs in one report argument: a results JSON (eval or compare, told apart by `format`) or a directory holding
 * results.json, whose monitor.jsonl (written by training's forgetting monitor) fills in a missing monitor.
 */
export function readRunInput(arg: string): EvalResults[] {
  if (looksLikeLmevalResults(arg)) return lmevalRuns(arg);
  let file = arg;
  let monitorFile: string | null = null;
  if (existsSync(arg) && statSync(arg).isDirectory()) {
    file = join(arg, 'results.json');
    if (!existsSync(file)) fail(arg, 'directory has no results.json');
    monitorFile = join(arg, 'monitor.jsonl');
  }
  const data = readJson(file);
  // An lm-eval results file renamed by its user (not results_<time>.json) is still known by its blocks.
  if (isLmevalResults(data)) return lmevalRuns(file);
  if (!isObj(data)) fail(file, 'not a results object (expected a JSON object with a "format" field)');
  let runs: EvalResults[];
  if (data.format === EVAL_FORMAT) runs = [checkEvalResults(data, file)];
  else if (data.format === COMPARE_FORMAT) {
    if (!Array.isArray(data.tuned)) fail(file, 'tuned must be a list');
    runs = [checkEvalResults(data.base, `${file}: base`), ...data.tuned.map((t: unknown, i: number) => checkEvalResults(t, `${file}: tuned[${i}]`))];
  } else {
    fail(file, `unknown format ${JSON.stringify(data.format)} (expected '${EVAL_FORMAT}' from retain eval, '${COMPARE_FORMAT}' from retain compare, or an lm-evaluation-harness results_*.json)`);
  }
  if (monitorFile && existsSync(monitorFile) && runs.length === 1 && !runs[0].monitor?.length) {
    runs[0] = { ...runs[0], monitor: readMonitorJsonl(monitorFile) };
  }
  return runs;
}

export interface RunSet {
  base: EvalResults;
  tuned: EvalResults[];
}

/**
 * Chooses the base: the run named by `baseLabel`, else the first run with no methods (an untouched model), else the
 * first run. Identical runs given twice (the same base inside two compare files) appear once, and repeated labels
 * get a " (2)" suffix so that chart legends keep them apart.
 */
export function pickBase(runs: EvalResults[], baseLabel?: string): RunSet {
  if (!runs.length) throw new ReportInputError('no runs given');
  const seen = new Set<string>();
  const unique = runs.filter((r) => {
    const key = JSON.stringify([r.label, r.model?.hash, r.model?.path, r.date, r.rows]);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  let base: EvalResults | undefined;
  if (baseLabel !== undefined) {
    base = unique.find((r) => r.label === baseLabel);
    if (!base) throw new ReportInputError(`--base ${baseLabel}: no run has that label (labels: ${unique.map((r) => r.label).join(', ')})`);
  } else base = unique.find((r) => r.methods.length === 0) ?? unique[0];
  const ordered = [base, ...unique.filter((r) => r !== base)];
  const count = new Map<string, number>();
  const relabelled = ordered.map((r) => {
    const n = (count.get(r.label) ?? 0) + 1;
    count.set(r.label, n);
    return n === 1 ? r : { ...r, label: `${r.label} (${n})` };
  });
  return { base: relabelled[0], tuned: relabelled.slice(1) };
}

/** lm-eval's runs under a path, its errors as report input errors. */
function lmevalRuns(path: string): EvalResults[] {
  try {
    return readLmevalRuns(path);
  } catch (e) {
    if (e instanceof LmevalResultsError) throw new ReportInputError(e.message);
    throw e;
  }
}

/** `target`: --target's tasks; when given, they are the runs' target tasks and every other task is general. */
export function loadRuns(args: string[], opts: { base?: string; target?: string[] } = {}): RunSet {
  if (!args.length) throw new ReportInputError('no runs given: pass results JSON files or run directories');
  let runs = args.flatMap(readRunInput);
  if (opts.target?.length) {
    try {
      runs = applyTargets(runs, opts.target);
    } catch (e) {
      if (e instanceof LmevalResultsError) throw new ReportInputError(e.message);
      throw e;
    }
  }
  return pickBase(runs, opts.base);
}

// ---- rendering helpers ----

/** HTML-escapes text from data (labels, task names, paths): every report string that did not come from this file. */
export function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);
}

function fmtValue(r: Pick<ResultRow, 'metric' | 'value'>): string {
  if (typeof r.value !== 'number' || !Number.isFinite(r.value)) return '–';
  return isFractionMetric(r.metric) ? `${(r.value * 100).toFixed(2)}%` : r.value.toFixed(4);
}

function fmtStderr(r: ResultRow): string {
  if (r.stderr === null || r.stderr === undefined || !Number.isFinite(r.stderr)) return '–';
  return isFractionMetric(r.metric) ? `${(r.stderr * 100).toFixed(2)}` : r.stderr.toFixed(4);
}

function signed(x: number | null, digits = 1): string {
  if (x === null) return '–';
  const s = Math.abs(x).toFixed(digits);
  if (Number(s) === 0) return s;
  return (x < 0 ? MINUS : '+') + s;
}

type Groups = ReturnType<typeof averageGroups>;

interface AverageRow {
  label: string;
  general: number | null;
  target: number | null;
  overall: number | null;
  /** How much worse the general average got than the base's, in its metric's direction (points for accuracies). */
  forgetting: number | null;
  /** How much better the target average got than the base's, likewise. */
  gain: number | null;
  /** Standard errors of the five, as stored for the averages and in the display unit for forgetting and gain. */
  se: { general: number | null; target: number | null; overall: number | null; forgetting: number | null; gain: number | null };
}

function averageRows(set: RunSet): AverageRow[] {
  const all = [set.base, ...set.tuned];
  const g = averageGroups(all);
  const b = runAverages(set.base, all);
  const bse = runAverageErrors(set.base, all);
  // A difference of two runs' averages: their errors combined as independent (usually an overestimate when the runs
  // were scored on the same examples, whose errors correlate positively).
  const diffSe = (x: number | null, y: number | null, fraction: boolean | undefined) => (x === null || y === null ? null : Math.hypot(x, y) * (fraction ? 100 : 1));
  return all.map((r) => {
    const a = runAverages(r, all);
    const se = runAverageErrors(r, all);
    const tuned = r !== set.base;
    return {
      label: r.label,
      ...a,
      forgetting: !tuned || a.general === null || b.general === null ? null : -improvement(g.general!, b.general, a.general),
      gain: !tuned || a.target === null || b.target === null ? null : improvement(g.target!, b.target, a.target),
      se: { ...se, forgetting: tuned ? diffSe(se.general, bse.general, g.general?.fraction) : null, gain: tuned ? diffSe(se.target, bse.target, g.target?.fraction) : null },
    };
  });
}

const AVERAGES_NOTE = 'Means over the higher-is-better accuracy tasks, or, where there are none, over tasks that all report one metric. ' +
  'Forgetting = how much worse the general average is than the base\'s; gain = how much better the target average is; both in the metric\'s own direction (points for accuracies). ' +
  '± is a standard error: the tasks\' errors combined as independent, and for forgetting and gain the two runs\' errors too (usually an overestimate when both were scored on the same examples, whose errors correlate); none is shown when a task has no standard error.';

/** The averages table: headers name a non-accuracy unit, cells are percentages for accuracies and raw otherwise. */
function averageCells(set: RunSet): { head: string[]; rows: string[][] } {
  const g: Groups = averageGroups([set.base, ...set.tuned]);
  const unit = (x: Groups['general']) => (x && !x.fraction ? ` (${x.metric}${x.higherIsBetter ? '' : ' ↓'})` : '');
  const digits = (x: Groups['general']) => (x?.fraction === false ? 3 : 1);
  const pm = (se: number | null, x: Groups['general']) => (se === null ? '' : ` ± ${se.toFixed(digits(x))}`);
  const val = (v: number | null, se: number | null, x: Groups['general']) => (v === null ? '–' : x?.fraction ? (v * 100).toFixed(1) + pm(se === null ? null : se * 100, x) : v.toFixed(3) + pm(se, x));
  const delta = (v: number | null, se: number | null, x: Groups['general']) => (v === null ? '–' : signed(v, digits(x)) + pm(se, x));
  return {
    head: ['run', `general avg${unit(g.general)}`, `target avg${unit(g.target)}`, `overall avg${unit(g.overall)}`, `forgetting${unit(g.general)}`, `gain${unit(g.target)}`],
    rows: averageRows(set).map((a) => [a.label, val(a.general, a.se.general, g.general), val(a.target, a.se.target, g.target), val(a.overall, a.se.overall, g.overall), delta(a.forgetting, a.se.forgetting, g.general), delta(a.gain, a.se.gain, g.target)]),
  };
}

/** Task names in table order with every row of each (all metrics, not only the primary one). */
function detailGroups(set: RunSet): { task: string; role: string; rows: { label: string; row: ResultRow }[] }[] {
  const groups = new Map<string, { task: string; role: string; rows: { label: string; row: ResultRow }[] }>();
  for (const r of [set.base, ...set.tuned]) {
    for (const row of r.rows) {
      if (!groups.has(row.task)) groups.set(row.task, { task: row.task, role: row.role, rows: [] });
      groups.get(row.task)!.rows.push({ label: r.label, row });
    }
  }
  const all = [...groups.values()];
  return [...all.filter((g) => g.role === 'general'), ...all.filter((g) => g.role !== 'general')];
}

function provenance(r: EvalResults): Record<string, string> {
  const versions = Object.entries(r.versions ?? {}).map(([k, v]) => `${k} v${v}`).join(', ');
  return {
    run: r.label,
    model: r.model?.name ?? '',
    path: r.model?.path ?? '',
    hash: r.model?.hash ?? '',
    parameters: typeof r.model?.parameters === 'number' ? r.model.parameters.toLocaleString('en-US') : '',
    methods: r.methods.length ? r.methods.join(', ') : '(none: base model)',
    date: r.date ?? '',
    tasks: (r.config?.tasks ?? []).join(', '),
    limit: r.config?.limit === null || r.config?.limit === undefined ? 'all' : String(r.config.limit),
    seed: r.config?.seed === undefined ? '' : String(r.config.seed),
    device: r.config?.device ?? '',
    'task versions': versions,
  };
}

const TABLE_NOTE = 'Accuracies are percentages; losses, perplexities and bits per character are raw (↓: lower is better). ' +
  '± is the standard error of the mean over examples (none for metrics without one, such as perplexity; for an average, its tasks\' errors combined as independent). Brackets hold tuned − base (percentage points for accuracies).';

// ---- Markdown ----

function mdTable(head: string[], rows: string[][], align?: ('l' | 'r')[]): string {
  const sep = head.map((_, i) => ((align?.[i] ?? 'l') === 'r' ? '---:' : '---'));
  return [`| ${head.map(mdEscape).join(' | ')} |`, `|${sep.join('|')}|`, ...rows.map((r) => `| ${r.map(mdEscape).join(' | ')} |`)].join('\n') + '\n';
}

function markdown(set: RunSet, table: ForgettingTable, charts: ChartResult[], notes: string[], extra: ReportSection[] = []): string {
  const out: string[] = [];
  out.push(`# Forgetting report: ${mdEscape(set.base.label)} and ${set.tuned.length} tuned run${set.tuned.length === 1 ? '' : 's'}`, '');
  out.push(`Base: **${mdEscape(set.base.label)}** (${mdEscape(set.base.model?.name ?? '')}). ${TABLE_NOTE}`, '');
  out.push('## Forgetting table', '', tableMarkdown(table));
  for (const x of extra) out.push(`## ${mdEscape(x.title)}`, '', mdEscape(x.note), '', mdTable(x.head, x.rows, x.head.map((_, i) => (i ? 'r' : 'l'))));
  const avg = averageCells(set);
  out.push('## Averages', '', AVERAGES_NOTE, '');
  out.push(mdTable(avg.head, avg.rows, ['l', 'r', 'r', 'r', 'r', 'r']));
  out.push('## Charts', '');
  for (const c of charts) {
    if (c.spec) out.push(`![${c.title}](${c.name}.png)`, '');
    if (c.note) out.push(`_${mdEscape(c.note)}_`, '');
  }
  out.push('## Per-task details', '', 'Standard errors are of the mean over examples (in points for accuracies); n is the number of examples scored. ★ marks the primary metric.', '');
  for (const g of detailGroups(set)) {
    out.push(`### ${mdEscape(g.task)} (${g.role})`, '');
    out.push(mdTable(['run', 'metric', 'value', 'stderr', 'n'],
      g.rows.map(({ label, row }) => [label, `${metricName(row.metric)}${row.primary ? ' ★' : ''}${row.higher_is_better ? '' : ' ↓'}`, fmtValue(row), fmtStderr(row), String(row.n)]), ['l', 'l', 'r', 'r', 'r']));
  }
  out.push('## Provenance', '');
  const prov = [set.base, ...set.tuned].map(provenance);
  const keys = Object.keys(prov[0]);
  out.push(mdTable(keys, prov.map((p) => keys.map((k) => p[k]))));
  if (notes.length) out.push('## Notes', '', ...notes.map((n) => `- ${mdEscape(n)}`), '');
  return out.join('\n');
}

// ---- HTML ----

const CSS = `
body{font-family:"DejaVu Sans","Liberation Sans",Arial,Helvetica,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1em}
table{border-collapse:collapse;margin:8px 0 12px;font-size:0.9em}
th,td{border:1px solid #ddd;padding:4px 8px;vertical-align:top}th{background:#f5f5f5}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.base td{background:#fff8e6}
.better{color:#1a7f37}.worse{color:#c62828}
.note{color:#555;font-size:0.9em}
figure{margin:16px 0}figure svg{max-width:100%;height:auto}
code{word-break:break-all}
`;

function htmlTable(head: string[], rows: { cells: string[]; cls?: string }[], numeric: boolean[] = []): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join('');
  const trs = rows.map((r) => `<tr${r.cls ? ` class="${r.cls}"` : ''}>${r.cells.map((c, i) => `<td${numeric[i] ? ' class="num"' : ''}>${c}</td>`).join('')}</tr>`).join('\n');
  return `<table><thead><tr>${th}</tr></thead><tbody>\n${trs}\n</tbody></table>`;
}

function forgettingHtml(t: ForgettingTable): string {
  const head = ['run', ...t.columns.map((c) => columnHeader(c) + mark(t, c))];
  const rows = t.rows.map((r) => ({
    cls: r.isBase ? 'base' : undefined,
    cells: [esc(r.label), ...r.cells.map((c) => {
      if (c.deltaText === null) return esc(c.text);
      const cls = c.better === null ? '' : c.better ? ' class="better"' : ' class="worse"';
      return `${esc(c.text)} <span${cls}>(${esc(c.deltaText)})</span>`;
    })],
  }));
  const foot = t.footnote ? `<p class="note">* ${esc(t.footnote)}</p>` : '';
  return htmlTable(head, rows, [false, ...t.columns.map(() => true)]) + foot;
}

/**
 * Vega's SVG carries namespace URIs that an HTML parser does not need; dropping them keeps the file free of any
 * URL, so "self-contained" can be checked by looking for one.
 */
function inlineSvg(svg: string): string {
  return svg.replace(/\s+xmlns(:xlink)?="[^"]*"/g, '');
}

function html(set: RunSet, table: ForgettingTable, charts: ChartResult[], svgs: Map<string, string>, notes: string[], extra: ReportSection[] = []): string {
  const b: string[] = [];
  b.push('<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">', '<meta name="viewport" content="width=device-width, initial-scale=1">');
  b.push(`<title>Forgetting report: ${esc(set.base.label)}</title>`, `<style>${CSS}</style>`, '</head><body>');
  b.push(`<h1>Forgetting report: ${esc(set.base.label)} and ${set.tuned.length} tuned run${set.tuned.length === 1 ? '' : 's'}</h1>`);
  b.push(`<p>Base: <b>${esc(set.base.label)}</b> (${esc(set.base.model?.name ?? '')}). ${esc(TABLE_NOTE)}</p>`);
  b.push('<h2>Forgetting table</h2>', forgettingHtml(table));
  for (const x of extra) b.push(`<h2>${esc(x.title)}</h2>`, `<p class="note">${esc(x.note)}</p>`, htmlTable(x.head, x.rows.map((r) => ({ cells: r.map(esc) })), x.head.map((_, i) => i > 0)));
  b.push('<h2>Charts</h2>');
  for (const c of charts) {
    const svg = svgs.get(c.name);
    if (svg) b.push(`<figure id="chart-${c.name}" aria-label="${esc(c.title)}">${inlineSvg(svg)}</figure>`);
    if (c.note) b.push(`<p class="note">${esc(c.note)}</p>`);
  }
  const avg = averageCells(set);
  b.push('<h2>Averages</h2>', `<p class="note">${esc(AVERAGES_NOTE)}</p>`);
  b.push(htmlTable(avg.head,
    avg.rows.map((cells, i) => ({ cls: i === 0 ? 'base' : undefined, cells: cells.map(esc) })),
    [false, true, true, true, true, true]));
  b.push('<h2>Per-task details</h2>', '<p class="note">Standard errors are of the mean over examples (in points for accuracies); n is the number of examples scored. ★ marks the primary metric.</p>');
  for (const g of detailGroups(set)) {
    b.push(`<h3>${esc(g.task)} <span class="note">(${esc(g.role)})</span></h3>`);
    b.push(htmlTable(['run', 'metric', 'value', 'stderr', 'n'],
      g.rows.map(({ label, row }) => ({ cells: [label, `${metricName(row.metric)}${row.primary ? ' ★' : ''}${row.higher_is_better ? '' : ' ↓'}`, fmtValue(row), fmtStderr(row), String(row.n)].map(esc) })),
      [false, false, true, true, true]));
  }
  b.push('<h2>Provenance</h2>');
  const prov = [set.base, ...set.tuned].map(provenance);
  const keys = Object.keys(prov[0]);
  b.push(htmlTable(keys, prov.map((p) => ({ cells: keys.map((k) => (k === 'path' || k === 'hash' ? `<code>${esc(p[k])}</code>` : esc(p[k]))) }))));
  if (notes.length) b.push('<h2>Notes</h2>', '<ul>', ...notes.map((n) => `<li>${esc(n)}</li>`), '</ul>');
  b.push('</body></html>', '');
  return b.join('\n');
}

export interface ReportOptions {
  /** Label of the base run when `runs` is a list (default: the run with no methods, else the first). */
  base?: string;
  /** Tables shown after the forgetting table (a sequential run's matrix). */
  sections?: ReportSection[];
}

/** A table of its own in the report: a title, a sentence on how to read it, a header and rows of text. */
export interface ReportSection {
  title: string;
  note: string;
  head: string[];
  rows: string[][];
}

export interface ReportOutput {
  files: string[];
  /** Things the reader should know (charts left out, no fonts for PNG text). */
  notes: string[];
}

/** Writes report.md, report.html and the charts (SVG + PNG) into outDir. */
export async function writeReport(runs: EvalResults[] | CompareResults, outDir: string, opts: ReportOptions = {}): Promise<ReportOutput> {
  const set: RunSet = Array.isArray(runs) ? pickBase(runs, opts.base) : pickBase([runs.base, ...runs.tuned], opts.base);
  const table = buildForgettingTable(set.base, set.tuned, { stderr: true });
  const charts = [lossChart([set.base, ...set.tuned]), dynamicsChart([set.base, ...set.tuned]), paretoChart(set.base, set.tuned)];
  mkdirSync(outDir, { recursive: true });
  const files: string[] = [];
  // Chart notes are shown where the chart would be; these others get a section of their own.
  const notes: string[] = [];
  const svgs = new Map<string, string>();
  const fonts = pngFonts();
  for (const c of charts) {
    const svgFile = join(outDir, `${c.name}.svg`);
    const pngFile = join(outDir, `${c.name}.png`);
    if (!c.spec) {
      // A chart from an earlier report in the same folder would otherwise pass for this one.
      rmSync(svgFile, { force: true });
      rmSync(pngFile, { force: true });
      continue;
    }
    const svg = await renderSvg(c.spec);
    svgs.set(c.name, svg);
    writeFileSync(svgFile, svg);
    writeFileSync(pngFile, svgToPng(svg));
    files.push(svgFile, pngFile);
  }
  if (svgs.size && !fonts.length) notes.push('No font file was found, so the PNG charts have no text (install fonts-dejavu-core, or set RETAIN_FONT_FILE); the SVG charts are complete.');
  const md = join(outDir, 'report.md');
  const htmlFile = join(outDir, 'report.html');
  writeFileSync(md, markdown(set, table, charts, notes, opts.sections));
  writeFileSync(htmlFile, html(set, table, charts, svgs, notes, opts.sections));
  files.unshift(md, htmlFile);
  return { files, notes: [...charts.flatMap((c) => (c.note ? [c.note] : [])), ...notes] };
}
