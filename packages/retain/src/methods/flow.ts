// FLOW (Sanyal et al., arXiv 2502.02797), docs/METHODS.md §1: weight every fine-tuning sample by how well the pretrained
// model already fits it, wᵢ = exp(−fᵢ(θ₀)/τ), so samples far from the pretrained distribution pull the weights less.
//
// fᵢ(θ₀) is the sample's mean cross-entropy per trained token — the trainer's own loss function on the trainer's own
// Examples, so tokenization, template, masking and truncation are exactly those of training — computed once before
// the first step in eval mode without autograd. τ is the median of {fᵢ} over the whole set (or a number, or the median
// over each optimizer step's samples), times `tau_scale`. The weights stay fixed for the run; a NaN (a sample without trained tokens)
// becomes 0. The trainer then minimises Σᵢ wᵢ·(sum of sample i's token losses) / (trained tokens in the step), the
// paper's loss. `normalize: none` (the paper's reference code, and the default) leaves the effective learning rate
// scaled by the mean weight (≈ e⁻¹ at the median); `mean` rescales each step's weights to mean 1; `sum` makes the
// step's loss the weighted token mean Σwᵢsᵢ / Σwᵢnᵢ. The per-step rules see every micro-batch of the optimizer step
// together, so gradient accumulation does not change the loss (grad_accum 4 × batch 2 is grad_accum 1 × batch 8).
//
// The losses are cached in <cache_dir or output_dir>/flow-<hash>.json as {sample id → loss, weight}, keyed by a hash
// of the model's weights and of the Examples (ids, tokens, masks, labels), so a rerun or a resumed run scores nothing.
//
// Vision with a new head (`flow_vision`, or `head` on `flow`): a linear probe trains the head on the frozen body first
// (probe.ts); at the switch τ and the weights come from the probe model's losses — a snapshot of the probe, which is
// what "a frozen copy of the probe model" computes, since the weights are fixed from then on — and everything
// fine-tunes from the probe with those weights. Those losses are kept in the checkpoint state so a resumed run,
// whose weights have moved on, reuses them.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Batch } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { Method, NewHead, SetupContext, TrainContext } from '../train/hooks.js';
import { writeJsonAtomic } from '../train/checkpoint.js';
import { z } from 'zod';
import { bool, nonNegative, num, parseOptions, positive, positiveInt, refuse } from '../options.js';
import { checkPhase, HeadProbe, probeFields } from './probe.js';
import { hashExamples, hashModel, indexById, median, perSampleLosses, sampleKey, summary, type Options } from './support.js';

export type TauRule = 'median' | 'batch_median' | number;
export type Normalize = 'none' | 'sum' | 'mean';

const TAU_WHAT = "'median', 'batch_median' or a positive number";

const fields = {
  tau: z.union([z.enum(['median', 'batch_median']), num(TAU_WHAT, { gt: 0 })], { errorMap: () => ({ message: TAU_WHAT }) })
    .default('median').describe("Temperature τ: the median loss over the training set, the median over each optimizer step's samples (batch_median), or a number."),
  tau_scale: positive().default(1).describe('Multiplies τ.'),
  normalize: z.enum(['none', 'sum', 'mean']).default('none').describe("none: the paper's loss; mean: each step's weights rescaled to mean 1; sum: the weighted token mean."),
  batch_size: positiveInt().default(16).describe('Examples per forward pass when scoring the training set.'),
  cache: bool().default(true).describe('Keep the scores in <cache_dir or output_dir>/flow-<hash>.json, so a rerun or resumed run scores nothing.'),
  cache_dir: z.string({ invalid_type_error: 'a path' }).optional().describe('Folder of the score cache (default: output_dir).'),
  other_weight: nonNegative().default(1).describe('Weight of samples that are not in the scored training set (another source mixed in).'),
};

