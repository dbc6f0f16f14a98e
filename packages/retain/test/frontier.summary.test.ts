// The frontier study's summary (bench/forgetting-summary.ts): the goal's pick, scores read back as the metrics' own
// values, the file bench:frontier --write-docs keeps, and `bench:forgetting -- --summary` printing it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bestAgainstGoal, suiteEntry, writeSummary } from '../../../bench/forgetting-summary.js';
import { monitorUnits, type FrontierPoint, type Summary } from '../src/tune/outputs.js';
import type { EvalResults, ResultRow } from '../src/eval/results.js';

const ROOT = new URL('../../..', import.meta.url).pathname;

const point = (id: string, forgetting: number, target: number, o: Partial<FrontierPoint> = {}): FrontierPoint => ({
  id, label: id, status: 'done', steps: 100, lr: 0.002, methods: id === 'FT' ? [] : [{ name: id, lambda: 0.1 }], step: 100, forgetting, target, pareto: false, ...o,
});

// An accuracy-style suite: general in points of next-token accuracy (base 50.0), target in points of exact match.
const units = { general: { base: 50, unit: 'points', higher_is_better: true }, target: { unit: 'points', higher_is_better: true } };
const summary = (frontier: FrontierPoint[], u = units, baseTarget = 0): Summary => ({
  format: 'retain.tune/1', max_forgetting: 1e9, base_target: baseTarget, units: u,
  ft: { forgetting: { mean: 0, half: null }, target: { mean: 0, half: null }, seeds: 1 }, best: null, frontier, seconds: 1,
});
const seeded = (f: number, fh: number, t: number, th: number) => ({ forgetting: { mean: f, half: fh }, target: { mean: t, half: th }, seeds: 3 });

test('the goal\'s pick: most target within the goal, else least forgetting at 99% of FT\'s gain, else the Pareto point forgetting least', () => {
  const ft = point('FT', 30, 40, { seeded: seeded(30, 2, 40, 4) });
  // Seeded means decide, not the seed-0 run: 'a' forgot 0.2 on seed 0 but 0.9 on average.
  const a = point('a', 0.2, 35, { seeded: seeded(0.9, 0.3, 35, 2) });
  const b = point('b', 0.4, 20, { seeded: seeded(0.4, 0.1, 20, 3) });
  const c = point('c', 0.3, 30, { seeded: seeded(0.3, 0.2, 30, 1) });
  assert.equal(bestAgainstGoal(summary([ft, a, b, c]), 0.5)!.point.id, 'c');
  // Nothing within 0.1: of those keeping ≥ 99% of FT's gain (40 → ≥ 39.6) the one forgetting least.
  const d = point('d', 5, 39.7), e = point('e', 3, 39.5), f = point('f', 4, 41);
  assert.equal(bestAgainstGoal(summary([ft, d, e, f]), 0.1)!.point.id, 'f');
  // Neither: the Pareto point that forgot least; a broken or failed run is never picked.
  const g = point('g', 6, 10, { pareto: true }), h = point('h', 2, 5, { pareto: true }), x = point('x', 0, 50, { status: 'broken' });
  const pick = bestAgainstGoal(summary([ft, g, h, x]), 0.1)!;
  assert.equal(pick.point.id, 'h');
  assert.match(pick.why, /Pareto/);
  assert.equal(bestAgainstGoal(summary([ft, x]), 0.1), null);
});

