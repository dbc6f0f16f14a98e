// Forgetting and gain by each metric's direction: a suite scored in bits per char (lower is better), as the char-LSTM
// suite is, gets averages, forgetting, gain and a Pareto chart, with every figure worked out by hand below.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EvalResults, ResultRow, Role } from '../src/eval/results.js';
import { averageGroup, improvement, roleAverage } from '../src/eval/results.js';
import { buildForgettingTable, forgettingTable, MINUS as M } from '../src/report/table.js';
import { paretoChart, paretoPoints } from '../src/report/charts.js';
import { writeReport } from '../src/report/report.js';

/** A run scored on shakespeare (general) and darwin (target) in bits per char. */
function bpc(label: string, values: Record<string, [number, Role]>): EvalResults {
  const rows: ResultRow[] = Object.entries(values).map(([task, [value, role]]) => ({ task, metric: 'bits_per_char', value, stderr: null, higher_is_better: false, n: 1, role, primary: true }));
  return {
    format: 'retain.eval/1', label, model: { path: `/m/${label}`, name: label, hash: 'x', parameters: 1 }, methods: label === 'base' ? [] : ['ft'], date: '2025-01-01T00:00:00Z',
    config: { tasks: Object.keys(values), limit: null, batch_size: 1, seed: 0, device: 'cpu' }, rows, results: {}, higher_is_better: {}, 'n-samples': {}, versions: {}, configs: {},
  };
}

// The README's char-LSTM figures: standard FT 2.021 → 2.924 (Shakespeare), 3.199 → 2.345 (Darwin); mix 1:1 2.146, 2.503.
const BASE = bpc('base', { shakespeare: [2.021, 'general'], darwin: [3.199, 'target'] });
const FT = bpc('FT', { shakespeare: [2.924, 'general'], darwin: [2.345, 'target'] });
const MIX = bpc('mix 1:1', { shakespeare: [2.146, 'general'], darwin: [2.503, 'target'] });
const WORSE = bpc('worse', { shakespeare: [2.2, 'general'], darwin: [2.6, 'target'] }); // dominated by mix 1:1

test('averageGroup and improvement: accuracies first, else one shared metric; improvement is signed by direction', () => {
  const t = (metric: string, higherIsBetter: boolean) => ({ metric, higherIsBetter });
  assert.deepEqual(averageGroup([t('acc', true), t('bits_per_char', false)])?.tasks, [t('acc', true)]);
  assert.deepEqual(averageGroup([t('bits_per_char', false), t('bits_per_char', false)]), { tasks: [t('bits_per_char', false), t('bits_per_char', false)], metric: 'bits_per_char', fraction: false, higherIsBetter: false });
  assert.equal(averageGroup([t('bits_per_char', false), t('ce', false)]), null);
  assert.ok(Math.abs(improvement({ fraction: false, higherIsBetter: false }, 3.199, 2.345) - 0.854) < 1e-12);
  assert.ok(Math.abs(improvement({ fraction: true, higherIsBetter: true }, 0.5, 0.45) - -5) < 1e-12);
  assert.equal(roleAverage(FT, 'general'), 2.924);
});

test('a bits-per-char suite: the table averages it, the averages show forgetting and gain, the Pareto chart has every run', () => {
  const t = buildForgettingTable(BASE, [FT, MIX]);
  assert.deepEqual(t.leftOut, []);
  assert.equal(t.footnote, null);
  const avg = t.columns.findIndex((c) => c.name === 'general avg');
  assert.deepEqual({ ...t.columns[avg] }, { kind: 'avg', name: 'general avg', role: 'general', metric: 'bits_per_char', fraction: false, higherIsBetter: false });
  assert.equal(t.rows[1].cells[avg].value, 2.924);
  assert.equal(t.rows[1].cells[avg].better, false, 'more bits per char is worse');
  const md = forgettingTable(BASE, [FT, MIX]);
  assert.match(md, /\| run \| shakespeare bits_per_char ↓ \| general avg bits_per_char ↓ \| darwin bits_per_char ↓ \| overall avg bits_per_char ↓ \|/);
  // overall: (2.924 + 2.345) / 2 = 2.6345 vs (2.021 + 3.199) / 2 = 2.61 → +0.0245
  assert.match(md, new RegExp(`\\| FT \\| 2\\.924 \\(\\+0\\.903\\) \\| 2\\.924 \\(\\+0\\.903\\) \\| 2\\.345 \\(${M}0\\.854\\) \\| 2\\.635 \\(\\+0\\.025\\) \\|`));

  const { points, missing, axes } = paretoPoints(BASE, [FT, MIX, WORSE]);
  assert.deepEqual(missing, []);
  assert.deepEqual(points.map((p) => [p.label, p.general, p.target, p.frontier]), [
    ['base', 2.021, 3.199, true], ['FT', 2.924, 2.345, true], ['mix 1:1', 2.146, 2.503, true], ['worse', 2.2, 2.6, false],
  ]);
  assert.deepEqual(axes, { general: { title: 'general average bits_per_char ↓', reversed: true, format: '.3f' }, target: { title: 'target average bits_per_char ↓', reversed: true, format: '.3f' } });
  const chart = paretoChart(BASE, [FT, MIX, WORSE]);
  assert.ok(chart.spec, chart.note ?? '');
  // The frontier is drawn from the worst target to the best: base (3.199), mix 1:1 (2.503), FT (2.345).
  const line = (chart.spec as { layer: { data: { values: { label: string }[] } }[] }).layer[0].data.values.map((v) => v.label);
  assert.deepEqual(line, ['base', 'mix 1:1', 'FT']);
});

test('retain report on a bits-per-char suite: the averages table gives forgetting and gain in bits per char', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-report-dir-'));
  try {
    await writeReport({ format: 'retain.compare/1', date: '2025-01-01T00:00:00Z', base: BASE, tuned: [FT, MIX] }, join(dir, 'out'));
    const md = readFileSync(join(dir, 'out', 'report.md'), 'utf8');
    const section = md.slice(md.indexOf('## Averages'), md.indexOf('## Charts'));
    assert.match(section, /\| run \| general avg \(bits_per_char ↓\) \| target avg \(bits_per_char ↓\) \| overall avg \(bits_per_char ↓\) \| forgetting \(bits_per_char ↓\) \| gain \(bits_per_char ↓\) \|/);
    // FT: forgetting 2.924 − 2.021 = +0.903 (worse), gain 3.199 − 2.345 = +0.854 (better); mix: +0.125, +0.696.
    assert.match(section, /\| FT \| 2\.924 \| 2\.345 \| 2\.635 \| \+0\.903 \| \+0\.854 \|/);
    assert.match(section, /\| mix 1:1 \| 2\.146 \| 2\.503 \| 2\.325 \| \+0\.125 \| \+0\.696 \|/);
    assert.doesNotMatch(md, /no Pareto chart/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
