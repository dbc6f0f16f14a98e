// Mixed training / replay (Reynolds 2025, arXiv 2512.13706), docs/METHODS.md §2: general-capability examples go into the
// fine-tuning batches.
//
// `ratio: 'm:n'`: every micro-batch of B examples is m target sub-batches and n general sub-batches in one forward
// pass, B fixed: the trainer's loader yields round(B·m/(m+n)) target examples per micro-batch (so the target set is
// traversed once per epoch and an epoch has proportionally more steps), and the rest comes from the general pool,
// which cycles with a fresh shuffle each time round. 256 at 1:1 is 128+128; at 15:1, 240+16. A short last loader
// batch of an epoch is topped up from the next epoch's order (the rest waits for the next micro-batch), so every
// micro-batch holds exactly that split.
//
// `mode: probabilistic`: each of the B slots draws its source independently with `probabilities` (by source name; the
// training set is `target`), as interleaving with per-source probabilities does. Target examples still
// come from the trainer's loader (reshuffled with a new seed every epoch), round(p_target·B) at a time, so an epoch is
// one pass over the target set on average; the general sources cycle with a fresh shuffle on every pass.
//
// Either way the batch is collated afresh from the Examples (a single padding for all sources), each source's share
// of samples and of trained tokens is logged every step, and the positions in the general sources (and the target
// examples drawn but not yet used) live in the checkpoint state, so a resumed run continues exactly.
import type { Batch } from '../data/loader.js';
import { disposeBatch, epochOrder, rng } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { Method, Role, TrainContext } from '../train/hooks.js';
import { z } from 'zod';
import { dataSpecs, type DataSpec, type GivenExamples } from '../data/spec.js';
import { integer, nonNegative, parseOptions, refuse } from '../options.js';
import { collateOn, indexById, modelDevice, resolveData, sampleKey, type Options } from './support.js';
import { fnv1a } from '../data/random.js';

export const mixingOptions = z.object({
  ratio: z.string({ invalid_type_error: "a ratio 'm:n' (quote it in YAML)" }).optional().describe("'m:n': every micro-batch is m target and n general sub-batches, e.g. '15:1'."),
  mode: z.enum(['ratio', 'probabilistic']).optional().describe('ratio (the default when ratio is set), or probabilistic: each slot draws its source with probabilities.'),
  probabilities: z.record(nonNegative(), { invalid_type_error: '{<source name>: p, ...}' }).optional().describe('Probabilistic mode: {<source name>: p, ...}; the training set is target and needs p > 0.'),
  general: dataSpecs('the general data to mix in').describe('The general data mixed in: a data spec, or a list of them (each source named by its name:).'),
  seed: integer().default(0).describe('Seed of the general sources\' shuffles and the slot draws.'),
}).strict().transform((o, ctx) => {
  const mode = o.mode ?? (o.ratio !== undefined ? 'ratio' : undefined);
  if (mode === undefined) return refuseMixing(ctx, "set ratio: 'm:n', or mode: probabilistic with probabilities");
  if (mode === 'ratio') {
    if (o.probabilities !== undefined) return refuseMixing(ctx, "probabilities apply to mode: probabilistic; ratio mode takes 'm:n' only");
    try {
      return { ...o, mode, ratio: parseRatio(o.ratio), probabilities: null };
    } catch (e) {
      return refuseMixing(ctx, (e as Error).message.replace(/^mixing: /, ''));
    }
  }
  if (o.ratio !== undefined) return refuseMixing(ctx, 'ratio and mode: probabilistic exclude each other');
  if (!o.probabilities) return refuseMixing(ctx, 'probabilistic mode needs probabilities: {<source name>: p, ...} with non-negative numbers (the training set may be called target)');
  // The trainer sizes its loader before the data is loaded, so the training set has a fixed name here.
  if (!(o.probabilities.target > 0)) return refuseMixing(ctx, 'probabilities need a positive `target` entry (the training set)');
  return { ...o, mode, ratio: null, probabilities: o.probabilities };
});

function refuseMixing(ctx: z.RefinementCtx, message: string): never {
  refuse(ctx, message);
  return z.NEVER;
}

interface Stream {
  epoch: number;
  cursor: number;
}

interface MixState {
  streams: Record<string, Stream>;
  /** Target example indices taken from the loader but not yet placed in a batch. */
  buffer: number[];
  /** Micro-batches composed so far: seeds the slot draws, so they do not depend on the process. */
  draws: number;
}

/** Parses 'm:n' into positive m and non-negative n. */
export function parseRatio(r: unknown): [number, number] {
  const m = typeof r === 'string' ? /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(r) : null;
  if (!m || Number(m[1]) < 1) throw new Error(`mixing: ratio must be 'm:n' with m ≥ 1 target and n ≥ 0 general sub-batches, e.g. '15:1'; got ${JSON.stringify(r)}`);
  return [Number(m[1]), Number(m[2])];
}

