import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRuns, ReportInputError } from '../src/report/report.js';
import { BASE, compare, FLOW, FT } from './report.fixtures.js';

const BIN = new URL('../bin/retain.mjs', import.meta.url).pathname;

function retain(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A compare file, plus FLOW as a training output folder whose monitor lives in monitor.jsonl. */
function fixtures(): { dir: string; compareFile: string; runDir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'retain-report-cli-'));
  const compareFile = join(dir, 'compare.json');
  writeFileSync(compareFile, JSON.stringify(compare([FT])));
  const runDir = join(dir, 'flow-run');
  mkdirSync(runDir);
  const { monitor, ...flow } = FLOW;
  // As `retain train` writes it: the training loss from metrics.jsonl rides in results.json.
  writeFileSync(join(runDir, 'results.json'), JSON.stringify({ ...flow, train: [{ step: 1, loss: 2.5 }, { step: 2, loss: 2.1 }, { step: 3, loss: 1.9 }] }));
  writeFileSync(join(runDir, 'monitor.jsonl'), monitor!.map((p) => JSON.stringify(p)).join('\n') + '\n');
  return { dir, compareFile, runDir };
}

test('retain report on a compare file and a run directory writes every file and prints the table', () => {
  const { dir, compareFile, runDir } = fixtures();
  const out = join(dir, 'out');
  const r = retain('report', compareFile, runDir, '--out', out);
  assert.equal(r.code, 0, r.err);
  for (const f of ['report.md', 'report.html', 'loss.svg', 'loss.png', 'dynamics.svg', 'dynamics.png', 'pareto.svg', 'pareto.png']) assert.ok(existsSync(join(out, f)), f);
  assert.ok(readFileSync(join(out, 'loss.svg'), 'utf8').includes('>FLOW</text>'), 'the run folder\'s loss is plotted');
  assert.match(r.out, /^run\s+arc_easy/);
  assert.match(r.out, /FLOW\s+63\.0 \(\+0\.7\)/);
  // FLOW's monitor came from monitor.jsonl: its line is in the dynamics chart.
  const legend = readFileSync(join(out, 'dynamics.svg'), 'utf8');
  assert.ok(legend.includes('>FLOW</text>') && legend.includes('>FT</text>'));
});

test('retain report --base picks the base by label', () => {
  const { dir, compareFile, runDir } = fixtures();
  const out = join(dir, 'out');
  const r = retain('report', compareFile, runDir, '--out', out, '--base', 'FT');
  assert.equal(r.code, 0, r.err);
  assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /^# Forgetting report: FT and 2 tuned runs/);
  assert.match(r.out, /\nFT\s+59\.2\s+44\.9/);
});

test('malformed inputs fail with a message naming the file and the problem', () => {
  const { dir, compareFile } = fixtures();
  const write = (name: string, text: string) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };
  const cases: [string[], string | undefined, RegExp][] = [
    [[join(dir, 'missing.json')], undefined, /missing\.json: not found/],
    [[write('trunc.json', '{"format": "retain.eval/1", "label": ')], undefined, /trunc\.json: not valid JSON/],
    [[write('other.json', JSON.stringify({ format: 'lm-eval/0', results: {} }))], undefined, /other\.json: unknown format "lm-eval\/0" \(expected 'retain\.eval\/1'/],
    [[write('list.json', '[1, 2]')], undefined, /list\.json: not a results object/],
    [[write('badrow.json', JSON.stringify({ ...BASE, rows: [{ ...BASE.rows[0], value: 'high' }] }))], undefined, /badrow\.json: rows\[0\]\.value must be a number, got "high"/],
    [[write('badtrain.json', JSON.stringify({ ...BASE, train: [{ step: 1, loss: 'low' }] }))], undefined, /badtrain\.json: train must be a list of \{step, loss\} points/],
    [[write('badcmp.json', JSON.stringify({ ...compare(), tuned: [{ ...FT, format: undefined }] }))], undefined, /badcmp\.json: tuned\[0\]: format must be 'retain\.eval\/1'/],
    [[dir], undefined, /: directory has no results\.json/],
    [[compareFile], 'nobody', /--base nobody: no run has that label \(labels: base, FT\)/],
  ];
  for (const [args, base, want] of cases) assert.throws(() => loadRuns(args, { base }), (e: Error) => e instanceof ReportInputError && want.test(e.message), String(want));
  assert.throws(() => loadRuns([]), ReportInputError);
  // A NaN score is written as null by JSON.stringify: accepted, and shown as missing.
  const nan = loadRuns([write('nan.json', JSON.stringify({ ...BASE, rows: [{ ...BASE.rows[0], value: NaN }] }))]);
  assert.equal(nan.base.rows[0].value, null);
  // Through the CLI: exit status 1 and one line on stderr, no stack.
  const r = retain('report', join(dir, 'trunc.json'), '--out', join(dir, 'o'));
  assert.equal(r.code, 1);
  assert.match(r.err, /^retain report: .*trunc\.json: not valid JSON/);
  assert.equal(r.err.trim().split('\n').length, 1, r.err);
  assert.ok(!existsSync(join(dir, 'o')), 'nothing written on bad input');
});

test('a base that appears in two compare files is reported once; clashing labels are told apart', () => {
  const { dir } = fixtures();
  const a = join(dir, 'a.json');
  const b = join(dir, 'b.json');
  writeFileSync(a, JSON.stringify(compare([FT])));
  writeFileSync(b, JSON.stringify(compare([{ ...FLOW, label: 'FT' }])));
  const set = loadRuns([a, b]);
  assert.equal(set.base.label, 'base');
  assert.deepEqual(set.tuned.map((r) => r.label), ['FT', 'FT (2)']);
});
