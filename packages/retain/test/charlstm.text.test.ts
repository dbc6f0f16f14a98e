// Text as the character models read it, in evaluation and in training: Windows line ends are kept for a vocabulary
// that has '\r' and read as '\n' by one that lacks it; characters outside the vocabulary in training data are an
// error naming the file and line, or dropped with `unknown_chars: drop`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { CharLSTM } from '../src/models/charlstm.js';
import { CharVocab } from '../src/tokenizers/char.js';
import { charLstmEvalModel } from '../src/eval/model.js';
import { evaluate } from '../src/eval/harness.js';
import { textLoglik } from '../src/eval/score.js';
import { resolveTasks } from '../src/eval/tasks.js';
import { readRecords } from '../src/data/readers.js';
import { toExample } from '../src/data/formats.js';
import { CharTokenizer } from '../src/tokenizers/char.js';
import { needShared, sharedPath } from './helpers.js';

torch.setNumThreads(1);
const dir = mkdtempSync(join(tmpdir(), 'retain-charlstm-text-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

const CHARS = ' abcdefghijklmnopqrstuvwxyz.,\n';
const vocabOf = (chars: string) => new CharVocab(Object.fromEntries([...chars].map((c, i) => [c, i])));

/** A random char-LSTM over `chars`, float64. */
function tinyLstm(chars: string): CharLSTM {
  torch.manualSeed(5);
  const m = new CharLSTM({ vocab_size: [...chars].length, embedding_size: 8, hidden_size: 16, num_layers: 1 }).to('float64');
  torch.noGrad(() => m.parameters().forEach((p) => p.normal_(0, 0.5)));
  m.eval();
  return m;
}

test('CharVocab: CRLF is one newline only to a vocabulary without \\r; a lone \\r is refused with its position', () => {
  const lf = vocabOf(CHARS);
  assert.deepEqual(lf.encode('ab\r\ncd'), lf.encode('ab\ncd'));
  assert.throws(() => lf.encode('ab\rcd'), /character "\\r" at position 2 is not in the vocabulary/);
  const cr = vocabOf(CHARS + '\r');
  assert.deepEqual(cr.encode('ab\r\ncd'), [1, 2, 30, 29, 3, 4]);
});

test('perplexity tasks keep \\r for a model whose vocabulary has it: the score is the raw text\'s, not the LF-rewritten one', async () => {
  const text = 'the cat sat.\r\nthe dog ran.\r\n\r\nit was fun, and the sun was up.\r\n';
  writeFileSync(join(dir, 'crlf.txt'), text);
  writeFileSync(join(dir, 'crlf.yaml'), 'name: crlf\nkind: perplexity\ndata: crlf.txt\nsplit: whole\n');
  const chars = CHARS + '\r';
  const em = charLstmEvalModel(tinyLstm(chars), vocabOf(chars), 'tiny-cr');
  const r = await evaluate(em, resolveTasks([join(dir, 'crlf.yaml')]), { batchSize: 2 });
  const [raw] = textLoglik(em, [text]);
  const [lf] = textLoglik(em, [text.replace(/\r\n/g, '\n')]);
  const ce = r.rows.find((x) => x.metric === 'ce')!.value;
  assert.equal(ce, raw.nll / raw.tokens);
  assert.equal(raw.tokens, [...text].length - 1);
  assert.ok(Math.abs(ce - lf.nll / lf.tokens) > 1e-3, 'the LF text scores differently, so the test can tell them apart');
  // A vocabulary without '\r' scores the CRLF file exactly as its LF copy.
  const em2 = charLstmEvalModel(tinyLstm(CHARS), vocabOf(CHARS), 'tiny-lf');
  writeFileSync(join(dir, 'lf.txt'), text.replace(/\r\n/g, '\n'));
  writeFileSync(join(dir, 'lf.yaml'), 'name: lf\nkind: perplexity\ndata: lf.txt\nsplit: whole\n');
  const a = await evaluate(em2, resolveTasks([join(dir, 'crlf.yaml')]), { batchSize: 2 });
  const b = await evaluate(em2, resolveTasks([join(dir, 'lf.yaml')]), { batchSize: 2 });
  for (const m of ['ce', 'bits_per_char', 'next_token_acc']) assert.equal(a.rows.find((x) => x.metric === m)!.value, b.rows.find((x) => x.metric === m)!.value, m);
});

test('training text keeps \\r for a vocabulary that has it and reads CRLF as LF for one that lacks it', async () => {
  writeFileSync(join(dir, 'train.txt'), 'the cat sat.\r\nthe dog ran.\r\n\r\nit was fun.\r\n');
  const recs = await readRecords(join(dir, 'train.txt'));
  assert.deepEqual(recs.map((r) => r.text), ['the cat sat.\r\nthe dog ran.', 'it was fun.\r\n']);
  const withCr = new CharTokenizer(vocabOf(CHARS + '\r'));
  assert.deepEqual(toExample(recs[0], { type: 'text' }, { tokenizer: withCr }).ids, withCr.encode('the cat sat.\r\nthe dog ran.'));
  assert.ok(toExample(recs[0], { type: 'text' }, { tokenizer: withCr }).ids.includes(30));
  const noCr = new CharTokenizer(vocabOf(CHARS));
  assert.deepEqual(toExample(recs[0], { type: 'text' }, { tokenizer: noCr }).ids, noCr.encode('the cat sat.\nthe dog ran.'));
});

test('the shipped char-LSTM scores a CRLF copy of Shakespeare as the original', { skip: needShared('models', 'charrnn-shakespeare') || needShared('data', 'text', 'shakespeare.txt'), timeout: 60_000 }, async () => {
  const { loadEvalModel } = await import('../src/eval/model.js');
  const em = await loadEvalModel(sharedPath('models', 'charrnn-shakespeare'));
  const text = readFileSync(sharedPath('data', 'text', 'shakespeare.txt'), 'utf8').slice(0, 4000);
  const [a] = textLoglik(em, [text]);
  const [b] = textLoglik(em, [text.replace(/\n/g, '\r\n')]);
  assert.deepEqual(a, b);
  em.module.dispose();
});

/** loadExamples on a tiny char-LSTM (no '\r' in its vocabulary) for a data entry as a config gives it. */
async function examples(file: string, extra: Record<string, unknown> = {}) {
  const { loadExamples } = await import('../src/train/run.js');
  const { trainConfigSchema } = await import('../src/config.js');
  const d = trainConfigSchema.shape.data.shape.train.parse({ path: file, format: { type: 'text' }, ...extra });
  const p = { model: tinyLstm(CHARS), config: { model_type: 'charlstm' }, tokenizer: new CharTokenizer(vocabOf(CHARS)), source: { path: 'tiny', format: 'hf' }, tokenizerFiles: [] };
  return loadExamples(d, p as never, 'train');
}

test('training data: a character outside the vocabulary names the file, line, record and unknown_chars; drop leaves it out and says which', async () => {
  // Plain text: the second paragraph starts on line 4, the 'é' is on its second line (file line 5), after a CRLF.
  writeFileSync(join(dir, 'u.txt'), 'the cat sat.\r\nthe dog ran.\r\n\r\nit was fun,\r\nsaid the caf\u00e9 cat.\r\n');
  await assert.rejects(examples(join(dir, 'u.txt')), (e: Error) => {
    assert.equal(e.message, `${join(dir, 'u.txt')}:5: record u:1, field 'text': character "é" is not in the model's vocabulary of 30 characters; set unknown_chars: drop on this data entry (train) to leave such characters out, or remove them from the file`);
    return true;
  });
  // JSONL: the record's own line (blank lines counted); CSV: the line a quoted multi-line field reaches.
  writeFileSync(join(dir, 'u.jsonl'), '{"text": "the cat."}\n\n{"text": "a \\u00e9 b"}\n');
  await assert.rejects(examples(join(dir, 'u.jsonl')), /u\.jsonl:3: record u:1, field 'text': character "é"/);
  writeFileSync(join(dir, 'u.csv'), 'text,n\n"the cat",1\n"the dog\nran to the caf\u00e9",2\n');
  await assert.rejects(examples(join(dir, 'u.csv')), /u\.csv:4: record u:1, field 'text': character "é"/);

  const notes: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((s: string) => notes.push(String(s)) > 0) as typeof process.stderr.write;
  let ex;
  try {
    ex = await examples(join(dir, 'u.txt'), { unknown_chars: 'drop' });
  } finally {
    process.stderr.write = write;
  }
  const tok = new CharTokenizer(vocabOf(CHARS));
  assert.deepEqual(ex.map((x) => x.ids), [tok.encode('the cat sat.\nthe dog ran.'), tok.encode('it was fun,\nsaid the caf cat.\n')]);
  // A record far longer than max_length (its start tokenized more than once to cut it) names each character once.
  writeFileSync(join(dir, 'long.txt'), 'the caf\u00e9 cat sat. '.repeat(40));
  try {
    process.stderr.write = ((s: string) => notes.push(String(s)) > 0) as typeof process.stderr.write;
    await examples(join(dir, 'long.txt'), { unknown_chars: 'drop', max_length: 4 });
  } finally {
    process.stderr.write = write;
  }
  assert.deepEqual(notes, Array(2).fill('retain: train: left out 1 character outside the model\'s vocabulary wherever they occur (unknown_chars: drop): "é"\n'));
});
