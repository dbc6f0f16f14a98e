// retain synth's parts that need no model: deduplication, quality filters, k-means selection, the few-shot prompt
// and its parser, the Magpie cut of a chat template, the judge's digit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Deduplicator, dedupe, jaccard, normalize, shingles } from '../src/synth/dedup.js';
import { lossFilter, repeatedNgramRatio, textFilter } from '../src/synth/filters.js';
import { kmeans, kmeansPlusPlus, selectDiverse } from '../src/synth/kmeans.js';
import { assistantTurnEnd, demoFields, fewshotPrompt, jinjaChatTemplate, parseFewshot, parseJudgeScore, stopText, userTurnOpening } from '../src/synth/prompts.js';
import { rng } from '../src/data/loader.js';

const story = (name: string, thing: string, place: string) =>
  `Once upon a time there was a girl named ${name}. She loved her ${thing} more than anything. Every morning she took it to the ${place} and played until the sun went down. Her mother smiled and called her home for supper.`;

test('dedup: exact duplicates after normalisation and near duplicates by word 3-gram Jaccard are dropped; distinct texts stay', () => {
  const a = story('Lily', 'red ball', 'park');
  const texts = [
    a,
    story('Tom', 'wooden boat', 'river'),
    a.toUpperCase().replace(/\./g, ' !'), // same words, other case and punctuation
    a.replace('supper', 'dinner'), // one word changed near the end
    'The dog barked at the moon all night long and nobody could sleep.',
    story('Lily', 'red ball', 'park') + ' ', // trailing space
  ];
  const { kept, dropped } = dedupe(texts);
  assert.deepEqual(kept, [0, 1, 4]);
  assert.deepEqual(dropped.map((d) => [d.index, d.reason, d.of]), [[2, 'duplicate', 0], [3, 'near_duplicate', 0], [5, 'duplicate', 0]]);
  // The near duplicate really is above the threshold, and the two different stories (same frame) are below it.
  assert.ok(jaccard(shingles(texts[0], 3), shingles(texts[3], 3)) >= 0.7);
  assert.ok(jaccard(shingles(texts[0], 3), shingles(texts[1], 3)) < 0.7);
  // Near-duplicate detection can be turned off; exact stays.
  assert.deepEqual(dedupe(texts, { jaccard: null }).kept, [0, 1, 3, 4]);
  assert.equal(normalize('  Hello,   WORLD!! '), 'hello world');
});

test('dedup: LSH finds near duplicates among many unrelated texts (no all-pairs scan needed)', () => {
  const r = rng(3);
  const words = Array.from({ length: 400 }, (_, i) => `w${i}`);
  const doc = () => Array.from({ length: 40 }, () => words[Math.floor(r() * words.length)]).join(' ');
  const d = new Deduplicator();
  const docs = Array.from({ length: 300 }, doc);
  for (const t of docs) {
    assert.equal(d.check(t).keep, true, 'random documents are not near each other');
    d.add(t);
  }
  // Change 2 of 40 words of each of 20 documents: Jaccard of 3-grams stays above 0.7, and each is caught.
  let caught = 0;
  for (let i = 0; i < 20; i++) {
    const w = docs[i * 7].split(' ');
    w[5] = 'changed';
    w[30] = 'again';
    const v = d.check(w.join(' '));
    if (!v.keep && v.reason === 'near_duplicate' && v.of === i * 7) caught++;
  }
  assert.ok(caught >= 19, `caught ${caught}/20`);
});

test('filters: repeated n-gram ratio, lengths, empty text and loss bounds each name their reason', () => {
  assert.equal(repeatedNgramRatio('a b c d e f g'), 0);
  const loop = 'the cat sat '.repeat(10);
  assert.ok(repeatedNgramRatio(loop) > 0.8);
  assert.equal(textFilter('   ', 0, {}), 'empty');
  assert.equal(textFilter('short text here', 3, { minTokens: 5 }), 'too_short');
  assert.equal(textFilter('long text here', 300, { maxTokens: 100 }), 'too_long');
  assert.equal(textFilter(loop, 30, {}), 'repetitive');
  assert.equal(textFilter(loop, 30, { maxRepeat: null }), null);
  assert.equal(textFilter('a perfectly fine sentence about a dog', 8, { minTokens: 4, maxTokens: 20 }), null);
  assert.equal(lossFilter(0.2, { minLoss: 0.5 }), 'loss_low');
  assert.equal(lossFilter(4, { maxLoss: 3 }), 'loss_high');
  assert.equal(lossFilter(NaN, { maxLoss: 3 }), 'loss_nan');
  assert.equal(lossFilter(2, { minLoss: 0.5, maxLoss: 3 }), null);
  assert.equal(lossFilter(NaN, {}), null, 'no bounds, no loss filter');
});

/** n points around each centre, with spread s. */
function blobs(centres: number[][], n: number, s: number, seed: number): { points: Float64Array[]; label: number[] } {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const points: Float64Array[] = [];
  const label: number[] = [];
  // Interleaved, so that no cluster sits in one block of indices.
  for (let i = 0; i < n; i++) centres.forEach((c, k) => {
    points.push(Float64Array.from(c, (x) => x + s * gauss()));
    label.push(k);
  });
  return { points, label };
}

