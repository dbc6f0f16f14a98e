// Charts as Vega-Lite specs, rendered headlessly: Vega-Lite → Vega → SVG string (Vega's 'none' renderer needs no
// canvas), and SVG → PNG with resvg (a Rust rasteriser with no system dependencies besides a font file).
import { existsSync } from 'node:fs';
import * as vega from 'vega';
import * as vl from 'vega-lite';
import { Resvg } from '@resvg/resvg-js';
import type { EvalResults, MonitorPoint } from '../eval/results.js';
import { averageGroups, isFractionMetric, metricName, runAverageErrors, runAverages } from './table.js';

// The same family list in the SVG serves the browser (which picks what it has) and resvg (which is given the files).
const FONT = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

const CONFIG = {
  font: FONT,
  background: 'white',
  view: { stroke: '#ddd' },
  axis: { labelFontSize: 11, titleFontSize: 12, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260 },
  header: { labelFontSize: 12, labelLimit: 0 },
  title: { fontSize: 14 },
};

type VlSpec = Record<string, unknown>;

export interface ChartResult {
  name: 'loss' | 'dynamics' | 'pareto';
  title: string;
  /** Null when the chart had nothing to show; `note` says why. */
  spec: VlSpec | null;
  note: string | null;
}

interface DynPoint {
  run: string;
  step: number;
  panel: string;
  order: number;
  value: number;
}

/** Monitor points of the runs, in the unit shown (percent for fractions). */
function dynamicsData(runs: EvalResults[]): { points: DynPoint[]; panels: string[] } {
  const panels = new Map<string, { role: string; order: number }>();
  const points: DynPoint[] = [];
  const panelOf = (p: MonitorPoint) => {
    const m = metricName(p.metric);
    const dir = p.higher_is_better === false ? ' ↓' : '';
    return `${p.role}: ${p.task} ${isFractionMetric(m) ? `${m} %` : m}${dir}`;
  };
  for (const r of runs) {
    for (const p of r.monitor ?? []) {
      if (!Number.isFinite(p.step) || !Number.isFinite(p.value)) continue;
      const panel = panelOf(p);
      if (!panels.has(panel)) panels.set(panel, { role: p.role, order: panels.size });
      points.push({ run: r.label, step: p.step, panel, order: 0, value: isFractionMetric(p.metric) ? p.value * 100 : p.value });
    }
  }
  // General probes first, then target, each in first-seen order.
  const ordered = [...panels.entries()].sort((a, b) => (a[1].role === b[1].role ? a[1].order - b[1].order : a[1].role === 'general' ? -1 : 1)).map(([k]) => k);
  for (const p of points) p.order = ordered.indexOf(p.panel);
  return { points, panels: ordered };
}

/**
 * Training dynamics: each probe's primary metric against the optimizer step, one panel per probe (general probes
 * first, each titled with its role), one line per run. Panels keep their own y scale because a perplexity and an
 * accuracy share no axis.
 */
export function dynamicsChart(runs: EvalResults[]): ChartResult {
  const title = 'Training dynamics';
  const { points, panels } = dynamicsData(runs);
  if (!points.length) return { name: 'dynamics', title, spec: null, note: 'No run has forgetting-monitor data (train with a monitor, or give the run directory with its monitor.jsonl), so there is no training-dynamics chart.' };
  const labels = runs.filter((r) => r.monitor?.length).map((r) => r.label);
  const spec: VlSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    config: CONFIG,
    title: { text: title, anchor: 'start' },
    data: { values: points },
    facet: { field: 'panel', type: 'nominal', title: null, sort: panels },
    columns: Math.min(3, panels.length),
    resolve: { scale: { y: 'independent' } },
    spec: {
      width: 260,
      height: 170,
      mark: { type: 'line', point: { size: 30 }, strokeWidth: 2 },
      encoding: {
        x: { field: 'step', type: 'quantitative', title: 'step' },
        y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
        color: { field: 'run', type: 'nominal', title: 'run', sort: labels },
        tooltip: [{ field: 'run' }, { field: 'step' }, { field: 'value', format: '.3f' }],
      },
    },
  };
  return { name: 'dynamics', title, spec, note: null };
}

/** The most points drawn per run in the loss chart; a longer log is thinned evenly (its last point kept). */
const LOSS_POINTS = 2000;

/** Training loss of the runs that have one, [run, step, loss] points thinned to LOSS_POINTS per run. */
function lossData(runs: EvalResults[]): { run: string; step: number; loss: number }[] {
  return runs.flatMap((r) => {
    const pts = (r.train ?? []).filter((p) => Number.isFinite(p.step) && Number.isFinite(p.loss));
    const every = Math.ceil(pts.length / LOSS_POINTS);
    return pts.filter((_, i) => i % every === 0 || i === pts.length - 1).map((p) => ({ run: r.label, step: p.step, loss: p.loss }));
  });
}

