// What `retain tune` searches: each knob is one method's main setting (or the learning rate / step count, which
// every recipe has), with the values tried. A candidate is the user's config with one knob's method added (or its
// existing entry adjusted), and optionally the learning rate and step count scaled; standard fine-tuning (the config
// as written) is always candidate 0, the reference that "keeps 99% of the target gain" is measured against.
import type { TrainConfig } from '../config.js';
import { fnv1a } from '../data/random.js';
import { LR_SCALES, METHOD_KNOBS, STEP_SCALES, type MethodKnob } from '../suite/recipes.js';

export type MethodEntry = string | Record<string, unknown>;

export interface Candidate {
  /** Stable id: the run folder's name (runs/<id>) and the key a resumed search finds its state by. */
  id: string;
  label: string;
  methods: MethodEntry[];
  lr: number;
  steps: number;
}

export const KNOBS = [...Object.keys(METHOD_KNOBS), 'lr', 'steps'];

export interface SpaceOptions {
  knobs: string[];
  /**
   * Equal passes over the target data instead of equal steps: a recipe whose batches are part replay (mixing m:n
   * puts m target rows in every m+n) trains (m+n)/m times the steps, so it sees the target data as often as FT.
   */
  equalPasses?: boolean;
  /** Replay data spec for knobs that need data the config does not give (mixing's general, EWC's data). */
  replay?: Record<string, unknown>;
  /**
   * Per method, options of a new entry that the setup needs beyond the knob's own defaults (EWC's per-sample Fisher
   * on a model that sits at a minimum, where per-batch gradients cancel); the config's own entry still wins.
   */
  defaults?: Record<string, Record<string, unknown>>;
}

function methodName(e: MethodEntry): string {
  return typeof e === 'string' ? e : String(e.name);
}

function entryFor(cfg: TrainConfig, method: string): Record<string, unknown> | null {
  const e = cfg.methods.find((m) => methodName(m) === method);
  if (e === undefined) return null;
  return typeof e === 'string' ? { name: e } : { ...e };
}

/** The method entries of one setting of a knob: the config's methods with that method added or adjusted. */
function withSetting(cfg: TrainConfig, k: MethodKnob, setting: Record<string, unknown>, o: SpaceOptions): MethodEntry[] {
  const own = entryFor(cfg, k.method) ?? { name: k.method, ...k.defaults, ...o.defaults?.[k.method] };
  if (k.needsData && own[k.needsData] === undefined) {
    if (!o.replay) throw new Error(`tune: knob '${k.method}' needs ${k.method}.${k.needsData} (general data to replay); give it in the config's ${k.method} entry or pass --replay <file>, or drop '${k.method}' from --knobs`);
    own[k.needsData] = o.replay;
  }
  const rest = cfg.methods.filter((m) => methodName(m) !== k.method);
  return [...rest, { ...own, ...setting }];
}

function slug(s: string): string {
  return s.replace(/[^\w.-]+/g, '_').replace(/^_+|_+$/g, '');
}

/** Every candidate of the chosen knobs, FT (the config as written) first. */
export function candidates(cfg: TrainConfig, o: SpaceOptions): Candidate[] {
  const bad = o.knobs.filter((k) => !KNOBS.includes(k));
  if (bad.length) throw new Error(`tune: unknown knob ${bad.map((b) => `'${b}'`).join(', ')}; knobs: ${KNOBS.join(', ')}`);
  const steps0 = cfg.training.max_steps;
  if (!steps0) throw new Error('tune: the config needs training.max_steps (the full length of a candidate run; the search trains candidates to fractions of it)');
  const lrs = o.knobs.includes('lr') ? LR_SCALES : [1];
  const stepScales = o.knobs.includes('steps') ? STEP_SCALES : [1];
  const recipes: { label: string; methods: MethodEntry[] }[] = [{ label: 'FT', methods: cfg.methods }];
  for (const name of o.knobs) {
    const k = METHOD_KNOBS[name];
    if (k) for (const s of k.settings) recipes.push({ label: k.label(s), methods: withSetting(cfg, k, s, o) });
  }
  const out: Candidate[] = [];
  for (const r of recipes) {
    const passes = o.equalPasses ? targetShare(r.methods) : 1;
    for (const ls of lrs) {
      for (const ss of stepScales) {
        const steps = Math.max(1, Math.round(steps0 * ss / passes));
        const label = r.label + (ls !== 1 ? ` lr×${ls}` : '') + (ss !== 1 ? ` ${steps} steps` : '');
        out.push({ id: slug(label), label, methods: r.methods, lr: cfg.training.lr * ls, steps });
      }
    }
  }
  return out;
}

/** A seeded choice of `n` candidates (FT always kept), in their catalogue order; all of them when n covers them. */
export function sample(all: Candidate[], n: number, seed: number): Candidate[] {
  if (n >= all.length) return all;
  const rest = all.slice(1).map((c, i) => ({ c, i, k: fnv1a(`${seed}:${c.id}`) }));
  rest.sort((a, b) => a.k - b.k);
  const keep = rest.slice(0, Math.max(0, n - 1)).sort((a, b) => a.i - b.i).map((x) => x.c);
  return [all[0], ...keep];
}


/** The share of each batch's rows that are target data (mixing's m:n gives m/(m+n); every other recipe 1). */
export function targetShare(methods: MethodEntry[]): number {
  const mix = methods.find((m) => methodName(m) === 'mixing');
  if (!mix || typeof mix === 'string' || typeof mix.ratio !== 'string') return 1;
  const [m, n] = mix.ratio.split(':').map(Number);
  return m > 0 && n >= 0 ? m / (m + n) : 1;
}
