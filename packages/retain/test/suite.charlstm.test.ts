import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { loadEvalModel } from '../src/eval/model.js';
import { toExample } from '../src/data/formats.js';
import type { CompareResults, EvalResults } from '../src/eval/results.js';
import { runCharlstmSuite } from '../src/suite/charlstm.js';
import { needShared, sharedPath } from './helpers.js';

const MODEL = 'models/charrnn-shakespeare';

test('hub: the ml5 char-LSTM loads with a character tokenizer (no BOS/EOS), saves as safetensors + config.json + vocab.json and reloads identically', { skip: needShared(MODEL) }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-charlstm-hub-'));
  try {
    const p = await loadPretrained(sharedPath(MODEL));
    assert.equal(p.config.model_type, 'charlstm');
    assert.equal(p.source.format, 'ml5');
    const tok = p.tokenizer!;
    assert.equal(tok.vocabSize, 65);
    assert.equal(tok.bosId, -1);
    assert.equal(tok.eosId, -1);
    assert.deepEqual(tok.encode('uU', { bos: true }), tok.encode('uU'));
    assert.equal(tok.decode(tok.encode('First Citizen:\n')), 'First Citizen:\n');
    // A text example carries exactly the characters: no EOS id −1 appended.
    const ex = toExample({ id: 'a', text: 'To be' }, { type: 'text' }, { tokenizer: tok });
    assert.deepEqual(ex.ids, tok.encode('To be'));
    assert.deepEqual(ex.lossMask, [0, 1, 1, 1, 1]);

    savePretrained(p, dir);
    for (const f of ['config.json', 'model.safetensors', 'vocab.json']) assert.ok(existsSync(join(dir, f)), `${f} missing`);
    assert.equal(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).model_type, 'charlstm');
    const em = await loadEvalModel(dir);
    assert.equal(em.kind, 'lm');
    assert.equal(em.bosId, null);
    assert.equal(em.dropUnknown('a\u00e9b'), 'ab');
    torch.tidy(() => {
      const ids = torch.tensor([tok.encode('ROMEO:\nBut soft')]);
      const a = (p.model.forward(ids) as torch.Tensor);
      const b = em.logits(ids);
      assert.equal(a.sub(b).abs().max().item(), 0);
    });
    p.model.dispose();
    em.module.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function primary(r: EvalResults, task: string): number {
  const row = r.rows.find((x) => x.task === task && x.primary);
  assert.ok(row, `${r.label}: no primary row for ${task}`);
  return row.value;
}

test('char-LSTM suite (Shakespeare → Darwin), 2 recipes × 30 steps: FT learns Darwin and forgets Shakespeare; L2 forgets less; results written', { skip: needShared(MODEL) || needShared('data/text/darwin.txt'), timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'retain-suite-charlstm-'));
  try {
    const c = await runCharlstmSuite({ outDir: out, steps: 30, only: ['FT', 'L2'], progress: false });
    assert.deepEqual(c.tuned.map((r) => r.label), ['FT', 'L2']);
    assert.deepEqual(c.tuned.map((r) => r.methods), [[], ['l2']]);
    const [ft, l2] = c.tuned;
    const gen = (r: EvalResults) => primary(r, 'shakespeare_heldout');
    const tgt = (r: EvalResults) => primary(r, 'darwin_heldout');
    // The base model knows Shakespeare far better than Darwin (docs/DATA.md: 1.33 vs 1.91 nats/char on the whole files).
    assert.ok(gen(c.base) < 2.2 && tgt(c.base) > 2.5, `base: Shakespeare ${gen(c.base)}, Darwin ${tgt(c.base)} bits/char`);
    assert.ok(tgt(ft) < tgt(c.base) - 0.1, `FT should learn Darwin: ${tgt(c.base)} → ${tgt(ft)} bits/char`);
    assert.ok(gen(ft) > gen(c.base) + 0.05, `FT should forget Shakespeare: ${gen(c.base)} → ${gen(ft)} bits/char`);
    assert.ok(gen(l2) < gen(ft), `L2 should forget less than FT: ${gen(l2)} vs ${gen(ft)}`);
    for (const r of [c.base, ...c.tuned]) {
      assert.equal(r.format, 'retain.eval/1');
      assert.deepEqual(r.rows.filter((x) => x.primary).map((x) => [x.task, x.metric, x.role, x.higher_is_better]), [
        ['shakespeare_heldout', 'bits_per_char', 'general', false],
        ['darwin_heldout', 'bits_per_char', 'target', false],
      ]);
    }
    for (const r of c.tuned) {
      assert.ok(r.train!.length >= 6 && r.train!.every((p) => Number.isFinite(p.loss)), `${r.label}: training losses`);
      const steps = new Set(r.monitor!.map((p) => p.step));
      assert.ok(steps.has(0) && steps.has(30), `${r.label}: monitor steps ${[...steps]}`);
    }
    const saved = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as CompareResults;
    assert.equal(saved.format, 'retain.compare/1');
    assert.equal(saved.tuned.length, 2);
    const runFt = JSON.parse(readFileSync(join(out, 'runs', 'FT', 'results.json'), 'utf8')) as EvalResults;
    assert.equal(runFt.label, 'FT');
    assert.ok(existsSync(join(out, 'runs', 'L2', 'final', 'model.safetensors')));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
