// Gradient clipping with torch.nn.utils semantics.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { stack } from '../functional.js';
import * as G from '../ops/generated.js';

/**
 * Scales all gradients by min(1, maxNorm / (total + 1e-6)), where total is the norm of the per-tensor norms (the
 * global norm over every gradient element). Returns the total norm before clipping.
 */
export function clipGradNorm_(params: Tensor[], maxNorm: number, normType = 2): number {
  return noGrad(() => tidy(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (grads.length === 0) return 0;
    let total: Tensor;
    if (normType === Infinity) total = stack(grads.map((g) => g.abs().max())).max();
    else total = stack(G._foreach_norm_Scalar(grads, normType)).norm(normType);
    // max_norm / (total + 1e-6) the way Python evaluates `float / Tensor`: reciprocal, then multiply.
    const coef = G.clamp(G.mul_Scalar(G.reciprocal(G.add_Scalar(total, 1e-6)), maxNorm), null, 1.0);
    for (const g of grads) g.mul_(coef);
    return total.item();
  }));
}

/** Clamps every gradient element to [-clipValue, clipValue]. */
export function clipGradValue_(params: Tensor[], clipValue: number): void {
  noGrad(() => {
    for (const p of params) {
      const g = p.grad;
      if (g) g.clamp_(-clipValue, clipValue);
    }
  });
}
