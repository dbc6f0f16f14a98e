// WiSE-FT, weight-space ensembling (Wortsman et al., CVPR 2022, arXiv 2109.01903), docs/METHODS.md §9: after fine-tuning,
// θ_α = (1−α)·θ₀ + α·θ_ft over every tensor of the state dict, buffers included; α = 0 is the pretrained model and
// α = 1 the fine-tuned one, bit for bit.
//
// `alpha: <number>` applies one α in the finish hook; `alpha: sweep` tries 0, 0.1, …, 1 (or `alphas`), scores each on
// held-out data — `eval_data` (higher score = lower mean token loss), or an `evaluate(model)` function given in code —
// logs every score and keeps the best. `wiseInterpolate` is the same rule as a plain function for other code (the
// evaluation harness sweeps with it).
//
// A new head (a linear probe's, LP-FT's, flow_vision's) has no pretrained value: its θ₀ would be its random
// initialisation. Its base is the head as the probe left it instead — taken when the probe phase ends (LP-FT), or at
// the end for a plain probe, whose interpolation then keeps the probed head — as WiSE-FT does with a linear
// classifier. That copy goes into checkpoints, since a run resumed after the switch cannot see it again.
//
// With LoRA, interpolating A and B separately is not WiSE-FT (the product BA is not linear in them); scaling the
// adapter's contribution by α is: W₀ + α·ΔW. A model with LoRA layers is therefore scaled (lora's setAdapterScale)
// instead of interpolated, and `scale_adapter(model, α)` can be passed in code for other kinds of adapters.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Method, NewHead, TrainableModel, TrainContext } from '../train/hooks.js';
import type { Example } from '../data/formats.js';
import { z } from 'zod';
import { dataSpec, type DataSpec, type GivenExamples } from '../data/spec.js';
import { codeOnly, num, parseOptions, positiveInt, refuse } from '../options.js';
import { perSampleLosses, resolveData, type Options } from './support.js';
import { loraModules, setAdapterScale } from './lora/index.js';

const unit = () => num('a number in [0, 1]', { min: 0, max: 1 });
const ALPHA_WHAT = "a number in [0, 1] or 'sweep'";
const GRID = Array.from({ length: 11 }, (_, i) => i / 10);

export const wiseOptions = z.object({
  alpha: z.union([num(ALPHA_WHAT, { min: 0, max: 1 }), z.literal('sweep')], { errorMap: () => ({ message: ALPHA_WHAT }) }).default('sweep')
    .describe("θ_α = (1−α)·θ₀ + α·θ_ft: one α, or sweep: try alphas on eval_data and keep the best."),
  alphas: z.array(unit(), { invalid_type_error: 'a non-empty list of numbers in [0, 1]' }).min(1, 'a non-empty list of numbers in [0, 1]').optional().describe('The α tried by a sweep (default 0, 0.1, …, 1).'),
  eval_data: dataSpec().optional().describe('Held-out data a sweep scores each α on (lower mean token loss is better).'),
  evaluate: codeOnly<(model: TrainableModel) => number>('a function (model) => score, higher is better', (v) => typeof v === 'function'),
  scale_adapter: codeOnly<AdapterScaler>('a function (model, alpha) => void', (v) => typeof v === 'function'),
  batch_size: positiveInt().default(16).describe('Examples per forward pass when scoring eval_data.'),
}).strict().superRefine((o, ctx) => {
  if (o.alphas !== undefined && o.alpha !== 'sweep') refuse(ctx, 'alphas apply to alpha: sweep');
  if (o.alpha === 'sweep' && !o.evaluate && o.eval_data === undefined) refuse(ctx, 'alpha: sweep needs held-out data to choose α: eval_data (Examples or a data spec), or evaluate(model) in code');
});

export type StateDict = Map<string, Tensor>;

/** Scales the adapters of a model by α (W₀ + α·ΔW); lora's setAdapterScale is the one for LoRA layers. */
export type AdapterScaler = (model: TrainableModel, alpha: number) => void;

function checkAlpha(alpha: number): void {
  if (typeof alpha !== 'number' || !(alpha >= 0 && alpha <= 1)) throw new RangeError(`WiSE-FT: alpha must be a number in [0, 1], got ${alpha}`);
}

