// torch.optim.AdamW (and Adam), with three implementations of the same update:
//   - multi-tensor: one `_foreach_*` call per operation over all parameters of a group (the default);
//   - per-tensor: the reference loop, and the place subclasses change the update (MoFO filters it);
//   - fused: `aten::_fused_adamw_` where the torch version has it (2.x), one kernel for the whole group.
import { Tensor } from '../tensor.js';
import { zerosLike } from '../creation.js';
import { hasOp, native, opId } from '../core.js';
import * as G from '../ops/generated.js';
import { Optimizer, type ParamGroup, type ParamsArg, type ParamState } from './optimizer.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
  maximize?: boolean;
  /** 'foreach' (default), 'single' (per tensor) or 'fused' (needs aten::_fused_adamw_, torch ≥ 2.0). */
  impl?: 'foreach' | 'single' | 'fused';
  /** Adam's coupled L2 instead of AdamW's decoupled decay. */
  decoupled?: boolean;
}

export interface AdamState extends ParamState {
  step: number;
  exp_avg: Tensor;
  exp_avg_sq: Tensor;
}

export class AdamW extends Optimizer {
  readonly impl: 'foreach' | 'single' | 'fused';

  constructor(params: ParamsArg, o: AdamWOptions = {}) {
    const d = { lr: o.lr ?? 1e-3, betas: o.betas ?? [0.9, 0.999], eps: o.eps ?? 1e-8, weightDecay: o.weightDecay ?? 1e-2, amsgrad: o.amsgrad ?? false, maximize: o.maximize ?? false, decoupled: o.decoupled ?? true };
    const [b1, b2] = d.betas as [number, number];
    if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1)) throw new RangeError(`invalid betas: [${b1}, ${b2}]`);
    if (!(d.eps >= 0)) throw new RangeError(`invalid eps: ${d.eps}`);
    super(params, d);
    this.impl = o.impl ?? 'foreach';
    if (this.impl === 'fused' && !hasOp('aten::_fused_adamw_')) throw new Error("impl 'fused' needs aten::_fused_adamw_, which this libtorch (torch < 2.0) does not have; use 'foreach'");
  }

  /** The moments of a parameter (undefined before its first step): what MoFO and diagnostics read. */
  moments(p: Tensor): AdamState | undefined {
    return this.state.get(p) as AdamState | undefined;
  }

  protected initState(p: Tensor, amsgrad: boolean): AdamState {
    return this.stateOf(p, () => ({ step: 0, exp_avg: zerosLike(p), exp_avg_sq: zerosLike(p), ...(amsgrad ? { max_exp_avg_sq: zerosLike(p) } : {}) })) as AdamState;
  }

  protected stepGroup(g: ParamGroup): void {
    const params: Tensor[] = [];
    const grads: Tensor[] = [];
    for (const p of g.params) {
      const gr = p.grad;
      if (gr === null) continue;
      params.push(p);
      grads.push(g.maximize ? gr.neg() : gr);
    }
    if (params.length === 0) return;
    const states = params.map((p) => this.initState(p, g.amsgrad as boolean));
    for (const s of states) s.step += 1;
    if (this.impl === 'single' || !g.decoupled || this.update !== AdamW.prototype.update) {
      params.forEach((p, i) => this.update(p, grads[i], states[i], g));
    } else if (this.impl === 'fused') {
      this.fused(params, grads, states, g);
    } else {
      this.foreach(params, grads, states, g);
    }
  }

  /**
   * The per-tensor update (state.step already incremented). Subclasses override this to change which coordinates
   * move; the moments must still be updated densely.
   */
  protected update(p: Tensor, grad: Tensor, s: AdamState, g: ParamGroup): void {
    const [b1, b2] = g.betas as [number, number];
    const lr = g.lr;
    const wd = g.weightDecay as number;
    if (g.decoupled) p.mul_(1 - lr * wd);
    else if (wd !== 0) grad = grad.add(p, wd);
    s.exp_avg.mul_(b1).add_(grad, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    p.addcdiv_(s.exp_avg, this.denominator(s, g), -lr / (1 - b1 ** s.step));
  }

  /** √(v̂) + eps with v̂ = v / (1 − β₂ᵗ), using the running maximum of v with amsgrad. */
  protected denominator(s: AdamState, g: ParamGroup): Tensor {
    const [, b2] = g.betas as [number, number];
    let v = s.exp_avg_sq;
    if (g.amsgrad) {
      const m = s.max_exp_avg_sq as Tensor;
      G.maximum_out(m, v, m);
      v = m;
    }
    return v.sqrt().div(Math.sqrt(1 - b2 ** s.step)).add_(g.eps as number);
  }

  private foreach(params: Tensor[], grads: Tensor[], states: AdamState[], g: ParamGroup): void {
    const [b1, b2] = g.betas as [number, number];
    const lr = g.lr;
    const eps = g.eps as number;
    const m = states.map((s) => s.exp_avg);
    const v = states.map((s) => s.exp_avg_sq);
    G._foreach_mul__Scalar(params, 1 - lr * (g.weightDecay as number));
    G._foreach_mul__Scalar(m, b1);
    G._foreach_add__List(m, grads, 1 - b1);
    G._foreach_mul__Scalar(v, b2);
    G._foreach_addcmul__Scalar(v, grads, grads, 1 - b2);
    let vv = v;
    if (g.amsgrad) {
      vv = states.map((s) => s.max_exp_avg_sq as Tensor);
      G._foreach_maximum__List(vv, v);
    }
    const denom = G._foreach_sqrt(vv);
    G._foreach_div__ScalarList(denom, states.map((s) => Math.sqrt(1 - b2 ** s.step)));
    G._foreach_add__Scalar(denom, eps);
    G._foreach_addcdiv__ScalarList(params, m, denom, states.map((s) => -lr / (1 - b1 ** s.step)));
  }

  private fused(params: Tensor[], grads: Tensor[], states: AdamState[], g: ParamGroup): void {
    const [b1, b2] = g.betas as [number, number];
    // The fused kernel keeps its own step counters as float tensors; ours are mirrored into them each call.
    const steps = states.map((s) => G.scalar_tensor(s.step, 'float32', null, params[0].device));
    native.call(
      opId('aten::_fused_adamw_'),
      params.map((p) => p.h), grads.map((x) => x.h), states.map((s) => s.exp_avg.h), states.map((s) => s.exp_avg_sq.h),
      g.amsgrad ? states.map((s) => (s.max_exp_avg_sq as Tensor).h) : [], steps.map((t) => t.h),
      // maximize is already folded into the gradients above.
      g.lr, b1, b2, g.weightDecay, g.eps, g.amsgrad, false,
    );
  }
}

/** torch.optim.Adam: L2 added to the gradient rather than decoupled decay. */
export class Adam extends AdamW {
  constructor(params: ParamsArg, o: Omit<AdamWOptions, 'decoupled'> = {}) {
    super(params, { weightDecay: 0, ...o, decoupled: false });
  }
}
