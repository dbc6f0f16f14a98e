// retain eval on tasks that cannot all be scored, on long prompts and long texts: a failing task does not lose the
// others, --limit bounds whole-text tasks, cut prompts are counted, and a missing template field lists the record's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import * as torch from '@retain/torch';

torch.setNumThreads(1);
const MODEL = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const TEXT = new URL('../assets/data/tinystories-eval.txt', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'retain-eval-partial-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: dir, timeout: 120_000 });
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'a user error prints no stack');
  return r;
}

writeFileSync(join(dir, 'mc.jsonl'), '{"p": "lily went to play in the", "a": 0}\n{"p": "they looked up at the", "a": 1}\n');
writeFileSync(join(dir, 'bad.jsonl'), '{"p": "lily went to play in the", "a": 0}\n{"p": "they looked up at the", "a": 7}\n');

test('one failing task: the others are scored and written, the failure is named, and the exit status is 1', { timeout: 120_000 }, () => {
  writeFileSync(join(dir, 'tasks.yaml'), [
    '- {name: good_mc, kind: multiple_choice, data: mc.jsonl, prompt: "{p}", choices: ["park.", "moon."], answer: a}',
    '- {name: bad_mc, kind: multiple_choice, data: bad.jsonl, prompt: "{p}", choices: ["park.", "moon."], answer: a}',
    `- {name: stories, kind: perplexity, data: ${TEXT}, split: blank_lines}`,
  ].join('\n') + '\n');
  const out = join(dir, 'r.json');
  const r = cli('eval', '--model', MODEL, '--tasks', join(dir, 'tasks.yaml'), '--limit', '5', '-o', out);
  assert.equal(r.status, 1, r.stderr);
  assert.ok(existsSync(out), 'results written');
  const res = JSON.parse(readFileSync(out, 'utf8'));
  assert.deepEqual(Object.keys(res.results), ['good_mc', 'stories']);
  assert.deepEqual(res.failed, { bad_mc: 'record bad:1: answer index 7 is outside 0..1' });
  assert.match(r.stderr, /^retain: failed: bad_mc: record bad:1: answer index 7 is outside 0\.\.1$/m);
  assert.match(r.stderr, /^retain: 1 of 3 task evaluations failed; the other 2 are in .*r\.json$/m);
  assert.match(r.stdout, /^good_mc\tacc\t/m);
});

