import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTrainConfig } from '../src/config.js';
import { runTraining } from '../src/train/run.js';
import { DEFAULT_MODEL, prepareDemoData } from '../src/suite/demo.js';
import { loadEvalModel } from '../src/eval/model.js';
import { evaluate } from '../src/eval/harness.js';

function config(dir: string, train: string, monitor: Record<string, unknown>) {
  return parseTrainConfig({
    model: { path: DEFAULT_MODEL },
    data: { train: { path: train, format: { type: 'prompt_completion' }, max_length: 64 } },
    // A large learning rate: the general skill collapses within a few steps.
    training: { max_steps: 12, batch_size: 16, lr: 0.01, schedule: 'constant', seed: 0 },
    monitor: { tasks: [join(dir, 'data', 'tasks.yaml')], target: ['arithmetic'], limit: 20, ...monitor },
    output_dir: join(dir, 'run'),
    resume: false,
  });
}

test('forgetting monitor: probes logged every N steps; over max_forgetting it rolls back to the best state within budget and stops', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-monitor-'));
  const d = prepareDemoData(dir, { trainSize: 200, testSize: 20, seed: 0 });
  const r = await runTraining(config(dir, d.train, { every: 2, max_forgetting: 3, on_exceed: 'rollback' }), undefined, { progress: false });
  const mon = r.monitor!;
  assert.ok(mon.stoppedAt !== null && mon.stoppedAt < 12, `expected an early stop, stopped at ${mon.stoppedAt}`);
  assert.equal(r.steps, mon.stoppedAt);
  assert.match(r.stopped!, /exceeded max_forgetting 3 at step \d+; rolled the weights back to step \d+/);
  assert.ok(mon.rolledBackTo! < mon.stoppedAt!);
  assert.ok(mon.forgetting.get(mon.rolledBackTo!)! <= 3);
  assert.ok(mon.forgetting.get(mon.stoppedAt!)! > 3);
  // Probe points: base at step 0, then every 2 steps, general and target each time.
  const steps = [...new Set(mon.points.map((p) => p.step))];
  assert.deepEqual(steps, Array.from({ length: mon.stoppedAt! / 2 + 1 }, (_, i) => 2 * i));
  assert.deepEqual([...new Set(mon.points.map((p) => p.role))].sort(), ['general', 'target']);
  const lines = readFileSync(join(dir, 'run', 'monitor.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, mon.points.length);
  const metrics = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8');
  assert.match(metrics, /"kind":"monitor_stop"/);
  // The saved model is the rolled-back state: its general probe is within budget of the base, measured afresh.
  const em = await loadEvalModel(r.finalDir);
  const after = await evaluate(em, d.tasks.filter((t) => t.spec.name === 'tinystories_heldout'), { limit: 20 });
  const base = mon.base.find((x) => x.task === 'tinystories_heldout')!;
  const now = after.rows.find((x) => x.primary)!;
  assert.equal(now.metric, base.metric);
  assert.ok((base.value - now.value) * 100 <= 3 + 1e-9, `rolled-back model forgets ${((base.value - now.value) * 100).toFixed(2)} points`);
});

test('forgetting monitor with on_exceed: stop keeps the current weights; without a budget the run completes', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-monitor-'));
  const d = prepareDemoData(dir, { trainSize: 200, testSize: 20, seed: 0 });
  const r = await runTraining(config(dir, d.train, { every: 3, max_forgetting: 3, on_exceed: 'stop' }), undefined, { progress: false });
  assert.match(r.stopped!, /exceeded max_forgetting 3 at step \d+; stopped training$/);
  assert.equal(r.monitor!.rolledBackTo, null);
  const free = await runTraining(config(dir, d.train, { every: 6 }), undefined, { progress: false });
  assert.equal(free.steps, 12);
  assert.equal(free.stopped, null);
  assert.deepEqual([...new Set(free.monitor!.points.map((p) => p.step))], [0, 6, 12]);
  assert.throws(() => parseTrainConfig({ model: { path: 'x' }, data: { train: { path: 'y', format: { type: 'text' } } }, training: {}, output_dir: 'o', monitor: { every: 2, tasks: ['a'], max_forgeting: 2 } }), /monitor: unknown key 'max_forgeting'/);
});

test('a run with a forgetting budget killed after its best state and resumed decides as the uninterrupted run: same rollback, same weights', { timeout: 240_000 }, async () => {
  const { spawnSync } = await import('node:child_process');
  const { writeFileSync } = await import('node:fs');
  const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
  const mk = () => {
    const dir = mkdtempSync(join(tmpdir(), 'retain-monitor-resume-'));
    const d = prepareDemoData(dir, { trainSize: 64, testSize: 12, seed: 0 });
    // lr 0.001: within budget at step 2 (forgetting 1.95 points), past it at step 4 (5.04).
    writeFileSync(join(dir, 'train.yaml'), JSON.stringify({
      model: { path: DEFAULT_MODEL },
      data: { train: { path: d.train, format: { type: 'prompt_completion' }, max_length: 64 } },
      training: { max_steps: 12, batch_size: 8, lr: 0.001, schedule: 'constant', seed: 0, threads: 1, save_every: 1 },
      monitor: { tasks: [join(dir, 'data', 'tasks.yaml')], target: ['arithmetic'], limit: 12, every: 2, max_forgetting: 3, on_exceed: 'rollback' },
      output_dir: join(dir, 'out'),
    }));
    return dir;
  };
  const run = (dir: string, env: Record<string, string> = {}) => spawnSync(process.execPath, [CLI, 'train', join(dir, 'train.yaml')], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 200_000 });
  const a = mk();
  const ra = run(a);
  assert.equal(ra.status, 0, ra.stderr);
  const b = mk();
  // Killed at step 3: after the best state (step 2) was kept, before the probe at 4 that rolls back to it.
  assert.equal(run(b, { RETAIN_KILL_AT_STEP: '3' }).signal, 'SIGKILL');
  const rb = run(b);
  assert.equal(rb.status, 0, rb.stderr);
  assert.match(rb.stdout, /"resumed_from":3/);
  const stop = /exceeded max_forgetting 3 at step (\d+); rolled the weights back to step (\d+)/;
  assert.deepEqual(stop.exec(rb.stderr)?.slice(1), stop.exec(ra.stderr)?.slice(1), rb.stderr);
  assert.equal(stop.exec(ra.stderr)![2], '2');
  const w = (d: string) => readFileSync(join(d, 'out', 'final', 'model.safetensors'));
  assert.ok(w(a).equals(w(b)), 'the resumed run saves the same rolled-back weights');
  // The log is the uninterrupted run's: each probed step once.
  const probed = (d: string) => readFileSync(join(d, 'out', 'monitor.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  assert.deepEqual(probed(b), probed(a));
});
