// EWC, elastic weight consolidation (Kirkpatrick et al. 2017, arXiv 1612.00796), docs/METHODS.md §6: the loss gains
// Σᵢ (λ/2)·Fᵢ·(θᵢ−θ₀ᵢ)², where F is the diagonal Fisher information of the pretrained model on general data, so the
// weights that general capability depends on are held close to θ₀ and the others are free to move.
//
// F is estimated at θ₀ on `data` (real general data or a synthesised set, as Examples or a data spec):
//   fisher: per_sample — the empirical Fisher, the definition: the mean over samples of the squared gradient of each
//                        sample's own loss (one backward per sample);
//   fisher: per_batch  — the mean over mini-batches of the squared mini-batch gradient, a cheaper approximation that
//                        underestimates F (cross-sample terms average out inside a batch).
// The log says which. A sample's loss is its mean cross-entropy per trained token, the trainer's per-sample loss, so
// λ keeps one meaning whatever the sequence lengths. The model is in eval mode for the estimate (no dropout noise).
// A new head (a probe's, flow_vision's) is left out: its θ₀ would be its random initialisation.
//
// F is summed and kept in float32 (float64 for a float64 model) whatever the parameters' dtype: in bfloat16 the sum of
// many small squared gradients keeps about 3 significant digits and stops growing once a term falls below its
// rounding step. The penalty is taken in that dtype too.
//
// F and θ₀ are kept tensors and go into checkpoints (stateTensors): a resumed run reloads them instead of estimating
// F again. The estimate runs lazily before the first step for that reason; should it ever run after the weights have
// moved (a resumed run whose checkpoint predates this method), θ₀ is swapped in for it.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Example } from '../data/formats.js';
import { epochOrder } from '../data/loader.js';
import type { Method, TrainContext } from '../train/hooks.js';
import { z } from 'zod';
import { dataSpec, type DataSpec, type GivenExamples } from '../data/spec.js';
import { integer, nonNegative, parseOptions, positiveInt, regex } from '../options.js';
import { collateOn, isNewHead, keepModes, modelDevice, resolveData, type Options } from './support.js';

export const ewcOptions = z.object({
  lambda: nonNegative().describe('Strength λ of the penalty Σ (λ/2)·F·(θ−θ₀)².'),
  data: dataSpec('the general data the Fisher is estimated on').describe('The general data the Fisher information is estimated on (a data spec, like data.train).'),
  fisher: z.enum(['per_sample', 'per_batch']).default('per_sample').describe("per_sample: the empirical Fisher (one backward per sample); per_batch: squared mini-batch gradients, cheaper, and an underestimate."),
  fisher_samples: positiveInt().optional().describe('Estimate on a fixed, seeded subset of this many samples (default: all of data).'),
  fisher_batch_size: positiveInt().default(8).describe('Samples per forward pass of the estimate.'),
  exclude: regex().optional().describe('Parameters (checkpoint names) left out of the penalty, besides new heads.'),
  seed: integer().default(0).describe('Seed of the fisher_samples subset.'),
}).strict();

/** The dtype F is accumulated and kept in: float32, or float64 for a float64 parameter. */
function fisherDtype(p: Tensor): 'float32' | 'float64' {
  return p.dtype === 'float64' ? 'float64' : 'float32';
}

interface Entry {
  name: string;
  p: Tensor;
  theta0: Tensor;
  fisher: Tensor | null;
}

export class EWC implements Method {
  readonly name = 'ewc';
  readonly lambda: number;
  readonly fisherMode: 'per_sample' | 'per_batch';
  readonly fisherSamples: number | null;
  readonly fisherBatchSize: number;
  readonly exclude: RegExp | null;
  readonly seed: number;
  private readonly dataSpec: DataSpec | GivenExamples;
  data: Example[] = [];
  entries: Entry[] = [];
  /** Backward passes spent on the Fisher estimate in this process (0 when a checkpoint supplied F). */
  fisherBackwards = 0;

  constructor(o: Options = {}) {
    const p = parseOptions(this.name, ewcOptions, o);
    this.lambda = p.lambda;
    this.fisherMode = p.fisher;
    this.fisherSamples = p.fisher_samples ?? null;
    this.fisherBatchSize = p.fisher_batch_size;
    this.exclude = p.exclude ?? null;
    this.seed = p.seed;
    this.dataSpec = p.data;
  }

  async setup(ctx: TrainContext): Promise<void> {
    const all = await resolveData(this.name, ctx, this.dataSpec, 'fisher');
    // A fixed, seeded subset: the same samples on every run and on resume.
    this.data = this.fisherSamples !== null && this.fisherSamples < all.length ? epochOrder(all.length, this.seed, 0).slice(0, this.fisherSamples).map((i) => all[i]) : all;
    torch.noGrad(() => {
      for (const [name, p] of ctx.params) {
        // A new head (a probe's) has no pretrained value to hold it to.
        if (this.exclude?.test(name) || isNewHead(ctx, name)) continue;
        this.entries.push({ name, p, theta0: torch.keep(p.detachedClone()), fisher: null });
      }
    });
    if (this.entries.length === 0) throw new Error(`ewc: no fine-tuned tensor is left to penalise (exclude /${this.exclude?.source}/ and the new heads match them all)`);
  }

  get fisherReady(): boolean {
    return this.entries.length > 0 && this.entries.every((e) => e.fisher !== null);
  }

  beforeStep(ctx: TrainContext): void {
    if (!this.fisherReady) this.estimateFisher(ctx);
  }

