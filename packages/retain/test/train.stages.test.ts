import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { continualMetrics, sequenceRow, stageConfigs, type Sequence } from '../src/train/stages.js';
import { writeMnistSequentialConfig, writeSequentialConfig } from '../src/suite/sequential.js';
import { needShared } from './helpers.js';

const BIN = new URL('../bin/retain.mjs', import.meta.url).pathname;

/** Stage 2 trains 20 steps with a checkpoint every 8, so a kill at step 16 lands inside it after a checkpoint. */
function longerStage2(cfg: string): string {
  const raw = parseYaml(readFileSync(cfg, 'utf8'));
  raw.stages[1].training = { max_steps: 20, save_every: 8 };
  writeFileSync(cfg, toYaml(raw));
  return cfg;
}

/** SIGKILL at step 16 (in stage 2) leaves one scored row; the rerun resumes and ends with the uninterrupted rows. */
function killInStage2Resumes(cfg: string, dir: string, rows: Sequence['rows']): void {
  const killed = train(cfg, { RETAIN_KILL_AT_STEP: '16' });
  assert.equal(killed.signal, 'SIGKILL', killed.stderr);
  assert.equal((JSON.parse(readFileSync(join(dir, 'run', 'sequence.json'), 'utf8')) as Sequence).rows.length, 1);
  const resumed = train(cfg);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stderr, /resum/);
  assert.deepEqual((JSON.parse(readFileSync(join(dir, 'run', 'sequence.json'), 'utf8')) as Sequence).rows, rows);
}

test('continual-learning metrics of a known matrix: average accuracy, backward transfer, average forgetting', () => {
  const stages = ['a', 'b', 'c'];
  const rows = [
    { after: 'a', skills: { a: 80, b: 10, c: 5 }, general: 50 },
    { after: 'b', skills: { a: 60, b: 90, c: 5 }, general: 48 },
    { after: 'c', skills: { a: 70, b: 40, c: 95 }, general: 45 },
  ];
  const m = continualMetrics(stages, rows);
  assert.equal(m.average_accuracy, (70 + 40 + 95) / 3);
  // BWT: ((70 − 80) + (40 − 90)) / 2; forgetting: max over earlier rows from the skill's own stage on.
  assert.equal(m.backward_transfer, -30);
  assert.equal(m.average_forgetting, ((80 - 70) + (90 - 40)) / 2);
  assert.deepEqual(continualMetrics(stages, rows.slice(0, 1)), { average_accuracy: null, backward_transfer: null, average_forgetting: null });
});

test('a staged config is refused with the stage and key named: a skill not among the probes, duplicate names, top-level data', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-stages-bad-'));
  const raw = parseYaml(readFileSync(writeSequentialConfig(dir, { steps: 4, trainSize: 20, testSize: 5 }), 'utf8'));
  assert.equal(stageConfigs(raw, dir, 'c.yaml').configs.length, 3);
  const bad = (edit: (r: any) => void, re: RegExp) => {
    const r = structuredClone(raw);
    edit(r);
    assert.throws(() => stageConfigs(r, dir, 'c.yaml'), re);
  };
  bad((r) => (r.stages[1].skill = 'nope'), /stage 'mul': skill 'nope' is not one of monitor\.tasks \(tinystories_heldout, add_sub, mul, linear\)/);
  bad((r) => (r.stages[2].name = 'mul'), /two stages are named 'mul'/);
  bad((r) => (r.data = r.stages[0].data), /gives each stage its own data .*remove the top-level data/);
  bad((r) => (r.stages[0].steps = 3), /stages\[0\]: unknown key 'steps'/);
  bad((r) => delete r.monitor, /needs a monitor whose tasks include every stage's skill/);
  bad((r) => (r.stages[0].training = { lr: 'fast' }), /stage add_sub\):\n\s+training\.lr: Expected number/);
});

function train(cfg: string, env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, 'train', cfg], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', ...env } });
}

test('the sequential config sized for a larger model: its path, training merged over the defaults, one probe per stage, the first n stories', () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-seq-sized-'));
  const cfg = parseYaml(readFileSync(writeSequentialConfig(dir, { steps: 40, model: '/models/SmolLM2', stories: 3, monitorEvery: 40, training: { batch_size: 8, lr: 3e-4 } }), 'utf8'));
  assert.equal(cfg.model.path, '/models/SmolLM2');
  assert.deepEqual([cfg.training.max_steps, cfg.training.batch_size, cfg.training.lr, cfg.training.schedule], [40, 8, 3e-4, 'cosine']);
  assert.equal(cfg.monitor.every, 40);
  const tasks = parseYaml(readFileSync(cfg.monitor.tasks[0], 'utf8')) as { name: string; data: string }[];
  const stories = readFileSync(tasks.find((t) => t.name === 'tinystories_heldout')!.data, 'utf8').trim().split(/\n\s*\n/);
  assert.equal(stories.length, 3);
  assert.deepEqual(cfg.stages.map((s: { name: string }) => s.name), ['add_sub', 'mul', 'linear']);
});