test('k-means (k-means++ init, seeded) recovers three known clusters; selection takes the points nearest each centroid', () => {
  const centres = [[0, 0, 0], [10, 0, 0], [0, 10, 5]];
  const { points, label } = blobs(centres, 30, 0.8, 11);
  const r = kmeans(points, 3, { seed: 5 });
  // The clustering equals the true labels up to renaming.
  const map = new Map<number, number>();
  label.forEach((l, i) => {
    const c = r.assignment[i];
    if (!map.has(c)) map.set(c, l);
    assert.equal(map.get(c), l, `point ${i}`);
  });
  assert.equal(new Set(map.values()).size, 3);
  for (const c of r.centroids) {
    const near = Math.min(...centres.map((t) => Math.hypot(...t.map((x, j) => x - c[j]))));
    assert.ok(near < 0.6, `centroid ${[...c].map((x) => x.toFixed(2))} is ${near.toFixed(2)} from a true centre`);
  }
  // Same seed, same result; another seed still finds the same partition on well-separated data.
  assert.deepEqual(kmeans(points, 3, { seed: 5 }).assignment, r.assignment);
  const sel = selectDiverse(points, 3, 2, { seed: 9 });
  assert.equal(sel.indices.length, 6);
  assert.deepEqual([...new Set(sel.indices.map((i) => label[i]))].sort(), [0, 1, 2], 'two from every cluster');
  for (const i of sel.indices) {
    const c = sel.result.assignment[i];
    const members = sel.result.assignment.map((a, j) => [a, j]).filter(([a]) => a === c).map(([, j]) => j);
    const rank = members.filter((j) => sel.result.distances[j] < sel.result.distances[i]).length;
    assert.ok(rank < 2, `point ${i} is among the 2 nearest its centroid`);
  }
  // k-means++ seeding spreads the first centres across the clusters.
  assert.equal(new Set(kmeansPlusPlus(points, 3, 1).map((i) => label[i])).size, 3);
  // More clusters than points is clamped; identical points do not hang the seeding.
  const same = [Float64Array.of(1, 1), Float64Array.of(1, 1)];
  assert.equal(kmeans(same, 5).centroids.length, 2);
});

test('few-shot prompt: demonstrations as labelled fields, and generated text parses back into the same fields', () => {
  const demos = [
    { id: 'a', prompt: 'Mia had 5 stars and got 2 more. How many?', completion: ' 7' },
    { id: 'b', prompt: 'Ben had 8 cookies and ate 1.\n\nHow many?', completion: ' 7' },
  ];
  const fields = demoFields(demos);
  assert.deepEqual(fields, ['prompt', 'completion']);
  const p = fewshotPrompt(demos, fields);
  assert.equal(p, 'prompt: Mia had 5 stars and got 2 more. How many?\ncompletion: 7\n\nprompt: Ben had 8 cookies and ate 1.\nHow many?\ncompletion: 7\n\nprompt:');
  assert.deepEqual(parseFewshot(' Tom had 3 cars. How many?\ncompletion: 3\n\nprompt: next', fields), { prompt: 'Tom had 3 cars. How many?', completion: '3' });
  assert.equal(parseFewshot(' Tom had 3 cars.', fields), null, 'missing field');
  assert.equal(parseFewshot(' Tom had 3 cars.\ncompletion:   \n', fields), null, 'empty field');
  // One field: documents separated by blank lines, no labels.
  const one = demoFields([{ text: 'A story.' }, { text: 'Another one.' }]);
  assert.equal(fewshotPrompt([{ text: 'A story.' }, { text: 'Another one.' }], one), 'A story.\n\nAnother one.\n\n');
  assert.deepEqual(parseFewshot('A third story.\n\nA fourth', one), { text: 'A third story.' });
  assert.throws(() => demoFields([{ prompt: 'x', completion: 'y' }, { prompt: 'z' }]), /lacks the string field 'completion'/);
});

test('magpie: the chat template is cut right where the user content starts; the end-of-turn text stops generation', () => {
  const chatml = jinjaChatTemplate(
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
  );
  const open = userTurnOpening(chatml, 'Be brief.');
  assert.equal(open.prefix, '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n');
  assert.equal(stopText(open.suffix), '<|im_end|>');
  assert.equal(stopText(assistantTurnEnd(chatml, 'hi')), '<|im_end|>');
  const plain = jinjaChatTemplate('{{ bos_token }}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}', { bos: '<s>' });
  assert.equal(userTurnOpening(plain).prefix, '<s>user: ');
  assert.equal(stopText(userTurnOpening(plain).suffix), '\n');
  assert.throws(() => userTurnOpening(jinjaChatTemplate('no messages here')), /does not write the user message/);
});

test('judge replies: the first stand-alone digit 1-5', () => {
  assert.equal(parseJudgeScore(' 4'), 4);
  assert.equal(parseJudgeScore('Rating: 5/5'), 5);
  assert.equal(parseJudgeScore('I would say 3.'), 3);
  assert.ok(Number.isNaN(parseJudgeScore('excellent')));
  assert.ok(Number.isNaN(parseJudgeScore('10')));
  assert.ok(Number.isNaN(parseJudgeScore('7')));
});