/** Target and general examples in a micro-batch of `batch` at m:n. */
export function ratioSplit(batch: number, m: number, n: number): [number, number] {
  const target = Math.round((batch * m) / (m + n));
  const general = batch - target;
  if (target < 1 || (n > 0 && general < 1)) {
    throw new Error(`mixing: a batch of ${batch} cannot hold ${m}:${n} (it would be ${target} target + ${general} general); use a batch of at least ${m + n}`);
  }
  return [target, general];
}


export class Mixing implements Method {
  readonly name = 'mixing';
  readonly roles: Role[] = ['batch-composition'];
  readonly mode: 'ratio' | 'probabilistic';
  readonly ratio: [number, number] | null;
  readonly seed: number;
  private readonly generalSpec: (DataSpec | GivenExamples)[];
  private readonly probSpec: Record<string, number> | null;

  /** General sources by name, in order. */
  sources = new Map<string, Example[]>();
  targetSource = '';
  /** Per-source probabilities (probabilistic mode), target first. */
  probabilities: [string, number][] = [];
  batchSize = 0;
  targetPerBatch = 0;
  private index = new Map<string, number>();
  private orders = new Map<string, { epoch: number; order: number[] }>();
  private stepShares = new Map<string, { samples: number; tokens: number }>();

  constructor(o: Options = {}) {
    const p = parseOptions(this.name, mixingOptions, o);
    this.mode = p.mode;
    this.ratio = p.ratio;
    this.probSpec = p.probabilities;
    this.generalSpec = p.general;
    this.seed = p.seed;
  }

  loaderBatchSize(batchSize: number): number {
    this.batchSize = batchSize;
    if (this.ratio) {
      this.targetPerBatch = ratioSplit(batchSize, ...this.ratio)[0];
    } else {
      const p = this.probSpec!;
      const total = Object.values(p).reduce((a, b) => a + b, 0);
      this.targetPerBatch = Math.max(1, Math.round((p.target / total) * batchSize));
    }
    return this.targetPerBatch;
  }

  async setup(ctx: TrainContext): Promise<void> {
    if (ctx.examples.length === 0) throw new Error('mixing: the training set is empty');
    this.targetSource = ctx.examples[0].source;
    if (!this.batchSize) throw new Error('mixing: the trainer did not size its loader through loaderBatchSize(); mixing needs a loop that does');
    this.index = indexById(this.name, ctx.examples);
    const specs = this.generalSpec;
    for (let i = 0; i < specs.length; i++) {
      const fallback = specs.length === 1 ? 'general' : `general${i}`;
      const ex = await resolveData(this.name, ctx, specs[i], fallback);
      if (ex.length === 0) throw new Error(`mixing: general source ${i} is empty`);
      for (const e of ex) {
        if (e.source === this.targetSource) throw new Error(`mixing: a general source is named '${e.source}', like the training set; give it another name (name: in its spec)`);
        const list = this.sources.get(e.source) ?? [];
        list.push(e);
        this.sources.set(e.source, list);
      }
    }
    if (this.mode === 'probabilistic') {
      const p = this.probSpec!;
      for (const k of Object.keys(p)) {
        if (k !== 'target' && !this.sources.has(k)) throw new Error(`mixing: probabilities name '${k}', which is no general source; general sources: ${[...this.sources.keys()].join(', ')}`);
      }
      const total = Object.values(p).reduce((a, b) => a + b, 0);
      this.probabilities = [[this.targetSource, p.target / total], ...[...this.sources.keys()].map((s) => [s, (p[s] ?? 0) / total] as [string, number])];
    }
    if (!ctx.state.has(this.name)) ctx.state.set(this.name, { streams: {}, buffer: [], draws: 0 } satisfies MixState);
    const split = this.ratio ? `${this.targetPerBatch}+${this.batchSize - this.targetPerBatch}` : this.probabilities.map(([s, p]) => `${s}:${+p.toFixed(4)}`).join(' ');
    ctx.log({ kind: this.name, mixing_mode: this.mode, ...(this.ratio ? { mixing_ratio: this.ratio.join(':') } : {}), mixing_batch: split, mixing_target: this.targetSource, ...Object.fromEntries([...this.sources].map(([s, e]) => [`mixing_examples_${s}`, e.length])) });
  }

  private state(ctx: TrainContext): MixState {
    return ctx.state.get(this.name) as MixState;
  }