  /** Fills F for every penalised tensor at θ₀. */
  estimateFisher(ctx: TrainContext): void {
    const t0 = performance.now();
    const moved = ctx.step > 0 ? this.swapInTheta0() : null;
    const grads = new Map(ctx.params.map(([, p]) => [p, p.requiresGrad] as const));
    // Every penalised tensor needs its gradient here, even one that another method keeps frozen right now.
    for (const e of this.entries) e.p.requiresGrad = true;
    const sums = this.entries.map((e) => torch.keep(torch.zerosLike(e.p, { dtype: fisherDtype(e.p) })));
    const device = modelDevice(ctx.model);
    const clear = () => {
      for (const [, p] of ctx.params) p.grad = null;
      for (const e of this.entries) e.p.grad = null;
    };
    let used = 0;
    let skipped = 0;
    try {
      keepModes(ctx.model, () => {
        ctx.model.eval();
        const groups: Example[][] = [];
        const size = this.fisherMode === 'per_sample' ? 1 : this.fisherBatchSize;
        for (let i = 0; i < this.data.length; i += size) groups.push(this.data.slice(i, i + size));
        // Data-parallel: each rank takes every world-th group; the sums are added up over ranks below.
        const dist = ctx.dist;
        for (const [gi, g] of groups.entries()) {
          if (dist && gi % dist.worldSize !== dist.rank) continue;
          clear();
          const ok = torch.tidy(() => {
            const b = collateOn(g, device);
            const sl = ctx.sampleLosses(b);
            const tokens = sl.counts.sum();
            if (tokens.item() === 0) return false;
            // per_sample: the sample's mean token loss; per_batch: the batch's, as the trainer averages a step.
            sl.sums.sum().div(tokens).backward();
            torch.noGrad(() => this.entries.forEach((e, k) => {
              const gr = e.p.grad?.to(sums[k].dtype);
              if (gr) sums[k].addcmul_(gr, gr);
            }));
            return true;
          });
          this.fisherBackwards++;
          if (ok) used++;
          else skipped++;
        }
      });
    } finally {
      clear();
      for (const [p, r] of grads) p.requiresGrad = r;
      if (moved) this.swapBack(moved);
    }
    if (ctx.dist) {
      const dist = ctx.dist;
      torch.noGrad(() => torch.tidy(() => {
        dist.allReduce(sums.map((t) => t.detach()), 'sum');
        [used, skipped] = torch.distributed.sumScalars([used, skipped], sums[0]?.device);
      }));
    }
    if (used === 0) throw new Error('ewc: no Fisher sample has a trained token; check the data and its format');
    torch.noGrad(() => this.entries.forEach((e, k) => {
      e.fisher?.dispose();
      e.fisher = torch.keep(sums[k].div(used));
      sums[k].dispose();
    }));
    const stats = torch.tidy(() => {
      const flat = torch.cat(this.entries.map((e) => e.fisher!.reshape(-1)));
      return { mean: flat.double().mean().item(), max: flat.max().item() };
    });
    ctx.log({
      kind: this.name, ewc_fisher: this.fisherMode,
      ewc_fisher_estimate: this.fisherMode === 'per_sample' ? 'empirical Fisher: squared per-sample gradients, averaged' : 'squared mini-batch gradients, averaged (approximation)',
      ...(this.fisherMode === 'per_batch' ? { ewc_fisher_batch_size: this.fisherBatchSize } : {}),
      ewc_samples: this.data.length, ewc_backwards: used, ewc_skipped: skipped, ewc_lambda: this.lambda, ewc_tensors: this.entries.length,
      ewc_fisher_mean: +stats.mean.toPrecision(7), ewc_fisher_max: +stats.max.toPrecision(7), ewc_seconds: +((performance.now() - t0) / 1000).toFixed(3),
    });
  }

  private swapInTheta0(): Tensor[] {
    return torch.noGrad(() => this.entries.map((e) => {
      const now = torch.keep(e.p.detachedClone());
      e.p.copy_(e.theta0);
      return now;
    }));
  }

  private swapBack(saved: Tensor[]): void {
    torch.noGrad(() => this.entries.forEach((e, k) => {
      e.p.copy_(saved[k]);
      saved[k].dispose();
    }));
  }

  /** Σ (λ/2)·F·(θ−θ₀)² over the penalised tensors that train now; a scalar in the caller's scope. */
  penalty(): Tensor {
    if (!this.fisherReady) throw new Error('ewc: the Fisher information is not estimated yet');
    return torch.tidy(() => {
      const terms: Tensor[] = [];
      for (const e of this.entries) {
        if (!e.p.requiresGrad) continue;
        const d = e.p.to(e.fisher!.dtype).sub(e.theta0);
        terms.push(d.mul(d).mul(e.fisher!).sum());
      }
      return terms.length ? torch.stack(terms).sum().mul(this.lambda / 2) : torch.zeros([], { device: this.entries[0].p.device });
    });
  }

  lossTerms(): { name: string; value: Tensor }[] {
    return [{ name: this.name, value: this.penalty() }];
  }

  stateTensors(): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    for (const e of this.entries) {
      m.set(`theta0.${e.name}`, e.theta0);
      if (e.fisher) m.set(`fisher.${e.name}`, e.fisher);
    }
    return m;
  }

  loadStateTensors(t: Map<string, Tensor>): void {
    torch.noGrad(() => {
      for (const e of this.entries) {
        const th = t.get(`theta0.${e.name}`);
        const f = t.get(`fisher.${e.name}`);
        if (th) e.theta0.copy_(th);
        if (f) {
          if (e.fisher) e.fisher.copy_(f);
          else e.fisher = torch.keep(f.to({ device: e.p.device, dtype: fisherDtype(e.p), copy: true }));
        }
      }
    });
  }

  dispose(): void {
    for (const e of this.entries) torch.dispose([e.theta0, e.fisher]);
    this.entries = [];
  }
}