/** flow: `head` turns on the vision variant (a linear probe first), as flow_vision does. */
export const flowOptions = z.object({ ...fields, head: probeFields.head.optional(), probe_steps: probeFields.probe_steps, probe_epochs: probeFields.probe_epochs }).strict().superRefine((o, ctx) => {
  if (o.head === undefined && (o.probe_steps !== undefined || o.probe_epochs !== undefined)) refuse(ctx, "probe_steps/probe_epochs need 'head' (the vision variant's linear probe)");
  else if (o.head !== undefined) checkPhase({ ...o, head: o.head, then: 'finetune' }, ctx);
});

export const flowVisionOptions = z.object({ ...fields, ...probeFields }).strict().superRefine((o, ctx) => checkPhase({ ...o, then: 'finetune' }, ctx));

/** wᵢ = exp(−fᵢ/τ), with NaN (no trained tokens, or a non-finite loss) → 0. */
export function flowWeight(loss: number, tau: number): number {
  const w = Math.exp(-loss / tau);
  return Number.isNaN(w) ? 0 : w;
}

interface CacheFile {
  format: 'retain.flow/1';
  key: string;
  loss: string;
  tau_rule: string;
  tau: number | null;
  samples: Record<string, { loss: number | null; weight: number | null }>;
}

export class Flow implements Method {
  readonly name: string;
  readonly conflicts: Record<string, string>;
  readonly wholeExamples = 'its weights are per sample, and a packed block joins pieces of several samples';
  readonly tauRule: TauRule;
  readonly tauScale: number;
  readonly normalize: Normalize;
  readonly batchSize: number;
  readonly useCache: boolean;
  readonly cacheDir: string | null;
  readonly otherWeight: number;
  readonly probe: HeadProbe | null;

  /** fᵢ per training example (in ctx.examples order), and the fixed weights (null for a per-batch τ). */
  losses: Float64Array | null = null;
  weights: Float64Array | null = null;
  tau: number | null = null;
  /** Batches scored by forward passes in this process (a cached run scores none). */
  forwardBatches = 0;
  cacheFile: string | null = null;
  private cacheKey: string | null = null;
  private index = new Map<string, number>();

  constructor(o: Options = {}, variant: 'text' | 'vision' = 'text') {
    this.name = variant === 'vision' ? 'flow_vision' : 'flow';
    const p = parseOptions(this.name, variant === 'vision' ? flowVisionOptions : flowOptions, o);
    this.tauRule = p.tau;
    this.tauScale = p.tau_scale;
    this.normalize = p.normalize;
    this.batchSize = p.batch_size;
    this.useCache = p.cache;
    this.cacheDir = p.cache_dir ?? null;
    this.otherWeight = p.other_weight;
    const vision = p.head !== undefined;
    this.probe = p.head ? new HeadProbe(this.name, { ...p, head: p.head, then: 'finetune' }) : null;
    const both = 'both weight every training sample; keep one (flow_vision for a new head)';
    this.conflicts = vision ? { probe: `${this.name} runs its own linear probe`, hft: 'both decide which parameters train', flow: both } : { flow_vision: both };
  }

  get newHead(): NewHead | undefined {
    return this.probe ?? undefined;
  }

  parameterize(ctx: SetupContext): void {
    this.probe?.parameterize(ctx);
  }

  async setup(ctx: TrainContext): Promise<void> {
    this.index = indexById(this.name, ctx.examples);
    // The vision variant scores the probed model when its body unfreezes (enterPhase).
    if (!this.probe) this.score(ctx, 'pretrained');
  }

  beforeStep(ctx: TrainContext): void {
    this.enterPhase(ctx);
  }

  onEpochStart(ctx: TrainContext): void {
    this.enterPhase(ctx);
  }

  afterBackward(ctx: TrainContext): void {
    this.probe?.dropBodyGrads(ctx);
  }

