// The `retain train` configuration: one zod schema gives the types, the validation messages and the defaults.
// Unknown keys are errors (a typo must not silently fall back to a default).
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { decodeUtf8, readUserFile } from './files.js';
import { applyOverrides } from './overrides.js';
import { ConfigError } from './errors.js';
import { count, fieldKind, formatIssues, objectOf, STEPS } from './options.js';
import { dataSpecSchema } from './data/spec.js';
import { monitorSchema } from './train/monitor.js';
import { methodEntrySchema, METHODS } from './methods/registry.js';

export { formatIssues, shown } from './options.js';

export const trainConfigSchema = z.object({
  model: z.object({
    path: z.string().describe('The model: a Hugging Face model folder or hub id, or a llama2.c .bin (relative to the config file).'),
    tokenizer: z.string().optional().describe("A tokenizer other than the model's own (a file or folder, relative to the config file)."),
    dtype: z.enum(['float32', 'bfloat16', 'float16', 'float64']).default('float32').describe('The dtype the weights are loaded in.'),
    device: z.string().regex(/^(cpu|cuda(:\d+)?)$/, "use 'cpu', 'cuda' or 'cuda:N'").default('cpu').describe('Where the model trains.'),
  }).strict(),
  data: z.object({
    train: dataSpecSchema.describe('The fine-tuning data.'),
    eval: dataSpecSchema.optional().describe("Held-out data: its loss is logged every eval_every steps and written in the run's results."),
  }).strict(),
  training: z.object({
    epochs: z.number().positive().max(1e6).default(1).describe('Passes over the training data (used when max_steps is not set).'),
    max_steps: count(1, STEPS).optional().describe("Optimizer steps to run; when set, it fixes the run's length instead of epochs."),
    batch_size: count(1, 1e6).default(8).describe('Examples per micro-batch.'),
    grad_accum: count(1, 1e6).default(1).describe('Micro-batches whose gradients add up to one optimizer step.'),
    optimizer: z.enum(['adamw', 'sgd']).default('adamw').describe('The optimizer.'),
    lr: z.number().positive().default(1e-4).describe('Peak learning rate (after warm-up, before decay).'),
    weight_decay: z.number().min(0).default(0.0).describe('Decoupled weight decay (AdamW) or L2 decay (SGD).'),
    betas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default([0.9, 0.999]).describe("AdamW's moment decay rates."),
    momentum: z.number().min(0).lt(1).default(0).describe("SGD's momentum."),
    schedule: z.enum(['constant', 'linear', 'cosine']).default('cosine').describe('Learning-rate decay after warm-up.'),
    warmup_steps: count(0, STEPS).optional().describe('Steps of linear warm-up (or warmup_ratio, not both).'),
    warmup_ratio: z.number().min(0).max(1).default(0).describe('Warm-up as a fraction of the planned steps.'),
    min_lr_ratio: z.number().min(0).max(1).default(0).describe('Where linear and cosine decay end, as a fraction of lr.'),
    clip_grad_norm: z.number().positive().nullable().default(1.0).describe('Largest global gradient norm; null does not clip.'),
    seed: count(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER).default(0).describe("The run's seed (data order, dropout and other random draws)."),
    precision: z.enum(['fp32', 'bf16', 'fp16']).default('fp32')
      .describe("On CUDA, bf16/fp16 autocast; bf16 on CPU: bfloat16 weights with float32 master weights (train/precision.ts); fp32 runs in the model's dtype."),
    threads: count(1, 4096).optional().describe('CPU threads for libtorch (default: its own choice).'),
    log_every: count(1, STEPS).default(1).describe('Write a metrics line every N steps.'),
    eval_every: count(1, STEPS).nullable().default(null).describe("Log data.eval's loss every N steps (null: only in the final results)."),
    save_every: count(1, STEPS).nullable().default(null).describe('Write a checkpoint every N steps, and at the end (null: none).'),
    keep_checkpoints: count(1, 1e6).default(2).describe('Checkpoints kept in output_dir; older ones are removed.'),
    loss_chunk: z.union([count(1, 1e9), z.enum(['auto', 'off'])], { errorMap: () => ({ message: "expected a number of positions, 'auto' or 'off'" }) }).default('auto')
      .describe("Cross-entropy over the vocabulary this many positions at a time (train/chunked.ts); auto: only where one batch's logits would pass 2^27 values."),
    gradient_checkpointing: z.union([z.boolean(), z.array(count(0, 1e6)).min(1), z.object({ every: count(1, 1e6) }).strict()], {
      errorMap: () => ({ message: 'expected true (every decoder layer), a list of layer indices such as [0, 2, 4], or {every: k}' }),
    }).default(false).describe('Recompute decoder layers in backward instead of keeping their activations (train/checkpointing.ts).'),
  }).strict().superRefine((t, ctx) => {
    // Settings that contradict each other are refused rather than silently resolved one way.
    if (t.warmup_steps && t.warmup_ratio) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['warmup_steps'], message: `both warmup_steps (${t.warmup_steps}) and warmup_ratio (${t.warmup_ratio}) are set; keep one` });
    if (t.warmup_steps && t.max_steps && t.warmup_steps > t.max_steps) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['warmup_steps'], message: `${t.warmup_steps} is more than max_steps ${t.max_steps}: the learning rate would never reach lr` });
    if (t.momentum && t.optimizer !== 'sgd') ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['momentum'], message: `momentum applies to optimizer sgd; AdamW's momentum is betas[0]` });
  }),
  // Lazy: the monitor and the methods import modules that import this one.
  monitor: z.lazy(() => monitorSchema).optional(),
  output_dir: z.string().describe('Where checkpoints, metrics and final/ go (relative to the config file).'),
  /** Copies of metrics.jsonl for other tools: TensorBoard events and metrics.csv in output_dir (train/metrics-files.ts). */
  logging: z.object({ tensorboard: z.boolean().default(true), csv: z.boolean().default(true) }).strict().default({}).describe('TensorBoard events and metrics.csv beside metrics.jsonl (both on by default).'),
  resume: z.boolean().default(true).describe("Continue from output_dir's latest checkpoint; false moves its files aside and starts again."),
  // Each entry is checked by its method's own schema (methods/registry.ts).
  methods: z.array(z.lazy(() => methodEntrySchema)).default([]).describe('Anti-forgetting methods composed in one run: a name, or {name: <method>, <option>: <value>, ...}.'),
}).strict();

