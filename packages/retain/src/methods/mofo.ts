// MoFO, the momentum-filtered optimizer (Chen et al., arXiv 2407.20999), docs/METHODS.md §7.
//
// AdamW whose moments m, v update densely every step, but within each filtered parameter tensor only the coordinates
// with the largest |m| move: p ← p − lr·m̂/(√v̂+ε) on the top k = max(1, ⌊α·n⌋) of them and by 0 elsewhere. Bias and
// norm tensors (1-D parameters, or names containing 'norm' or 'bias') update unfiltered. Decoupled weight decay
// p ← p·(1 − lr·wd) still applies to every coordinate of a filtered tensor, as in the reference, because AdamW applies
// it before the update. Bias and norm tensors get no weight decay, as the reference's trainer groups them (Hugging
// Face's decay grouping: biases and normalisation weights at weight_decay 0).
//
// Rounding: k = max(1, ⌊α·n⌋). ⌊α·n⌋ alone would freeze a tensor with fewer than 1/α elements outright, which is not
// what filtering means; for any tensor with n ≥ 1/α the two agree.
//
// Selection: exact top-k of |m| (ties broken by torch.topk) for tensors up to `exact_max` elements (2²⁴ by default).
// Above that, a full top-k per step costs more than the rest of the update, so the (1−α)-quantile of |m| is estimated
// from an evenly strided sample of `sample_size` coordinates (2²⁰ by default; the stride is made coprime with the
// last dimension so that the sample does not fall on a few columns) and every coordinate with |m| ≥ that threshold
// moves: about α·n of them, not exactly. No random numbers are drawn, so the run's RNG stream is the same as AdamW's.
//
// MoFO replaces the run's optimizer (makeOptimizer): a subclass of torch.optim.AdamW hooking transformUpdates, built
// from the run's AdamW hyperparameters over the parameters the parameterisation phase left (LoRA's adapters, HFT's
// governed set); parameters whose gradient is null (frozen) are skipped entirely. The loop sets its lr from the
// schedule and saves its moments with the run's optimizer state.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Method, OptimizerHyper, Role, SetupContext } from '../train/hooks.js';
import { z } from 'zod';
import { num, parseOptions } from '../options.js';

export const mofoOptions = z.object({
  alpha: num('a fraction in (0, 1]', { gt: 0, max: 1 }).default(0.03).describe("Fraction of each filtered tensor's coordinates that move per step (the reference class uses 0.03; 0.05-0.2 recommended, 0.15 published)."),
  exact_max: num('a positive integer', { int: true, min: 1, max: Number.MAX_SAFE_INTEGER }).default(2 ** 24).describe('Largest tensor (elements) that gets an exact top-k; larger ones use a sampled quantile.'),
  sample_size: num('a positive integer', { int: true, min: 1, max: Number.MAX_SAFE_INTEGER }).default(2 ** 20).describe('Coordinates sampled for the quantile estimate.'),
}).strict();

/** Whether MoFO filters a parameter: matrices and embeddings yes, biases and norm weights no. */
export function isFiltered(name: string, p: Tensor): boolean {
  return p.ndim >= 2 && !/norm|bias/i.test(name);
}

