// The `retain train` configuration: one zod schema gives the types, the validation messages and the defaults.
// Unknown keys are errors (a typo must not silently fall back to a default).
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { decodeUtf8, readUserFile } from './files.js';
import { applyOverrides } from './overrides.js';
import { ConfigError } from './errors.js';

/**
 * A count or size from `min` to `max`. zod's int() takes 1e300 (an integer to JavaScript), which then loops for ever
 * (max_steps) or asks for terabytes (batch_size); every integer setting has a ceiling far above any real run's.
 */
const count = (min: number, max: number) => z.number().int().min(min).max(max);
const STEPS = 1e9;
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

const dataSchema = z.object({
  path: z.string(),
  format: formatSchema,
  /** Reader: inferred from the extension when absent. */
  reader: z.enum(['jsonl', 'json', 'csv', 'tsv', 'parquet', 'txt']).optional(),
  max_length: count(1, 1e7).default(512),
  /** Pack examples end to end into blocks of max_length (raw text). */
  pack: z.boolean().default(false),
  /** Use only the first N records. */
  limit: count(1, Number.MAX_SAFE_INTEGER).optional(),
  name: z.string().optional(),
  /** Characters a character vocabulary lacks: an error naming the file and line, or left out of the text. */
  unknown_chars: z.enum(['error', 'drop']).default('error'),
}).strict();

export const trainConfigSchema = z.object({
  model: z.object({
    path: z.string(),
    tokenizer: z.string().optional(),
    dtype: z.enum(['float32', 'bfloat16', 'float16', 'float64']).default('float32'),
    device: z.string().regex(/^(cpu|cuda(:\d+)?)$/, "use 'cpu', 'cuda' or 'cuda:N'").default('cpu'),
  }).strict(),
  data: z.object({ train: dataSchema, eval: dataSchema.optional() }).strict(),
  training: z.object({
    epochs: z.number().positive().max(1e6).default(1),
    max_steps: count(1, STEPS).optional(),
    batch_size: count(1, 1e6).default(8),
    grad_accum: count(1, 1e6).default(1),
    optimizer: z.enum(['adamw', 'sgd']).default('adamw'),
    lr: z.number().positive().default(1e-4),
    weight_decay: z.number().min(0).default(0.0),
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]),
    momentum: z.number().min(0).lt(1).default(0),
    schedule: z.enum(['constant', 'linear', 'cosine']).default('cosine'),
    warmup_steps: count(0, STEPS).optional(),
    warmup_ratio: z.number().min(0).max(1).default(0),
    min_lr_ratio: z.number().min(0).max(1).default(0),
    clip_grad_norm: z.number().positive().nullable().default(1.0),
    seed: count(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).default(0),
    /** On CUDA bf16/fp16 autocast; bf16 on CPU: bfloat16 weights with float32 master weights (train/precision.ts); fp32 runs in the model's dtype. */
    precision: z.enum(['fp32', 'bf16', 'fp16']).default('fp32'),
    threads: count(1, 4096).optional(),
    log_every: count(1, STEPS).default(1),
    eval_every: count(1, STEPS).nullable().default(null),
    save_every: count(1, STEPS).nullable().default(null),
    keep_checkpoints: count(1, 1e6).default(2),
    /** Cross-entropy over the vocabulary this many positions at a time (train/chunked.ts); auto: only where one batch's logits would pass 2^27 values. */
    loss_chunk: z.union([count(1, 1e9), z.enum(['auto', 'off'])], { errorMap: () => ({ message: "expected a number of positions, 'auto' or 'off'" }) }).default('auto'),
    /** Recompute decoder layers in backward instead of keeping their activations (train/checkpointing.ts). */
    gradient_checkpointing: z.union([z.boolean(), z.array(count(0, 1e6)).min(1), z.object({ every: count(1, 1e6) }).strict()], {
      errorMap: () => ({ message: 'expected true (every decoder layer), a list of layer indices such as [0, 2, 4], or {every: k}' }),
    }).default(false),
  }).strict().superRefine((t, ctx) => {
    // Settings that contradict each other are refused rather than silently resolved one way.
    if (t.warmup_steps && t.warmup_ratio) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['warmup_steps'], message: `both warmup_steps (${t.warmup_steps}) and warmup_ratio (${t.warmup_ratio}) are set; keep one` });
    if (t.warmup_steps && t.max_steps && t.warmup_steps > t.max_steps) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['warmup_steps'], message: `${t.warmup_steps} is more than max_steps ${t.max_steps}: the learning rate would never reach lr` });
    if (t.momentum && t.optimizer !== 'sgd') ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['momentum'], message: `momentum applies to optimizer sgd; AdamW's momentum is betas[0]` });
  }),
  /** Forgetting monitor: probes evaluated every N steps during training (see src/train/monitor.ts). */
  monitor: z.object({
    every: count(1, STEPS),
    /** Built-in task names or task files (relative to the config file). */
    tasks: z.array(z.string()).min(1),
    /** Which of the tasks measure the new skill; the rest are general. */
    target: z.array(z.string()).default([]),
    limit: count(1, 1e9).default(200),
    max_forgetting: z.number().min(0).nullable().default(null),
    on_exceed: z.enum(['stop', 'rollback']).default('rollback'),
    data_dir: z.string().optional(),
    batch_size: count(1, 1e6).default(16),
  }).strict().optional(),
  output_dir: z.string(),
  /** Copies of metrics.jsonl for other tools: TensorBoard events and metrics.csv in output_dir (train/metrics-files.ts). */
  logging: z.object({ tensorboard: z.boolean().default(true), csv: z.boolean().default(true) }).strict().default({}),
  resume: z.boolean().default(true),
  methods: z.array(z.union([z.string(), z.record(z.unknown())])).default([]),
}).strict();

