import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { candidates, sample } from '../src/tune/space.js';
import { interval, pickBest, promote, rungSteps, type CandidateState } from '../src/tune/search.js';
import { parseBudget } from '../src/cli/tune.js';
import { parseTrainConfig } from '../src/config.js';
import type { Summary } from '../src/tune/outputs.js';

const BIN = new URL('../bin/retain.mjs', import.meta.url).pathname;

const cfg = parseTrainConfig({
  model: { path: 'm' },
  data: { train: { path: 'd.jsonl', format: { type: 'prompt_completion' } } },
  training: { max_steps: 90, lr: 0.01 },
  monitor: { every: 10, tasks: ['t.yaml'], target: ['arith'] },
  output_dir: 'o',
  methods: [{ name: 'l2', lambda: 0.5, reduction: 'sum' }],
});

test('tune space: FT first, a knob adjusts the config\'s own entry of its method, data from --replay, lr/steps scale', () => {
  const cs = candidates(cfg, { knobs: ['l2', 'flow'] });
  assert.deepEqual(cs.map((c) => c.label), ['FT', 'L2 λ=0.01', 'L2 λ=0.03', 'L2 λ=0.1', 'L2 λ=0.3', 'L2 λ=1', 'FLOW τ×0.25', 'FLOW τ×0.5', 'FLOW τ×1', 'FLOW τ×2', 'FLOW τ×4']);
  assert.deepEqual(cs[0].methods, cfg.methods);
  // The user's reduction stays; only lambda changes.
  assert.deepEqual(cs[1].methods, [{ name: 'l2', lambda: 0.01, reduction: 'sum' }]);
  // Another knob's candidates keep the config's methods and add theirs.
  assert.deepEqual(cs[6].methods, [{ name: 'l2', lambda: 0.5, reduction: 'sum' }, { name: 'flow', tau_scale: 0.25 }]);
  // A method the config lacks gets the knob's defaults (L2 summed, as the suites run it).
  assert.deepEqual(candidates(parseTrainConfig({ ...cfg, methods: [] }), { knobs: ['l2'] })[1].methods, [{ name: 'l2', reduction: 'sum', lambda: 0.01 }]);
  // Equal passes: mixing 1:3 puts one target row in four, so it trains four times FT's steps.
  const replay0 = { path: 'r.txt', format: { type: 'text' } };
  assert.deepEqual(candidates(cfg, { knobs: ['mixing'], replay: replay0, equalPasses: true }).map((c) => c.steps), [90, 360, 180, 120, 103, 96]);
  assert.throws(() => candidates(cfg, { knobs: ['mixing'] }), /knob 'mixing' needs mixing\.general .*--replay/);
  // A setup's defaults for a method's new entry (MNIST's per-sample Fisher); the knob's setting still decides λ.
  const ewc = candidates(parseTrainConfig({ ...cfg, methods: [] }), { knobs: ['ewc'], replay: replay0, defaults: { ewc: { fisher: 'per_sample', lambda: 7 } } });
  assert.deepEqual(ewc[1].methods, [{ name: 'ewc', fisher: 'per_sample', data: replay0, lambda: 1 }]);
  const replay = { path: 'r.txt', format: { type: 'text' } };
  assert.deepEqual(candidates(cfg, { knobs: ['mixing'], replay })[1].methods.at(-1), { name: 'mixing', general: replay, ratio: '1:3' });
  const lr = candidates(cfg, { knobs: ['lr', 'steps'] });
  assert.deepEqual(lr.map((c) => [c.label, c.lr, c.steps]), [['FT lr×0.3 45 steps', 0.003, 45], ['FT lr×0.3', 0.003, 90], ['FT 45 steps', 0.01, 45], ['FT', 0.01, 90], ['FT lr×3 45 steps', 0.03, 45], ['FT lr×3', 0.03, 90]]);
  assert.throws(() => candidates(cfg, { knobs: ['nope'] }), /unknown knob 'nope'; knobs: flow, mixing/);
  assert.throws(() => candidates(parseTrainConfig({ ...cfg, training: { lr: 0.01 } }), { knobs: [] }), /needs training.max_steps/);
  const s = sample(cs, 4, 0);
  assert.equal(s.length, 4);
  assert.equal(s[0].label, 'FT');
  assert.deepEqual(sample(cs, 4, 0), s);
  assert.notDeepEqual(sample(cs, 4, 1).map((c) => c.id), s.map((c) => c.id));
});

