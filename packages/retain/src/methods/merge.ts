// Weight-space merging beyond WiSE-FT, docs/METHODS.md §14, applied after training like `wise` (over the same state dict):
//
// - task arithmetic (Ilharco et al., ICLR 2023, arXiv 2212.04089): τ = θ_ft − θ₀, θ = θ₀ + λ·Σ_t τ_t;
// - TIES (Yadav et al., NeurIPS 2023, arXiv 2306.01708): each τ_t trimmed to its top-k fraction of magnitudes per
//   tensor (k = 0.2, the paper's default), a sign elected per coordinate (the sign of the sum of the trimmed vectors),
//   and the disjoint mean: the average of the trimmed entries that agree with it (0 where none does), θ₀ + λ·τ_m;
// - DARE (Yu et al., ICML 2024, arXiv 2311.03099): each entry of τ_t dropped with probability p (0.9, the paper's
//   typical value) and the rest rescaled by 1/(1−p), so E[DARE(τ)] = τ; seeded per tensor; `dare_ties` applies it
//   before TIES.
//
// The task vectors are this run's plus one per `with:` entry (other fine-tuned models of the same architecture and
// θ₀: folders retain loads, or state dicts in code). With one vector TIES is trimmed task arithmetic. λ defaults to 1
// (TIES' and DARE's setting); `lambda: sweep` tries `lambdas` (× `ks` × `ps` when given) on held-out data like
// wise's α sweep, logs every score and keeps the best. Only floating-point tensors merge; integer buffers and a new
// head (a probe's, which has no θ₀ to subtract) keep this run's values.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { existsSync } from 'node:fs';
import type { Method, TrainableModel, TrainContext } from '../train/hooks.js';
import type { Example } from '../data/formats.js';
import { fnv1a } from '../data/random.js';
import { z } from 'zod';
import { dataSpec, type DataSpec, type GivenExamples } from '../data/spec.js';
import { codeOnly, integer, mark, nonNegative, num, parseOptions, positiveInt, refuse } from '../options.js';
import { isNewHead, perSampleLosses, resolveData, shown, type Options } from './support.js';
import type { StateDict } from './wise.js';

export const MERGE_MODES = ['task_arithmetic', 'ties', 'dare', 'dare_ties'] as const;
export type MergeMode = (typeof MERGE_MODES)[number];

export interface MergeSettings {
  mode: MergeMode;
  lambda: number;
  /** TIES: fraction of each tensor's entries kept (by magnitude). */
  k: number;
  /** DARE: drop probability. */
  p: number;
  seed: number;
}

/** τ trimmed to its round(k·n) largest magnitudes (at least one; entries tied with the smallest kept one stay too). */
export function trimTopK(t: Tensor, k: number): Tensor {
  return torch.tidy(() => {
    const n = t.numel();
    if (k >= 1 || n === 0) return t.clone();
    const m = Math.max(1, Math.round(k * n));
    const thr = t.reshape(-1).abs().topk(m)[0].min(); // the m-th largest |τ|
    return t.mul(t.abs().ge(thr).to(t.dtype));
  });
}

/** DARE: drop each entry with probability p, rescale the rest by 1/(1−p); the mask is drawn on the CPU from `seed`. */
export function dareDrop(t: Tensor, p: number, seed: number): Tensor {
  if (p === 0) return t.clone();
  const saved = torch.getRngState();
  try {
    torch.manualSeed(seed);
    return torch.tidy(() => {
      const keep = torch.rand(t.shape).ge(p).to(t.dtype).to({ device: t.device }); // 1 with probability 1−p
      return t.mul(keep).div(1 - p);
    });
  } finally {
    torch.setRngState(saved);
    saved.dispose();
  }
}

/** TIES over task vectors of one tensor: trim each, elect signs by the summed mass, average the agreeing entries. */
export function tiesMerge(vectors: Tensor[], k: number): Tensor {
  return torch.tidy(() => {
    const trimmed = torch.stack(vectors.map((v) => trimTopK(v, k))); // [K, ...]
    const elected = trimmed.sum(0).sign(); // [...]
    const agree = trimmed.sign().eq(elected.unsqueeze(0)).logicalAnd(trimmed.ne(0)).to(trimmed.dtype); // [K, ...]
    return trimmed.mul(agree).sum(0).div(agree.sum(0).clamp(1));
  });
}