test('--limit bounds a whole-text perplexity task to its first n windows, and says so', { timeout: 120_000 }, async () => {
  const { CharLSTM } = await import('../src/models/charlstm.js');
  const { CharVocab } = await import('../src/tokenizers/char.js');
  const { charLstmEvalModel } = await import('../src/eval/model.js');
  const { evaluate } = await import('../src/eval/harness.js');
  const { textLoglik } = await import('../src/eval/score.js');
  const { resolveTasks } = await import('../src/eval/tasks.js');
  const chars = ' abcdefghijklmnopqrstuvwxyz.\n';
  torch.manualSeed(3);
  const lstm = new CharLSTM({ vocab_size: chars.length, embedding_size: 6, hidden_size: 10, num_layers: 1 }).to('float64');
  torch.noGrad(() => lstm.parameters().forEach((p) => p.normal_(0, 0.5)));
  lstm.eval();
  const em = charLstmEvalModel(lstm, new CharVocab(Object.fromEntries([...chars].map((c, i) => [c, i]))), 'tiny', 'tiny', 8);
  const text = 'the cat sat on the mat.\nthe dog ran to the park and back again.\n';
  writeFileSync(join(dir, 'whole.txt'), text);
  writeFileSync(join(dir, 'whole.yaml'), 'name: whole\nkind: perplexity\ndata: whole.txt\nsplit: whole\n');
  const tasks = resolveTasks([join(dir, 'whole.yaml')]);
  const r = await evaluate(em, tasks, { limit: 3 });
  // Three windows of 8 predict characters 1..24: the same as scoring the text's first 25 characters whole.
  const [ref] = textLoglik(em, [text.slice(0, 25)]);
  const get = (res: typeof r, m: string) => res.rows.find((x) => x.metric === m)!.value;
  assert.equal(get(r, 'ce'), ref.nll / 24);
  assert.equal(get(r, 'bits_per_char'), ref.nll / Math.LN2 / 24);
  const full = await evaluate(em, tasks, {});
  assert.notEqual(get(full, 'ce'), get(r, 'ce'));
  // The CLI says what was scored.
  writeFileSync(join(dir, 'story.yaml'), `name: story\nkind: perplexity\ndata: ${TEXT}\nsplit: whole\n`);
  const c = cli('eval', '--model', MODEL, '--tasks', join(dir, 'story.yaml'), '--limit', '2', '--log-samples', '-o', join(dir, 'lim', 'r.json'));
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stderr, /story: --limit 2 scores the first 2 windows of 512 tokens: \d+ characters of 1 of 1 texts/);
  const [sample] = readFileSync(join(dir, 'lim', 'samples_story.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(sample.tokens, 1024);
  assert.equal(sample.cut, true);
});

test('prompts longer than the context are counted in the results and warned about', { timeout: 120_000 }, () => {
  const long = 'once upon a time there was a little girl named lily who liked to play in the park with her dog. '.repeat(4);
  writeFileSync(join(dir, 'long.jsonl'), [`{"p": "${long}she went to the", "a": 0}`, '{"p": "they looked up at the", "a": 1}', `{"p": "${long}the dog ran to the", "a": 0}`].join('\n'));
  writeFileSync(join(dir, 'long.yaml'), 'name: long_mc\nkind: multiple_choice\ndata: long.jsonl\nprompt: "{p}"\nchoices: ["park.", "moon."]\nanswer: a\n');
  const out = join(dir, 'long', 'r.json');
  const r = cli('eval', '--model', MODEL, '--tasks', join(dir, 'long.yaml'), '--max-length', '64', '--log-samples', '-o', out);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^warning: long_mc: 2 of 3 prompts are longer than the model's context of 64 tokens and lost their start/m);
  const res = JSON.parse(readFileSync(out, 'utf8'));
  assert.deepEqual(res.rows.map((x: { truncated?: number }) => x.truncated), [2, 2]);
  const samples = readFileSync(join(dir, 'long', 'samples_long_mc.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(samples.map((x) => x.truncated ?? false), [true, false, true]);
  // Within the context nothing is cut, and nothing is said.
  const ok = cli('eval', '--model', MODEL, '--tasks', join(dir, 'long.yaml'), '-o', join(dir, 'long', 'r2.json'));
  assert.doesNotMatch(ok.stderr, /lost their start/);
  assert.equal(JSON.parse(readFileSync(join(dir, 'long', 'r2.json'), 'utf8')).rows[0].truncated, undefined);
});

test('a field a record lacks: the message lists the fields it has (a CSV without its header row shows its first row as the names)', async () => {
  const { loadDocs } = await import('../src/eval/harness.js');
  const { resolveTasks } = await import('../src/eval/tasks.js');
  const { toExample } = await import('../src/data/formats.js');
  // The header row is missing: the first question became the field names.
  writeFileSync(join(dir, 'nohead.csv'), 'What is 2+2?,4,5,0\nWhat is 3+3?,6,7,0\n');
  writeFileSync(join(dir, 'nohead.yaml'), 'name: nohead\nkind: multiple_choice\ndata: nohead.csv\nprompt: "{question}"\nchoices: ["{a}", "{b}"]\nanswer: gold\n');
  await assert.rejects(loadDocs(resolveTasks([join(dir, 'nohead.yaml')])[0]), (e: Error) => {
    assert.equal(e.message, "record nohead:0: the template uses {question} but the record has no 'question' field (record has: 0, 4, 5, What is 2+2?)");
    return true;
  });
  writeFileSync(join(dir, 'head.csv'), 'question,a,b,label\nWhat is 2+2?,4,5,0\n');
  writeFileSync(join(dir, 'head.yaml'), 'name: head\nkind: multiple_choice\ndata: head.csv\nprompt: "{question}"\nchoices: ["{a}", "{b}"]\nanswer: gold\n');
  await assert.rejects(loadDocs(resolveTasks([join(dir, 'head.yaml')])[0]), /^Error: record head:0: answer field 'gold' is missing \(record has: question, a, b, label\)$/);
  const tok = { bosId: -1, eosId: -1, vocabSize: 1, encode: () => [0], decode: () => '', piece: () => '' };
  assert.throws(() => toExample({ id: 'r', q: 'x', completion: 'y' }, { type: 'prompt_completion', template: 'Q: {question}' }, { tokenizer: tok }), (e: Error) => /^record r: the template uses \{question\} but the record has no 'question' field \(record has: q, completion\)$/.test(e.message));
});