test('tune rungs, promotion, the pick and intervals', () => {
  assert.deepEqual(rungSteps(90, 10, 3, 3), [10, 30, 90]);
  assert.deepEqual(rungSteps(100, 25, 3, 3), [25, 50, 100]);
  assert.deepEqual(rungSteps(20, 25, 3, 3), [20]);
  const c = (id: string, target: number, forgetting: number, status: CandidateState['status'] = 'active'): CandidateState =>
    ({ id, label: id, methods: id.startsWith('wise') ? ['wise'] : [], lr: 1, steps: 9, status, scores: [{ step: 3, forgetting, target }] });
  const cs = [c('FT', 50, 9), c('a', 40, 1), c('b', 45, 2), c('c', 45, 1), c('d', 10, 0), c('e', 30, 0), c('wise1', 0, 5)];
  promote(cs, 3, 0);
  assert.deepEqual(cs.filter((x) => x.status === 'active').map((x) => x.id), ['FT', 'b', 'c', 'wise1']);
  for (const x of cs) if (x.status === 'active') x.status = 'done';
  assert.equal(pickBest(cs, 3)!.id, 'c'); // b and c tie on target; c forgot less
  assert.equal(pickBest(cs, 0.5), null);
  assert.deepEqual(interval([2]), { mean: 2, half: null });
  const iv = interval([1, 2, 3]);
  assert.equal(iv.mean, 2);
  assert.ok(Math.abs(iv.half! - 4.303 * 1 / Math.sqrt(3)) < 1e-12);
  assert.deepEqual(parseBudget('12'), { trials: 12 });
  assert.deepEqual(parseBudget('30m'), { seconds: 1800 });
  assert.deepEqual(parseBudget('90s'), { seconds: 90 });
  assert.throws(() => parseBudget('soon'), /neither a number of candidates/);
});

function tuneCli(out: string, env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [BIN, 'tune', '--max-forgetting', '30', '--knobs', 'l2,wise', '--budget', '5', '--steps', '50', '--out', out],
    { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1', ...env } });
}

test('retain tune on the demo setup: successive halving, frontier, best.yaml that retain train accepts; a killed search resumes to the same result', { timeout: 900_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-tune-'));
  const r = tuneCli(out);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(readFileSync(join(out, 'tune.json'), 'utf8')) as Summary;
  assert.equal(s.frontier.length, 5);
  assert.equal(s.frontier[0].label, 'FT');
  assert.equal(s.frontier[0].step, 50);
  // Rungs at 25 and 50 (the monitor probes every 25 steps); of the racing candidates not every one reaches 50.
  const state = JSON.parse(readFileSync(join(out, 'state.json'), 'utf8'));
  for (const c of state.candidates) for (const sc of c.scores) assert.ok([25, 50].includes(sc.step) || c.status === 'broken', `${c.label} scored at ${sc.step}`);
  assert.match(r.stdout, /FT: forgetting/);
  assert.ok(existsSync(join(out, 'report.html')));
  if (s.best) {
    assert.ok(s.best.forgetting.mean <= 30);
    const y = parseYaml(readFileSync(join(out, 'best.yaml'), 'utf8'));
    assert.deepEqual(y.methods, s.best.methods);
    assert.equal(parseTrainConfig(y).training.max_steps, s.best.steps);
  } else assert.match(r.stdout, /no candidate finished within 30/);
  // The same search killed at its third training step (kill -9 inside the first candidate), then rerun: same result.
  const out2 = mkdtempSync(join(tmpdir(), 'retain-tune-kill-'));
  const k = tuneCli(out2, { RETAIN_KILL_AT_STEP: '30' });
  assert.equal(k.signal, 'SIGKILL', k.stderr);
  const again = tuneCli(out2);
  assert.equal(again.status, 0, again.stderr);
  const s2 = JSON.parse(readFileSync(join(out2, 'tune.json'), 'utf8')) as Summary;
  assert.deepEqual(s2.frontier.map((p) => [p.label, p.status, p.step, p.forgetting, p.target]), s.frontier.map((p) => [p.label, p.status, p.step, p.forgetting, p.target]));
});
