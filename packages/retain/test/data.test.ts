import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import * as torch from '@retain/torch';
import { readRecords, readCsv, parseDelimited } from '../src/data/readers.js';
import { DataError } from '../src/data/records.js';
import { toExample, pack } from '../src/data/formats.js';
import { collate, DataLoader, epochOrder, IGNORE_INDEX } from '../src/data/loader.js';
import { Llama2cTokenizer } from '../src/tokenizers/llama2c.js';
import { loadHfTokenizer } from '../src/tokenizers/hf.js';
import { needShared, sharedPath } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-data-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

test('readers: JSONL, JSON, CSV with quotes and CRLF, Parquet, text; ids kept or assigned', async () => {
  writeFileSync(join(tmp, 'a.jsonl'), '{"q":"x","id":"own-1"}\n\n{"q":"y"}\r\n');
  const j = await readRecords(join(tmp, 'a.jsonl'));
  assert.deepEqual(j.map((r) => r.id), ['own-1', 'a:1']);
  writeFileSync(join(tmp, 'b.json'), JSON.stringify({ data: [{ q: 1 }, { q: 2 }] }));
  assert.deepEqual((await readRecords(join(tmp, 'b.json'))).map((r) => r.q), [1, 2]);
  writeFileSync(join(tmp, 'c.csv'), 'text,label\r\n"a, ""quoted"" one",1\r\nplain,0\r\n');
  const c = readCsv(join(tmp, 'c.csv'));
  assert.deepEqual(c.map((r) => [r.text, r.label]), [['a, "quoted" one', '1'], ['plain', '0']]);
  const buf = parquetWriteBuffer({ columnData: [{ name: 'prompt', data: ['p0', 'p1', 'p2'], type: 'STRING' }, { name: 'n', data: [5, 6, 7], type: 'INT32' }] });
  writeFileSync(join(tmp, 'd.parquet'), Buffer.from(buf));
  const p = await readRecords(join(tmp, 'd.parquet'));
  assert.deepEqual(p.map((r) => [r.prompt, r.n, r.id]), [['p0', 5, 'd:0'], ['p1', 6, 'd:1'], ['p2', 7, 'd:2']]);
  writeFileSync(join(tmp, 'e.txt'), 'one story.\n\ntwo\nlines\n\n\nthree');
  assert.deepEqual((await readRecords(join(tmp, 'e.txt'))).map((r) => r.text), ['one story.', 'two\nlines', 'three']);
});

test('readers: malformed input names the file, the line and the fix', async () => {
  writeFileSync(join(tmp, 'bad.jsonl'), '{"ok":1}\n{broken\n');
  await assert.rejects(readRecords(join(tmp, 'bad.jsonl')), /bad\.jsonl:2: not valid JSON/);
  await assert.rejects(readRecords(join(tmp, 'missing.jsonl')), /data file not found: .*missing\.jsonl/);
  await assert.rejects(readRecords(join(tmp, 'x.xlsx')), /unknown data format 'xlsx'; use jsonl, json, csv, tsv, parquet, arrow or txt, or a save_to_disk folder/);
  assert.throws(() => parseDelimited('a,b\n1,2,3\n', ',', 'f.csv'), (e: Error) => e instanceof DataError && /row 2 has 3 fields, the header has 2/.test(e.message));
  assert.throws(() => parseDelimited('a\n"open', ',', 'g.csv'), /quoted field is not closed/);
});

test('the real SICK TSV (CRLF, header) reads with every field', { skip: needShared('data', 'sick') }, async () => {
  const { readdirSync } = await import('node:fs');
  const f = readdirSync(sharedPath('data', 'sick')).find((n) => /train/i.test(n))!;
  const rows = readCsv(sharedPath('data', 'sick', f), '\t');
  assert.equal(rows.length, 4500);
  assert.ok(['ENTAILMENT', 'NEUTRAL', 'CONTRADICTION'].includes(String(Object.values(rows[0]).find((v) => /^(ENTAILMENT|NEUTRAL|CONTRADICTION)$/.test(String(v))))));
});

const skipTok = needShared('models', 'stories260K', 'tok512.bin');

