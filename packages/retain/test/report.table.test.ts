import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildForgettingTable, forgettingTable, forgettingTableText, isFractionMetric, MINUS, runAverageErrors, runAverages } from '../src/report/table.js';
import { paretoFrontier, paretoPoints } from '../src/report/charts.js';
import { BASE, FLOW, FT, run } from './report.fixtures.js';

const M = MINUS;

/** Markdown table body rows as cell lists (first two lines are the header and the separator). */
function mdRows(md: string): string[][] {
  return md.split('\n').filter((l) => l.startsWith('|')).map((l) => l.slice(2, -2).split(' | '));
}

test('forgetting table: columns in order, scores and deltas as computed by hand', () => {
  const md = forgettingTable(BASE, [FT, FLOW]);
  const rows = mdRows(md);
  assert.deepEqual(rows[0], ['run', 'arc_easy acc', 'hellaswag acc_norm', 'wikitext2 bits_per_char ↓', 'general avg\\*', 'Q&A exact_match', 'overall avg\\*']);
  assert.match(md.split('\n')[1], /^\|---(\|---:){6}\|$/);
  // base: 62.34 %, 45.11 %, 1.2346, (62.34 + 45.11) / 2 = 53.725, 10.2 %, (62.34 + 45.11 + 10.2) / 3 = 39.217
  assert.deepEqual(rows[2], ['base', '62.3', '45.1', '1.235', '53.7', '10.2', '39.2']);
  // FT: 59.17 − 62.34 = −3.17; 44.88 − 45.11 = −0.23; 1.3012 − 1.2346 = +0.0666; avg 52.025 − 53.725 = −1.7;
  // 41.33 − 10.2 = +31.13; overall 48.46 − 39.217 = +9.243
  assert.deepEqual(rows[3], ['FT', `59.2 (${M}3.2)`, `44.9 (${M}0.2)`, '1.301 (+0.067)', `52.0 (${M}1.7)`, '41.3 (+31.1)', '48.5 (+9.2)']);
  // FLOW: +0.67, −1.09, 1.2298 − 1.2346 = −0.0048, avg 53.515 − 53.725 = −0.21, 35.17 − 10.2 = +24.97, overall 47.4 − 39.217 = +8.183
  assert.deepEqual(rows[4], ['FLOW', '63.0 (+0.7)', `44.0 (${M}1.1)`, `1.230 (${M}0.005)`, `53.5 (${M}0.2)`, '35.2 (+25.0)', '47.4 (+8.2)']);
  assert.equal(rows.length, 5);
  assert.match(md, /\n\\\* Averages leave out wikitext2 \(bits_per_char: lower is better\)/);
  assert.ok(!md.includes('-0') && !/\(-/.test(md), 'negative numbers use the Unicode minus');
});

test('forgetting table model: deltas in points, direction-aware "better", averages over fraction metrics only', () => {
  const t = buildForgettingTable(BASE, [FT]);
  assert.deepEqual(t.columns.map((c) => c.name), ['arc_easy', 'hellaswag', 'wikitext2', 'general avg', 'Q&A', 'overall avg']);
  const ft = t.rows[1].cells;
  assert.ok(Math.abs(ft[0].delta! - -3.17) < 1e-9);
  assert.ok(Math.abs(ft[2].delta! - 0.0666) < 1e-9);
  assert.equal(ft[0].better, false);
  assert.equal(ft[2].better, false, 'a higher bits-per-char is worse');
  assert.equal(ft[4].better, true);
  assert.deepEqual(t.leftOut, [{ task: 'wikitext2', metric: 'bits_per_char', reason: 'lower is better' }]);
  const a = runAverages(BASE);
  assert.ok(Math.abs(a.general! - 0.53725) < 1e-12 && Math.abs(a.target! - 0.102) < 1e-12 && Math.abs(a.overall! - 1.1765 / 3) < 1e-12);
  assert.ok(isFractionMetric('acc,none') && isFractionMetric('next_token_acc') && !isFractionMetric('perplexity'));
});

test('forgetting table: a zero change has no sign, a missing task shows a dash and voids the average', () => {
  const same = run('same', ['x'], { arc_easy: 0.6234, hellaswag: 0.4511, wikitext2: 1.2346, 'Q&A': 0.102 });
  const partial = run('partial', ['x'], { arc_easy: 0.7, 'Q&A': 0.2 });
  const rows = mdRows(forgettingTable(BASE, [same, partial]));
  assert.deepEqual(rows[3], ['same', '62.3 (0.0)', '45.1 (0.0)', '1.235 (0.000)', '53.7 (0.0)', '10.2 (0.0)', '39.2 (0.0)']);
  assert.deepEqual(rows[4], ['partial', '70.0 (+7.7)', '–', '–', '–', '20.0 (+9.8)', '–']);
});

test('forgetting table: no footnote when every task is an accuracy; labels with pipes stay in their cell', () => {
  const b = run('base', [], { arc_easy: 0.5, 'Q&A': 0.25 });
  const t = run('a|b', ['x'], { arc_easy: 0.45, 'Q&A': 0.5 });
  const md = forgettingTable(b, [t]);
  assert.ok(!md.includes('leave out'));
  const rows = mdRows(md);
  assert.deepEqual(rows[0], ['run', 'arc_easy acc', 'general avg', 'Q&A exact_match', 'overall avg']);
  assert.deepEqual(rows[3], ['a\\|b', `45.0 (${M}5.0)`, `45.0 (${M}5.0)`, '50.0 (+25.0)', '47.5 (+10.0)']);
});

test('terminal table: aligned columns, same figures as the Markdown table', () => {
  const txt = forgettingTableText(BASE, [FT, FLOW]);
  const lines = txt.trimEnd().split('\n');
  assert.match(lines[0], /^run\s+arc_easy\s+hellaswag\s+wikitext2\s+general avg\*\s+Q&A\s+overall avg\*$/);
  assert.match(lines[1], /acc\s+acc_norm\s+bits_per_char ↓\s+exact_match/);
  assert.match(lines[2], /^-+( +-+){6}$/);
  const body = lines.slice(3, 6);
  // Right-aligned numbers: every body line and the rule line end at the same column.
  for (const l of body) assert.equal([...l].length, [...lines[2]].length, l);
  assert.deepEqual(body[1].trim().split(/\s{2,}/), ['FT', `59.2 (${M}3.2)`, `44.9 (${M}0.2)`, '1.301 (+0.067)', `52.0 (${M}1.7)`, '41.3 (+31.1)', '48.5 (+9.2)']);
  assert.match(lines[6], /^\* Averages leave out wikitext2/);
});

test('Pareto frontier: dominated points are off it, ties and the extremes are on it', () => {
  const pts = [{ target: 10, general: 55 }, { target: 40, general: 50 }, { target: 30, general: 54 }, { target: 20, general: 45 }, { target: 30, general: 54 }];
  assert.deepEqual(paretoFrontier(pts), [pts[0], pts[2], pts[4], pts[1]]);
  const { points, missing } = paretoPoints(BASE, [FT, FLOW, run('gen only', ['x'], { arc_easy: 0.5 })]);
  assert.deepEqual(missing, ['gen only']);
  assert.deepEqual(points.map((p) => [p.label, +p.target.toFixed(2), +p.general.toFixed(3), p.base, p.frontier]), [
    ['base', 10.2, 53.725, true, true], ['FT', 41.33, 52.025, false, true], ['FLOW', 35.17, 53.515, false, true],
  ]);
});

test('standard errors: each score\'s in display units, an average\'s combined over its tasks, shown with ± only when asked', () => {
  const t = buildForgettingTable(BASE, [FT], { stderr: true });
  const ft = t.rows[1].cells;
  // Accuracies' 0.0123 is 1.23 points; bits per char has none; the general average over two tasks √2 · 1.23 / 2,
  // the overall one over three √3 · 1.23 / 3.
  assert.deepEqual(ft.map((c) => (c.stderr === null ? null : +c.stderr.toFixed(6))), [1.23, 1.23, null, 0.869741, 1.23, 0.710141]);
  assert.deepEqual(ft.map((c) => c.text), ['59.2 ± 1.2', '44.9 ± 1.2', '1.301', '52.0 ± 0.9', '41.3 ± 1.2', '48.5 ± 0.7']);
  assert.equal(ft[0].deltaText, `${M}3.2`, 'the delta stays as it was');
  assert.ok(!forgettingTableText(BASE, [FT]).includes('±'), 'terminal tables leave the errors out');
  const se = runAverageErrors(FT, [BASE, FT]);
  assert.ok(Math.abs(se.general! - Math.SQRT2 * 0.0123 / 2) < 1e-12 && Math.abs(se.target! - 0.0123) < 1e-12);
  // A task without a standard error leaves its average without one rather than understating it.
  const noSe = { ...FT, rows: FT.rows.map((r) => (r.task === 'arc_easy' ? { ...r, stderr: null } : r)) };
  assert.equal(runAverageErrors(noSe, [BASE, noSe]).general, null);
  assert.equal(buildForgettingTable(BASE, [noSe], { stderr: true }).rows[1].cells[3].text, '52.0');
});
