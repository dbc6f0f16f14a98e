// The zod pieces that the config and every method's options share: ranged numbers, the markers that tell the config
// loader and `retain schema` what a field holds (a data spec, a path, a value only code can pass), and one way of
// turning zod issues into the project's messages, for a config file and for a method's options alike.
import { z, type ZodTypeAny } from 'zod';

/**
 * A count or size from `min` to `max`. zod's int() takes 1e300 (an integer to JavaScript), which then loops for ever
 * (max_steps) or asks for terabytes (batch_size); every integer setting has a ceiling far above any real run's.
 */
export const count = (min: number, max: number) => z.number().int().min(min).max(max);
/** The ceiling of step counts (max_steps, every N steps). */
export const STEPS = 1e9;

import { shown } from './errors.js';

export { shown };

/** What a field holds beyond its type; stored on the zod definition, which describe() and optional() carry along. */
export type FieldKind = 'data' | 'path' | 'code';

export type JsonSchema = Record<string, unknown>;
/** How `retain schema` writes a field whose zod form says too little (a transform, a custom check). */
export type JsonOf = (convert: (t: ZodTypeAny) => JsonSchema) => JsonSchema;

interface MarkedDef { retainKind?: FieldKind; retainJson?: JsonOf }

export function mark<T extends ZodTypeAny>(t: T, kind: FieldKind | null, json?: JsonOf): T {
  const def = t._def as MarkedDef;
  if (kind) def.retainKind = kind;
  if (json) def.retainJson = json;
  return t;
}

/** The JSON Schema a field was marked with, if any. */
export function markedJson(t: ZodTypeAny): JsonOf | undefined {
  return (t._def as MarkedDef).retainJson;
}

/** The kind of a field, looking through optional, default and nullable wrappers. */
export function fieldKind(t: ZodTypeAny): FieldKind | undefined {
  for (let s: ZodTypeAny | undefined = t; s; s = (s._def as { innerType?: ZodTypeAny }).innerType) {
    const k = (s._def as MarkedDef).retainKind;
    if (k) return k;
  }
  return undefined;
}

/** A value only code can pass (a function, a tokenizer object): validated, but not part of a config's JSON Schema. */
export function codeOnly<T>(what: string, ok: (v: unknown) => boolean) {
  return mark(z.custom<T>((v) => v === undefined || ok(v), { message: what }), 'code').optional();
}

/** A number with a range, whose every failure (type, NaN, ±Infinity, range) reads as `what`. */
export function num(what: string, r: { min?: number; gt?: number; max?: number; lt?: number; int?: boolean } = {}) {
  const m = { message: what };
  let n = z.number({ invalid_type_error: what, required_error: what }).finite(m);
  if (r.int) n = n.int(m);
  if (r.min !== undefined) n = n.min(r.min, m);
  if (r.gt !== undefined) n = n.gt(r.gt, m);
  if (r.max !== undefined) n = n.max(r.max, m);
  if (r.lt !== undefined) n = n.lt(r.lt, m);
  return n;
}

export const integer = () => num('an integer', { int: true, min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER });
export const positiveInt = (max = Number.MAX_SAFE_INTEGER) => num(max === Number.MAX_SAFE_INTEGER ? 'a positive integer' : `an integer from 1 to ${max}`, { int: true, min: 1, max });
export const nonNegative = () => num('a non-negative number', { min: 0 });
export const positive = () => num('a positive number', { gt: 0 });
export const bool = () => z.boolean({ invalid_type_error: 'true or false', required_error: 'true or false' });

/** A regular expression given as a string (in code, a RegExp too); parsed values are RegExps. */
export function regex(what = 'a regular expression string') {
  const t = z.union([z.string(), z.instanceof(RegExp)], { errorMap: () => ({ message: what }) }).transform((v, ctx) => {
    if (v instanceof RegExp) return v;
    try {
      return new RegExp(v);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `a valid regular expression (${(e as Error).message.replace(/^Invalid regular expression: /, '')})` });
      return z.NEVER;
    }
  });
  return mark(t, null, () => ({ type: 'string', format: 'regex' }));
}