/** The merged task vector of one tensor; `key` seeds DARE's masks (one stream per tensor and vector). */
export function mergeVectors(vectors: Tensor[], s: MergeSettings, key: string): Tensor {
  return torch.tidy(() => {
    const dropped = s.mode === 'dare' || s.mode === 'dare_ties' ? vectors.map((v, i) => dareDrop(v, s.p, (Math.imul(s.seed + 1, 0x9e3779b1) ^ fnv1a(`${key}\u0000${i}`)) >>> 0)) : vectors;
    if (s.mode === 'ties' || s.mode === 'dare_ties') return tiesMerge(dropped, s.k);
    return dropped.length === 1 ? dropped[0].clone() : torch.stack(dropped).sum(0);
  });
}

/**
 * θ₀ + λ·merge(τ_1 … τ_K) for every floating-point tensor of `base`; other tensors, and keys `keepTuned` matches, are
 * the first tuned state's. Keys, shapes and dtypes must agree (each tuned state is named for its errors).
 */
export function mergeStateDicts(base: StateDict, tuned: { name: string; state: StateDict }[], s: MergeSettings, keepTuned: (key: string) => boolean = () => false): StateDict {
  for (const { name, state } of tuned) {
    const missing = [...base.keys()].filter((k) => !state.has(k));
    if (missing.length) throw new Error(`merge: ${name} lacks ${missing.length} tensor(s) of the model: ${missing.slice(0, 5).join(', ')}; every merged model needs the same architecture`);
    for (const [k, a] of base) {
      const b = state.get(k)!;
      if (a.shape.join() !== b.shape.join()) throw new Error(`merge: '${k}' is [${a.shape}] in the model and [${b.shape}] in ${name}; every merged model needs the same architecture`);
    }
  }
  const out: StateDict = new Map();
  torch.noGrad(() => {
    for (const [k, t0] of base) {
      const own = tuned[0].state.get(k)!;
      if (!torch.isFloating(t0.dtype) || keepTuned(k)) {
        out.set(k, own.detachedClone());
        continue;
      }
      out.set(k, torch.tidy(() => {
        const vectors = tuned.map(({ state }) => state.get(k)!.detach().to(t0.dtype).to({ device: t0.device }).sub(t0));
        return t0.add(mergeVectors(vectors, s, k).mul(s.lambda));
      }));
    }
  });
  return out;
}

function snapshot(model: TrainableModel): StateDict {
  return torch.noGrad(() => torch.tidy(() => new Map([...model.stateDict()].map(([k, t]) => [k, torch.keep(t.detachedClone())]))));
}

/** The λ a sweep tries when lambdas is not given. */
const GRID = Array.from({ length: 11 }, (_, i) => i / 10);
const LAMBDA_WHAT = "a non-negative number or 'sweep'";
const fraction = () => num('a fraction in (0, 1]', { gt: 0, max: 1 });
const probability = () => num('a probability in [0, 1)', { min: 0, lt: 1 });
const list = <T extends z.ZodTypeAny>(item: T, what: string) => z.array(item, { invalid_type_error: what }).min(1, what);
const TIES = ['ties', 'dare_ties'];
const DARE = ['dare', 'dare_ties'];

