import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';

const tok = Llama2cTokenizer.fromFile(new URL('../assets/stories260K/tok512.bin', import.meta.url).pathname);

/** llama2.c's encode as written there: rescan every adjacent pair after each merge (O(n²)). */
function reference(text: string): number[] {
  const t = tok as unknown as { lookup: Map<string, number>; vocab: string[]; scores: Float32Array | number[] };
  const ids: number[] = [];
  if (text.length) ids.push(t.lookup.get(' ')!);
  for (const ch of text) {
    const id = t.lookup.get(ch);
    if (id !== undefined) ids.push(id);
    else for (const b of new TextEncoder().encode(ch)) ids.push(b + 3);
  }
  for (;;) {
    let best = -Infinity;
    let bi = -1;
    let bid = -1;
    for (let i = 0; i < ids.length - 1; i++) {
      const id = t.lookup.get(t.vocab[ids[i]] + t.vocab[ids[i + 1]]);
      if (id !== undefined && t.scores[id] > best) {
        best = t.scores[id];
        bi = i;
        bid = id;
      }
    }
    if (bi < 0) return ids;
    ids.splice(bi, 2, bid);
  }
}

test('llama2.c tokenizer: the heap-based merge gives the reference greedy merge exactly', () => {
  const text = readFileSync(new URL('../assets/data/tinystories-eval.txt', import.meta.url).pathname, 'utf8');
  // Whole paragraphs, odd slices (cut words, repeated letters, bytes outside the vocabulary) and ties.
  const cases = [...text.split('\n\n').slice(0, 40), text.slice(123, 777), 'aaaaaaaaaaaaaaaa', 'the the the the', 'héllo wörld – ünïcode ☃', '  spaced  out  ', '1234567890 + 987 = ?', ''];
  for (const c of cases) assert.deepEqual(tok.encode(c, { bos: false }), reference(c), JSON.stringify(c.slice(0, 40)));
  assert.deepEqual(tok.encode('once upon a time'), [1, ...reference('once upon a time')]);
});

test('llama2.c tokenizer: a 125 KB text (minutes with the quadratic rescans) encodes in one piece and round-trips', () => {
  const text = readFileSync(new URL('../assets/data/tinystories-replay.txt', import.meta.url).pathname, 'utf8');
  const ids = tok.encode(text, { bos: false });
  assert.ok(ids.length < text.length / 2, 'merges happened');
  assert.equal(tok.decode(ids), text);
});