test('prompt/completion: loss only on completion tokens (and EOS), truncation keeps the start', { skip: skipTok }, () => {
  const tok = Llama2cTokenizer.fromFile(sharedPath('models', 'stories260K', 'tok512.bin'));
  const r = { id: 's1', prompt: 'Lily had 3 apples. How many?', completion: ' She had 3.' };
  const ex = toExample(r, { type: 'prompt_completion' }, { tokenizer: tok, source: 'math' });
  const promptLen = tok.encode(r.prompt).length;
  assert.equal(ex.id, 's1');
  assert.equal(ex.source, 'math');
  assert.equal(ex.ids[ex.ids.length - 1], tok.eosId);
  assert.deepEqual(ex.lossMask.slice(0, promptLen), new Array(promptLen).fill(0));
  assert.ok(ex.lossMask.slice(promptLen).every((v) => v === 1));
  // The trained tokens decode to the completion.
  assert.equal(tok.decode(ex.ids.filter((_, i) => ex.lossMask[i] && ex.ids[i] !== tok.eosId)).trim(), 'She had 3.');
  const short = toExample(r, { type: 'prompt_completion' }, { tokenizer: tok, maxLength: 5 });
  assert.deepEqual(short.ids, ex.ids.slice(0, 5));
  // Templates fill record fields; a missing one is named.
  const t = toExample({ id: 't', q: '1+1', completion: ' 2' }, { type: 'prompt_completion', template: 'Q: {q} A:' }, { tokenizer: tok });
  assert.ok(tok.decode(t.ids).startsWith('Q: 1+1 A: 2'));
  assert.throws(() => toExample({ id: 'u', completion: 'x' }, { type: 'prompt_completion', template: 'Q: {q}' }, { tokenizer: tok }), /record u: the template uses \{q\} but the record has no 'q' field/);
  assert.throws(() => toExample({ id: 'v', prompt: 'x' }, { type: 'prompt_completion' }, { tokenizer: tok }), /record v: completion field 'completion' is missing \(record has: prompt\)/);
});

test('chat: the template is applied and only assistant turns are trained', async () => {
  const dir = join(tmp, 'hftok');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  const words = ['<s>', '</s>', '<unk>', 'hello', 'world', 'what', 'is', 'two', 'plus', 'three', '?', 'five', '.', 'user', 'assistant', ':', '|', 'fine'];
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: words.slice(0, 3).map((w, i) => ({ id: i, content: w, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null, pre_tokenizer: { type: 'Whitespace' },
    post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }], pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<s>': { id: '<s>', ids: [0], tokens: ['<s>'] } } },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordLevel', vocab: Object.fromEntries(words.map((w, i) => [w, i])), unk_token: '<unk>' },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: '{% for m in messages %}{{ m.role }} : {{ m.content }} | {% endfor %}{% if add_generation_prompt %}assistant : {% endif %}' }));
  const tok = await loadHfTokenizer(dir);
  assert.equal(tok.bosId, 0);
  assert.deepEqual(tok.encode('hello world ?'), [0, 3, 4, 10]);
  const msgs = [{ role: 'user', content: 'what is two plus three ?' }, { role: 'assistant', content: 'five .' }, { role: 'user', content: 'hello' }, { role: 'assistant', content: 'fine' }];
  const ex = toExample({ id: 'c1', messages: msgs }, { type: 'chat' }, { tokenizer: tok, chatTemplate: tok.chatTemplate! });
  const trained = ex.ids.filter((_, i) => ex.lossMask[i]).map((i) => words[i]);
  // Each assistant turn's content and the template's closing separator are trained; user turns are not.
  assert.deepEqual(trained, ['five', '.', '|', 'fine', '|']);
  assert.throws(() => toExample({ id: 'c2', messages: [{ role: 'user', content: 'hello' }] }, { type: 'chat' }, { tokenizer: tok, chatTemplate: tok.chatTemplate! }), /no assistant turn/);
});

