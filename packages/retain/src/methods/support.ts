// Pieces shared by the data- and loss-level methods (FLOW, mixing, L2-SP, EWC, WiSE-FT, linear probe): their own data,
// module-mode scopes, per-sample loss passes over a list of examples, and content hashes for caches. Options are read
// by each method's schema (options.ts).
import { createHash, type Hash } from 'node:crypto';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { collate, disposeBatch, type Batch } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { TrainableModel, TrainContext } from '../train/hooks.js';
import { isExampleList, type DataSpec, type GivenExamples } from '../data/spec.js';
import { shown } from '../errors.js';

export { shown };

export type Options = Record<string, unknown>;

/**
 * A method's own data as its schema parsed it (dataSpec in data/spec.ts): Examples given in code, `{ examples, name }`,
 * or a data spec that the run loads with its tokenizer.
 */
export async function resolveData(method: string, ctx: TrainContext, v: DataSpec | GivenExamples, source: string): Promise<Example[]> {
  if (isExampleList(v)) return v;
  if ('examples' in v) return typeof v.name === 'string' ? v.examples.map((e) => ({ ...e, source: v.name! })) : v.examples;
  if (!ctx.loadData) throw new Error(`${method}: data ${JSON.stringify(v.path)} needs the run's tokenizer to load; in code, pass Examples instead`);
  const ex = await ctx.loadData(v, source);
  if (ex.length === 0) throw new Error(`${method}: ${v.path} gave no usable examples`);
  return ex;
}

/** Runs fn and then puts every module's train/eval flag back as it was (a probe keeps its body in eval mode). */
export function keepModes<T>(model: TrainableModel, fn: () => T): T {
  const modes = model.modules().map((m) => [m, m.training] as const);
  try {
    return fn();
  } finally {
    for (const [m, t] of modes) m.training = t;
  }
}

export function modelDevice(model: TrainableModel): string {
  return model.parameters()[0]?.device ?? 'cpu';
}

/** A collated batch on the model's device (the trainer moves its own batches the same way). */
export function collateOn(examples: Example[], device: string): Batch {
  const b = collate(examples);
  if (device === 'cpu') return b;
  const moved = { ...b, ids: b.ids.to({ device }), targets: b.targets.to({ device }), labels: b.labels?.to({ device }), features: b.features?.to({ device }) };
  disposeBatch(b);
  return moved;
}

/**
 * Mean loss per trained token of every example (the trainer's loss function, eval mode, no autograd): NaN where an
 * example has no trained token. Examples are scored in length order so that batches carry little padding; right
 * padding does not change a causal model's losses.
 */
export function perSampleLosses(ctx: TrainContext, examples: Example[], batchSize: number): Float64Array {
  const out = new Float64Array(examples.length);
  const order = examples.map((_, i) => i).sort((a, b) => examples[a].ids.length - examples[b].ids.length || a - b);
  const device = modelDevice(ctx.model);
  keepModes(ctx.model, () => {
    ctx.model.eval();
    torch.inferenceMode(() => {
      for (let s = 0; s < order.length; s += batchSize) {
        const idx = order.slice(s, s + batchSize);
        torch.tidy(() => {
          const b = collateOn(idx.map((i) => examples[i]), device);
          const sl = ctx.sampleLosses(b);
          const mean = sl.sums.double().div(sl.counts.double()).cpu().data() as Float64Array; // [B]
          idx.forEach((i, k) => (out[i] = mean[k]));
          disposeBatch(b);
        });
      }
    });
  });
  return out;
}

/** Median of the finite values (NaN when there are none); the mean of the middle two for an even count. */
export function median(values: ArrayLike<number>): number {
  const v = Array.from(values).filter(Number.isFinite).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}

export function summary(values: ArrayLike<number>): { mean: number; min: number; median: number; max: number } {
  const v = Array.from(values);
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const x of v) {
    min = Math.min(min, x);
    max = Math.max(max, x);
    sum += x;
  }
  return { mean: v.length ? sum / v.length : NaN, min, median: median(v), max };
}

/** Adds a tensor's name, dtype, shape and bytes to a hash. */
export function hashTensor(h: Hash, name: string, t: Tensor): void {
  h.update(`${name}\u0000${t.dtype}\u0000${t.shape.join(',')}\u0000`);
  torch.tidy(() => {
    const c = t.detach().cpu().contiguous();
    h.update(new Uint8Array(torch.native.toBytes(c.h)));
  });
}

/** Content hash of a model's state dict (parameters and persistent buffers). */
export function hashModel(model: TrainableModel): string {
  const h = createHash('sha256');
  torch.tidy(() => {
    for (const [k, t] of model.stateDict()) hashTensor(h, k, t);
  });
  return h.digest('hex');
}

/** Content hash of examples as training sees them: ids, sources, tokens, loss masks, labels and features. */
export function hashExamples(examples: Example[]): string {
  const h = createHash('sha256');
  for (const e of examples) {
    h.update(`${e.id}\u0000${e.source}\u0000${e.label ?? ''}\u0000`);
    h.update(Int32Array.from(e.ids));
    h.update(Uint8Array.from(e.lossMask));
    if (e.features) h.update(new Uint8Array(e.features.buffer, e.features.byteOffset, e.features.byteLength));
    h.update('\u0001');
  }
  return h.digest('hex');
}

/** Index of each example by (source, id); per-sample methods name samples this way, so a repeated id is an error. */
export function indexById(method: string, examples: Example[]): Map<string, number> {
  const m = new Map<string, number>();
  examples.forEach((e, i) => {
    const k = sampleKey(e.source, e.id);
    if (m.has(k)) throw new Error(`${method}: sample id '${e.id}' appears twice in source '${e.source}'; per-sample methods need unique ids (give records an 'id' field)`);
    m.set(k, i);
  });
  return m;
}

export function sampleKey(source: string, id: string): string {
  return `${source}\u0000${id}`;
}

/** Whether a parameter belongs to a head a method of the run adds from scratch (ctx.newHeads). */
export function isNewHead(ctx: TrainContext, name: string): boolean {
  return (ctx.newHeads ?? []).some((h) => h.pattern.test(name));
}

/** Parameters whose checkpoint names match a pattern, with a message listing the names when none does. */
export function matchParams(method: string, named: [string, Tensor][], re: RegExp, what: string): [string, Tensor][] {
  const hit = named.filter(([n]) => re.test(n));
  if (hit.length === 0) {
    const names = named.map(([n]) => n);
    throw new Error(`${method}: no parameter matches ${what} /${re.source}/; parameters: ${names.slice(0, 12).join(', ')}${names.length > 12 ? `, … (${names.length})` : ''}`);
  }
  return hit;
}