export type TrainConfig = z.infer<typeof trainConfigSchema>;

/** Readable zod issues: `training.lr: Expected number, received string`, with the allowed values for enums. */
export function formatIssues(err: z.ZodError, source: string): string {
  const lines = err.issues.map((i) => {
    const where = i.path.length ? i.path.join('.') : '(top level)';
    if (i.code === 'unrecognized_keys') return `${where === '(top level)' ? '' : where + ': '}unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')}`;
    if (i.code === 'invalid_enum_value') return `${where}: '${String(i.received)}' is not allowed; use one of ${i.options.map((o) => `'${String(o)}'`).join(', ')}`;
    if (i.code === 'invalid_union_discriminator') return `${where}: use one of ${i.options.map((o) => `'${String(o)}'`).join(', ')}`;
    return `${where}: ${i.message}`;
  });
  return `invalid config ${source}:\n  ${lines.join('\n  ')}`;
}

export function parseTrainConfig(raw: unknown, source = '(inline)'): TrainConfig {
  const r = trainConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(formatIssues(r.error, source));
  return r.data;
}

/**
 * Reads a YAML config; relative paths inside it, and in `overrides` (`key=value`, overrides.ts), are resolved against
 * the config file's folder.
 */
export function loadTrainConfig(file: string, overrides: string[] = []): TrainConfig {
  return configFromRaw(readTrainConfigRaw(file, overrides), dirname(resolve(file)), overrides.length ? `${file} with ${overrides.join(' ')}` : file);
}

/** A config file's settings with `overrides` applied, not yet validated (a staged config splits them first). */
export function readTrainConfigRaw(file: string, overrides: string[] = []): unknown {
  if (!existsSync(file)) throw new ConfigError(`config file not found: ${file}`);
  let raw: unknown;
  const text = decodeUtf8(readUserFile(file), file);
  try {
    raw = parseYaml(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid YAML (${(e as Error).message})`);
  }
  // YAML reads an empty file as null, which zod would report as "Expected object, received null".
  if (raw === null || raw === undefined) throw new ConfigError(`${file}: the config file is empty; write the settings (model, data, training, output_dir) as in configs/*.yaml`);
  return applyOverrides(raw, overrides);
}

/** Validates settings read from a file in folder `base`; relative paths in them resolve against that folder. */
export function configFromRaw(raw: unknown, base: string, source: string): TrainConfig {
  const cfg = parseTrainConfig(raw, source);
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  cfg.model.path = abs(cfg.model.path);
  if (cfg.model.tokenizer) cfg.model.tokenizer = abs(cfg.model.tokenizer);
  cfg.data.train.path = abs(cfg.data.train.path);
  if (cfg.data.eval) cfg.data.eval.path = abs(cfg.data.eval.path);
  cfg.output_dir = abs(cfg.output_dir);
  // Methods' own data specs (mixing's general source, EWC's Fisher data, WiSE-FT's held-out set) resolve like the
  // train data: any {path, format} object inside a method entry.
  const fixData = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(fixData);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.path === 'string' && 'format' in o) o.path = abs(o.path);
      Object.values(o).forEach(fixData);
    }
  };
  fixData(cfg.methods);
  // A method's saved adapter to start from (lora's adapter: dir) is a path as well.
  for (const m of cfg.methods) if (typeof m === 'object' && typeof m.adapter === 'string' && m.adapter !== '') m.adapter = abs(m.adapter);
  if (cfg.monitor) {
    // Task files are paths; built-in names have no extension and stay as they are.
    cfg.monitor.tasks = cfg.monitor.tasks.map((t) => (/\.(ya?ml|json)$/.test(t) ? abs(t) : t));
    if (cfg.monitor.data_dir) cfg.monitor.data_dir = abs(cfg.monitor.data_dir);
  }
  return cfg;
}
