// Self-distilled targets (docs/METHODS.md §13) on the real stories260K model and tokenizer: the base model rewrites each
// response (greedy, from the template), a rewrite replaces the response only when its extracted answer equals the
// original's (wrong ones and responses without an answer keep the original), the rewritten example trains on the
// rewrite's tokens, and the rewrites are cached by model + data + settings and reused without generating again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPretrained } from '../src/models/hub.js';
import { extractAnswer, SelfDistillTargets } from '../src/methods/selfdistill.js';
import { sampleKey } from '../src/methods/support.js';
import type { Example } from '../src/data/formats.js';
import type { TrainContext } from '../src/train/hooks.js';
import { needShared, sharedPath } from './helpers.js';

const MODEL = ['models', 'stories260K', 'stories260K.bin'] as const;
const DATA = [
  ['Lily had 2 apples. Tom gave her 3 more. How many apples did Lily have?', ' Lily had 5 apples.'],
  ['Once upon a time, there was a little girl named', ' Lily. She was 3 years old.'],
  ['Tom saw 4 birds in the tree.', ' Then 1 more bird came. Now there were 5 birds.'],
  ['Sue had a red ball.', ' She liked to play with it every day.'],
];
const TEMPLATE = '{instruction}{response}\n{instruction}';

test('extractAnswer: last number (thousands separators, decimals, sign), boxed, pattern, none', () => {
  assert.equal(extractAnswer('so 1,234 + 2 = 1,236.', 'last_number'), '1236');
  assert.equal(extractAnswer('it is -3.50 now', 'last_number'), '-3.5');
  assert.equal(extractAnswer('no digits', 'last_number'), null);
  assert.equal(extractAnswer('\\boxed{1} then \\boxed{ 42 }', 'boxed'), '42');
  assert.equal(extractAnswer('The answer is: B.', 'pattern', /answer is:\s*([A-D])/), 'B');
  assert.equal(extractAnswer('anything', 'none'), '');
  assert.throws(() => new SelfDistillTargets({ template: '{instruction} only' }), /^Error: selfdistill_targets: option 'template' must be text with \{instruction\} and \{response\} in it, got "\{instruction\} only"$/);
  assert.throws(() => new SelfDistillTargets({ answer: 'pattern' }), /^Error: selfdistill_targets: answer: pattern needs answer_pattern, a regular expression whose first group is the answer$/);
});

test('selfdistill_targets on stories260K: rewrites kept only when correct, trained on the rewrite, cached and reused', { skip: needShared(...MODEL) }, async () => {
  const p = await loadPretrained(sharedPath(...MODEL));
  const tok = p.tokenizer!;
  const examples: Example[] = DATA.map(([q, a], i) => {
    const prompt = tok.encode(q, { bos: true });
    const all = tok.encode(q + a, { bos: true });
    return { id: `q${i}`, source: 'train', ids: [...all, tok.eosId], lossMask: [...all.map((_, t) => (t >= prompt.length ? 1 : 0)), 1] };
  });
  const dir = mkdtempSync(join(tmpdir(), 'retain-selfdistill-'));
  const setup = async (opts: Record<string, unknown>) => {
    const m = new SelfDistillTargets({ template: TEMPLATE, max_tokens: 24, ...opts });
    const ex = examples.map((e) => ({ ...e }));
    const ctx = { model: p.model, examples: ex, outputDir: dir, log: () => {}, state: new Map(), tokenizer: tok } as unknown as TrainContext;
    await m.setup(ctx);
    return { m, ex };
  };
  try {
    // Numbers: stories260K does not keep the arithmetic, so every checked rewrite is refused and the originals stay.
    const num = await setup({ answer: 'last_number' });
    // (the fourth response states no number: nothing to check a rewrite against, so none is generated).
    assert.equal(num.m.generated, 3);
    assert.deepEqual(Object.values(num.m.rewrites).map((r) => r.reason), ['wrong answer', 'wrong answer', 'wrong answer', 'no reference answer']);
    num.ex.forEach((e, i) => assert.deepEqual(e.ids, examples[i].ids, 'a refused rewrite keeps the original'));
    for (const [i, r] of Object.values(num.m.rewrites).slice(0, 3).entries()) {
      assert.notEqual(extractAnswer(r.text, 'last_number'), extractAnswer(DATA[i][1], 'last_number'), `rewrite ${i} was refused with the same answer: ${JSON.stringify(r.text)}`);
    }
    // Names: the rewrites that still name the same character are kept; a response with no name keeps the original.
    const names = await setup({ answer: 'pattern', answer_pattern: '\\b(Lily|Tom|Sue|Ben)\\b' });
    const reasons = names.ex.map((e) => names.m.rewrites[sampleKey(e.source, e.id)].reason);
    assert.deepEqual(reasons, ['rewritten', 'rewritten', 'no reference answer', 'no reference answer']);
    assert.equal(names.m.generated, 2, 'responses without an answer are not sent to the model');
    for (const [i, e] of names.ex.entries()) {
      const r = names.m.rewrites[sampleKey(e.source, e.id)];
      if (r.reason !== 'rewritten') {
        assert.deepEqual(e.ids, examples[i].ids);
        continue;
      }
      const first = examples[i].lossMask.indexOf(1);
      assert.deepEqual(e.ids.slice(0, first), examples[i].ids.slice(0, first), 'the instruction is unchanged');
      const trained = e.ids.filter((_, t) => e.lossMask[t]);
      assert.equal(tok.decode(e.ids.slice(0, -1)), tok.decode(e.ids.slice(0, first)) + r.text, 'the trained tokens are the rewrite');
      assert.equal(trained[trained.length - 1], tok.eosId, 'followed by the EOS the original trained on');
      assert.notEqual(r.text, DATA[i][1], 'the response was rewritten');
      assert.equal(extractAnswer(r.text, 'pattern', /\b(Lily|Tom|Sue|Ben)\b/), extractAnswer(DATA[i][1], 'pattern', /\b(Lily|Tom|Sue|Ben)\b/));
    }
    // The cache: same model, data and settings → no generation, same examples; other settings → a new file.
    const again = await setup({ answer: 'pattern', answer_pattern: '\\b(Lily|Tom|Sue|Ben)\\b' });
    assert.equal(again.m.generated, 0, 'the cached rewrites are reused');
    assert.equal(again.m.cacheFile, names.m.cacheFile);
    assert.deepEqual(again.ex, names.ex);
    const other = await setup({ answer: 'pattern', answer_pattern: '\\b(Lily|Tom|Sue|Ben)\\b', max_tokens: 12 });
    assert.equal(other.m.generated, 2, 'other settings generate again');
    assert.ok(existsSync(other.m.cacheFile!) && other.m.cacheFile !== names.m.cacheFile);
    assert.equal(readdirSync(dir).filter((f) => f.startsWith('selfdistill-')).length, 3);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
