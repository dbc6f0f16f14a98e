// Evaluation tasks: what to read, how to turn a record into a request, and which metric scores it.
//
// A task is data (a TaskSpec): the built-in ones below and users' task files (YAML or JSON, validated by one zod
// schema) share the format, so a user task can do everything a built-in one does. Records pass through an optional
// named `preprocess` (for the built-in sets whose files need unpacking, e.g. choices embedded in an instruction) and
// then through the templates.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { decodeUtf8, readUserFile } from '../files.js';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { readRecords } from '../data/readers.js';
import { recordFields, type Record_ } from '../data/records.js';
import { fillTemplate } from '../data/formats.js';
import { formatIssues } from '../options.js';
import type { Role } from './results.js';
import { isLmevalTaskConfig, lmevalTask, yamlTags, type LmevalTask } from './lmeval-task.js';

export const TASK_KINDS = ['multiple_choice', 'generate', 'perplexity', 'image_classification'] as const;

export const taskSpecSchema = z.object({
  name: z.string().regex(/^[\w.-]+$/, 'use letters, digits, _ . -'),
  /** Bumped when the prompt or scoring changes, so old results are not compared with new ones silently. */
  version: z.number().int().min(0).default(0),
  kind: z.enum(TASK_KINDS),
  /** Data file; a relative path resolves against the data directory (built-ins) or the task file's folder. */
  data: z.string(),
  reader: z.enum(['jsonl', 'json', 'csv', 'tsv', 'parquet', 'txt']).optional(),
  /** Named record transformation of a built-in set (see PREPROCESS). */
  preprocess: z.string().optional(),
  /** Prompt template with {field} placeholders (multiple_choice, generate). */
  prompt: z.string().optional(),
  /** Text before the few-shot examples and the prompt, once per request ({field} placeholders): lm-evaluation-harness's description. */
  preamble: z.string().optional(),
  /** multiple_choice: a field holding the list of choices, or one template per choice. */
  choices: z.union([z.string(), z.array(z.string()).min(2, 'a list of choice templates needs at least 2 (one per choice)')], {
    // zod's own union message ("Invalid input") says neither what was wrong nor what fits.
    errorMap: (issue, ctx) => issue.code === 'invalid_union'
      ? { message: `${JSON.stringify(ctx.data)} is neither a field name holding each record's list of choices (choices: endings) nor a list of at least 2 choice templates (choices: [" yes", " no"] or ["{sol1}", "{sol2}"])` }
      : { message: ctx.defaultError },
  }).optional(),
  /** multiple_choice: per-choice prompts (WinoGrande's partial scoring): a field holding one context per choice. */
  contexts: z.string().optional(),
  /** Field with the gold answer: a choice index, a choice label (see choice_labels), or the answer text. */
  answer: z.string().default('answer'),
  choice_labels: z.array(z.string()).optional(),
  /** Joins the prompt and the choice / answer, as lm-evaluation-harness's target_delimiter. */
  target_delimiter: z.string().default(' '),
  fewshot_delimiter: z.string().default('\n\n'),
  num_fewshot: z.number().int().min(0).default(0),
  /** Few-shot examples come from this file (default: the task's own data, never the example being scored). */
  fewshot_data: z.string().optional(),
  generation: z.object({
    max_new_tokens: z.number().int().positive().default(32),
    stop: z.array(z.string()).default(['\n\n']),
    /** How the answer is pulled from the generated text. */
    extract: z.enum(['trim', 'first_line', 'gsm8k', 'last_number']).default('trim'),
  }).strict().default({}),
  /** perplexity: how the text is split into documents. */
  split: z.enum(['blank_lines', 'lines', 'whole', 'records']).default('records'),
  text_field: z.string().default('text'),
  /** perplexity: characters the model's vocabulary lacks are an error, or are dropped (character models). */
  unknown_chars: z.enum(['error', 'drop']).default('error'),
  /** perplexity: score at most this many characters of text (from the start); keeps runs cheap. */
  max_chars: z.number().int().positive().optional(),
  image_field: z.string().default('image'),
  image_shape: z.array(z.number().int().positive()).default([784]),
  image_scale: z.number().positive().default(1),
  /** The metric tables and charts use; default by kind (acc, exact_match, bits_per_char / next_token_acc, acc). */
  primary: z.string().optional(),
  role: z.enum(['general', 'target']).default('general'),
  description: z.string().optional(),
}).strict();

