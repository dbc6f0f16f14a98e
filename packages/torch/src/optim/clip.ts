// Gradient clipping with torch.nn.utils semantics.
import { Tensor, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import * as G from '../ops/generated.js';

export interface ClipOptions {
  /** Per-tensor norms with one `_foreach_norm` call (default) or a loop. */
  foreach?: boolean;
  /** Throw instead of scaling by NaN/0 when the total norm is NaN or infinite. */
  errorIfNonfinite?: boolean;
}

function gradsOf(params: Tensor | Iterable<Tensor>): Tensor[] {
  const out: Tensor[] = [];
  for (const p of params instanceof Tensor ? [params] : params) {
    const g = p.grad;
    if (g !== null) out.push(g);
  }
  return out;
}

/**
 * Scales the gradients in place so their global norm (the norm of all gradient elements as one vector) is at most
 * maxNorm: each is multiplied by min(1, maxNorm / (total + 1e-6)), computed in the gradients' dtype exactly as
 * torch.nn.utils.clip_grad_norm_ does. Returns the total norm before clipping (0 when no parameter has a gradient).
 */
export function clipGradNorm_(params: Tensor | Iterable<Tensor>, maxNorm: number, normType = 2, opts: ClipOptions = {}): number {
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm)) throw new TypeError(`clipGradNorm_: maxNorm must be a number, got ${maxNorm}`);
  return noGrad(() =>
    tidy(() => {
      const grads = gradsOf(params);
      if (grads.length === 0) return 0;
      const device = grads[0].device;
      const onDevice = (t: Tensor) => (t.device === device ? t : t.to({ device }));
      let total: Tensor;
      if (normType === Infinity) {
        const norms = grads.map((g) => onDevice(g.abs().max()));
        total = norms.length === 1 ? norms[0] : G.stack(norms).max();
      } else {
        const norms = opts.foreach === false ? grads.map((g) => G.norm_Scalar(g, normType)) : G._foreach_norm_Scalar(grads, normType);
        total = G.norm_Scalar(G.stack(norms.map(onDevice)), normType);
      }
      const totalValue = total.item();
      if (opts.errorIfNonfinite && !Number.isFinite(totalValue)) {
        throw new Error(`clipGradNorm_: the total norm of order ${normType} of the gradients is ${totalValue}, so it cannot be clipped`);
      }
      // `max_norm / (total + 1e-6)` in Python is reciprocal-then-multiply on a tensor of the norm's dtype; doing the
      // same here gives torch's coefficient to the bit, and reading it as a number costs nothing more than the
      // total's own read. Multiplying by exactly 1 changes nothing, so that pass is skipped.
      const coef = G.clamp(G.mul_Scalar(G.reciprocal(G.add_Scalar(total, 1e-6)), maxNorm), null, 1).item();
      if (coef !== 1) {
        if (opts.foreach === false) for (const g of grads) g.mul_(coef);
        else G._foreach_mul__Scalar(grads, coef);
      }
      return totalValue;
    }),
  );
}

/** Clamps every gradient element to [−clipValue, clipValue] in place (torch.nn.utils.clip_grad_value_). */
export function clipGradValue_(params: Tensor | Iterable<Tensor>, clipValue: number): void {
  if (!(clipValue >= 0)) throw new RangeError(`clipGradValue_: clipValue must be ≥ 0, got ${clipValue}`);
  noGrad(() =>
    tidy(() => {
      for (const g of gradsOf(params)) g.clamp_(-clipValue, clipValue);
    }),
  );
}
