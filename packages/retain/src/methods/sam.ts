// SAM, sharpness-aware minimisation (Foret et al. 2020; Li et al. 2024 for forgetting), docs/METHODS.md §4.
//
// One step: g = ∇L(θ) over the whole accumulated batch (the trainer's closure runs every micro-batch), ε = ρ·g/‖g‖₂
// with the norm taken over all trainable tensors together, g' = ∇L(θ+ε), θ restored, and g' left in .grad for the
// optimizer (and for clipping, which the trainer applies after this hook).
//
// Restoring θ by subtracting ε would not give back the same bits ((θ+ε)−ε ≠ θ in floating point), so θ is copied
// into one weight-sized buffer before the perturbation and copied back after: the restoration is bit-exact and the
// buffer is the "one extra weight-sized buffer" SAM is said to cost. It is allocated once and reused every step.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Method, Role, TrainContext } from '../train/hooks.js';
import { z } from 'zod';
import { num, parseOptions } from '../options.js';

export const samOptions = z.object({
  rho: num('a number ≥ 0', { min: 0 }).default(0.05).describe('Radius of the neighbourhood the sharpness is measured over (0.05 is the usual default; sweep it).'),
}).strict();

/** What one SAM step saw; tests read it to check that g' was taken at θ+ρg/‖g‖. */
export interface SamStepRecord {
  gradNorm: number;
  loss: number;
  perturbedLoss: number;
  scale: number;
}

export class Sam implements Method {
  readonly name = 'sam';
  readonly roles: Role[] = ['forward-backward'];
  readonly rho: number;
  last: SamStepRecord | null = null;
  // θ before the perturbation, per trainable tensor, reused across steps (re-made if the parameter set changes).
  private saved = new Map<Tensor, Tensor>();

  constructor(o: Record<string, unknown> = {}) {
    this.rho = parseOptions(this.name, samOptions, o).rho;
  }

  forwardBackward(ctx: TrainContext, closure: () => number): number {
    const loss = closure();
    const params = ctx.params.map(([, p]) => p);
    // Tensors without a gradient (frozen by HFT, unused by this batch) are neither perturbed nor counted in ‖g‖.
    const { norm, moved } = torch.noGrad(() => torch.tidy(() => {
      const withGrad: Tensor[] = [];
      const grads: Tensor[] = [];
      for (const p of params) {
        const g = p.grad;
        if (g !== null) {
          withGrad.push(p);
          grads.push(g);
        }
      }
      if (grads.length === 0) return { norm: 0, moved: [] as Tensor[] };
      // ‖g‖₂ over all tensors = ‖(‖g₁‖, ‖g₂‖, …)‖₂; in float64 so a large model's sum of squares keeps its digits.
      const norms = torch.ops._foreach_norm_Scalar(grads, 2);
      const total = torch.stack(norms.map((n) => n.to({ dtype: 'float64', device: 'cpu' }))).norm(2).item();
      const scale = this.rho / (total + 1e-12);
      for (const p of withGrad) {
        let buf = this.saved.get(p);
        if (buf === undefined || buf.isDisposed) {
          buf = torch.keep(torch.zerosLike(p));
          this.saved.set(p, buf);
        }
        buf.copy_(p);
      }
      if (scale !== 0 && Number.isFinite(scale)) torch.ops._foreach_add__List(withGrad, grads, scale);
      return { norm: total, moved: withGrad };
    }));
    const scale = this.rho / (norm + 1e-12);
    let perturbed: number;
    try {
      perturbed = moved.length > 0 ? closure() : loss;
    } finally {
      torch.noGrad(() => {
        for (const p of moved) p.copy_(this.saved.get(p)!);
      });
    }
    this.last = { gradNorm: norm, loss, perturbedLoss: perturbed, scale };
    ctx.log({ kind: 'sam', sam_grad_norm: +norm.toPrecision(7), sam_loss: +loss.toFixed(6), sam_perturbed_loss: +perturbed.toFixed(6) });
    // The step's loss is the one at θ, as plain fine-tuning reports; the perturbed one is in the log line above.
    return loss;
  }

  finish(): void {
    this.release();
  }

  /** Frees the saved-θ buffers (also done at the end of training). */
  release(): void {
    torch.dispose(this.saved.values());
    this.saved.clear();
  }
}
