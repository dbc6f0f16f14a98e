// What `retain tune` searches: each knob is one method's main setting (or the learning rate / step count, which
// every recipe has), with the values tried. A candidate is the user's config with one knob's method added (or its
// existing entry adjusted), and optionally the learning rate and step count scaled; standard fine-tuning (the config
// as written) is always candidate 0, the reference that "keeps 99% of the target gain" is measured against.
import type { TrainConfig } from '../config.js';
import { fnv1a } from '../data/random.js';

export type MethodEntry = string | Record<string, unknown>;

export interface Candidate {
  /** Stable id: the run folder's name (runs/<id>) and the key a resumed search finds its state by. */
  id: string;
  label: string;
  methods: MethodEntry[];
  lr: number;
  steps: number;
}

interface MethodKnob {
  method: string;
  /** Each setting is merged into the method's entry (so the user's other options for it stay). */
  settings: Record<string, unknown>[];
  label: (s: Record<string, unknown>) => string;
  /** Options the method needs from somewhere (the config's own entry, or --replay). */
  needsData?: string;
  /** Options of a new entry (one the config does not have), kept unless the config's entry says otherwise. */
  defaults?: Record<string, unknown>;
}

const each = (option: string, values: unknown[]) => values.map((v) => ({ [option]: v }));

/** Five settings of each method's main knob, spanning weak to strong (docs/METHODS.md gives each default). */
export const METHOD_KNOBS: Record<string, MethodKnob> = {
  flow: { method: 'flow', settings: each('tau_scale', [0.25, 0.5, 1, 2, 4]), label: (s) => `FLOW τ×${s.tau_scale}` },
  mixing: { method: 'mixing', settings: each('ratio', ['1:3', '1:1', '3:1', '7:1', '15:1']), label: (s) => `mix ${s.ratio}`, needsData: 'general' },
  // Summed over parameters, as the suites run it: a mean over millions of weights needs λ in the thousands.
  l2: { method: 'l2', settings: each('lambda', [0.01, 0.03, 0.1, 0.3, 1]), label: (s) => `L2 λ=${s.lambda}`, defaults: { reduction: 'sum' } },
  ewc: { method: 'ewc', settings: each('lambda', [1, 10, 50, 200, 1000]), label: (s) => `EWC λ=${s.lambda}`, needsData: 'data' },
  wise: { method: 'wise', settings: each('alpha', [0.2, 0.35, 0.5, 0.65, 0.8]), label: (s) => `WiSE α=${s.alpha}` },
  sam: { method: 'sam', settings: each('rho', [0.01, 0.02, 0.05, 0.1, 0.2]), label: (s) => `SAM ρ=${s.rho}` },
  lora: { method: 'lora', settings: each('r', [4, 8, 16, 32, 64]).map((s) => ({ ...s, save_merged: true })), label: (s) => `LoRA r=${s.r}` },
  mofo: { method: 'mofo', settings: each('alpha', [0.03, 0.05, 0.1, 0.15, 0.3]), label: (s) => `MoFO α=${s.alpha}` },
  // HFT has no strength knob (the paper freezes half of each layer's matrices); its learning rate and steps still vary.
  hft: { method: 'hft', settings: [{}], label: () => 'HFT' },
};

/** Multipliers of the config's learning rate and step count when `lr` / `steps` are among the knobs. */
export const LR_SCALES = [0.3, 1, 3];
export const STEP_SCALES = [0.5, 1];

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
  const own = entryFor(cfg, k.method) ?? { name: k.method, ...k.defaults };
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