/**
 * θ_α = (1−α)·base + α·tuned for every key (new tensors owned by the caller's scope). α = 0 and α = 1 copy one side
 * exactly. Integer tensors (counters such as num_batches_tracked) are interpolated and rounded; boolean ones come
 * from the nearer side. Keys, shapes and dtypes must agree.
 */
export function wiseInterpolate(base: StateDict, tuned: StateDict, alpha: number): StateDict {
  checkAlpha(alpha);
  const missing = [...base.keys()].filter((k) => !tuned.has(k));
  const extra = [...tuned.keys()].filter((k) => !base.has(k));
  if (missing.length || extra.length) {
    throw new Error(`wiseInterpolate: the state dicts differ: ${missing.length ? `missing from the tuned one: ${missing.slice(0, 5).join(', ')}` : ''}${missing.length && extra.length ? '; ' : ''}${extra.length ? `only in the tuned one: ${extra.slice(0, 5).join(', ')}` : ''}`);
  }
  const out: StateDict = new Map();
  torch.noGrad(() => {
    for (const [k, a] of base) {
      const b = tuned.get(k)!;
      if (a.shape.join() !== b.shape.join() || a.dtype !== b.dtype) throw new Error(`wiseInterpolate: '${k}' is ${a.dtype}[${a.shape}] in the base and ${b.dtype}[${b.shape}] in the tuned state`);
      out.set(k, interpolateTensor(a, b, alpha));
    }
  });
  return out;
}

function interpolateTensor(a: Tensor, b: Tensor, alpha: number): Tensor {
  if (alpha === 0) return a.detachedClone();
  if (alpha === 1) return b.detachedClone();
  return torch.tidy(() => {
    if (a.dtype === 'bool') return (alpha < 0.5 ? a : b).clone();
    if (!torch.isFloating(a.dtype)) return a.double().mul(1 - alpha).add(b.double(), alpha).round().to(a.dtype);
    // (1−α)·a + α·b, the formula as written (add's alpha multiplies b).
    return a.mul(1 - alpha).add(b, alpha);
  });
}

/** Writes θ_α into the model in place (every parameter and persistent buffer). */
export function applyWise(model: TrainableModel, base: StateDict, tuned: StateDict, alpha: number): void {
  torch.tidy(() => {
    model.loadStateDict(wiseInterpolate(base, tuned, alpha), { strict: true });
  });
}

/** Copies of every state-dict tensor, kept until disposed. */
function snapshot(model: TrainableModel): StateDict {
  return torch.noGrad(() => torch.tidy(() => {
    const out: StateDict = new Map();
    for (const [k, t] of model.stateDict()) out.set(k, torch.keep(t.clone()));
    return out;
  }));
}

export class WiseFT implements Method {
  readonly name = 'wise';
  readonly alpha: number | 'sweep';
  readonly alphas: number[];
  readonly batchSize: number;
  private readonly evalSpec: DataSpec | GivenExamples | undefined;
  private readonly evaluateFn: ((model: TrainableModel) => number) | null;
  private readonly scaleAdapter: AdapterScaler | null;
  base: StateDict | null = null;
  evalData: Example[] | null = null;
  /** Every α tried and its score (sweep), and the α applied. */
  scores: [number, number][] = [];
  chosen: number | null = null;
  /** New heads whose base is still their initialisation, with their state-dict keys. */
  private pendingHeads: { head: NewHead; keys: string[] }[] = [];
  /** State-dict keys whose base is now the probe's head. */
  private probedKeys = new Set<string>();

  constructor(o: Options = {}) {
    const p = parseOptions(this.name, wiseOptions, o);
    this.alpha = p.alpha;
    this.alphas = p.alphas ?? GRID;
    this.evaluateFn = p.evaluate ?? null;
    this.scaleAdapter = p.scale_adapter ?? null;
    this.evalSpec = p.eval_data;
    this.batchSize = p.batch_size;
  }

  async setup(ctx: TrainContext): Promise<void> {
    // Setup runs before a resumed run loads its checkpoint: this is θ₀ either way. Scaled adapters need no copy.
    if (!this.scaleAdapter && loraModules(ctx.model).length === 0) this.base = snapshot(ctx.model);
    const keys = [...(this.base?.keys() ?? [])];
    this.pendingHeads = (ctx.newHeads ?? []).map((head) => ({ head, keys: keys.filter((k) => head.pattern.test(k)) })).filter((h) => h.keys.length > 0);
    if (this.evalSpec !== undefined) this.evalData = await resolveData(this.name, ctx, this.evalSpec, 'wise_eval');
  }