  /** The next `k` examples of a general source: it cycles, with a new shuffle (seed, source, pass) on every pass. */
  private take(st: MixState, source: string, k: number): Example[] {
    const ex = this.sources.get(source)!;
    const s = (st.streams[source] ??= { epoch: 0, cursor: 0 });
    const out: Example[] = [];
    while (out.length < k) {
      if (s.cursor >= ex.length) {
        s.epoch++;
        s.cursor = 0;
      }
      let o = this.orders.get(source);
      if (!o || o.epoch !== s.epoch) {
        o = { epoch: s.epoch, order: epochOrder(ex.length, (this.seed ^ fnv1a(source)) >>> 0, s.epoch) };
        this.orders.set(source, o);
      }
      const n = Math.min(k - out.length, ex.length - s.cursor);
      for (let i = 0; i < n; i++) out.push(ex[o.order[s.cursor + i]]);
      s.cursor += n;
    }
    return out;
  }

  private targetExamples(ctx: TrainContext, b: Batch): number[] {
    return b.sampleIds.map((id, i) => {
      const k = this.index.get(sampleKey(b.sources[i], id));
      if (k === undefined) throw new Error(`mixing: the loader gave sample '${id}', which is not in the training set`);
      return k;
    });
  }

  composeBatch(ctx: TrainContext, next: () => Batch): Batch {
    const st = this.state(ctx);
    let parts: Example[];
    if (this.ratio) {
      const target = this.targetRows(ctx, st, next, this.targetPerBatch);
      // With several general sources, each general slot comes from them in proportion to their sizes.
      parts = [...target, ...this.generalSlots(st, this.batchSize - this.targetPerBatch)];
    } else {
      const r = rng((Math.imul(this.seed + 1, 0x9e3779b1) ^ Math.imul(st.draws + 1, 0x85ebca6b)) >>> 0);
      const counts = new Map<string, number>();
      for (let i = 0; i < this.batchSize; i++) {
        let u = r();
        let pick = this.probabilities[this.probabilities.length - 1][0];
        for (const [s, p] of this.probabilities) {
          if (u < p) {
            pick = s;
            break;
          }
          u -= p;
        }
        counts.set(pick, (counts.get(pick) ?? 0) + 1);
      }
      parts = this.targetRows(ctx, st, next, counts.get(this.targetSource) ?? 0);
      for (const [s, k] of counts) if (s !== this.targetSource) parts.push(...this.take(st, s, k));
    }
    st.draws++;
    const b = collateOn(parts, modelDevice(ctx.model));
    b.sources.forEach((s, i) => {
      const acc = this.stepShares.get(s) ?? { samples: 0, tokens: 0 };
      acc.samples++;
      acc.tokens += b.tokenCounts[i];
      this.stepShares.set(s, acc);
    });
    return b;
  }

  /** The next `need` target examples in loader order, across loader batches (and epochs); the rest stay buffered. */
  private targetRows(ctx: TrainContext, st: MixState, next: () => Batch, need: number): Example[] {
    while (st.buffer.length < need) {
      const tb = next();
      st.buffer.push(...this.targetExamples(ctx, tb));
      disposeBatch(tb);
    }
    return st.buffer.splice(0, need).map((i) => ctx.examples[i]);
  }

  private generalSlots(st: MixState, k: number): Example[] {
    if (k === 0) return [];
    const names = [...this.sources.keys()];
    if (names.length === 1) return this.take(st, names[0], k);
    // Several general sources in ratio mode form one pool, visited in proportion to their sizes.
    const total = names.reduce((a, s) => a + this.sources.get(s)!.length, 0);
    const r = rng((Math.imul(this.seed + 7, 0x9e3779b1) ^ Math.imul(st.draws + 1, 0x85ebca6b)) >>> 0);
    const out: Example[] = [];
    for (let i = 0; i < k; i++) {
      let u = r() * total;
      let pick = names[names.length - 1];
      for (const s of names) {
        const n = this.sources.get(s)!.length;
        if (u < n) {
          pick = s;
          break;
        }
        u -= n;
      }
      out.push(...this.take(st, pick, 1));
    }
    return out;
  }

  afterStep(ctx: TrainContext): void {
    let samples = 0;
    let tokens = 0;
    for (const v of this.stepShares.values()) {
      samples += v.samples;
      tokens += v.tokens;
    }
    const fields: Record<string, number | string> = { kind: this.name };
    for (const s of [this.targetSource, ...this.sources.keys()]) {
      const v = this.stepShares.get(s) ?? { samples: 0, tokens: 0 };
      fields[`samples_${s}`] = v.samples;
      fields[`tokens_${s}`] = v.tokens;
      fields[`sample_share_${s}`] = samples ? +(v.samples / samples).toFixed(6) : 0;
      fields[`token_share_${s}`] = tokens ? +(v.tokens / tokens).toFixed(6) : 0;
    }
    ctx.log(fields);
    this.stepShares.clear();
  }
}
