// lm-evaluation-harness results files (fixtures/lmeval-results, written by lm_eval 0.4.13 itself: see its README)
// read as runs of `retain report` and `retain compare`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyTargets, LmevalResultsError, readLmevalRuns } from '../src/eval/lmeval-results.js';
import { loadRuns, ReportInputError } from '../src/report/report.js';

const BIN = new URL('../bin/retain.mjs', import.meta.url).pathname;
const DIR = new URL('fixtures/lmeval-results', import.meta.url).pathname;
const BEFORE = join(DIR, '__tmp__evalio__before');
const AFTER = join(DIR, '__tmp__evalio__after');
const fileIn = (d: string) => join(d, readdirSync(d).find((f) => f.startsWith('results_'))!);

function retain(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("an lm-eval results file's metrics, standard errors, directions and sample counts are read as lm_eval wrote them", () => {
  const [r] = readLmevalRuns(fileIn(AFTER));
  const raw = JSON.parse(readFileSync(fileIn(AFTER), 'utf8'));
  assert.equal(r.label, 'after');
  assert.equal(r.model.path, '/tmp/evalio/after');
  assert.equal(r.model.parameters, 4170048);
  // The group is not a task of its own (its subtasks are); the leaf tasks keep the file's order.
  assert.deepEqual(r.config.tasks, ['tiny_mc', 'tiny_ll', 'tiny_gen', 'tiny_ppl', 'tiny_gen_regex']);
  assert.deepEqual(r.groups, { tiny_group: ['tiny_mc', 'tiny_ll'] });
  const row = (task: string, metric: string) => r.rows.find((x) => x.task === task && x.metric === metric)!;
  assert.deepEqual(row('tiny_mc', 'acc'), { task: 'tiny_mc', metric: 'acc', value: 0.5, stderr: 0.22360679774997896, higher_is_better: true, n: 6, role: 'general', primary: true });
  assert.equal(row('tiny_mc', 'acc_norm').value, raw.results.tiny_mc['acc_norm,none']);
  assert.equal(row('tiny_mc', 'acc_norm').primary, false);
  // "N/A" standard errors (perplexities) are null; perplexity is lower-is-better as higher_is_better says.
  assert.equal(row('tiny_ppl', 'word_perplexity').stderr, null);
  assert.equal(row('tiny_ppl', 'word_perplexity').higher_is_better, false);
  assert.equal(row('tiny_ppl', 'bits_per_byte').value, raw.results.tiny_ppl['bits_per_byte,none']);
  assert.equal(row('tiny_ll', 'perplexity').stderr, raw.results.tiny_ll['perplexity_stderr,none']);
  // A filter other than "none" stays in the metric's name.
  assert.equal(row('tiny_gen_regex', 'exact_match,first-word').value, 0);
  assert.equal(r.rows.length, 9);
});

test('--target names tasks or an lm-eval group; the other tasks are general; an unknown name is refused', () => {
  const runs = readLmevalRuns(DIR);
  assert.deepEqual(runs.map((r) => r.label), ['before', 'after'], 'the folder holds both models, earliest evaluated first');
  const [, after] = applyTargets(runs, ['tiny_group']);
  assert.deepEqual([...new Set(after.rows.filter((x) => x.role === 'target').map((x) => x.task))], ['tiny_mc', 'tiny_ll']);
  assert.deepEqual([...new Set(applyTargets(runs, ['tiny_gen'])[0].rows.filter((x) => x.role === 'target').map((x) => x.task))], ['tiny_gen']);
  assert.throws(() => applyTargets(runs, ['tiny_mcc']), (e: Error) => e instanceof LmevalResultsError && /--target tiny_mcc: no run has that task or group \(tasks: tiny_mc, .*groups: tiny_group\)/.test(e.message));
});

test("a model's results files from evaluations at different times are merged, the newest winning per task", () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-merge-'));
  const data = JSON.parse(readFileSync(fileIn(AFTER), 'utf8'));
  // An older file with one task of the newer one (a different value) and one task the newer one lacks.
  const older = { ...data, date: data.date - 3600, results: { tiny_mc: { ...data.results.tiny_mc, 'acc,none': 0.1 }, extra: { alias: 'extra', 'acc,none': 0.9, 'acc_stderr,none': 0.1 } }, group_subtasks: {} };
  writeFileSync(join(dir, 'results_2026-01-01T00-00-00.json'), JSON.stringify(older));
  copyFileSync(fileIn(AFTER), join(dir, 'results_2026-12-03T11-45-23.067306.json'));
  const [r] = readLmevalRuns(dir);
  assert.equal(r.rows.find((x) => x.task === 'tiny_mc' && x.metric === 'acc')!.value, 0.5);
  assert.equal(r.rows.find((x) => x.task === 'extra')!.value, 0.9);
  assert.equal(r.rows.filter((x) => x.task === 'tiny_mc' && x.metric === 'acc').length, 1);
});