test('a suite entry: general = base − forgetting with the same interval, the recipe as a config fragment, cost in FT\'s steps', () => {
  const ft = point('FT', 30, 40, { seeded: seeded(30, 2, 40, 4) });
  const mix = point('mix_1_1', 0.3, 39.8, { label: 'mix 1:1', steps: 200, lr: 0.001, methods: [{ name: 'mixing', ratio: '1:1' }], seeded: seeded(0.3, 0.2, 39.8, 1.5) });
  const e = suiteEntry(summary([ft, mix], units, 10), { suite: 'stories', protocol: 'equal passes', command: 'cmd', goal: 0.5 });
  assert.deepEqual(e.ft.general, { mean: 20, half: 2 });
  assert.deepEqual(e.ft.target, { mean: 40, half: 4 });
  assert.equal(e.ft.seeds, 3);
  const b = e.best!;
  assert.equal(b.label, 'mix 1:1');
  assert.deepEqual(b.config, { methods: [{ name: 'mixing', ratio: '1:1' }], training: { lr: 0.001, max_steps: 200 } });
  assert.deepEqual(b.general, { mean: 49.7, half: 0.2 });
  assert.equal(b.cost_steps_of_ft, 2);
  assert.ok(Math.abs(b.target_gain_of_ft! - 29.8 / 30) < 1e-12);
  assert.equal(e.goal_met, true);
  // 99.3% of the gain but forgetting 0.6 > 0.5: picked (keeps the gain), goal not met.
  const over = point('o', 0.6, 39.8, { seeded: seeded(0.6, 0.1, 39.8, 1) });
  const e2 = suiteEntry(summary([ft, over], units, 10), { suite: 'stories', protocol: 'equal steps', command: 'cmd', goal: 0.5 });
  assert.equal(e2.best!.label, 'o');
  assert.equal(e2.goal_met, false);
  // Bits per char (lower is better): forgetting raises the general value, and the monitor's signed target turns back.
  const bpc = { general: { base: 2.1, unit: 'bits_per_char', higher_is_better: false }, target: { unit: 'bits_per_char', higher_is_better: false } };
  const e3 = suiteEntry(summary([point('FT', 0.3, -1.9), point('l2', 0.01, -2)], bpc, -2.6), { suite: 'charlstm', protocol: 'equal steps', command: 'cmd', goal: 0.02 });
  assert.ok(Math.abs(e3.ft.general.mean - 2.4) < 1e-12);
  assert.deepEqual(e3.best!.target, { mean: 2, half: null });
  assert.ok(Math.abs(e3.best!.target_gain_of_ft! - 0.6 / 0.7) < 1e-12);
  assert.equal(e3.goal_met, false);
  // FT that gained nothing leaves no share of its gain to keep: the ratio is null and the goal unmet.
  const flat = suiteEntry(summary([point('FT', 1, 10), point('l2', 0.1, 12)], units, 10), { suite: 's', protocol: 'equal steps', command: 'c', goal: 0.5 });
  assert.equal(flat.best!.target_gain_of_ft, null);
  assert.equal(flat.goal_met, false);
  assert.throws(() => suiteEntry(summary([mix]), { suite: 's', protocol: 'equal steps', command: 'c', goal: 1 }), /no FT run/);
});

test('monitor units: the averageable general rows in points (or the shared metric), the target\'s unit and direction', () => {
  const row = (task: string, metric: string, value: number, role: 'general' | 'target', hib = true) => ({ task, metric, value, role, primary: true, higher_is_better: hib }) as unknown as ResultRow;
  const acc = { rows: [row('a', 'acc', 0.5, 'general'), row('b', 'acc', 0.7, 'general'), row('loss', 'ce', 2, 'general', false), row('t', 'exact_match', 0.1, 'target')] } as EvalResults;
  const u = monitorUnits(acc);
  assert.ok(Math.abs(u.general.base - 60) < 1e-9);
  assert.deepEqual([u.general.unit, u.general.higher_is_better, u.target.unit, u.target.higher_is_better], ['points', true, 'points', true]);
  const bpc = monitorUnits({ rows: [row('s', 'bits_per_char', 2.1, 'general', false), row('d', 'bits_per_char', 2.6, 'target', false)] } as EvalResults);
  assert.deepEqual(bpc, { general: { base: 2.1, unit: 'bits_per_char', higher_is_better: false }, target: { unit: 'bits_per_char', higher_is_better: false } });
});

test('bench:forgetting --summary prints the file grouped by suite and protocol; without it, names the command that writes it', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-summary-'));
  const file = join(dir, 'forgetting-summary.json');
  const run = () => spawnSync(process.execPath, ['--import', 'tsx', 'bench/forgetting.ts', '--summary', '--summary-file', file], { cwd: ROOT, encoding: 'utf8' });
  const missing = run();
  assert.equal(missing.status, 1);
  assert.equal(missing.stdout, '');
  assert.match(missing.stderr, /does not exist yet.*npm run -s bench:frontier -- .*--write-docs/);
  const ft = point('FT', 30, 40);
  const entry = (suite: string, protocol: 'equal steps' | 'equal passes', f: number) =>
    suiteEntry(summary([ft, point('l2', f, 39.9)]), { suite, protocol, command: `cmd ${suite}`, goal: 0.5 });
  writeSummary([entry('stories', 'equal steps', 3), entry('mnist', 'equal steps', 0.4)], file);
  // A later run of one suite and protocol replaces that entry and keeps the others.
  writeSummary([entry('stories', 'equal steps', 0.2), entry('stories', 'equal passes', 1)], file);
  const r = run();
  assert.equal(r.status, 0, r.stderr);
  const o = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(o.suites).sort(), ['mnist', 'stories']);
  assert.deepEqual(Object.keys(o.suites.stories).sort(), ['equal passes', 'equal steps']);
  const s = o.suites.stories['equal steps'];
  assert.equal(s.best.forgetting.mean, 0.2);
  assert.equal(s.goal_met, true);
  assert.deepEqual(s.ft.general, { mean: 20, half: null });
  assert.deepEqual(s.best.config.methods, [{ name: 'l2', lambda: 0.1 }]);
  assert.equal(o.suites.mnist['equal steps'].goal_met, true);
  assert.equal(o.suites.stories['equal passes'].goal_met, false);
  writeFileSync(file, JSON.stringify({ format: 'something else', suites: [] }));
  assert.match(run().stderr, /format 'something else' is not retain\.forgetting-summary\/1/);
});
