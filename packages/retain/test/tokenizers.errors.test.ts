// Damaged or misnamed Hugging Face tokenizer files: each load error names the file, says what is wrong and is a
// plain Error (the CLI prints a stack only for TypeError/ReferenceError/SyntaxError, which it takes for bugs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadPretrained, loadTokenizer, savePretrained } from '../src/models/hub.js';
import { loadHfTokenizer } from '../src/tokenizers/hf.js';

const STORIES = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

const WORDS = ['<s>', '</s>', '<unk>', 'Once', 'upon', 'a', 'time'];
/** A small valid tokenizer.json (WordLevel over whitespace-split words). */
const TOKENIZER = {
  version: '1.0', truncation: null, padding: null,
  added_tokens: WORDS.slice(0, 3).map((w, i) => ({ id: i, content: w, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
  normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null,
  decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
  model: { type: 'WordLevel', vocab: Object.fromEntries(WORDS.map((w, i) => [w, i])), unk_token: '<unk>' },
};

/** A stories260K Hugging Face directory per case, with the given tokenizer files written into it. */
async function modelDir(root: string, name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, name);
  const p = await loadPretrained(STORIES);
  savePretrained({ ...p, tokenizerFiles: [] }, dir);
  p.model.dispose();
  for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
  return dir;
}

function userError(e: unknown, re: RegExp): true {
  assert.ok(e instanceof Error);
  assert.ok(!(e instanceof TypeError || e instanceof SyntaxError || e instanceof ReferenceError), `${(e as Error).name} reads as a bug: ${(e as Error).message}`);
  assert.match((e as Error).message, re);
  return true;
}

function cli(...args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, RETAIN_DEBUG: '' } });
}

test('tokenizer.json or tokenizer_config.json that is not JSON: the file is named, through the CLI without a stack', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-tokerr-'));
  const badTok = await modelDir(root, 'badtok', { 'tokenizer.json': 'garbage{' });
  const badCfg = await modelDir(root, 'badcfg', { 'tokenizer.json': JSON.stringify(TOKENIZER), 'tokenizer_config.json': '{bos_token: <s>}' });
  await assert.rejects(loadPretrained(badTok), (e) => userError(e, /badtok\/tokenizer\.json: not valid JSON \(.*\); .*save_pretrained/));
  await assert.rejects(loadPretrained(badCfg), (e) => userError(e, /badcfg\/tokenizer_config\.json: not valid JSON \(.*\); fix it or delete it/));
  for (const [dir, re] of [[badTok, /badtok\/tokenizer\.json: not valid JSON/], [badCfg, /badcfg\/tokenizer_config\.json: not valid JSON/]] as const) {
    const r = cli('generate', dir, '-p', 'Once', '-n', '2');
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^retain: .*${re.source}`));
    assert.doesNotMatch(r.stderr, /^ {4}at /m, 'no stack trace for a damaged file');
  }
  rmSync(root, { recursive: true, force: true });
});

test('tokenizer.json that is JSON but not a tokenizer: every error names the file', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-tokerr-'));
  const cases: [string, string, RegExp][] = [
    ['empty', '{}', /empty\/tokenizer\.json: not a usable Hugging Face tokenizer \(Tokenizer must contain a "model" property\)/],
    ['vocab5', '{"model":{"type":"BPE","vocab":5}}', /vocab5\/tokenizer\.json: not a usable Hugging Face tokenizer/],
    // Past the library's own checks it trips over the shape with a TypeError; still the file's fault.
    ['merges', JSON.stringify({ ...TOKENIZER, model: { type: 'BPE', vocab: { a: 0 }, merges: 5 } }), /merges\/tokenizer\.json: not a usable Hugging Face tokenizer/],
    ['array', '[]', /array\/tokenizer\.json: must hold a JSON object, got \[\]/],
  ];
  for (const [name, text, re] of cases) {
    const dir = join(root, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'tokenizer.json'), text);
    await assert.rejects(loadHfTokenizer(dir), (e) => userError(e, re), name);
  }
  const tpl = join(root, 'tpl');
  mkdirSync(tpl);
  writeFileSync(join(tpl, 'tokenizer.json'), JSON.stringify(TOKENIZER));
  writeFileSync(join(tpl, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for m in %}' }));
  await assert.rejects(loadHfTokenizer(tpl), (e) => userError(e, /tpl\/tokenizer_config\.json: chat_template is not a valid Jinja template/));
  const dir = await modelDir(root, 'model', { 'tokenizer.json': '{}' });
  const r = cli('generate', dir, '-p', 'Once', '-n', '2');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /model\/tokenizer\.json: not a usable Hugging Face tokenizer/);
  assert.doesNotMatch(r.stderr, /^ {4}at /m);
  rmSync(root, { recursive: true, force: true });
});

test('--tokenizer given a .json file under any name reads that file; a directory is searched; a missing path is named', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-tokerr-'));
  const file = join(root, 'tokjson.json');
  writeFileSync(file, JSON.stringify(TOKENIZER));
  writeFileSync(join(root, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }));
  const tok = await loadTokenizer(file);
  assert.deepEqual(tok.encode('Once upon a time', { bos: false }), [3, 4, 5, 6]);
  assert.equal(tok.eosId, 1, 'tokenizer_config.json beside the file is read');
  // A model's vocabulary is often larger than its tokenizer's; ids past it decode to nothing, as in the Rust library.
  assert.equal(tok.decode([3, 400, 4]), 'Once upon');
  assert.equal(tok.decode([]), '');
  assert.throws(() => tok.piece(400), /token id 400 is outside the vocabulary \(size 7\)/);
  const sub = join(root, 'sub');
  mkdirSync(sub);
  writeFileSync(join(sub, 'tokenizer.json'), JSON.stringify(TOKENIZER));
  assert.equal((await loadTokenizer(sub)).vocabSize, WORDS.length);
  await assert.rejects(loadTokenizer(join(root, 'nope.json')), (e) => userError(e, /tokenizer not found: .*nope\.json/));
  const model = await modelDir(root, 'model', {});
  const r = cli('generate', model, '-p', 'Once', '-n', '2', '--tokenizer', file);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Once/);
  rmSync(root, { recursive: true, force: true });
});
