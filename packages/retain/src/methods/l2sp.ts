// L2-SP (Li et al. 2018, arXiv 1802.01483), docs/METHODS.md §5: the loss gains λ·Σ(θ−θ₀)² over the fine-tuned tensors,
// pulling them toward the pretrained starting point rather than toward zero.
//
// `reduction` says what Σ means — `sum` over every element, or `mean` over every element of the penalised tensors
// (at 3B parameters the two λ scales differ by ~10⁹) — and the log states it; when the config leaves it out, `sum` is
// used and the log says it was the default. New heads (a probe's head, and names matching `exclude`) have no
// pretrained value to return to — θ₀ would be their random initialisation: they are left out, or given a plain L2
// λ_head·Σθ² with `head_lambda`.
//
// θ₀ is a frozen copy taken at setup (setup runs before a resumed run loads its checkpoint, so it is always the
// pretrained value). Per tensor, the penalty is one fused mse_loss(θ, θ₀, sum): one element-wise pass forward and one
// backward. Tensors frozen at the moment (a probe's body, HFT's frozen half) get no gradient and are skipped.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Method, TrainContext } from '../train/hooks.js';
import { z } from 'zod';
import { nonNegative, parseOptions, regex } from '../options.js';
import { isNewHead, type Options } from './support.js';

export const l2Options = z.object({
  lambda: nonNegative().describe('Strength λ of the pull toward the pretrained weights θ₀.'),
  reduction: z.enum(['sum', 'mean']).default('sum').describe('Σ over every penalised element (sum) or their mean; the two λ scales differ by the parameter count.'),
  exclude: regex().optional().describe('Parameters (checkpoint names) with no pretrained value to return to, such as a new head: left out, or given head_lambda.'),
  head_lambda: nonNegative().default(0).describe('Plain L2 λ_head·Σθ² on the excluded tensors and new heads.'),
}).strict();

export class L2SP implements Method {
  readonly name = 'l2';
  readonly lambda: number;
  readonly headLambda: number;
  readonly reduction: 'sum' | 'mean';
  readonly reductionGiven: boolean;
  readonly exclude: RegExp | null;
  /** θ₀ of each penalised tensor. */
  anchors: [string, Tensor, Tensor][] = [];
  heads: [string, Tensor][] = [];
  private anchorCount = 0;
  private headCount = 0;

  constructor(o: Options = {}) {
    const p = parseOptions(this.name, l2Options, o);
    this.lambda = p.lambda;
    // The log says when the reduction was the default: the two choices' λ are not comparable.
    this.reductionGiven = o.reduction !== undefined;
    this.reduction = p.reduction;
    this.exclude = p.exclude ?? null;
    this.headLambda = p.head_lambda;
  }

  setup(ctx: TrainContext): void {
    torch.noGrad(() => {
      for (const [n, p] of ctx.params) {
        if (this.exclude?.test(n) || isNewHead(ctx, n)) this.heads.push([n, p]);
        else this.anchors.push([n, p, torch.keep(p.detachedClone())]);
      }
    });
    this.anchorCount = this.anchors.reduce((s, [, p]) => s + p.numel(), 0);
    this.headCount = this.heads.reduce((s, [, p]) => s + p.numel(), 0);
    if (this.anchors.length === 0) throw new Error(`${this.name}: no fine-tuned tensor is left to penalise (exclude /${this.exclude?.source}/ and the new heads match them all)`);
    if (this.headLambda > 0 && this.heads.length === 0) throw new Error(`${this.name}: head_lambda applies to new heads (a probe's head, or tensors matched by 'exclude'), and this run has none; set exclude`);
    ctx.log({
      kind: this.name, l2_lambda: this.lambda, l2_reduction: this.reductionGiven ? this.reduction : `${this.reduction} (default)`,
      l2_tensors: this.anchors.length, l2_params: this.anchorCount, l2_excluded_tensors: this.heads.length, l2_head_lambda: this.headLambda,
    });
  }

  /** λ·Σ(θ−θ₀)² (+ λ_head·Σθ² on excluded tensors), with the configured reduction; a scalar in the caller's scope. */
  penalty(): Tensor {
    return torch.tidy(() => {
      const terms: Tensor[] = [];
      for (const [, p, p0] of this.anchors) if (p.requiresGrad) terms.push(torch.mseLoss(p, p0, 'sum'));
      let value = terms.length ? torch.stack(terms).sum().mul(this.reduction === 'mean' ? this.lambda / this.anchorCount : this.lambda) : torch.zeros([], { device: this.anchors[0][1].device });
      if (this.headLambda > 0) {
        const h: Tensor[] = [];
        for (const [, p] of this.heads) if (p.requiresGrad) h.push(p.square().sum());
        if (h.length) value = value.add(torch.stack(h).sum().mul(this.reduction === 'mean' ? this.headLambda / this.headCount : this.headLambda));
      }
      return value;
    });
  }

  lossTerms(): { name: string; value: Tensor }[] {
    return [{ name: this.name, value: this.penalty() }];
  }

  /** Releases θ₀ (the method cannot be used after). */
  dispose(): void {
    for (const [, , p0] of this.anchors) p0.dispose();
    this.anchors = [];
  }
}
