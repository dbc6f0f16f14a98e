// The SmolLM2 forgetting suite (packages/retain/src/suite/smollm2.ts) wired end to end on the shipped stories260K
// (a real Llama of the same family, seconds instead of minutes a step): one step per recipe, a few items per task.
// The suite's figures on SmolLM2 itself come from `npm run bench:forgetting -- --only smollm2`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_MODEL } from '../src/suite/demo.js';
import { runSmollm2Suite, SMOLLM2_GENERAL } from '../src/suite/smollm2.js';
import type { EvalResults } from '../src/eval/results.js';

const DATA = resolve(new URL('../../../../shared/data', import.meta.url).pathname);
const skip = existsSync(join(DATA, 'arc-easy')) ? false : `needs ${DATA} (the shared task data beside the repository)`;
const tasks = (r: EvalResults) => r.rows.filter((x) => x.primary).map((x) => [x.task, x.role]);

test('SmolLM2 suite on stories260K, FT and SDFT + mix × 1 step: every run scored on the same tasks and limits; finished runs reused', { skip, timeout: 600_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-suite-smollm2-'));
  const o = { outDir: out, model: DEFAULT_MODEL, steps: 1, only: ['FT', 'SDFT + mix 1:1'], limit: 4, stories: 3, trainSize: 16, testSize: 5, progress: false, reuse: true };
  try {
    const c = await runSmollm2Suite(o);
    assert.deepEqual(c.tuned.map((r) => r.label), ['FT', 'SDFT + mix 1:1']);
    const want = [...SMOLLM2_GENERAL.map((t) => [t, 'general']), ['tinystories_heldout', 'general'], ['tinystories_loss', 'general'], ['arithmetic', 'target']];
    for (const r of [c.base, ...c.tuned]) {
      assert.deepEqual(tasks(r), want, r.label);
      for (const t of SMOLLM2_GENERAL) assert.equal(r.rows.find((x) => x.task === t)!.n, 4, `${r.label} ${t}: the limit caps each multiple-choice task`);
      assert.equal(r.rows.find((x) => x.task === 'arithmetic' && x.primary)!.n, 5);
      assert.ok(r.wall_seconds! > 0);
    }
    assert.deepEqual(c.tuned[1].methods, ['sdft', 'mixing']);
    for (const r of c.tuned) assert.ok(r.train!.length >= 1 && Number.isFinite(r.train![0].loss), `${r.label} logged its training loss`);
    assert.ok(existsSync(join(out, 'runs', 'FT', 'final', 'model.safetensors')));
    // A second call with the same settings trains nothing and scores nothing: base and runs come back from disk.
    const again = await runSmollm2Suite(o);
    assert.deepEqual(again.base, c.base);
    assert.deepEqual(again.tuned, c.tuned);
    assert.equal(JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')).tuned.length, 2);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