export const mergeOptions = z.object({
  mode: z.enum(MERGE_MODES).default('ties').describe('How the task vectors combine: task_arithmetic (their sum), ties (trim, elect sign, disjoint mean), dare (random drop and rescale), dare_ties.'),
  lambda: z.union([num(LAMBDA_WHAT, { min: 0 }), z.literal('sweep')], { errorMap: () => ({ message: LAMBDA_WHAT }) }).default(1)
    .describe("Scale λ of the merged task vector (θ₀ + λ·τ), or sweep: try lambdas (and ks, ps) on eval_data and keep the best."),
  lambdas: list(nonNegative(), 'a non-empty list of non-negative numbers').optional().describe('The λ tried by a sweep (default 0, 0.1, …, 1).'),
  k: fraction().optional().describe("TIES' kept fraction: each task vector is trimmed to its k largest magnitudes (default 0.2)."),
  ks: list(fraction(), 'a non-empty list of numbers in (0, 1]').optional().describe('The k tried by a sweep.'),
  p: probability().optional().describe("DARE's drop probability (default 0.9, the paper's)."),
  ps: list(probability(), 'a non-empty list of numbers in [0, 1)').optional().describe('The p tried by a sweep.'),
  seed: integer().default(0).describe("Seed of DARE's drop masks."),
  with: mark(z.array(z.union([z.string(), z.instanceof(Map)], { errorMap: () => ({ message: 'a model folder' }) }), { invalid_type_error: 'a list of fine-tuned model folders' }), null, () => ({ type: 'array', items: { type: 'string' } }))
    .default([]).describe('Other fine-tuned models of the same base whose task vectors are merged with this run\'s (model folders).'),
  eval_data: dataSpec().optional().describe('Held-out data a sweep scores each setting on (lower mean token loss is better).'),
  evaluate: codeOnly<(model: TrainableModel) => number>('a function (model) => score, higher is better', (v) => typeof v === 'function'),
  batch_size: positiveInt().default(16).describe('Examples per forward pass when scoring eval_data.'),
}).strict().superRefine((o, ctx) => {
  const sweep = o.lambda === 'sweep';
  const grids = [['lambdas', true, ''], ['ks', TIES.includes(o.mode), ' with mode ties or dare_ties'], ['ps', DARE.includes(o.mode), ' with mode dare or dare_ties']] as const;
  for (const [key, applies, modes] of grids) if (o[key] !== undefined && (!sweep || !applies)) refuse(ctx, `option '${key}' applies to lambda: sweep${modes}`);
  if (o.k !== undefined && !TIES.includes(o.mode)) refuse(ctx, `option 'k' (TIES' kept fraction) applies to mode ties or dare_ties, not ${o.mode}`);
  if (o.p !== undefined && !DARE.includes(o.mode)) refuse(ctx, `option 'p' (DARE's drop probability) applies to mode dare or dare_ties, not ${o.mode}`);
  if (sweep && !o.evaluate && o.eval_data === undefined) refuse(ctx, 'lambda: sweep needs held-out data to choose λ: eval_data (Examples or a data spec), or evaluate(model) in code');
}).transform((o) => ({ ...o, lambdas: o.lambdas ?? GRID, ks: o.ks ?? [o.k ?? 0.2], ps: o.ps ?? [o.p ?? 0.9] }));

export class Merge implements Method {
  readonly name = 'merge';
  readonly conflicts = {
    wise: 'both rewrite the final weights from θ₀ after training (merge with mode task_arithmetic and one model is WiSE-FT with λ = α)',
    lora: 'merge works on the full state dict and LoRA trains an adapter beside it; merge the adapter into a model first and pass that model under with:',
  };
  readonly mode: MergeMode;
  readonly lambda: number | 'sweep';
  readonly lambdas: number[];
  readonly ks: number[];
  readonly ps: number[];
  readonly seed: number;
  readonly batchSize: number;
  private readonly others: unknown[];
  private readonly evalSpec: DataSpec | GivenExamples | undefined;
  private readonly evaluateFn: ((model: TrainableModel) => number) | null;
  base: StateDict | null = null;
  evalData: Example[] | null = null;
  /** Every setting tried with its score (sweep), and the one applied. */
  scores: [MergeSettings, number][] = [];
  chosen: MergeSettings | null = null;

  constructor(o: Options = {}) {
    const name = this.name;
    const p = parseOptions(name, mergeOptions, o);
    this.mode = p.mode;
    this.lambda = p.lambda;
    this.lambdas = p.lambdas;
    this.ks = p.ks;
    this.ps = p.ps;
    this.seed = p.seed;
    this.batchSize = p.batch_size;
    this.others = p.with;
    this.evaluateFn = p.evaluate ?? null;
    this.evalSpec = p.eval_data;
  }