  private enterPhase(ctx: TrainContext): void {
    if (!this.probe) return;
    const probing = this.probe.probing(ctx);
    // Score the probe model before its body unfreezes; the probe's own modes (body in eval) do not matter here.
    if (!probing && this.losses === null) {
      const saved = ctx.state.get(this.name) as { losses?: number[]; key?: string } | undefined;
      if (saved?.losses && saved.losses.length === ctx.examples.length) {
        this.losses = Float64Array.from(saved.losses, (v) => (v === null ? NaN : v));
        this.finishWeights(ctx, 'probe', true, saved.key ?? null, 0);
      } else {
        this.score(ctx, 'probe');
        ctx.state.set(this.name, { losses: Array.from(this.losses!), key: this.cacheKey });
      }
    }
    this.probe.apply(ctx);
  }

  /** Computes (or reads from the cache) fᵢ for every training example with the model as it is now. */
  score(ctx: TrainContext, phase: 'pretrained' | 'probe'): void {
    const t0 = performance.now();
    const examples = ctx.examples;
    const dir = this.useCache ? this.cacheDir ?? ctx.outputDir : null;
    const key = createHash('sha256').update(`retain.flow/1\u0000${hashModel(ctx.model)}\u0000${hashExamples(examples)}`).digest('hex');
    this.cacheKey = key;
    this.cacheFile = dir ? join(dir, `flow-${key.slice(0, 16)}.json`) : null;
    const cached = this.cacheFile ? this.readCache(this.cacheFile, key, examples) : null;
    if (cached) {
      this.losses = cached;
    } else {
      this.losses = perSampleLosses(ctx, examples, this.batchSize);
      this.forwardBatches += Math.ceil(examples.length / this.batchSize);
    }
    this.finishWeights(ctx, phase, cached !== null, key, (performance.now() - t0) / 1000);
  }

  private finishWeights(ctx: TrainContext, phase: string, cached: boolean, key: string | null, seconds: number): void {
    const losses = this.losses!;
    const lossMedian = median(losses);
    const nanLosses = losses.filter((v) => !Number.isFinite(v)).length;
    if (this.tauRule === 'batch_median') {
      this.tau = null;
      this.weights = null;
    } else {
      this.tau = (this.tauRule === 'median' ? lossMedian : this.tauRule) * this.tauScale;
      if (!(this.tau > 0 && Number.isFinite(this.tau))) {
        throw new Error(`${this.name}: τ = ${this.tau} (median loss ${lossMedian} × tau_scale ${this.tauScale}); the ${phase} model's losses give no usable temperature — set tau to a positive number`);
      }
      const tau = this.tau;
      this.weights = losses.map((f) => flowWeight(f, tau));
    }
    if (this.cacheFile && !cached && key) this.writeCache(this.cacheFile, key, ctx.examples);
    const fields: Record<string, number | string> = {
      kind: this.name, flow_phase: phase, flow_samples: losses.length, flow_cached: cached ? 1 : 0, flow_seconds: +seconds.toFixed(3),
      flow_tau_rule: String(this.tauRule), flow_tau_scale: this.tauScale, flow_normalize: this.normalize,
      flow_loss_median: +lossMedian.toPrecision(7), flow_nan_losses: nanLosses,
    };
    if (this.tau !== null) fields.flow_tau = +this.tau.toPrecision(7);
    if (this.weights) {
      const s = summary(this.weights);
      Object.assign(fields, {
        flow_weight_mean: +s.mean.toPrecision(7), flow_weight_min: +s.min.toPrecision(7), flow_weight_median: +s.median.toPrecision(7),
        flow_weight_max: +s.max.toPrecision(7), flow_zero_weights: this.weights.filter((w) => w === 0).length,
      });
    }
    if (this.cacheFile) fields.flow_cache = this.cacheFile;
    ctx.log(fields);
  }

  /** Cache keys are sample ids; ids repeated across sources get their source as a prefix. */
  private keysOf(examples: Example[]): string[] {
    const seen = new Set<string>();
    const clash = examples.some((e) => (seen.has(e.id) ? true : (seen.add(e.id), false)));
    return examples.map((e) => (clash ? `${e.source}/${e.id}` : e.id));
  }

