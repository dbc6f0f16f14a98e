// retain train writes results.json, so `retain report` takes a training run's folder as it takes retain eval's
// output: the final model's scores on the monitor's probes (the same numbers retain eval gives final/), or its
// held-out loss without a monitor, and the training loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { DEFAULT_MODEL, prepareDemoData } from '../src/suite/demo.js';

const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-train-results-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 300_000 });

test('retain train writes results.json: the monitor\'s probes on the final model, equal to retain eval on final/; retain report reads the run folder', { timeout: 300_000 }, () => {
  const d = prepareDemoData(dir, { trainSize: 64, testSize: 12, seed: 0 });
  const tasks = join(dir, 'data', 'tasks.yaml');
  const run = join(dir, 'l2-run');
  writeFileSync(join(dir, 'train.yaml'), JSON.stringify({
    model: { path: DEFAULT_MODEL },
    data: { train: { path: d.train, format: { type: 'prompt_completion' }, max_length: 64 } },
    training: { max_steps: 4, batch_size: 8, lr: 0.003, schedule: 'constant', seed: 0, log_every: 1 },
    monitor: { tasks: [tasks], target: ['arithmetic'], limit: 12, every: 2 },
    methods: [{ name: 'l2', lambda: 0.01 }],
    output_dir: run,
  }));
  const t = cli('train', join(dir, 'train.yaml'));
  assert.equal(t.status, 0, t.stderr);
  const res = JSON.parse(readFileSync(join(run, 'results.json'), 'utf8'));
  assert.equal(res.format, 'retain.eval/1');
  assert.equal(res.label, 'l2-run');
  assert.deepEqual(res.methods, ['l2']);
  assert.deepEqual(res.train.map((x: { step: number }) => x.step), [1, 2, 3, 4]);
  // The same numbers as evaluating final/ on the same tasks and limit.
  const e = cli('eval', '--model', join(run, 'final'), '--tasks', tasks, '--target', 'arithmetic', '--limit', '12', '-o', join(dir, 'final.json'));
  assert.equal(e.status, 0, e.stderr);
  const ev = JSON.parse(readFileSync(join(dir, 'final.json'), 'utf8'));
  const key = (r: { task: string; metric: string; value: number; role: string }) => `${r.task}/${r.metric}/${r.role}=${r.value}`;
  assert.deepEqual(res.rows.map(key), ev.rows.map(key));
  assert.equal(res.model.hash, ev.model.hash);
  // The base, evaluated alike, and the run folder make a report.
  const b = cli('eval', '--model', DEFAULT_MODEL, '--tasks', tasks, '--target', 'arithmetic', '--limit', '12', '--label', 'base', '-o', join(dir, 'base.json'));
  assert.equal(b.status, 0, b.stderr);
  const r = cli('report', join(dir, 'base.json'), run, '--out', join(dir, 'report'));
  assert.equal(r.status, 0, r.stderr);
  const md = readFileSync(join(dir, 'report', 'report.md'), 'utf8');
  assert.match(md, /\| l2-run \| /);
  assert.ok(existsSync(join(dir, 'report', 'dynamics.svg')), 'the monitor.jsonl beside results.json gives the dynamics chart');
});

test('without a monitor, results.json holds the final held-out loss (data.eval) as a target ce row', { timeout: 300_000 }, () => {
  const d = prepareDemoData(join(dir, 'b'), { trainSize: 64, testSize: 12, seed: 0 });
  const run = join(dir, 'plain-run');
  writeFileSync(join(dir, 'plain.yaml'), JSON.stringify({
    model: { path: DEFAULT_MODEL },
    data: { train: { path: d.train, format: { type: 'prompt_completion' }, max_length: 64 }, eval: { path: d.train, format: { type: 'prompt_completion' }, max_length: 64, limit: 16, name: 'heldout' } },
    training: { max_steps: 2, batch_size: 8, lr: 0.003, schedule: 'constant', seed: 0, eval_every: 2 },
    output_dir: run,
  }));
  const t = cli('train', join(dir, 'plain.yaml'));
  assert.equal(t.status, 0, t.stderr);
  const res = JSON.parse(readFileSync(join(run, 'results.json'), 'utf8'));
  assert.equal(res.rows.length, 1);
  const [row] = res.rows;
  assert.deepEqual({ ...row, value: 0 }, { task: 'heldout', metric: 'ce', value: 0, stderr: null, higher_is_better: false, n: 16, role: 'target', primary: true });
  // The trainer logged the same loss at the last step (rounded to 6 decimals).
  const logged = readFileSync(join(run, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((x) => x.kind === 'eval').pop();
  assert.ok(Math.abs(row.value - logged.eval_loss) < 1e-6, `${row.value} vs ${logged.eval_loss}`);
  assert.equal(res.results.heldout['ce,none'], row.value);
});
