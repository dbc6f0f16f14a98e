// Loading checkpoint tensors into a model with PyTorch's strictness, allowing for tied weights.
import type * as torch from '@retain/torch';
import { shown } from '../errors.js';

export interface HasTiedKeys {
  tiedKeys?(): [string, string][];
  loadStateDict(sd: Map<string, torch.Tensor>, opts?: { strict?: boolean }): { missingKeys: string[]; unexpectedKeys: string[] };
}

/**
 * Copies `weights` into `model` (strict key and shape checks). A tied key missing from the checkpoint (HF omits
 * lm_head.weight when it equals the embedding) is filled from its partner, which is the same tensor in the model.
 */
export function loadWeights(model: HasTiedKeys, weights: Map<string, torch.Tensor>, opts: { strict?: boolean; source?: string; config?: string } = {}): void {
  const sd = new Map(weights);
  for (const [alias, source] of model.tiedKeys?.() ?? []) {
    if (!sd.has(alias) && sd.has(source)) sd.set(alias, sd.get(source)!);
  }
  try {
    model.loadStateDict(sd, { strict: opts.strict ?? true });
  } catch (e) {
    if (!opts.source) throw e;
    throw new WeightsMismatchError(opts.source, opts.config ?? null, (e as Error).message);
  }
}

/**
 * The checkpoint does not fit the model its config describes. PyTorch's message lists every tensor (48 lines for a
 * 5-layer model whose hidden size was changed); this keeps the first few, counts the rest and says what to check.
 */
export class WeightsMismatchError extends Error {
  constructor(source: string, config: string | null, detail: string) {
    const lines = detail.split('\n\t').slice(1);
    const listed = lines.slice(0, 4).map((l) => `  ${l.length > 400 ? `${l.slice(0, 400)}…` : l}`);
    if (lines.length > listed.length) listed.push(`  … and ${lines.length - listed.length} more`);
    super(
      `${source}: the weights do not fit the model${config ? ` that ${config} describes` : ''}:\n${listed.join('\n')}\n` +
      (config
        ? `check that ${config} belongs to these weights (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size, tie_word_embeddings)`
        : 'the checkpoint is damaged or not of this architecture'),
    );
    this.name = 'WeightsMismatchError';
  }
}

/**
 * A checkpoint tensor holds NaN or Inf. Such weights load and run, but every output is then garbage (`<unk>` text,
 * NaN losses that training would blame on the learning rate), so they are refused where they enter.
 */
export function assertFiniteWeights(weights: Iterable<[string, torch.Tensor]>, source: string, why = 'the checkpoint is damaged'): void {
  const k = firstNonFinite(weights);
  if (k !== null) throw new Error(`${source}: weight '${k}' holds NaN or Inf; ${why}`);
}

/** The name of the first floating-point tensor holding NaN or Inf, or null; the one check for loads and saves. */
export function firstNonFinite(weights: Iterable<[string, torch.Tensor]>): string | null {
  for (const [k, t] of weights) {
    if (!t.dtype.startsWith('float') && !t.dtype.startsWith('bfloat')) continue;
    const finite = t.isfinite();
    const all = finite.all();
    const ok = all.item();
    all.dispose();
    finite.dispose();
    if (!ok) return k;
  }
  return null;
}

/**
 * A config.json field the model cannot be built from. Thrown without the file's path (the model classes are also
 * built from plain objects); the loader prefixes the path of the config.json it read.
 */
export class ModelConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelConfigError';
  }
}

type Fields = Record<string, unknown>;

/** `in` names the object a nested field sits in (rope_scaling.factor). */
function named(key: string, opts: { in?: string }): string {
  return opts.in ? `${opts.in}.${key}` : key;
}

function bad(key: string, v: unknown, allowed: string): never {
  throw new ModelConfigError(v === undefined ? `${key} is missing; it must be ${allowed}` : `${key} must be ${allowed}, got ${shown(v)}`);
}

/** Sizes and counts. Absent (or null) passes when optional: the model's default applies. */
export function checkPositiveInt(c: Fields, key: string, opts: { optional?: boolean; min?: number; in?: string } = {}): void {
  const v = c[key];
  if (opts.optional && v == null) return;
  const min = opts.min ?? 1;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) bad(named(key, opts), v, min === 1 ? 'a positive integer' : `an integer ≥ ${min}`);
}

/** Epsilons, rope bases, scaling factors. */
export function checkPositiveNumber(c: Fields, key: string, opts: { optional?: boolean; hint?: string; in?: string } = {}): void {
  const v = c[key];
  if (opts.optional && v == null) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(named(key, opts), v, `a number > 0${opts.hint ? ` (${opts.hint})` : ''}`);
}

/** Dropout rates. */
export function checkProbability(c: Fields, key: string): void {
  const v = c[key];
  if (v == null) return;
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) bad(key, v, 'a number in [0, 1)');
}

/** Switches such as tie_word_embeddings: the string "false" would otherwise count as true. */
export function checkBoolean(c: Fields, key: string): void {
  const v = c[key];
  if (v != null && typeof v !== 'boolean') bad(key, v, 'true or false');
}

/** Token ids the model itself uses (T5's start, pad and end tokens). */
export function checkTokenId(c: Fields, key: string, vocabSize: number): void {
  const v = c[key];
  if (v == null) return;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v >= vocabSize) bad(key, v, `a token id in 0..${vocabSize - 1} (vocab_size ${vocabSize})`);
}

/** A pickle checkpoint (PyTorch .bin/.pt) is refused with the one-line conversion that makes it loadable. */
export function refusePickle(path: string): never {
  throw new Error(
    `${path} is a PyTorch pickle checkpoint, which retain does not load (unpickling can run arbitrary code). ` +
      "Convert it to safetensors first, e.g. in Python: `from safetensors.torch import save_file; save_file(torch.load(p), 'model.safetensors')`, " +
      'or `model.save_pretrained(dir, safe_serialization=True)` with transformers.',
  );
}

/**
 * Ties an output head to the token embedding: one tensor under both names, as PyTorch does. The head's own initial
 * weight is released (a vocabulary-sized matrix nothing else holds).
 */
export function tieHead(head: torch.nn.Linear, embedding: torch.Tensor): void {
  const own = head.weight;
  head._parameters.set('weight', embedding);
  head.weight = embedding;
  if (own !== embedding) own.dispose();
}