export type TaskSpec = z.infer<typeof taskSpecSchema>;
export type TaskInput = z.input<typeof taskSpecSchema>;

/** One scored unit: a prompt with choices, a prompt with an expected answer, a text, or an image. */
export interface Doc {
  id: string;
  /** The filled prompt (multiple_choice, generate). */
  prompt: string;
  /** The filled preamble (multiple_choice, generate): it precedes the few-shot examples. */
  preamble?: string;
  /** One prompt per choice, when the task scores partial contexts. */
  contexts?: string[];
  choices?: string[];
  gold?: number;
  /** Expected answer text (generate). */
  answer?: string;
  text?: string;
  image?: Float32Array;
  label?: number;
}

/** Where built-in tasks look for data: --data-dir, $RETAIN_DATA_DIR, ./data, then ../shared/data up from here. */
export function dataDirs(explicit?: string): string[] {
  if (explicit) return [resolve(explicit)];
  const dirs: string[] = [];
  if (process.env.RETAIN_DATA_DIR) dirs.push(resolve(process.env.RETAIN_DATA_DIR));
  dirs.push(resolve('data'), resolve('../shared/data'));
  const repo = resolve(dirname(new URL(import.meta.url).pathname), '../../../..');
  dirs.push(join(repo, '../shared/data'));
  return [...new Set(dirs)];
}

export function resolveData(path: string, base: string[]): string {
  if (isAbsolute(path)) {
    if (!existsSync(path)) throw new Error(`task data not found: ${path}`);
    return path;
  }
  for (const d of base) {
    const p = join(d, path);
    if (existsSync(p)) return p;
  }
  throw new Error(`task data not found: looked for ${base.map((d) => join(d, path)).join(', ')} (set --data-dir or RETAIN_DATA_DIR to the folder that holds it)`);
}

// --- Built-in sets --------------------------------------------------------------------------------------------------

/** LLM-Adapters layout: the question and `AnswerN: ...` / `OptionN: ...` choices inside `instruction`. */
function llmAdaptersMc(r: Record_): Record_ {
  const ins = String(r.instruction ?? '');
  const body = ins.replace(/\n*Answer format:[\s\S]*$/, '');
  const firstChoice = body.search(/(Answer|Option)\d+:/);
  if (firstChoice < 0) throw new Error(`record ${r.id}: no 'Answer1:' / 'Option1:' choices in the instruction`);
  const question = body.slice(0, firstChoice).replace(/^Please choose the correct answer (to the question|to fill in the blank to complete the given sentence): /, '').trim();
  const choices = body.slice(firstChoice).split(/(?:Answer|Option)\d+:\s*/).slice(1).map((s) => s.trim());
  const m = /(\d+)$/.exec(String(r.answer ?? ''));
  if (!m) throw new Error(`record ${r.id}: answer '${String(r.answer)}' is not answerN / optionN`);
  return { ...r, question, choices, gold: Number(m[1]) - 1 };
}

/** WinoGrande: the option fills the blank; the context is the sentence up to the blank, the target the rest. */
function winogrande(r: Record_): Record_ {
  const x = llmAdaptersMc(r);
  const q = String(x.question);
  const blank = q.indexOf('_');
  if (blank < 0) throw new Error(`record ${r.id}: no '_' blank in the sentence`);
  const choices = x.choices as string[];
  return { ...x, contexts: choices.map((c) => q.slice(0, blank) + c), choices: [q.slice(blank + 1).trim(), q.slice(blank + 1).trim()] };
}

