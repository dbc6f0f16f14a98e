// The MiniLM forgetting suite (packages/retain/src/suite/minilm.ts) at a few steps on small slices: its base scores
// are the real model's (Spearman equal to sentence-transformers' on the same pairs), fine-tuning moves the encoder,
// and a linear probe leaves every general score exactly where it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needRefenv } from '../../../bench/refenv.js';
import { modelPath } from '../../../bench/models.js';
import { MINILM, minilmParity, needMinilm } from '../../../bench/parity/real_models.js';
import { C4_DEMO, retrievalPairs, runMinilmSuite } from '../src/suite/minilm.js';
import type { EvalResults } from '../src/eval/results.js';
import { loadPretrained } from '../src/models/hub.js';

const skip = needMinilm() || (existsSync(C4_DEMO) ? false : `needs ${C4_DEMO} (the shared text data beside the repository)`);
const value = (r: EvalResults, task: string) => r.rows.find((x) => x.task === task && x.primary)!.value;

test('retrieval pairs: a C4 document split after its first sentence, both parts long enough to be about something', { skip }, () => {
  const pairs = retrievalPairs(20);
  assert.equal(pairs.length, 20);
  for (const p of pairs) {
    assert.match(p.query, /[.!?]$/);
    assert.ok(p.query.split(' ').length >= 6 && p.passage.split(' ').length >= 30);
  }
});

test('MiniLM suite, FT and probe × 12 steps: base SICK-R is sentence-transformers\' figure; FT moves the encoder; the probe keeps it bit for bit', { skip: skip || needRefenv('sentence_transformers', 'scipy'), timeout: 900_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-suite-minilm-'));
  try {
    const c = await runMinilmSuite({ outDir: out, model: modelPath(MINILM), steps: 12, only: ['FT', 'probe'], trainPairs: 48, stsPairs: 64, nliPerClass: 10, retrievalDocs: 40, progress: false });
    assert.deepEqual(c.tuned.map((r) => r.label), ['FT', 'probe']);
    const [ft, probe] = c.tuned;
    // The start model's encoder is the real one: scipy's Spearman over sentence-transformers' cosines of the same
    // 64 SICK test pairs (the parity check's figure).
    const ref = await minilmParity(64, 16);
    assert.ok(Math.abs(value(c.base, 'sick_r') - ref.spearman[1]) < 1e-6, `base SICK-R ${value(c.base, 'sick_r')} vs sentence-transformers ${ref.spearman[1]}`);
    assert.ok(value(c.base, 'c4_retrieval') > 0.5, `a working encoder finds most documents from their first sentence: ${value(c.base, 'c4_retrieval')}`);
    assert.equal(c.base.rows.find((x) => x.task === 'sick_nli')!.n, 30);
    // FT trains the classification loss (a fresh 3-class head starts near ln 3 = 1.10 nats; it falls on the 48
    // repeated pairs) and moves the encoder with the head.
    const loss = ft.train!.map((x) => x.loss);
    assert.ok(loss.length >= 1 && loss[loss.length - 1] < Math.log(3) - 0.1, `FT training loss ${loss}`);
    assert.notEqual(value(ft, 'sick_r'), value(c.base, 'sick_r'));
    // The probe trains the head alone: the encoder's scores are the base's exactly, the head has changed.
    assert.equal(value(probe, 'sick_r'), value(c.base, 'sick_r'));
    assert.equal(value(probe, 'c4_retrieval'), value(c.base, 'c4_retrieval'));
    const start = await loadPretrained(join(out, 'models', 'minilm-sick-init'));
    const probed = await loadPretrained(join(out, 'runs', 'probe', 'final'));
    const sd0 = start.model.stateDict();
    const sd1 = probed.model.stateDict();
    assert.ok(!sd0.get('classifier.weight')!.equal(sd1.get('classifier.weight')!), 'the probe should train the head');
    assert.ok(sd0.get('bert.encoder.layer.5.output.dense.weight')!.equal(sd1.get('bert.encoder.layer.5.output.dense.weight')!));
    start.model.dispose();
    probed.model.dispose();
    for (const r of c.tuned) {
      assert.deepEqual(r.rows.map((x) => [x.task, x.role]), [['sick_r', 'general'], ['c4_retrieval', 'general'], ['sick_nli', 'target']]);
      assert.ok(r.wall_seconds! > 0);
    }
    assert.ok(JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')).tuned.length === 2);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