  private readCache(file: string, key: string, examples: Example[]): Float64Array | null {
    if (!existsSync(file)) return null;
    let c: CacheFile;
    try {
      c = JSON.parse(readFileSync(file, 'utf8')) as CacheFile;
    } catch {
      return null; // a torn or foreign file: score again and overwrite it
    }
    if (c.format !== 'retain.flow/1' || c.key !== key) return null;
    const keys = this.keysOf(examples);
    const out = new Float64Array(examples.length);
    for (let i = 0; i < keys.length; i++) {
      const s = c.samples[keys[i]];
      if (!s) return null;
      out[i] = s.loss === null ? NaN : s.loss;
    }
    return out;
  }

  private writeCache(file: string, key: string, examples: Example[]): void {
    const keys = this.keysOf(examples);
    const samples: CacheFile['samples'] = {};
    keys.forEach((k, i) => {
      const f = this.losses![i];
      samples[k] = { loss: Number.isFinite(f) ? f : null, weight: this.weights ? this.weights[i] : null };
    });
    const body: CacheFile = { format: 'retain.flow/1', key, loss: 'mean cross-entropy per trained token at the scored weights', tau_rule: String(this.tauRule), tau: this.tau, samples };
    mkdirSync(join(file, '..'), { recursive: true });
    writeJsonAtomic(file, body);
  }

  /**
   * The weights of every micro-batch of a step ([B] each), by sample id; samples from other sources (mixing's general
   * data) get `other_weight`. The batch median and the normalisation are taken over the whole step.
   */
  stepWeights(ctx: TrainContext, micro: Batch[]): (Tensor | null)[] {
    if (this.probe?.probing(ctx)) return micro.map(() => null);
    if (!this.losses) throw new Error(`${this.name}: weights were not computed (setup did not run)`);
    const idx = micro.flatMap((b) => b.sampleIds.map((id, i) => this.index.get(sampleKey(b.sources[i], id))));
    let w: number[];
    if (this.weights) {
      w = idx.map((k) => (k === undefined ? this.otherWeight : this.weights![k]));
    } else {
      const tau = median(idx.filter((k): k is number => k !== undefined).map((k) => this.losses![k])) * this.tauScale;
      w = idx.map((k) => (k === undefined ? this.otherWeight : tau > 0 ? flowWeight(this.losses![k], tau) : 0));
    }
    w = normalizeWeights(w, micro.flatMap((b) => b.tokenCounts), this.normalize);
    let at = 0;
    return micro.map((b) => {
      const B = b.sampleIds.length;
      const t = torch.tensor(Float32Array.from(w.slice(at, (at += B))), { shape: [B] }); // [B]
      const device = (b.features ?? b.ids).device;
      return device === 'cpu' ? t : t.to({ device });
    });
  }

  /** The weights [B] of one batch taken as a whole step. */
  sampleWeights(ctx: TrainContext, batch: Batch): Tensor | null {
    return this.stepWeights(ctx, [batch])[0];
  }
}

/** Step-level normalisation of FLOW weights (all samples of the step's micro-batches); a step whose weights are all 0 stays 0. */
export function normalizeWeights(w: number[], tokenCounts: number[], mode: Normalize): number[] {
  if (mode === 'none') return w;
  if (mode === 'mean') {
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    return mean > 0 ? w.map((x) => x / mean) : w;
  }
  // Σᵢ w'ᵢ·sᵢ / Σ n = Σᵢ wᵢ·sᵢ / Σᵢ wᵢ·nᵢ: the token-weighted mean of the losses.
  const tokens = tokenCounts.reduce((a, b) => a + b, 0);
  const weighted = w.reduce((a, x, i) => a + x * tokenCounts[i], 0);
  return weighted > 0 ? w.map((x) => (x * tokens) / weighted) : w;
}