  beforeStep(ctx: TrainContext): void {
    this.takeProbedHeads(ctx, false);
  }

  onEpochStart(ctx: TrainContext): void {
    this.takeProbedHeads(ctx, false);
  }

  /** Makes the current value of each new head whose probe phase is over (or, at the end, of every one) its base. */
  private takeProbedHeads(ctx: TrainContext, end: boolean): void {
    if (!this.base) return;
    this.pendingHeads = this.pendingHeads.filter(({ head, keys }) => {
      if (!end && head.probing(ctx)) return true;
      torch.noGrad(() => torch.tidy(() => {
        const sd = ctx.model.stateDict();
        for (const k of keys) {
          if (this.probedKeys.has(k)) continue;
          this.base!.get(k)!.copy_(sd.get(k)!);
          this.probedKeys.add(k);
        }
      }));
      return false;
    });
  }

  stateTensors(): Map<string, Tensor> {
    return new Map([...this.probedKeys].map((k) => [`head.${k}`, this.base!.get(k)!]));
  }

  loadStateTensors(t: Map<string, Tensor>): void {
    torch.noGrad(() => {
      for (const [name, v] of t) {
        const k = name.slice('head.'.length);
        const b = name.startsWith('head.') ? this.base?.get(k) : undefined;
        if (!b) continue;
        b.copy_(v);
        this.probedKeys.add(k);
      }
    });
  }

  /** Score of the model as it is: the evaluate function, or minus the mean token loss on eval_data. */
  score(ctx: TrainContext): number {
    if (this.evaluateFn) return this.evaluateFn(ctx.model);
    const losses = perSampleLosses(ctx, this.evalData!, this.batchSize);
    // Mean over samples of each sample's token-mean loss; samples without trained tokens do not count.
    const ok = Array.from(losses).filter(Number.isFinite);
    return -(ok.reduce((a, b) => a + b, 0) / Math.max(1, ok.length));
  }

  private setAlpha(ctx: TrainContext, tuned: StateDict | null, alpha: number, scaler: AdapterScaler | null): void {
    if (scaler) scaler(ctx.model, alpha);
    else applyWise(ctx.model, this.base!, tuned!, alpha);
  }

  finish(ctx: TrainContext): void {
    const done = ctx.state.get(this.name) as { alpha?: number } | undefined;
    if (done?.alpha !== undefined) {
      // A run resumed from its final checkpoint holds θ_α already; interpolating again would move it.
      this.chosen = done.alpha;
      ctx.log({ kind: this.name, wise_alpha: done.alpha, wise_note: 'already applied before the final checkpoint' });
      return;
    }
    const scaler = this.scaleAdapter ?? (loraModules(ctx.model).length ? setAdapterScale : null);
    const scaled = scaler !== null;
    this.takeProbedHeads(ctx, true);
    if (!scaled && !this.base) throw new Error('wise: θ₀ was not recorded (setup did not run, or LoRA layers were removed before the end)');
    const tuned = scaled ? null : snapshot(ctx.model);
    try {
      let alpha: number;
      if (this.alpha === 'sweep') {
        this.scores = [];
        for (const a of this.alphas) {
          this.setAlpha(ctx, tuned, a, scaler);
          const s = this.score(ctx);
          this.scores.push([a, s]);
          ctx.log({ kind: this.name, wise_alpha: a, wise_score: +s.toPrecision(7) });
        }
        // Best score; ties go to the larger α (closer to the fine-tuned model the run was for).
        alpha = this.scores.reduce((best, cur) => (cur[1] > best[1] || (cur[1] === best[1] && cur[0] > best[0]) ? cur : best))[0];
      } else {
        alpha = this.alpha;
      }
      this.setAlpha(ctx, tuned, alpha, scaler);
      this.chosen = alpha;
      ctx.state.set(this.name, { alpha });
      ctx.log({ kind: this.name, wise_alpha_chosen: alpha, wise_by: scaled ? 'adapter scale' : 'state-dict interpolation', ...(this.alpha === 'sweep' ? { wise_score: +this.scores.find(([a]) => a === alpha)![1].toPrecision(7) } : {}) });
    } finally {
      if (tuned) torch.dispose(tuned.values());
    }
  }

  dispose(): void {
    if (this.base) torch.dispose(this.base.values());
    this.base = null;
  }
}