function boolq(r: Record_): Record_ {
  const q = String(r.instruction ?? '').replace(/^Please answer the following question with true or false, question: /, '').replace(/\n*Answer format:[\s\S]*$/, '').trim();
  // LLM-Adapters ended each question with the '?' that the prompt adds (BoolQ's own questions have none).
  return { ...r, question: q.replace(/\?$/, ''), gold: String(r.answer).trim() === 'true' ? 1 : 0 };
}

/** lm-evaluation-harness's HellaSwag clean-up of WikiHow's bracketed markers, for the context and each ending. */
function hellaswagClean(text: string): string {
  return text.trim().replaceAll(' [title]', '. ').replace(/\[.*?\]/g, '').replaceAll('  ', ' ');
}

/** Python's str.capitalize: the first character upper case, the rest lower case. */
const capitalize = (s: string) => s.charAt(0).toUpperCase() + s.slice(1).toLowerCase();

/**
 * HellaSwag as lm-evaluation-harness prompts it: "activity: ctx_a Ctx_b", cleaned. The text file joins ctx_a and
 * ctx_b, so ctx_b (which lm-evaluation-harness capitalises) is taken to be the unfinished fragment after the last '. '.
 */
function hellaswag(r: Record_): Record_ {
  const line = String(r.ctx);
  const colon = line.indexOf(': ');
  const [label, ctx] = colon < 0 ? ['', line] : [line.slice(0, colon), line.slice(colon + 2)];
  const dot = ctx.lastIndexOf('. ');
  const tail = dot >= 0 ? ctx.slice(dot + 2) : '';
  const split = tail !== '' && !/[.!?"]$/.test(tail.trimEnd());
  const [ctxA, ctxB] = split ? [ctx.slice(0, dot + 1), tail] : [ctx, ''];
  return { ...r, query: hellaswagClean(`${label}: ${ctxA} ${capitalize(ctxB)}`), choices: (r.endings as string[]).map(hellaswagClean) };
}

function commonsenseqa(r: Record_): Record_ {
  const c = r.choices as { label: string[]; text: string[] };
  return { ...r, choices: c.text, gold: c.label.indexOf(String(r.answerKey)) };
}

const SICK_LABELS = ['ENTAILMENT', 'NEUTRAL', 'CONTRADICTION'];
function sick(r: Record_): Record_ {
  const gold = SICK_LABELS.indexOf(String(r.entailment_judgment).trim());
  if (gold < 0) throw new Error(`record ${r.id}: entailment_judgment '${String(r.entailment_judgment)}' is not one of ${SICK_LABELS.join(', ')}`);
  return { ...r, gold };
}

function mmlu(r: Record_): Record_ {
  const subject = String(r.subject ?? '');
  return { ...r, question: String(r.question).trim(), subject_words: subject.replaceAll('_', ' '), choices: [0, 1, 2, 3].map((i) => String(r[`choice${i}`])), gold: Number(r.answer) };
}

function gsm8k(r: Record_): Record_ {
  const a = String(r.answer ?? '');
  const m = /####\s*(.+)$/m.exec(a);
  return { ...r, target: m ? normalizeNumber(m[1]) : a.trim(), rationale: a };
}

function svamp(r: Record_): Record_ {
  return { ...r, question: String(r.instruction ?? r.question ?? ''), target: normalizeNumber(String(r.answer)) };
}

export const PREPROCESS: Record<string, (r: Record_) => Record_> = {
  llm_adapters_mc: llmAdaptersMc,
  winogrande,
  boolq,
  hellaswag,
  commonsenseqa,
  sick,
  mmlu,
  gsm8k,
  svamp,
};

// Version 1 of the multiple-choice tasks: acc_norm divides by the choice's characters without the delimiter (it
// counted the leading space), and BoolQ, HellaSwag and MMLU take lm-evaluation-harness 0.4.13's prompts exactly.
const MC_VERSION = 1;

const mc = (name: string, data: string, extra: Partial<TaskInput> = {}): TaskInput => ({
  name, version: MC_VERSION, kind: 'multiple_choice', data, preprocess: 'llm_adapters_mc', prompt: 'Question: {question}\nAnswer:', choices: 'choices', answer: 'gold', ...extra,
});

/**
 * Built-in tasks over the sets of ../shared/data (docs/DATA.md). The prompts, choices and target delimiter of ARC, PIQA,
 * WinoGrande, HellaSwag, BoolQ, OpenBookQA and MMLU are lm-evaluation-harness 0.4.13's (bench/parity/lmeval.ts
 * checks them against lm_eval itself); BoolQ has no passage in the shared copy, so its prompt starts at "Question:".
 */
export const BUILTIN_TASKS: TaskInput[] = [
  mc('arc_easy', 'arc-easy/test.json'),
  mc('arc_challenge', 'arc-challenge/test.json'),
  mc('openbookqa', 'openbookqa/test.json', { prompt: '{question}' }),
  mc('siqa', 'social_i_qa/test.json'),
  mc('winogrande', 'winogrande/test.json', { preprocess: 'winogrande', prompt: '', contexts: 'contexts' }),
  { name: 'boolq', version: MC_VERSION, kind: 'multiple_choice', data: 'boolq/test.json', preprocess: 'boolq', prompt: 'Question: {question}?\nAnswer:', choices: ['no', 'yes'], answer: 'gold', description: 'BoolQ without its passage (the shared copy has the question only)' },
  { name: 'piqa', version: MC_VERSION, kind: 'multiple_choice', data: 'piqa/valid.jsonl', preprocess: 'piqa', prompt: 'Question: {goal}\nAnswer:', choices: ['{sol1}', '{sol2}'], answer: 'label' },
  { name: 'hellaswag', version: MC_VERSION, kind: 'multiple_choice', data: 'hellaswag/hellaswag_val_full.txt.bz2', preprocess: 'hellaswag', prompt: '{query}', choices: 'choices', answer: 'label' },
  { name: 'mmlu_dev', version: MC_VERSION, kind: 'multiple_choice', data: 'mmlu/dev', preprocess: 'mmlu', preamble: 'The following are multiple choice questions (with answers) about {subject_words}.\n\n', prompt: '{question}\nA. {choice0}\nB. {choice1}\nC. {choice2}\nD. {choice3}\nAnswer:', choices: ['A', 'B', 'C', 'D'], answer: 'gold' },
  { name: 'commonsenseqa', version: MC_VERSION, kind: 'multiple_choice', data: 'commonsenseqa/dev_rand_split.jsonl', preprocess: 'commonsenseqa', prompt: 'Question: {question}\nAnswer:', choices: 'choices', answer: 'gold' },
  { name: 'sick', version: MC_VERSION, kind: 'multiple_choice', data: 'sick/SICK_test_annotated.txt', reader: 'tsv', preprocess: 'sick', prompt: '{sentence_A}\nQuestion: {sentence_B} True, Neither or False?\nAnswer:', choices: ['True', 'Neither', 'False'], answer: 'gold', description: 'SICK NLI, 3-way, scored as classification by the likelihood of the label word' },
  { name: 'gsm8k', kind: 'generate', data: 'gsm8k/test.jsonl', preprocess: 'gsm8k', prompt: 'Question: {question}\nAnswer:', answer: 'target', fewshot_data: 'gsm8k/train.jsonl', generation: { max_new_tokens: 256, stop: ['\n\n', 'Question:'], extract: 'gsm8k' }, role: 'target' },
  { name: 'svamp', kind: 'generate', data: 'svamp/test.json', preprocess: 'svamp', prompt: 'Question: {question}\nAnswer:', answer: 'target', generation: { max_new_tokens: 64, stop: ['\n\n', 'Question:'], extract: 'last_number' }, role: 'target' },
  { name: 'tinystories', kind: 'perplexity', data: 'text/tinystories_lowercase_sample.txt', split: 'blank_lines', max_chars: 200_000, primary: 'next_token_acc' },
  { name: 'shakespeare', kind: 'perplexity', data: 'text/shakespeare.txt', split: 'whole', primary: 'bits_per_char' },
  { name: 'darwin', kind: 'perplexity', data: 'text/darwin.txt', split: 'whole', max_chars: 1_000_000, unknown_chars: 'drop', primary: 'bits_per_char' },
  { name: 'wikitext2', kind: 'perplexity', data: 'text/wikitext2_excerpt.txt', split: 'whole', max_chars: 500_000, primary: 'bits_per_char' },
  { name: 'c4', kind: 'perplexity', data: 'text/c4_demo.jsonl', split: 'records', primary: 'bits_per_char' },
];

/** Task groups users can name instead of listing tasks. */
export const TASK_GROUPS: Record<string, string[]> = {
  commonsense: ['arc_easy', 'arc_challenge', 'piqa', 'siqa', 'winogrande', 'openbookqa', 'boolq', 'hellaswag'],
};

// Files whose layout no generic reader covers.
function readPiqa(path: string): Record_[] {
  const dir = dirname(path);
  const labelsPath = join(dir, 'valid-labels.lst');
  if (!existsSync(labelsPath)) throw new Error(`task data not found: ${labelsPath} (PIQA's labels beside valid.jsonl)`);
  const labels = readFileSync(labelsPath, 'utf8').trim().split(/\r?\n/).map(Number);
  const rows = readFileSync(path, 'utf8').trim().split(/\r?\n/).map((l, i) => ({ id: `piqa-${i}`, ...(JSON.parse(l) as object) }) as Record_);
  if (rows.length !== labels.length) throw new Error(`${path}: ${rows.length} records but ${labels.length} labels in valid-labels.lst`);
  return rows.map((r, i) => ({ ...r, label: labels[i] }));
}

function readHellaswag(path: string): Record_[] {
  let text: string;
  try {
    text = path.endsWith('.bz2') ? execFileSync('bzip2', ['-dc', path], { maxBuffer: 1 << 28 }).toString('utf8') : readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: could not decompress (${(e as Error).message.split('\n')[0]}); install bzip2 (apt-get install bzip2)`);
  }
  const lines = text.split(/\r?\n/);
  const out: Record_[] = [];
  for (let i = 0; i + 5 < lines.length; i += 6) {
    const label = Number(lines[i + 1]);
    if (!(label >= 0 && label <= 3)) throw new Error(`${path}: line ${i + 2} should be the gold index 0-3, got '${lines[i + 1]}'`);
    out.push({ id: `hellaswag-${i / 6}`, ctx: lines[i], label, endings: lines.slice(i + 2, i + 6) });
  }
  return out;
}

async function readMmluDir(path: string): Promise<Record_[]> {
  const files = readdirSync(path).filter((f) => f.endsWith('.csv')).sort();
  const out: Record_[] = [];
  for (const f of files) {
    const rows = await readRecords(join(path, f), { format: 'csv' });
    rows.forEach((r, i) => out.push({ ...r, id: `${f.replace(/_dev\.csv$/, '')}-${i}`, subject: f.replace(/_dev\.csv$/, '') }));
  }
  return out;
}

export async function readTaskRecords(spec: TaskSpec, path: string): Promise<Record_[]> {
  if (spec.preprocess === 'piqa') return readPiqa(path);
  if (spec.preprocess === 'hellaswag') return readHellaswag(path);
  if (statSync(path).isDirectory()) return readMmluDir(path);
  // Line ends are kept: a tokenizer reads '\r' as any other character, and a character vocabulary without one reads
  // '\r\n' as '\n' itself (CharVocab.encode).
  if (spec.kind === 'perplexity' && spec.split !== 'records') return [{ id: 'text', text: decodeUtf8(readUserFile(path), path) }];
  return readRecords(path, { format: spec.reader });
}

// --- From records to docs --------------------------------------------------------------------------------------------

export function normalizeNumber(s: string): string {
  const t = s.replace(/[,$\s]/g, '').replace(/\.$/, '');
  const n = Number(t);
  return Number.isFinite(n) && t !== '' ? String(n) : t;
}

function goldIndex(v: unknown, choices: string[], labels: string[] | undefined, id: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) {
    if (v < 0 || v >= choices.length) throw new Error(`record ${id}: answer index ${v} is outside 0..${choices.length - 1}`);
    return v;
  }
  const s = String(v).trim();
  if (labels && labels.includes(s)) return labels.indexOf(s);
  if (/^\d+$/.test(s) && Number(s) < choices.length) return Number(s);
  const byText = choices.findIndex((c) => c.trim() === s);
  if (byText >= 0) return byText;
  throw new Error(`record ${id}: answer '${s}' is neither a choice index, a choice label${labels ? ` (${labels.join(', ')})` : ''} nor the text of a choice`);
}

// Class labels '0'..'65535' for goldIndex, built once: building them per image made scoring 2,000 digits take ~10 s.
let classIndexCache: string[] | null = null;
function classIndices(): string[] {
  return (classIndexCache ??= Array.from({ length: 1 << 16 }, (_, i) => String(i)));
}

const preamble = (spec: TaskSpec, x: Record_, id: string) => (spec.preamble ? fillTemplate(spec.preamble, x, id) : undefined);

export function toDoc(spec: TaskSpec, r: Record_): Doc {
  const pre = spec.preprocess && spec.preprocess !== 'piqa' ? PREPROCESS[spec.preprocess] : undefined;
  if (spec.preprocess && !pre && spec.preprocess !== 'piqa') {
    throw new Error(`task ${spec.name}: unknown preprocess '${spec.preprocess}'; use one of ${[...Object.keys(PREPROCESS), 'piqa'].join(', ')}`);
  }
  const x = pre ? pre(r) : r;
  const id = String(x.id);
  switch (spec.kind) {
    case 'multiple_choice': {
      const prompt = fillTemplate(spec.prompt ?? '', x, id);
      let choices: string[];
      if (Array.isArray(spec.choices)) choices = spec.choices.map((c) => fillTemplate(c, x, id));
      else if (typeof spec.choices === 'string') {
        const v = x[spec.choices];
        if (!Array.isArray(v)) throw new Error(`record ${id}: choices field '${spec.choices}' is ${v === undefined ? 'missing' : 'not a list'} (${recordFields(x)})`);
        choices = v.map(String);
      } else throw new Error(`task ${spec.name}: a multiple_choice task needs 'choices' (a field name or a list of templates)`);
      const contexts = spec.contexts ? (x[spec.contexts] as string[]) : undefined;
      if (spec.contexts && (!Array.isArray(contexts) || contexts.length !== choices.length)) throw new Error(`record ${id}: contexts field '${spec.contexts}' must list one context per choice`);
      if (x[spec.answer] === undefined) throw new Error(`record ${id}: answer field '${spec.answer}' is missing (${recordFields(x)})`);
      return { id, prompt, preamble: preamble(spec, x, id), contexts, choices, gold: goldIndex(x[spec.answer], choices, spec.choice_labels, id) };
    }
    case 'generate': {
      const a = x[spec.answer];
      if (a === undefined) throw new Error(`record ${id}: answer field '${spec.answer}' is missing (${recordFields(x)})`);
      return { id, prompt: fillTemplate(spec.prompt ?? '', x, id), preamble: preamble(spec, x, id), answer: String(a) };
    }
    case 'perplexity': {
      const t = x[spec.text_field];
      if (typeof t !== 'string') throw new Error(`record ${id}: text field '${spec.text_field}' is ${t === undefined ? 'missing' : 'not a string'} (${recordFields(x)})`);
      return { id, prompt: '', text: t };
    }
    case 'image_classification': {
      const px = x[spec.image_field];
      if (!Array.isArray(px)) throw new Error(`record ${id}: image field '${spec.image_field}' is not an array of pixels`);
      const n = spec.image_shape.reduce((a, b) => a * b, 1);
      if (px.length !== n) throw new Error(`record ${id}: image has ${px.length} values, image_shape ${JSON.stringify(spec.image_shape)} needs ${n}`);
      const img = Float32Array.from(px as number[], (v) => v / spec.image_scale);
      return { id, prompt: '', image: img, label: goldIndex(x[spec.answer], classIndices(), spec.choice_labels, id) };
    }
  }
}

/** Splits a corpus into documents for perplexity tasks. */
export function splitText(spec: TaskSpec, docs: Doc[]): Doc[] {
  let out = docs;
  if (spec.split === 'blank_lines' || spec.split === 'lines') {
    const sep = spec.split === 'blank_lines' ? /\r?\n\s*\r?\n/ : /\r?\n/;
    out = docs.flatMap((d) => d.text!.split(sep).map((t, i) => ({ ...d, id: `${d.id}-${i}`, text: t.trim() })).filter((d) => d.text.length > 0));
  }
  if (spec.max_chars) {
    const kept: Doc[] = [];
    let budget = spec.max_chars;
    for (const d of out) {
      if (budget <= 0) break;
      kept.push(d.text!.length <= budget ? d : { ...d, text: d.text!.slice(0, budget) });
      budget -= d.text!.length;
    }
    out = kept;
  }
  return out;
}

// --- Lookup ----------------------------------------------------------------------------------------------------------

export function noExamples(task: string, path: string): string {
  return `${task}: ${path} holds no examples; point the task's data at a file with records, or leave the task out`;
}

export interface ResolvedTask {
  spec: TaskSpec;
  dataPath: string;
  fewshotPath: string | null;
  /** An lm-evaluation-harness task file's task (scored by lmeval-run.ts; `spec` then only names and describes it). */
  lmeval?: LmevalTask;
}

export function parseTaskSpec(raw: unknown, source: string): TaskSpec {
  const r = taskSpecSchema.safeParse(raw);
  if (!r.success) throw new Error(formatIssues(r.error, source).replace('invalid config', 'invalid task'));
  const s = r.data;
  if (s.kind === 'multiple_choice' && !s.choices) throw new Error(`invalid task ${source}: a multiple_choice task needs 'choices'`);
  return s;
}

/** A task file's parsed YAML / JSON (one task or a list), refused when empty. */
function readTaskYaml(file: string): unknown[] {
  if (!existsSync(file)) throw new Error(`task file not found: ${file}`);
  let raw: unknown;
  const text = decodeUtf8(readUserFile(file), file);
  try {
    // lm-evaluation-harness files may carry !function tags; they are read so that they can be refused by name.
    raw = parseYaml(text, { customTags: yamlTags });
  } catch (e) {
    throw new Error(`${file}: not valid YAML/JSON (${(e as Error).message})`);
  }
  // YAML reads an empty file (or one of comments only) as null, which zod would report as "Expected object".
  if (raw === null || raw === undefined) throw new Error(`${file}: the task file is empty; write one task (name, kind, data, …) or a list of them (README, "Evaluation tasks")`);
  const list = Array.isArray(raw) ? raw : [raw];
  if (list.length === 0) throw new Error(`${file}: the task file is an empty list; list at least one task (name, kind, data, …)`);
  return list;
}

/** Reads a task file of retain's own format (one task or a list). */
export function readTaskFile(file: string): TaskSpec[] {
  const list = readTaskYaml(file);
  return list.map((t, i) => parseTaskSpec(t, list.length > 1 ? `${file}[${i}]` : file));
}

/** An lm-evaluation-harness task file as a resolved task; its spec holds what tables and results name. */
function resolveLmevalFile(file: string, raw: Record<string, unknown>, numFewshot?: number): ResolvedTask {
  const t = lmevalTask(raw, file, numFewshot);
  const kind = ({ multiple_choice: 'multiple_choice', loglikelihood: 'multiple_choice', generate_until: 'generate', loglikelihood_rolling: 'perplexity' } as const)[t.config.output_type];
  const version = Number(t.config.metadata?.version ?? 0);
  const spec = parseTaskSpec({ name: t.config.task, version: Number.isInteger(version) && version >= 0 ? version : 0, kind, data: t.evalFiles[0], num_fewshot: t.config.num_fewshot ?? 0, primary: t.metrics[0].metric, choices: kind === 'multiple_choice' ? 'choices' : undefined }, file);
  return { spec, dataPath: t.evalFiles[0], fewshotPath: null, lmeval: t };
}

/**
 * Resolves names (built-in tasks, groups) and task files to specs with their data paths. Data is looked up now so a
 * missing file fails before any model work, naming where it looked.
 */
export function resolveTasks(names: string[], opts: { dataDir?: string; role?: Record<string, Role>; numFewshot?: number } = {}): ResolvedTask[] {
  const out: ResolvedTask[] = [];
  // Results are keyed by task name: a second task of the same name would overwrite the first's block and repeat its rows.
  const from = new Map<string, string>();
  const dirs = dataDirs(opts.dataDir);
  for (const [n, group] of names.flatMap((x) => TASK_GROUPS[x]?.map((t) => [t, x] as const) ?? [[x, null] as const])) {
    let specs: TaskSpec[];
    let base = dirs;
    let where = group ? `group ${group}` : `built-in ${n}`;
    if (/\.(ya?ml|json)$/.test(n) || existsSync(n)) {
      const list = readTaskYaml(n);
      if (list.length === 1 && isLmevalTaskConfig(list[0])) {
        const t = resolveLmevalFile(n, list[0], opts.numFewshot);
        const prev = from.get(t.spec.name);
        if (prev !== undefined) throw new Error(`task '${t.spec.name}' appears twice (in ${prev} and in ${n}); results are keyed by task name, so rename one (task: ...) or list it once`);
        from.set(t.spec.name, n);
        if (opts.role?.[t.spec.name]) t.spec.role = opts.role[t.spec.name];
        out.push(t);
        continue;
      }
      if (list.length > 1 && list.some(isLmevalTaskConfig)) throw new Error(`${n}: a list of lm-evaluation-harness tasks; give each its own file (one task: per file, as lm_eval reads them)`);
      specs = list.map((t, i) => parseTaskSpec(t, list.length > 1 ? `${n}[${i}]` : n));
      where = n;
      base = [dirname(resolve(n)), ...dirs];
    } else {
      const b = BUILTIN_TASKS.find((t) => t.name === n);
      if (!b) throw new Error(`unknown task '${n}'; built-in tasks: ${BUILTIN_TASKS.map((t) => t.name).join(', ')}; groups: ${Object.keys(TASK_GROUPS).join(', ')}; or give a task file (.yaml/.json)`);
      specs = [parseTaskSpec(b, `built-in ${n}`)];
    }
    for (const spec of specs) {
      const prev = from.get(spec.name);
      if (prev !== undefined) {
        throw new Error(`task '${spec.name}' appears twice (${prev === where ? `in ${where}` : `in ${prev} and in ${where}`}); results are keyed by task name, so rename one (name: ...) or list it once`);
      }
      from.set(spec.name, where);
      if (opts.role?.[spec.name]) spec.role = opts.role[spec.name];
      if (opts.numFewshot !== undefined) spec.num_fewshot = opts.numFewshot;
      const dataPath = resolveData(spec.data, base);
      // An empty file is refused here, before any model is loaded; files that parse to no records, in loadDocs.
      if (statSync(dataPath).isFile() && statSync(dataPath).size === 0) throw new Error(noExamples(spec.name, dataPath));
      out.push({ spec, dataPath, fewshotPath: spec.fewshot_data && spec.num_fewshot > 0 ? resolveData(spec.fewshot_data, base) : null });
    }
  }
  return out;
}

export function defaultPrimary(spec: TaskSpec): string {
  if (spec.primary) return spec.primary;
  return { multiple_choice: 'acc', generate: 'exact_match', perplexity: 'bits_per_char', image_classification: 'acc' }[spec.kind];
}
