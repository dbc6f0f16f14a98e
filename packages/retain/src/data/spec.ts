// A data spec: where a set of examples lives and how its records read (`data.train`, `data.eval`, and a method's own
// data such as mixing's general source or EWC's Fisher data). Methods in code may pass Examples instead.
import { z } from 'zod';
import { count, mark } from '../options.js';
import type { Example } from './formats.js';

/** The most values one image example may hold (2^26 floats: 256 MB per example). */
const MAX_FEATURES = 2 ** 26;

// Field mappings as LLaMA-Factory's dataset_info.json names them (`columns`, and sharegpt's `tags`).
const alpacaColumns = z.object({ prompt: z.string().default('instruction'), query: z.string().default('input'), response: z.string().default('output'), system: z.string().default('system'), history: z.string().default('history') }).strict();
const sharegptColumns = z.object({ messages: z.string().default('conversations'), system: z.string().default('system'), tools: z.string().default('tools') }).strict();
const sharegptTags = z.object({ role_tag: z.string().default('from'), content_tag: z.string().default('value'), user_tag: z.string().default('human'), assistant_tag: z.string().default('gpt'), observation_tag: z.string().default('observation'), function_tag: z.string().default('function_call'), system_tag: z.string().default('system') }).strict();
const messagesColumns = z.object({ messages: z.string().default('messages'), tools: z.string().default('tools') }).strict();

const formatSchema = z.discriminatedUnion('type', [
  // chat_template: render prompt and completion with the model's chat template (TRL's conversational form, which a
  // record whose prompt is a message list takes anyway); the loss stays on the completion.
  z.object({ type: z.literal('prompt_completion'), prompt_field: z.string().default('prompt'), completion_field: z.string().default('completion'), template: z.string().optional(), chat_template: z.boolean().default(false) }).strict(),
  z.object({ type: z.literal('alpaca'), columns: alpacaColumns.default({}) }).strict(),
  z.object({ type: z.literal('sharegpt'), columns: sharegptColumns.default({}), tags: sharegptTags.default({}) }).strict(),
  z.object({ type: z.literal('messages'), columns: messagesColumns.default({}) }).strict(),
  z.object({ type: z.literal('chat'), messages_field: z.string().default('messages') }).strict(),
  z.object({ type: z.literal('text'), text_field: z.string().default('text') }).strict(),
  z.object({ type: z.literal('classification'), text_field: z.string().default('text'), label_field: z.string().default('label'), labels: z.array(z.string()).min(2), template: z.string().optional() }).strict(),
  // Dense inputs (image pixels) and a class index; the run trains with the classification loss (MNIST MLP).
  z.object({ type: z.literal('image_classification'), image_field: z.string().default('image'), label_field: z.string().default('label'), shape: z.array(count(1, MAX_FEATURES)).min(1).default([784]).refine((s) => s.reduce((a, b) => a * b, 1) <= MAX_FEATURES, (s) => ({ message: `shape [${s.join(', ')}] has ${s.reduce((a, b) => a * b, 1)} elements per example; at most ${MAX_FEATURES}` })), num_classes: count(2, 1e6), scale: z.number().positive().default(1) }).strict(),
]);

export const dataSpecSchema = z.object({
  path: z.string().describe('The data file (relative to the config file).'),
  format: formatSchema.describe('How records read: type and its field names.'),
  reader: z.enum(['jsonl', 'json', 'csv', 'tsv', 'parquet', 'txt']).optional().describe('File reader; inferred from the extension when absent.'),
  max_length: count(1, 1e7).default(512).describe('Tokens per example at most (longer ones are cut).'),
  pack: z.boolean().default(false).describe('Pack examples end to end into blocks of max_length (raw text).'),
  limit: count(1, Number.MAX_SAFE_INTEGER).optional().describe('Use only the first N records.'),
  name: z.string().optional().describe('The source name in logs and per-source shares.'),
  unknown_chars: z.enum(['error', 'drop']).default('error').describe('Characters a character vocabulary lacks: an error naming the file and line, or left out of the text.'),
}).strict();

export type DataSpec = z.infer<typeof dataSpecSchema>;

/** Examples already tokenized, as code passes them: a list, or `{ examples, name }` naming their source. */
export type GivenExamples = Example[] | { examples: Example[]; name?: string };

export function isExampleList(v: unknown): v is Example[] {
  return Array.isArray(v) && v.every((e) => e && typeof e === 'object' && typeof (e as Example).id === 'string' && Array.isArray((e as Example).ids));
}

function isGivenExamples(v: unknown): v is GivenExamples {
  return isExampleList(v) || (!!v && typeof v === 'object' && isExampleList((v as { examples?: unknown }).examples));
}

const DATA_WHAT = 'Examples or a data spec {path, format, ...}';

/** A data spec given its defaults, or Examples as they are; issues keep their codes, under the option's key. */
function checkSpec(v: unknown, ctx: z.RefinementCtx, path: (string | number)[]): DataSpec | GivenExamples {
  if (isGivenExamples(v)) return v;
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: DATA_WHAT, path });
    return z.NEVER;
  }
  const r = dataSpecSchema.safeParse(v);
  if (r.success) return r.data;
  for (const i of r.error.issues) ctx.addIssue({ ...i, path: [...path, ...i.path] });
  return z.NEVER;
}

/** Where `retain schema` keeps the data spec's JSON Schema once, for every method field that holds one. */
export const DATA_SPEC_DEF = 'data_spec';
const specJson = () => ({ $ref: `#/$defs/${DATA_SPEC_DEF}` });

/**
 * A method option holding data: a data spec in a config (checked and given its defaults here; the loader resolves its
 * path against the config file's folder), or Examples in code. Marked, so that the loader and `retain schema` know the
 * field holds data without guessing from its value. `role` says what the data is for when it is missing.
 */
export function dataSpec(role?: string) {
  const t = z.custom<unknown>((v) => v !== undefined, { message: role ? `${role}: ${DATA_WHAT}` : DATA_WHAT }).transform((v, ctx) => checkSpec(v, ctx, []));
  return mark(t, 'data', specJson);
}

/** Like dataSpec, but a list of data specs is taken too (mixing's general sources); parsed values are always a list. */
export function dataSpecs(role?: string) {
  const what = `${role ? `${role}: ` : ''}${DATA_WHAT}, or a list of them`;
  const t = z.custom<unknown>((v) => v !== undefined, { message: what }).transform((v, ctx) => {
    const list = Array.isArray(v) && !isExampleList(v) ? v : [v];
    if (list.length === 0) ctx.addIssue({ code: z.ZodIssueCode.custom, message: what });
    return list.map((e, i) => checkSpec(e, ctx, list === v ? [i] : []));
  });
  return mark(t, 'data', () => ({ anyOf: [specJson(), { type: 'array', items: specJson(), minItems: 1 }] }));
}