/** The training loss against the optimizer step, one line per run that has it (runs read from `retain train`'s folders). */
export function lossChart(runs: EvalResults[]): ChartResult {
  const title = 'Training loss';
  const values = lossData(runs);
  if (!values.length) return { name: 'loss', title, spec: null, note: 'No run has a training-loss log (results.json of a `retain train` run folder carries it), so there is no training-loss chart.' };
  const spec: VlSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    config: CONFIG,
    title: { text: title, anchor: 'start' },
    width: 460,
    height: 240,
    data: { values },
    mark: { type: 'line', strokeWidth: 1.5 },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'loss', type: 'quantitative', title: 'training loss', scale: { zero: false } },
      color: { field: 'run', type: 'nominal', title: 'run', sort: [...new Set(values.map((v) => v.run))] },
      tooltip: [{ field: 'run' }, { field: 'step' }, { field: 'loss', format: '.4f' }],
    },
  };
  return { name: 'loss', title, spec, note: null };
}

export interface ParetoPoint {
  label: string;
  target: number;
  general: number;
  /** Standard errors of the two averages in the same unit, or null when a task has none. */
  targetSe: number | null;
  generalSe: number | null;
  base: boolean;
  frontier: boolean;
}

/** Points that no other point beats on both axes (ties on both count as non-dominated), sorted by x. */
export function paretoFrontier<T extends { target: number; general: number }>(pts: T[]): T[] {
  const dominated = (p: T) => pts.some((q) => q !== p && q.target >= p.target && q.general >= p.general && (q.target > p.target || q.general > p.general));
  return pts.filter((p) => !dominated(p)).sort((a, b) => a.target - b.target || b.general - a.general);
}

/** One axis of the Pareto chart: the average it plots and which way is better. */
export interface ParetoAxis {
  title: string;
  /** Lower is better (bits per char): the axis runs reversed, so up and right still mean better. */
  reversed: boolean;
  /** d3 number format of the values (percentages to 0.1, raw metrics to 0.001). */
  format: string;
}

/** The chart's axes, from the general and target averages' units and directions (averageGroups). */
function paretoAxes(all: EvalResults[]): { general: ParetoAxis; target: ParetoAxis } | null {
  const g = averageGroups(all);
  if (!g.general || !g.target) return null;
  const axis = (role: string, x: NonNullable<typeof g.general>): ParetoAxis => ({
    title: x.fraction && x.metric === 'mean' ? `${role} average (%)` : `${role} average ${x.metric}${x.fraction ? ' (%)' : ''}${x.higherIsBetter ? '' : ' ↓'}`,
    reversed: !x.higherIsBetter,
    format: x.fraction ? '.1f' : '.3f',
  });
  return { general: axis('general', g.general), target: axis('target', g.target) };
}

export function paretoPoints(base: EvalResults, tuned: EvalResults[]): { points: ParetoPoint[]; missing: string[]; axes: { general: ParetoAxis; target: ParetoAxis } | null } {
  const all = [base, ...tuned];
  const g = averageGroups(all);
  const points: ParetoPoint[] = [];
  const missing: string[] = [];
  const shown = (v: number, fraction: boolean) => (fraction ? v * 100 : v);
  const shownSe = (v: number | null, fraction: boolean) => (v === null ? null : shown(v, fraction));
  for (const r of all) {
    const a = runAverages(r, all);
    const se = runAverageErrors(r, all);
    if (a.general === null || a.target === null) missing.push(r.label);
    else {
      const [ft, fg] = [g.target!.fraction, g.general!.fraction];
      points.push({ label: r.label, target: shown(a.target, ft), general: shown(a.general, fg), targetSe: shownSe(se.target, ft), generalSe: shownSe(se.general, fg), base: r === base, frontier: false });
    }
  }
  // The frontier is taken with both axes turned to higher-is-better.
  const sign = (x: { higherIsBetter: boolean } | null) => (x?.higherIsBetter === false ? -1 : 1);
  const oriented = points.map((p) => ({ p, target: sign(g.target) * p.target, general: sign(g.general) * p.general }));
  for (const o of paretoFrontier(oriented)) o.p.frontier = true;
  return { points, missing, axes: paretoAxes(all) };
}

/**
 * ± one standard error of each run's averages, drawn on the Pareto chart's points: horizontal for the target
 * average, vertical for the general one, each only where every task of the average has a standard error.
 */
function errorBarLayers(axes: { general: ParetoAxis; target: ParetoAxis }): VlSpec[] {
  const bar = (along: 'x' | 'y') => {
    const [field, other] = along === 'x' ? ['target', 'general'] : ['general', 'target'];
    const title = axes[field as 'target' | 'general'].title;
    return {
      transform: [{ filter: `isValid(datum.${field}Se)` }],
      mark: { type: 'errorbar', ticks: { size: 6 }, color: '#555', thickness: 1 },
      encoding: {
        [along]: { field, type: 'quantitative', title },
        [`${along}Error`]: { field: `${field}Se` },
        [along === 'x' ? 'y' : 'x']: { field: other, type: 'quantitative', title: axes[other as 'target' | 'general'].title },
      },
    };
  };
  return [bar('x'), bar('y')];
}

