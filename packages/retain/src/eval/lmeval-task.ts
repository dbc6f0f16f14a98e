// Task files in lm-evaluation-harness's YAML, the common subset: local data files, Jinja or field-name prompts,
// the four output types, metric_list, few-shot settings. A file is read into an LmevalTask; lmeval-run.ts scores it.
// Keys outside the subset are refused by name rather than ignored, since each changes what is measured.
import { existsSync, statSync, readdirSync } from 'node:fs';
import { basename, dirname, extname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { formatIssues } from '../options.js';
import { readRecords } from '../data/readers.js';
import { renderText, renderValue } from './lmeval-jinja.js';

export const OUTPUT_TYPES = ['multiple_choice', 'generate_until', 'loglikelihood', 'loglikelihood_rolling'] as const;
export type OutputType = (typeof OUTPUT_TYPES)[number];

/** Metrics each output type can report, as lm_eval names them. */
export const METRICS: Record<OutputType, string[]> = {
  multiple_choice: ['acc', 'acc_norm', 'acc_bytes', 'exact_match'],
  generate_until: ['exact_match'],
  loglikelihood: ['perplexity', 'acc'],
  loglikelihood_rolling: ['word_perplexity', 'byte_perplexity', 'bits_per_byte'],
};

/** lm_eval's default metrics of an output type when metric_list is absent. */
const DEFAULT_METRICS: Record<OutputType, string[]> = {
  multiple_choice: ['acc', 'acc_norm'],
  generate_until: ['exact_match'],
  loglikelihood: ['perplexity', 'acc'],
  loglikelihood_rolling: ['word_perplexity', 'byte_perplexity', 'bits_per_byte'],
};

const LOWER_IS_BETTER = new Set(['perplexity', 'word_perplexity', 'byte_perplexity', 'bits_per_byte']);

const metricSchema = z.object({
  metric: z.string(),
  aggregation: z.string().optional(),
  higher_is_better: z.boolean().optional(),
  // exact_match's options (lm_eval passes them to its exact_match).
  ignore_case: z.boolean().default(false),
  ignore_punctuation: z.boolean().default(false),
  ignore_numbers: z.boolean().default(false),
  regexes_to_ignore: z.array(z.string()).optional(),
}).strict();

const filesSchema = z.union([z.string(), z.array(z.string()), z.record(z.union([z.string(), z.array(z.string())]))]);
const templateSchema = z.union([z.string(), z.number().int()]);

const configSchema = z.object({
  task: z.string().regex(/^[\w.-]+$/, 'use letters, digits, _ . -'),
  // Labels for selecting tasks by name in lm_eval (older files call them group); nothing to run.
  tag: z.union([z.string(), z.array(z.string())]).optional(),
  group: z.union([z.string(), z.array(z.string())]).optional(),
  dataset_path: z.string(),
  dataset_name: z.null().optional(),
  dataset_kwargs: z.object({ data_files: filesSchema.optional(), data_dir: z.string().optional() }).strict().optional(),
  output_type: z.enum(OUTPUT_TYPES).default('generate_until'),
  test_split: z.string().nullable().optional(),
  validation_split: z.string().nullable().optional(),
  training_split: z.string().nullable().optional(),
  fewshot_split: z.string().nullable().optional(),
  doc_to_text: templateSchema.optional(),
  doc_to_target: z.union([templateSchema, z.array(z.string())]).optional(),
  doc_to_choice: z.union([z.string(), z.array(z.string()), z.record(z.string())]).optional(),
  description: z.string().default(''),
  target_delimiter: z.string().default(' '),
  fewshot_delimiter: z.string().default('\n\n'),
  num_fewshot: z.number().int().min(0).nullable().optional(),
  fewshot_config: z.object({ sampler: z.enum(['default', 'first_n']).default('default') }).strict().optional(),
  generation_kwargs: z.object({
    until: z.union([z.string(), z.array(z.string())]).optional(),
    max_gen_toks: z.number().int().positive().default(256),
    do_sample: z.literal(false, { errorMap: () => ({ message: 'retain decodes greedily; set do_sample: false or leave it out' }) }).optional(),
    temperature: z.literal(0, { errorMap: () => ({ message: 'retain decodes greedily; set temperature: 0 or leave it out' }) }).optional(),
  }).strict().optional(),
  metric_list: z.array(metricSchema).min(1).optional(),
  repeats: z.literal(1).optional(),
  should_decontaminate: z.literal(false).optional(),
  unsafe_code: z.literal(false).optional(),
  metadata: z.record(z.unknown()).optional(),
}).strict();

export type LmevalConfig = z.infer<typeof configSchema>;
export type LmevalMetric = z.infer<typeof metricSchema>;

/** lm_eval keys that retain does not run, with what to do instead. */
const UNSUPPORTED: Record<string, string> = {
  process_docs: 'prepare the records in the data file instead',
  process_results: 'use metric_list with acc, acc_norm, exact_match or the perplexities',
  filter_list: 'filters (regex answer extraction) are not supported; lm_eval\'s default "none" filter is',
  include: 'copy the included file\'s keys into this one',
  custom_dataset: 'point dataset_path and dataset_kwargs.data_files at local files',
  gen_prefix: 'put the prefix at the end of doc_to_text',
  doc_to_image: 'retain evaluates text tasks', doc_to_audio: 'retain evaluates text tasks',
  use_prompt: 'write doc_to_text / doc_to_target instead of a promptsource prompt',
};

/** A resolved lm-eval task: its config and where each split's records come from. */
export interface LmevalTask {
  file: string;
  config: LmevalConfig;
  /** Records of the split scored (test, else validation). */
  evalFiles: string[];
  evalSplit: string;
  /** Records few-shot examples are drawn from, and their split. */
  fewshotFiles: string[];
  fewshotSplit: string;
  metrics: LmevalMetric[];
}

/** Whether a parsed task file is lm-eval's (it names its task `task:`; retain's own task files use `name:`). */
export function isLmevalTaskConfig(raw: unknown): raw is Record<string, unknown> {
  return typeof raw === 'object' && raw !== null && !Array.isArray(raw) && ('task' in raw || 'group' in raw) && !('name' in raw);
}

/** Validates an lm-eval task config; an unsupported key is named with what to do instead. */
export function parseLmevalConfig(raw: Record<string, unknown>, file: string): LmevalConfig {
  if (typeof raw.task !== 'string') throw new Error(`${file}: an lm-eval group file (its task: lists tasks) is not supported; give each task's file to --tasks instead`);
  for (const k of Object.keys(raw)) if (UNSUPPORTED[k]) throw new Error(`${file}: lm-eval key '${k}' is not supported by retain (${UNSUPPORTED[k]})`);
  for (const [k, v] of Object.entries(raw)) if (v instanceof FunctionTag) throw new Error(`${file}: ${k}: !function (Python code) is not supported by retain; write ${k} as a Jinja template or a field name`);
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    const msg = formatIssues(r.error, file).replace('invalid config', 'invalid lm-eval task');
    throw new Error(msg.replace(/unknown keys? ('[^']+'(, '[^']+')*)/, (m) => `${m} (not in the lm-eval subset retain runs: README, "lm-evaluation-harness task files")`));
  }
  const c = r.data;
  if (c.output_type === 'multiple_choice' && c.doc_to_choice === undefined) throw new Error(`${file}: output_type multiple_choice needs doc_to_choice`);
  if (c.output_type !== 'loglikelihood_rolling' && c.doc_to_text === undefined) throw new Error(`${file}: doc_to_text is missing (a Jinja template or a field name)`);
  if (c.doc_to_target === undefined) throw new Error(`${file}: doc_to_target is missing (a Jinja template or a field name)`);
  for (const m of c.metric_list ?? []) {
    if (!METRICS[c.output_type].includes(m.metric)) throw new Error(`${file}: metric '${m.metric}' is not one retain computes for output_type ${c.output_type} (use ${METRICS[c.output_type].join(', ')})`);
  }
  return c;
}

