import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needShared } from './helpers.js';
import { runMixStudySuite, studyRuns, writeMixStudyTuneConfig, type MixStudySummary } from '../src/suite/mixstudy.js';
import { loadTrainConfig } from '../src/config.js';
import { candidates } from '../src/tune/space.js';
import type { CompareResults, EvalResults } from '../src/eval/results.js';

test('mixed-training study: m:n runs take (m+n)/m times the math-only steps', () => {
  assert.deepEqual(studyRuns(120).map((r) => [r.label, r.steps]), [['math-only', 120], ['mix 1:1', 240], ['mix 3:1', 160], ['mix 7:1', 138], ['mix 15:1', 128]]);
});

const skip = needShared('data', 'sick', 'SICK_train.txt');

test('mixed-training study, tiny run: stage 0 teaches NLI, stage 1 runs with the monitor, the cached base is reused', { skip, timeout: 180_000 }, async () => {
  const outDir = mkdtempSync(join(tmpdir(), 'retain-mixstudy-'));
  const o = { outDir, steps: 8, baseSteps: 60, only: ['math-only', '1:1'], progress: false, nliPerClass: 20, mathTest: 30, mathTrain: 200, monitorEvery: 4 };
  const c = await runMixStudySuite(o);
  const s = JSON.parse(readFileSync(join(outDir, 'mixstudy.json'), 'utf8')) as MixStudySummary;
  const nli = (e: EvalResults) => e.rows.find((x) => x.task === 'sick_nli' && x.metric === 'exact_match')!;
  const math = (e: EvalResults) => e.rows.find((x) => x.task === 'linear_1d' && x.metric === 'exact_match')!;

  assert.deepEqual(c.tuned.map((t) => t.label), ['math-only', 'mix 1:1']);
  assert.equal(nli(c.base).n, 60, 'balanced NLI set: 20 per class');
  assert.equal(math(c.base).n, 30);
  assert.equal(nli(c.base).role, 'general');
  assert.equal(math(c.base).role, 'target');
  // The pretrained TinyStories model never answers yes/maybe/no; 60 steps of SICK teach it the answer format at least.
  assert.ok(s.stage0.base.nli > s.stage0.pretrained.nli + 0.2, `stage 0: NLI ${s.stage0.pretrained.nli} → ${s.stage0.base.nli}`);
  assert.equal(s.stage0.base.nli, nli(c.base).value);
  assert.equal(s.stage0.reused, false);
  const confusion = Object.values(s.stage0.base.confusion).flatMap((r) => Object.values(r)).reduce((a, b) => a + b, 0);
  assert.equal(confusion, 60);
  assert.ok(s.stage0.majority.full_test.share > 0.5 && s.stage0.majority.full_test.label === 'maybe');

  // Same target epochs: 1:1 takes twice the steps; the monitor probed both skills from step 0 to the end.
  assert.deepEqual(s.rows.map((r) => [r.label, r.steps]), [['base', 0], ['math-only', 8], ['mix 1:1', 16]]);
  for (const [t, last] of [[c.tuned[0], 8], [c.tuned[1], 16]] as const) {
    const steps = [...new Set(t.monitor!.map((p) => p.step))];
    assert.deepEqual(steps, [...Array(last / 4 + 1).keys()].map((k) => k * 4), t.label);
    assert.deepEqual(new Set(t.monitor!.map((p) => p.task)), new Set(['sick_nli', 'linear_1d']));
    assert.ok(t.train!.length > 0 && t.train!.every((x) => Number.isFinite(x.loss)));
    const onDisk = JSON.parse(readFileSync(join(outDir, 'runs', t.label.replace(/[^\w.-]+/g, '_'), 'results.json'), 'utf8')) as EvalResults;
    assert.deepEqual(onDisk.rows, t.rows);
  }
  const mixLog = readFileSync(join(outDir, 'runs', 'mix_1_1', 'metrics.jsonl'), 'utf8');
  assert.match(mixLog, /"sample_share_sick":0\.5\b/);
  const compare = JSON.parse(readFileSync(join(outDir, 'compare.json'), 'utf8')) as CompareResults;
  assert.equal(compare.tuned.length, 2);

  // A rerun with the same settings reuses the stage 0 model instead of training it again.
  const weights = join(s.stage0.model, 'model.safetensors');
  const mtime = statSync(weights).mtimeMs;
  const c2 = await runMixStudySuite({ ...o, only: ['math-only'] });
  const s2 = JSON.parse(readFileSync(join(outDir, 'mixstudy.json'), 'utf8')) as MixStudySummary;
  assert.equal(s2.stage0.reused, true);
  assert.equal(s2.stage0.key, s.stage0.key);
  assert.equal(statSync(weights).mtimeMs, mtime);
  assert.equal(c2.base.model.hash, c.base.model.hash);

  // Stage 1 as a config for tune (bench:frontier's mixstudy suite): the cached SICK base, the study's monitor, SICK replay.
  const t = await writeMixStudyTuneConfig(outDir, join(outDir, 'tune'), 8, { baseSteps: 60, nliPerClass: 20, mathTest: 30, mathTrain: 200, progress: false });
  assert.equal(statSync(weights).mtimeMs, mtime, 'stage 0 reused, not retrained');
  const cfg = loadTrainConfig(t.config);
  assert.equal(cfg.model.path, s.stage0.model);
  assert.deepEqual(cfg.monitor!.target, ['linear_1d']);
  assert.equal(t.replay.name, 'sick');
  // Equal passes over the math data: the knob's 1:1 takes twice the steps, as the study's own 1:1 run does.
  assert.deepEqual(candidates(cfg, { knobs: ['mixing'], replay: t.replay, equalPasses: true }).slice(0, 3).map((x) => x.steps), [8, 32, 16]);
  // Another stage 0 setting is another base.
  await runMixStudySuite({ ...o, baseSteps: 10, only: ['math-only'] });
  const s3 = JSON.parse(readFileSync(join(outDir, 'mixstudy.json'), 'utf8')) as MixStudySummary;
  assert.notEqual(s3.stage0.key, s.stage0.key);
  assert.equal(s3.stage0.reused, false);
  assert.ok(existsSync(weights), 'the other base stays cached');
});
