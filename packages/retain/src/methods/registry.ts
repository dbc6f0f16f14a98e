// The anti-forgetting methods by name. Each method lives in its own file (or folder) with the zod schema of its
// options, and registers here with one line; `methods: [flow, lora, {name: l2, lambda: 0.01}]` in a config resolves
// through this table, and the config schema checks each entry with its method's schema.
import { z, type ZodTypeAny } from 'zod';
import type { Method } from '../train/hooks.js';
import { mark, optionLines, optionNames, refuse, type JsonSchema } from '../options.js';
import { Sam, samOptions } from './sam.js';
import { Mofo, mofoOptions } from './mofo.js';
import { Lora, loraOptions } from './lora/index.js';
import { Hft, hftOptions } from './hft.js';
import { Flow, flowOptions, flowVisionOptions } from './flow.js';
import { Mixing, mixingOptions } from './mixing.js';
import { L2SP, l2Options } from './l2sp.js';
import { EWC, ewcOptions } from './ewc.js';
import { WiseFT, wiseOptions } from './wise.js';
import { LinearProbe, probeOptions } from './probe.js';
import { Distill, distillOptions } from './distill.js';
import { Merge, mergeOptions } from './merge.js';
import { SelfDistillTargets, selfDistillOptions } from './selfdistill.js';
import { Sdft, sdftOptions } from './sdft.js';

export interface MethodEntry {
  name: string;
  /** The options' schema (a strict zod object, maybe refined): defaults, ranges, data-spec fields, a description each. */
  schema: ZodTypeAny;
  /** Builds the method from the options as written (everything in the config entry except `name`). */
  create: (options: Record<string, unknown>) => Method;
}

export const METHODS = new Map<string, MethodEntry>([
  // one line per method: [name, { name, schema, create }]
  entry('sam', samOptions, (o) => new Sam(o)),
  entry('mofo', mofoOptions, (o) => new Mofo(o)),
  entry('lora', loraOptions, (o) => new Lora(o)),
  entry('hft', hftOptions, (o) => new Hft(o)),
  entry('flow', flowOptions, (o) => new Flow(o)),
  entry('flow_vision', flowVisionOptions, (o) => new Flow(o, 'vision')),
  entry('mixing', mixingOptions, (o) => new Mixing(o)),
  entry('l2', l2Options, (o) => new L2SP(o)),
  entry('ewc', ewcOptions, (o) => new EWC(o)),
  entry('wise', wiseOptions, (o) => new WiseFT(o)),
  entry('probe', probeOptions, (o) => new LinearProbe(o)),
  entry('distill', distillOptions, (o) => new Distill(o)),
  entry('merge', mergeOptions, (o) => new Merge(o)),
  entry('selfdistill_targets', selfDistillOptions, (o) => new SelfDistillTargets(o)),
  entry('sdft', sdftOptions, (o) => new Sdft(o)),
]);

function entry(name: string, schema: ZodTypeAny, create: MethodEntry['create']): [string, MethodEntry] {
  return [name, { name, schema, create }];
}

export function registerMethod(m: MethodEntry): void {
  METHODS.set(m.name, m);
}

type Entry = string | Record<string, unknown>;

/** The registered method an entry names and its options, or why there is none. */
function lookUp(e: Entry): { method: MethodEntry; options: Record<string, unknown> } | string {
  const name = typeof e === 'string' ? e : e.name;
  const available = `available: ${[...METHODS.keys()].sort().join(', ') || '(none registered)'}`;
  if (name === undefined) return `a method entry needs name: <method>; ${available}`;
  const method = typeof name === 'string' ? METHODS.get(name) : undefined;
  if (!method) return `unknown method '${String(name)}'; ${available}`;
  const { name: _n, ...options } = typeof e === 'string' ? { name } : e;
  void _n;
  return { method, options };
}

/**
 * One `methods:` entry of a config, checked by its method's schema; the entry stays as written (defaults are the
 * method's business, and a saved run_config.yaml must read back the same).
 */
export const methodEntrySchema = mark(z.union([z.string(), z.record(z.unknown())], {
  errorMap: () => ({ message: 'expected a method name, or {name: <method>, <option>: <value>, ...}' }),
}).superRefine((e, ctx) => {
  const found = lookUp(e);
  if (typeof found === 'string') return refuse(ctx, found);
  const { method, options } = found;
  const r = method.schema.safeParse(options);
  if (!r.success) for (const line of optionLines(r.error, options, optionNames(method.schema))) refuse(ctx, `${method.name}: ${line}`);
}), null, entryJson);

/**
 * A `methods:` entry as JSON Schema: a bare name (only for methods whose options all have defaults), or one object
 * per registered method with its name and its options.
 */
function entryJson(convert: (t: ZodTypeAny) => JsonSchema): JsonSchema {
  const all = [...METHODS.values()].sort((a, b) => a.name.localeCompare(b.name));
  const bare = all.filter((m) => m.schema.safeParse({}).success).map((m) => m.name);
  const objects = all.map((m) => {
    const s = convert(m.schema);
    const required = (s.required as string[] | undefined) ?? [];
    return { ...s, title: m.name, properties: { name: { const: m.name }, ...(s.properties as JsonSchema) }, required: ['name', ...required] };
  });
  return { anyOf: [{ type: 'string', enum: bare, description: 'A method with its default options.' }, ...objects] };
}

/** Resolves config entries (`'flow'` or `{ name: 'flow', tau: 'median' }`) into methods, with clear errors. */
export function buildMethods(entries: Entry[]): Method[] {
  return entries.map((e, i) => {
    const found = lookUp(e);
    if (typeof found === 'string') throw new Error(`methods[${i}]: ${found}`);
    return found.method.create(found.options);
  });
}