/** YAML's `!function utils.fn` tag, kept as a marker so that it can be refused by name. */
export class FunctionTag {
  constructor(readonly name: string) {}
}

export const yamlTags = [{ tag: '!function', resolve: (s: string) => new FunctionTag(s) }];

const READABLE = new Set(['json', 'jsonl', 'csv', 'parquet']);

/** A data_files path: absolute; else against the working directory (as lm_eval's datasets does), else the task file's folder. */
function dataPath(p: string, file: string): string {
  if (isAbsolute(p)) {
    if (!existsSync(p)) throw new Error(`${file}: data file not found: ${p}`);
    return p;
  }
  for (const base of [process.cwd(), dirname(resolve(file))]) if (existsSync(join(base, p))) return join(base, p);
  throw new Error(`${file}: data file ${p} not found in the working directory (${process.cwd()}) or beside the task file`);
}

/** Split name → data files, from dataset_kwargs.data_files or a local dataset folder's <split>.<ext> files. */
function splitFiles(c: LmevalConfig, file: string): Map<string, string[]> {
  const df = c.dataset_kwargs?.data_files;
  const builder = c.dataset_path;
  const out = new Map<string, string[]>();
  if (df !== undefined) {
    if (!READABLE.has(builder)) throw new Error(`${file}: dataset_path '${builder}' with data_files: use json, csv or parquet (the file format), as Hugging Face datasets names them`);
    // A bare path or list is the "train" split, as datasets.load_dataset reads it.
    const entries = typeof df === 'string' || Array.isArray(df) ? [['train', df] as const] : Object.entries(df);
    for (const [split, f] of entries) out.set(split, (Array.isArray(f) ? f : [f]).map((p) => dataPath(p, file)));
    return out;
  }
  const dir = (() => {
    for (const base of [process.cwd(), dirname(resolve(file))]) if (existsSync(join(base, builder))) return join(base, builder);
    return isAbsolute(builder) && existsSync(builder) ? builder : null;
  })();
  if (!dir) throw new Error(`${file}: dataset_path '${builder}' is neither a local file or folder nor json/csv/parquet with dataset_kwargs.data_files; retain reads local data only (no Hugging Face Hub download)`);
  if (!statSync(dir).isDirectory()) return new Map([['train', [dir]]]);
  for (const f of readdirSync(dir).sort()) {
    const ext = extname(f).slice(1);
    const m = /^([a-z]+)(?:[-_.].*)?$/.exec(f.slice(0, -(ext.length + 1)));
    if (!READABLE.has(ext) || !m) continue;
    out.set(m[1], [...(out.get(m[1]) ?? []), join(dir, f)]);
  }
  if (!out.size) throw new Error(`${file}: dataset_path ${dir} holds no <split>.jsonl / .json / .csv / .parquet files`);
  return out;
}