/** A cross-field rule's message, written as a whole sentence (no "must be ..., got ..." around it). */
export function refuse(ctx: z.RefinementCtx, message: string): void {
  ctx.addIssue({ code: z.ZodIssueCode.custom, message, params: { sentence: true } });
}

/** A key path as a user writes it: `data.train.format`, `methods[0].lambda`. */
function where(path: (string | number)[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${p}`)).join('') || '(top level)';
}

/** One zod issue as a config line: `training.lr: Expected number, received string`, with the allowed values for enums. */
function issueLine(i: z.ZodIssue): string {
  const at = where(i.path);
  if (i.code === 'unrecognized_keys') return `${at === '(top level)' ? '' : at + ': '}unknown key${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')}`;
  if (i.code === 'invalid_enum_value') return `${at}: '${String(i.received)}' is not allowed; use one of ${i.options.map((o) => `'${String(o)}'`).join(', ')}`;
  if (i.code === 'invalid_union_discriminator') return `${at}: use one of ${i.options.map((o) => `'${String(o)}'`).join(', ')}`;
  return `${at}: ${i.message}`;
}

/** Readable zod issues of a whole config, one per line under `invalid config <source>:`. */
export function formatIssues(err: z.ZodError, source: string): string {
  return `invalid config ${source}:\n  ${err.issues.map(issueLine).join('\n  ')}`;
}

/**
 * One issue of a method's options, as the method's message says it: `option 'k' must be <what>, got <value>`, `option
 * 'k' is required (<what>)`, `unknown option 'k'; allowed: ...`. Issues inside a nested value (a data spec's format)
 * read as config lines.
 */
export function optionIssue(i: z.ZodIssue, o: Record<string, unknown>, allowed: string[]): string {
  if (i.code === 'unrecognized_keys' && i.path.length === 0) return `unknown option${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')}; allowed: ${allowed.join(', ')}`;
  if ((i as { params?: { sentence?: boolean } }).params?.sentence) return i.message;
  // A nested value's own issues (a data spec's unknown key or format) read as config lines under the option's key.
  if (i.path.length !== 1 || i.code === 'unrecognized_keys') return issueLine(i);
  const key = String(i.path[0]);
  const v = o[key];
  if (i.code === 'invalid_enum_value') return `option '${key}' must be one of ${i.options.join(', ')}, got ${shown(v)}`;
  // An enum given a value that is not even a string: zod states the allowed values as `'a' | 'b'`.
  if (i.code === 'invalid_type' && v !== undefined && i.expected.startsWith("'")) return `option '${key}' must be one of ${i.expected.replace(/'/g, '').split(' | ').join(', ')}, got ${shown(v)}`;
  if (v === undefined) return `option '${key}' is required (${i.message})`;
  return `option '${key}' must be ${i.message}, got ${shown(v)}`;
}

/** A method's options checked by its schema, with defaults filled in; a failure is an Error naming the method. */
export function parseOptions<S extends ZodTypeAny>(method: string, schema: S, o: unknown): z.output<S> {
  const raw = (o ?? {}) as Record<string, unknown>;
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  throw new Error(`${method}: ${optionLines(r.error, raw, optionNames(schema)).join('; ')}`);
}

export function optionLines(err: z.ZodError, o: Record<string, unknown>, allowed: string[]): string[] {
  return err.issues.map((i) => optionIssue(i, o, allowed));
}

/** The object under any refinements, and its field names. */
export function objectOf(schema: ZodTypeAny): z.ZodObject<z.ZodRawShape> {
  let s = schema;
  while ((s._def as { typeName: string }).typeName === 'ZodEffects') s = (s._def as { schema: ZodTypeAny }).schema;
  return s as z.ZodObject<z.ZodRawShape>;
}

export function optionNames(schema: ZodTypeAny): string[] {
  return Object.keys(objectOf(schema).shape);
}