  async setup(ctx: TrainContext): Promise<void> {
    // Checked before training, so a wrong folder does not cost the run.
    this.others.forEach((w, i) => {
      if (typeof w === 'string' && !existsSync(w)) throw new Error(`merge: with[${i}] ${JSON.stringify(w)} does not exist; give fine-tuned models of the same base model (folders with config.json + safetensors, or llama2.c files)`);
      if (typeof w !== 'string' && !(w instanceof Map)) throw new Error(`merge: with[${i}] must be a model folder, got ${shown(w)}`);
    });
    // Setup runs before a resumed run loads its checkpoint: this is θ₀ either way.
    this.base = snapshot(ctx.model);
    if (this.evalSpec !== undefined) this.evalData = await resolveData(this.name, ctx, this.evalSpec, 'merge_eval');
    ctx.log({ kind: this.name, merge_mode: this.mode, merge_lambda: String(this.lambda), merge_models: 1 + this.others.length, ...(this.mode.includes('ties') ? { merge_k: this.ks.join(',') } : {}), ...(this.mode.startsWith('dare') ? { merge_p: this.ps.join(','), merge_seed: this.seed } : {}) });
  }

  private async otherStates(ctx: TrainContext): Promise<{ name: string; state: StateDict; dispose?: () => void }[]> {
    const { loadPretrained } = await import('../models/hub.js');
    const dtype = ctx.model.parameters()[0]?.dtype;
    const out: { name: string; state: StateDict; dispose?: () => void }[] = [];
    for (const w of this.others) {
      if (w instanceof Map) {
        out.push({ name: 'a state dict given in code', state: w as StateDict });
        continue;
      }
      const p = await loadPretrained(w as string, { dtype: dtype as torch.DType });
      out.push({ name: w as string, state: p.model.stateDict({ keepVars: true }) as StateDict, dispose: () => p.model.dispose?.() });
    }
    return out;
  }

  private score(ctx: TrainContext): number {
    if (this.evaluateFn) return this.evaluateFn(ctx.model);
    const ok = Array.from(perSampleLosses(ctx, this.evalData!, this.batchSize)).filter(Number.isFinite);
    return -(ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length));
  }

  private apply(ctx: TrainContext, tuned: { name: string; state: StateDict }[], s: MergeSettings): void {
    torch.tidy(() => ctx.model.loadStateDict(mergeStateDicts(this.base!, tuned, s, (k) => isNewHead(ctx, k)), { strict: true }));
  }

  async finish(ctx: TrainContext): Promise<void> {
    const done = ctx.state.get(this.name) as { settings?: MergeSettings } | undefined;
    if (done?.settings) {
      // A run resumed from its final checkpoint holds the merged weights already.
      this.chosen = done.settings;
      ctx.log({ kind: this.name, merge_note: 'already applied before the final checkpoint' });
      return;
    }
    if (!this.base) throw new Error('merge: θ₀ was not recorded (setup did not run)');
    const own = snapshot(ctx.model);
    const others = await this.otherStates(ctx);
    const tuned = [{ name: 'this run', state: own }, ...others];
    try {
      const grid: MergeSettings[] = [];
      const lambdas = this.lambda === 'sweep' ? this.lambdas : [this.lambda];
      for (const lambda of lambdas) for (const k of this.ks) for (const p of this.ps) grid.push({ mode: this.mode, lambda, k, p, seed: this.seed });
      let best = grid[0];
      if (this.lambda === 'sweep') {
        this.scores = [];
        for (const s of grid) {
          this.apply(ctx, tuned, s);
          const sc = this.score(ctx);
          this.scores.push([s, sc]);
          ctx.log({ kind: this.name, merge_lambda: s.lambda, merge_k: s.k, merge_p: s.p, merge_score: +sc.toPrecision(7) });
        }
        // Best score; ties go to the first setting of the grid.
        best = this.scores.reduce((a, c) => (c[1] > a[1] ? c : a))[0];
      }
      this.apply(ctx, tuned, best);
      this.chosen = best;
      ctx.state.set(this.name, { settings: best });
      ctx.log({ kind: this.name, merge_chosen: `${best.mode} lambda=${best.lambda}${best.mode.includes('ties') ? ` k=${best.k}` : ''}${best.mode.startsWith('dare') ? ` p=${best.p}` : ''}` });
    } finally {
      torch.dispose(own.values());
      for (const o of others) o.dispose?.();
    }
  }

  dispose(): void {
    if (this.base) torch.dispose(this.base.values());
    this.base = null;
  }
}