/** Coordinates that move in a filtered tensor of n elements. */
export function mofoK(alpha: number, n: number): number {
  return Math.min(n, Math.max(1, Math.floor(alpha * n)));
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

export interface MofoAdamWOptions extends torch.optim.AdamWOptions {
  alpha: number;
  names: Map<Tensor, string>;
  exactMax?: number;
  sampleSize?: number;
}

/** torch.optim.AdamW with MoFO's per-tensor momentum filter on the update. */
export class MofoAdamW extends torch.optim.AdamW {
  readonly alpha: number;
  readonly names: Map<Tensor, string>;
  readonly exactMax: number;
  readonly sampleSize: number;

  constructor(params: torch.optim.ParamsArg<torch.optim.AdamHyper>, o: MofoAdamWOptions) {
    super(params, o);
    if (!(o.alpha > 0 && o.alpha <= 1)) throw new Error(`mofo: alpha must be in (0, 1], got ${o.alpha}`);
    this.alpha = o.alpha;
    this.names = o.names;
    this.exactMax = o.exactMax ?? 2 ** 24;
    this.sampleSize = o.sampleSize ?? 2 ** 20;
  }

  protected override transformUpdates(batch: torch.optim.UpdateBatch): void {
    const { params, updates, states } = batch;
    for (let i = 0; i < params.length; i++) {
      const p = params[i];
      if (!isFiltered(this.names.get(p) ?? '', p)) continue;
      const n = p.numel();
      const k = mofoK(this.alpha, n);
      if (k >= n) continue;
      if (!updates[i].isContiguous()) updates[i] = updates[i].contiguous();
      const u = updates[i].view(-1); // [n], aliases updates[i]
      const score = states[i].exp_avg.abs().view(-1); // [n]
      if (n <= this.exactMax) {
        // Where m is 0 the update is 0, so when at most k coordinates have m ≠ 0 the top k holds every one that
        // moves: nothing to filter. That is a word embedding's usual state (most rows unused by any batch so far),
        // and it spares a top-k over the largest tensor of a language model.
        if (torch.ops.count_nonzero(score).item() <= k) continue;
        const [, idx] = score.topk(k, 0, true, false); // [k]
        const kept = u.gather(0, idx); // [k]
        u.zero_();
        torch.ops.scatter__src(u, 0, idx, kept);
      } else {
        u.mul_(score.ge(this.threshold(score, p.shape, k / n)));
      }
    }
  }

  /** |m| value above which a fraction `frac` of coordinates lies, estimated on a strided sample. */
  private threshold(score: Tensor, shape: number[], frac: number): Tensor {
    const n = score.numel();
    let stride = Math.max(1, Math.floor(n / this.sampleSize));
    const last = shape[shape.length - 1];
    while (stride > 1 && gcd(stride, last) !== 1) stride++;
    const sample = score.slice(0, 0, null, stride); // [≈ sampleSize]
    const s = sample.numel();
    const rank = Math.min(s, Math.max(1, s - Math.floor(frac * s) + 1));
    return torch.ops.kthvalue(sample, rank, 0)[0];
  }
}

export class Mofo implements Method {
  readonly name = 'mofo';
  readonly roles: Role[] = ['optimizer-step'];
  readonly alpha: number;
  readonly exactMax: number;
  readonly sampleSize: number;
  /** The run's optimizer (null until the run builds it). */
  optimizer: MofoAdamW | null = null;

  constructor(o: Record<string, unknown> = {}) {
    const p = parseOptions('mofo', mofoOptions, o);
    this.alpha = p.alpha;
    this.exactMax = p.exact_max;
    this.sampleSize = p.sample_size;
  }

  /**
   * Filtered tensors in one group with the run's weight decay, bias and norm tensors in a second at weight decay 0.
   * masterWeights is not passed on: the filter looks each tensor's name up by the parameter, and with master weights
   * the update runs on float32 copies, which are other tensors.
   */
  makeOptimizer(ctx: SetupContext, hyper: OptimizerHyper): MofoAdamW {
    if (hyper.kind !== 'adamw') {
      throw new Error("mofo is a filtered AdamW: it needs the run's optimizer to be adamw (training.optimizer: adamw), whose betas, eps and weight decay it uses");
    }
    const names = new Map(ctx.params.map(([n, p]) => [p, n] as [Tensor, string]));
    const groups = [false, true]
      .map((noDecay) => ({ params: ctx.params.filter(([n, p]) => isFiltered(n, p) !== noDecay).map(([, p]) => p), ...(noDecay ? { weightDecay: 0 } : {}) }))
      .filter((g) => g.params.length > 0);
    // lr 0 until the loop sets it from the schedule before the first step.
    const o = { lr: 0, betas: hyper.betas, eps: hyper.eps, weightDecay: hyper.weightDecay, alpha: this.alpha, names, exactMax: this.exactMax, sampleSize: this.sampleSize };
    this.optimizer = new MofoAdamW(groups, o);
    const filtered = ctx.params.filter(([n, p]) => isFiltered(n, p));
    ctx.log({ kind: 'mofo', mofo_alpha: this.alpha, mofo_filtered_tensors: filtered.length, mofo_unfiltered_tensors: ctx.params.length - filtered.length, mofo_no_weight_decay: 'bias and norm tensors' });
    return this.optimizer;
  }
}