/** Reads a task file's config (parsed YAML) into an LmevalTask; `numFewshot` overrides num_fewshot (--num-fewshot). */
export function lmevalTask(raw: Record<string, unknown>, file: string, numFewshot?: number): LmevalTask {
  const config = parseLmevalConfig(raw, file);
  if (numFewshot !== undefined) config.num_fewshot = numFewshot;
  const splits = splitFiles(config, file);
  const pick = (name: string | null | undefined, key: string): string[] | null => {
    if (!name) return null;
    const f = splits.get(name);
    if (!f) throw new Error(`${file}: ${key} '${name}' is not one of the data's splits (${[...splits.keys()].join(', ')})`);
    return f;
  };
  // lm_eval scores the test split when there is one, else the validation split.
  const evalSplit = config.test_split ?? config.validation_split;
  if (!evalSplit) throw new Error(`${file}: name the split to score with test_split or validation_split (the data has ${[...splits.keys()].join(', ')})`);
  const evalFiles = pick(evalSplit, config.test_split ? 'test_split' : 'validation_split')!;
  // Few-shot examples: fewshot_split, else the training split, else validation, else the scored split itself.
  const fewshotSplit = config.fewshot_split ?? config.training_split ?? config.validation_split ?? evalSplit;
  const fewshotFiles = pick(fewshotSplit, 'fewshot split')!;
  const metrics = config.metric_list ?? DEFAULT_METRICS[config.output_type].map((metric) => metricSchema.parse({ metric }));
  return { file, config, evalFiles, evalSplit, fewshotFiles, fewshotSplit, metrics };
}