test('collate: next-token targets, padding ignored, sample ids and token counts kept', () => {
  const b = collate([
    { id: 'a', ids: [1, 5, 6, 7], lossMask: [0, 0, 1, 1], source: 's' },
    { id: 'b', ids: [1, 9], lossMask: [0, 1], source: 'g' },
  ]);
  assert.deepEqual(b.ids.toArray(), [[1, 5, 6], [1, 0, 0]]);
  assert.deepEqual(b.targets.toArray(), [[IGNORE_INDEX, 6, 7], [9, IGNORE_INDEX, IGNORE_INDEX]]);
  assert.deepEqual(b.sampleIds, ['a', 'b']);
  assert.deepEqual(b.sources, ['s', 'g']);
  assert.deepEqual(b.tokenCounts, [2, 1]);
  torch.dispose([b.ids, b.targets]);
});

test('collate: labelled text (classification format) keeps every token as input, right-padded, with one label per sample', () => {
  const b = collate([
    { id: 'a', ids: [101, 5, 6, 102], lossMask: [0, 0, 0, 0], source: 's', label: 2 },
    { id: 'b', ids: [101, 9, 102], lossMask: [0, 0, 0], source: 's', label: 0 },
  ]);
  // A classifier reads the whole sequence, closing [SEP] included: no next-token shift as for a causal LM.
  assert.deepEqual(b.ids.toArray(), [[101, 5, 6, 102], [101, 9, 102, 0]]);
  assert.deepEqual(b.labels!.toArray(), [2, 0]);
  assert.deepEqual(b.tokenCounts, [1, 1]);
  torch.dispose([b.ids, b.targets, b.labels]);
});

test('packing: fixed blocks with no padding, loss on every position after the first', () => {
  const exs = [0, 1, 2].map((k) => ({ id: `d${k}`, ids: [1, 10 + k, 20 + k, 2], lossMask: [0, 1, 1, 1], source: 't' }));
  const p = pack(exs, 5);
  assert.equal(p.length, 2);
  assert.deepEqual(p[0].ids, [1, 10, 20, 2, 1]);
  assert.deepEqual(p[1].ids, [11, 21, 2, 1, 12]);
  assert.ok(p.every((e) => e.ids.length === 5));
});

test('loader: deterministic order, reshuffled every epoch, exact resume of the position', () => {
  assert.deepEqual(epochOrder(10, 3, 0), epochOrder(10, 3, 0));
  assert.notDeepEqual(epochOrder(10, 3, 0), epochOrder(10, 3, 1));
  assert.deepEqual([...epochOrder(10, 3, 1)].sort((a, b) => a - b), [...Array(10).keys()]);
  const a = new DataLoader(10, 4, 7);
  const seen: number[][] = [];
  for (let i = 0; i < 7; i++) seen.push(a.next().indices);
  // Each epoch visits every example once (4 + 4 + 2).
  assert.deepEqual(seen.slice(0, 3).flat().sort((x, y) => x - y), [...Array(10).keys()]);
  const b = new DataLoader(10, 4, 7);
  for (let i = 0; i < 4; i++) b.next();
  const saved = b.state();
  const c = new DataLoader(10, 4, 7);
  c.restore(saved);
  assert.deepEqual([c.next().indices, c.next().indices, c.next().indices], seen.slice(4, 7));
});

test('a UTF-8 byte-order mark is dropped; a UTF-16 file is refused by name', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-bom-'));
  writeFileSync(join(dir, 'bom.jsonl'), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"text": "a"}\n{"text": "b"}\n')]));
  assert.deepEqual((await readRecords(join(dir, 'bom.jsonl'))).map((r) => r.text), ['a', 'b']);
  writeFileSync(join(dir, 'bom.csv'), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('text,label\nx,1\n')]));
  assert.deepEqual(Object.keys((await readRecords(join(dir, 'bom.csv')))[0]).sort(), ['id', 'label', 'text'], 'the first CSV header is "text", not "\\ufefftext"');
  writeFileSync(join(dir, 'u16.jsonl'), Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"text": "a"}\n', 'utf16le')]));
  await assert.rejects(readRecords(join(dir, 'u16.jsonl')), /u16\.jsonl: the file is UTF-16; data files must be UTF-8/);
  rmSync(dir, { recursive: true, force: true });
});