/** Pareto chart: target average (x) against general average (y), one labelled point per run, frontier as a line. */
export function paretoChart(base: EvalResults, tuned: EvalResults[]): ChartResult {
  const title = 'Forgetting vs learning';
  const { points, missing, axes } = paretoPoints(base, tuned);
  const skipped = missing.length ? `Left out of the Pareto chart (no general or no target average): ${missing.join(', ')}.` : null;
  if (!points.length || !axes) return { name: 'pareto', title, spec: null, note: skipped ?? 'No run has both general and target averages, so there is no Pareto chart.' };
  // In drawing order along the frontier: by target, from worst to best in its direction.
  const [st, sg] = [axes.target.reversed ? -1 : 1, axes.general.reversed ? -1 : 1];
  const frontier = points.filter((p) => p.frontier).sort((a, b) => st * (a.target - b.target) || sg * (b.general - a.general)).map((p, i) => ({ ...p, i }));
  const kind = (p: ParetoPoint) => (p.base ? 'base' : p.frontier ? 'on frontier' : 'dominated');
  const values = points.map((p) => ({ ...p, kind: kind(p) }));
  const spec: VlSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    config: CONFIG,
    title: { text: title, subtitle: `up = keeps general skill, right = gains target skill (averages${axes.general.reversed || axes.target.reversed ? '; a ↓ axis runs reversed' : ', %'})`, anchor: 'start' },
    width: 460,
    height: 320,
    layer: [
      {
        data: { values: frontier },
        mark: { type: 'line', color: '#888', strokeDash: [5, 3], strokeWidth: 1.5 },
        encoding: {
          x: { field: 'target', type: 'quantitative' },
          y: { field: 'general', type: 'quantitative' },
          order: { field: 'i', type: 'quantitative' },
        },
      },
      {
        data: { values },
        layer: [
          ...errorBarLayers(axes),
          {
            mark: { type: 'point', filled: true, opacity: 1 },
            encoding: {
              x: { field: 'target', type: 'quantitative', title: axes.target.title, scale: { zero: false, padding: 24, reverse: axes.target.reversed } },
              y: { field: 'general', type: 'quantitative', title: axes.general.title, scale: { zero: false, padding: 24, reverse: axes.general.reversed } },
              color: { field: 'kind', type: 'nominal', title: null, scale: { domain: ['base', 'on frontier', 'dominated'], range: ['#d62728', '#1f77b4', '#9aa5b1'] } },
              shape: { field: 'kind', type: 'nominal', title: null, scale: { domain: ['base', 'on frontier', 'dominated'], range: ['diamond', 'circle', 'circle'] } },
              size: { condition: { test: 'datum.base', value: 160 }, value: 80 },
              tooltip: [{ field: 'label' }, { field: 'target', format: axes.target.format }, { field: 'general', format: axes.general.format }],
            },
          },
          // Two text layers rather than a conditional weight: Vega-Lite has no fontWeight encoding channel.
          ...[true, false].map((isBase) => ({
            transform: [{ filter: isBase ? 'datum.base' : '!datum.base' }],
            mark: { type: 'text', align: 'left', dx: 8, dy: -8, fontSize: 11, fontWeight: isBase ? 'bold' : 'normal' },
            encoding: {
              x: { field: 'target', type: 'quantitative' },
              y: { field: 'general', type: 'quantitative' },
              text: { field: 'label', type: 'nominal' },
            },
          })),
        ],
      },
    ],
  };
  return { name: 'pareto', title, spec, note: skipped };
}

/** Renders a Vega-Lite spec to an SVG string without a browser or canvas. */
export async function renderSvg(spec: VlSpec): Promise<string> {
  const compiled = vl.compile(spec as unknown as vl.TopLevelSpec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

// Debian's fonts-dejavu-core and fonts-liberation (Chromium pulls the latter); resvg also scans system folders.
const FONT_FILES = [
  '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf',
  '/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf',
  '/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf',
  '/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf',
];

/** Font files found for PNG text; empty means PNGs will have no text. */
export function pngFonts(): string[] {
  const env = process.env.RETAIN_FONT_FILE;
  return [...(env ? [env] : []), ...FONT_FILES].filter((f) => existsSync(f));
}

export function svgToPng(svg: string, scale = 2): Buffer {
  const files = pngFonts();
  const family = files.some((f) => /DejaVu/.test(f)) ? 'DejaVu Sans' : files.length ? 'Liberation Sans' : 'sans-serif';
  const r = new Resvg(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    font: { loadSystemFonts: files.length === 0, fontFiles: files, defaultFontFamily: family, sansSerifFamily: family },
  });
  return r.render().asPng();
}