export function higherIsBetter(m: LmevalMetric): boolean {
  return m.higher_is_better ?? !LOWER_IS_BETTER.has(m.metric);
}

/**
 * A split's records (several files one after another) as lm_eval's docs: without the id retain's reader gives a
 * record that has none, and with CSV numbers as numbers (datasets reads CSV through pandas, which infers them).
 */
export async function readSplit(files: string[]): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for (const f of files) {
    const stem = basename(f, extname(f));
    const csv = extname(f).toLowerCase() === '.csv';
    (await readRecords(f)).forEach((r, i) => {
      const doc: Record<string, unknown> = { ...r };
      if (doc.id === `${stem}:${i}`) delete doc.id;
      if (csv) for (const [k, v] of Object.entries(doc)) if (typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v)) doc[k] = Number(v);
      out.push(doc);
    });
  }
  return out;
}

// --- Doc fields (lm_eval's doc_to_text, doc_to_choice, doc_to_target) -------------------------------------------

/** A field name the doc has is read as is; anything else is a Jinja template. */
function field(doc: Record<string, unknown>, spec: string | number, where: string, asValue: boolean): unknown {
  if (typeof spec === 'number') return spec;
  if (spec in doc) return doc[spec];
  return asValue ? renderValue(spec, doc, where) : renderText(spec, doc, where);
}

export function docText(c: LmevalConfig, doc: Record<string, unknown>): string {
  const v = field(doc, c.doc_to_text ?? '', 'doc_to_text', false);
  if (typeof v !== 'string') throw new Error(`doc_to_text gave ${JSON.stringify(v)}, not text; a doc_to_text naming the correct choice (WinoGrande's partial scoring) is not supported`);
  return v;
}

export function docChoices(c: LmevalConfig, doc: Record<string, unknown>): string[] | null {
  const spec = c.doc_to_choice;
  if (spec === undefined) return null;
  const v = Array.isArray(spec) ? spec : typeof spec === 'object' ? Object.values(spec) : field(doc, spec, 'doc_to_choice', true);
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new Error(`doc_to_choice gave ${JSON.stringify(v)}, not a list of strings`);
  return v as string[];
}

/**
 * The target as lm_eval reads it: with doc_to_choice, a digit string is an index; a list is a list of targets;
 * else text. Numbers without choices are text, as Jinja prints them.
 */
export function docTarget(c: LmevalConfig, doc: Record<string, unknown>): number | string | unknown[] {
  const spec = c.doc_to_target!;
  if (Array.isArray(spec)) return spec;
  const fromField = typeof spec === 'string' && spec in doc;
  const v = field(doc, spec, 'doc_to_target', true);
  const choices = c.doc_to_choice !== undefined;
  if (typeof v === 'number') return choices || fromField ? v : String(v);
  if (typeof v === 'string') return choices && /^\d+$/.test(v) && !fromField ? Number(v) : v;
  if (Array.isArray(v)) return v;
  throw new Error(`doc_to_target gave ${JSON.stringify(v)}, not an index, text or list`);
}

export function docDescription(c: LmevalConfig, doc: Record<string, unknown>): string {
  if (!c.description) return '';
  return c.description in doc ? String(doc[c.description]) : renderText(c.description, doc, 'description');
}