test('bad lm-eval inputs name the file and the problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-bad-'));
  const data = JSON.parse(readFileSync(fileIn(AFTER), 'utf8'));
  writeFileSync(join(dir, 'results_x.json'), JSON.stringify({ ...data, results: { ...data.results, tiny_mc: { 'acc,none': 'high' } } }));
  assert.throws(() => loadRuns([join(dir, 'results_x.json')]), (e: Error) => e instanceof ReportInputError && /results_x\.json: results\.tiny_mc\["acc,none"\] must be a number, got "high"/.test(e.message));
  writeFileSync(join(dir, 'results_y.json'), '{"results": ');
  assert.throws(() => loadRuns([join(dir, 'results_y.json')]), /results_y\.json: not valid JSON/);
  mkdirSync(join(dir, 'empty'));
  assert.throws(() => readLmevalRuns(join(dir, 'empty')), /empty: no lm-evaluation-harness results \(results_\*\.json\)/);
});

test('retain report reads an lm_eval --output_path folder as a before/after forgetting report', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'retain-lmeval-report-')), 'report');
  const r = retain('report', DIR, '--target', 'tiny_mc', '--out', out);
  assert.equal(r.code, 0, r.err);
  // tiny_mc is the target column: acc 16.7% before, 50.0% after (+33.3 points); the general accuracies are 0.
  assert.match(r.out, /^run\s+tiny_ll\s+tiny_gen\s+tiny_ppl\s+tiny_gen_regex\s+general avg\*\s+tiny_mc\s+overall avg\*/);
  assert.match(r.out, /\nbefore\s+29937416\.277\s+0\.0\s+1467735\.615\s+0\.0\s+0\.0\s+16\.7\s+5\.6\n/);
  assert.match(r.out, /\nafter\s+25759438\.544 \(−4177977\.733\)\s+0\.0 \(0\.0\)\s+1261850\.881 \(−205884\.734\)\s+0\.0 \(0\.0\)\s+0\.0 \(0\.0\)\s+50\.0 \(\+33\.3\)/);
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /^# Forgetting report: before and 1 tuned run/);
  const bad = retain('report', DIR, '--target', 'nope', '--out', out);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /^retain report: --target nope: no run has that task or group/);
});

test('retain compare reads lm-eval results for --base and --tuned instead of evaluating, and refuses a mix', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-lmeval-compare-'));
  const out = join(dir, 'compare.json');
  const r = retain('compare', '--base', BEFORE, '--tuned', `ft=${fileIn(AFTER)}`, '--target', 'tiny_group', '--tasks', 'tiny_mc,tiny_ll,tiny_ppl', '-o', out);
  assert.equal(r.code, 0, r.err);
  const c = JSON.parse(readFileSync(out, 'utf8'));
  assert.equal(c.format, 'retain.compare/1');
  assert.equal(c.base.label, 'base');
  assert.deepEqual([c.tuned[0].label, c.tuned[0].methods], ['ft', ['fine-tuned']]);
  assert.deepEqual([...new Set(c.tuned[0].rows.map((x: { task: string }) => x.task))], ['tiny_mc', 'tiny_ll', 'tiny_ppl']);
  // tiny_ppl alone is general; its general average is its own word perplexity.
  assert.match(r.out, /\nft\s+1261850\.881 \(−205884\.734\)\s+1261850\.881 \(−205884\.734\)\s+50\.0 \(\+33\.3\)\s+25759438\.544/);
  const mix = retain('compare', '--base', BEFORE, '--tuned', dir, '-o', out);
  assert.equal(mix.code, 1);
  assert.match(mix.err, /--base .*__tmp__evalio__before is lm-evaluation-harness results but --tuned .* is not; give results for every model, or models for every one/);
  const two = retain('compare', '--base', DIR, '--tuned', AFTER, '-o', out);
  assert.match(two.err, /--base .*lmeval-results: holds the results of 2 models \(\/tmp\/evalio\/before, \/tmp\/evalio\/after\); name one model's folder or file/);
  const noTasks = retain('compare', '--base', dir, '--tuned', dir, '-o', join(dir, 'c2.json'));
  assert.match(noTasks.err, /--tasks is required to evaluate models/);
});