export type TrainConfig = z.infer<typeof trainConfigSchema>;


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
  // Paths inside method entries: the fields each method's schema marks as data specs or paths.
  for (const m of cfg.methods) if (typeof m === 'object') resolveMethodPaths(m, abs);
  if (cfg.monitor) {
    // Task files are paths; built-in names have no extension and stay as they are.
    cfg.monitor.tasks = cfg.monitor.tasks.map((t) => (/\.(ya?ml|json)$/.test(t) ? abs(t) : t));
    if (cfg.monitor.data_dir) cfg.monitor.data_dir = abs(cfg.monitor.data_dir);
  }
  return cfg;
}

/** Makes the paths of one method entry absolute: data specs' `path` (one spec or a list) and path options. */
function resolveMethodPaths(entry: Record<string, unknown>, abs: (p: string) => string): void {
  const method = METHODS.get(String(entry.name));
  if (!method) return;
  const fixSpec = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(fixSpec);
    else if (v && typeof v === 'object' && typeof (v as { path?: unknown }).path === 'string') (v as { path: string }).path = abs((v as { path: string }).path);
  };
  for (const [key, field] of Object.entries(objectOf(method.schema).shape)) {
    const kind = fieldKind(field);
    if (kind === 'data') fixSpec(entry[key]);
    else if (kind === 'path' && typeof entry[key] === 'string' && entry[key] !== '') entry[key] = abs(entry[key] as string);
  }
}