test('retain train with stages: three arithmetic families in turn, the matrix after each; a kill mid-stage resumes to the same matrix; a finished run reruns nothing', { timeout: 600_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-stages-'));
  const cfg = writeSequentialConfig(dir, { steps: 12, trainSize: 200, testSize: 20 });
  // Stage 2 runs longer and checkpoints, so that a kill at its step 16 (stages 1 and 3 never get there) has a checkpoint to resume.
  const raw = parseYaml(readFileSync(cfg, 'utf8'));
  raw.stages[1].training = { max_steps: 20, save_every: 8 };
  writeFileSync(cfg, toYaml(raw));
  const r = train(cfg);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /after stage\s+add_sub\s+mul\s+linear\s+general/);
  assert.match(r.stdout, /average accuracy [\d.-]+ · backward transfer [\d.-]+ · average forgetting [\d.-]+/);
  const seqFile = join(dir, 'run', 'sequence.json');
  const s = JSON.parse(readFileSync(seqFile, 'utf8')) as Sequence;
  assert.deepEqual(s.stages, ['add_sub', 'mul', 'linear']);
  assert.deepEqual(s.rows.map((x) => x.after), ['add_sub', 'mul', 'linear']);
  for (const row of s.rows) assert.deepEqual(Object.keys(row.skills), ['add_sub', 'mul', 'linear']);
  // The general skill is next-token accuracy on TinyStories in points; fine-tuning on arithmetic lowers it.
  assert.ok(s.rows[2].general! < 50, String(s.rows[2].general));
  assert.equal(s.backward_transfer, continualMetrics(s.stages, s.rows).backward_transfer);
  // The report: the base and the model after each stage, with the matrix as its own table.
  const html = readFileSync(join(dir, 'run', 'report.html'), 'utf8');
  assert.match(html, /<h2>Skills learned in sequence<\/h2>/);
  for (const label of ['after add_sub', 'after mul', 'after linear']) assert.ok(html.includes(label), label);
  assert.match(readFileSync(join(dir, 'run', 'report.md'), 'utf8'), /\| after stage \| add_sub \| mul \| linear \| general \|/);
  // Stage 2 started from stage 1's model: its saved config names that folder.
  assert.match(readFileSync(join(dir, 'run', '2-mul', 'run_config.yaml'), 'utf8'), /path: .*1-add_sub\/final/);
  const finalTime = statSync(join(dir, 'run', '3-linear', 'final')).mtimeMs;
  const again = train(cfg);
  assert.equal(again.status, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /step \d+\/\d+/);
  assert.equal(statSync(join(dir, 'run', '3-linear', 'final')).mtimeMs, finalTime);

  const dir2 = mkdtempSync(join(tmpdir(), 'retain-stages-kill-'));
  killInStage2Resumes(longerStage2(writeSequentialConfig(dir2, { steps: 12, trainSize: 200, testSize: 20 })), dir2, s.rows);
});

test('retain train with stages on MNIST: rotations 90°, 180°, 270° in turn, each learned in its stage; a kill in stage 2 resumes to the same matrix', { skip: needShared('models/mnist-mlp'), timeout: 600_000 }, () => {
  const staged = (dir: string) => longerStage2(writeMnistSequentialConfig(dir, { steps: 12, trainSize: 640, testSize: 200 }));
  const dir = mkdtempSync(join(tmpdir(), 'retain-stages-mnist-'));
  const r = train(staged(dir));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /after stage\s+rot90\s+rot180\s+rot270\s+general/);
  const s = JSON.parse(readFileSync(join(dir, 'run', 'sequence.json'), 'utf8')) as Sequence;
  assert.deepEqual(s.rows.map((x) => x.after), ['rot90', 'rot180', 'rot270']);
  for (const row of s.rows) assert.deepEqual(Object.keys(row.skills), ['rot90', 'rot180', 'rot270']);
  const { average_accuracy, backward_transfer, average_forgetting } = s;
  assert.deepEqual({ average_accuracy, backward_transfer, average_forgetting }, continualMetrics(s.stages, s.rows));
  // Each stage raises its own rotation's accuracy above where the stage began, and the upright digits (general) fall.
  const stages = parseYaml(readFileSync(join(dir, 'sequential.yaml'), 'utf8')).stages;
  const base = sequenceRow('base', stages, JSON.parse(readFileSync(join(dir, 'run', 'base-eval.json'), 'utf8')));
  const before = s.stages.map((n, k) => (k ? s.rows[k - 1] : base).skills[n]);
  s.rows.forEach((row, k) => assert.ok(row.skills[s.stages[k]] > before[k] + 5, `${s.stages[k]}: ${before[k]} → ${row.skills[s.stages[k]]}`));
  assert.ok(s.rows[2].general! < base.general! - 5, `general ${base.general} → ${s.rows[2].general}`);
  assert.match(readFileSync(join(dir, 'run', '2-rot180', 'run_config.yaml'), 'utf8'), /path: .*1-rot90\/final/);

  const dir2 = mkdtempSync(join(tmpdir(), 'retain-stages-mnist-kill-'));
  killInStage2Resumes(staged(dir2), dir2, s.rows);
});
