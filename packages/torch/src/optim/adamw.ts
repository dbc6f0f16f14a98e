// torch.optim.AdamW and torch.optim.Adam, operation for operation, in three implementations of one update:
//   foreach: one `_foreach_*` call per operation over a group's parameters (the default; on CUDA each is one
//            multi-tensor kernel launch instead of one per parameter);
//   single:  the per-tensor loop, the reference the other two are tested against;
//   fused:   `aten::_fused_adamw_` / `aten::_fused_adam_`, one kernel per device and dtype. It exists in torch 2.x
//            (CUDA from 2.0/2.1, CPU from 2.4), not in Debian's 1.13, so 'auto' picks it only where hasOp() finds
//            it and the parameters are on CUDA.
//
// masterWeights: parameters held in bfloat16/float16 get a float32 copy in their state; the update (moments in float32
// too) runs on that copy with the gradient in float32, and the parameter receives it rounded (mixed-precision
// training's master weights). Without it, state and arithmetic are in the parameter's dtype, as in torch.
//
// Methods that filter or reshape the step (MoFO moves only the top-α coordinates by |momentum|) override
// transformUpdates() or pass `transformUpdate`; the step is then computed as an explicit tensor
// u = m̂ / (√v̂ + ε), handed over, and applied as p ← p − lr·u. Without a hook that tensor is never materialised.
import { Tensor, keep, hs } from '../tensor.js';
import { zerosLike } from '../creation.js';
import { hasOp, isFloating, native, opId, type DType } from '../core.js';
import * as G from '../ops/generated.js';
import { Optimizer, type GroupHyper, type ParamGroup, type ParamsArg, type ParamState } from './optimizer.js';

export interface AdamHyper extends GroupHyper {
  betas: [number, number];
  eps: number;
  weightDecay: number;
  amsgrad: boolean;
  maximize: boolean;
}

export type AdamImpl = 'auto' | 'foreach' | 'single' | 'fused';

/** What an update hook receives: per parameter, the step direction it may change in place. */
export interface UpdateBatch {
  group: ParamGroup<AdamHyper>;
  params: Tensor[];
  /** u = m̂ / (√v̂ + ε) per parameter; the parameter then moves by −lr·u. Change in place (e.g. u.mul_(mask)). */
  updates: Tensor[];
  /** The parameters' state after this step's moment update (exp_avg is the momentum MoFO ranks by). */
  states: AdamState[];
}

export interface AdamWOptions extends Partial<AdamHyper> {
  /** 'auto' (default): fused where available on CUDA, else foreach. 'fused' throws where the op is missing. */
  impl?: AdamImpl;
  /** Post-processes each step's update (see UpdateBatch); subclasses can override transformUpdates() instead. */
  transformUpdate?: (batch: UpdateBatch) => void;
  /** float32 master weights and moments for bfloat16/float16 parameters (see the header). */
  masterWeights?: boolean;
}

export interface AdamState extends ParamState {
  step: number;
  exp_avg: Tensor;
  exp_avg_sq: Tensor;
  /** Only with amsgrad: the running maximum of exp_avg_sq. */
  max_exp_avg_sq?: Tensor;
  /** Only with masterWeights, for a low-precision parameter: its float32 value, which the update moves. */
  master?: Tensor;
}

const LOW_PRECISION = new Set(['bfloat16', 'float16']);

// Device types whose fused kernel failed under 'auto'; they use foreach from then on.
const fusedUnsupported = new Set<string>();

export class AdamW extends Optimizer<AdamHyper, AdamState> {
  impl: AdamImpl;
  private readonly transformOption?: (batch: UpdateBatch) => void;
  private readonly hooked: boolean;
  readonly masterWeights: boolean;
  // Fused kernels read the step count from a float tensor on the parameter's device; kept between steps so a
  // step costs one increment, not an upload. `n` is the step it holds.
  private fusedSteps = new Map<Tensor, { t: Tensor; n: number }>();

  constructor(params: ParamsArg<AdamHyper>, o: AdamWOptions = {}) {
    super(params, {
      lr: o.lr ?? 1e-3,
      betas: o.betas ? [o.betas[0], o.betas[1]] : [0.9, 0.999],
      eps: o.eps ?? 1e-8,
      weightDecay: o.weightDecay ?? 1e-2,
      amsgrad: o.amsgrad ?? false,
      maximize: o.maximize ?? false,
    });
    this.impl = o.impl ?? 'auto';
    if (!['auto', 'foreach', 'single', 'fused'].includes(this.impl)) throw new TypeError(`unknown impl '${this.impl}'; use auto, foreach, single or fused`);
    if (this.impl === 'fused' && !hasOp(this.fusedOp)) {
      throw new Error(`impl 'fused' needs ${this.fusedOp}, which this libtorch (${native.version()}) does not have; use 'foreach'`);
    }
    this.transformOption = o.transformUpdate;
    this.masterWeights = o.masterWeights ?? false;
    this.hooked = this.transformOption !== undefined || this.transformUpdates !== AdamW.prototype.transformUpdates;
  }

  /** AdamW decays weights directly (p ← p·(1 − lr·wd)); Adam adds wd·p to the gradient. */
  protected get decoupled(): boolean {
    return true;
  }

  private get fusedOp(): string {
    return this.decoupled ? 'aten::_fused_adamw_' : 'aten::_fused_adam_';
  }

  protected validateGroup(g: ParamGroup<AdamHyper>): void {
    super.validateGroup(g);
    const b = g.betas;
    if (!Array.isArray(b) || b.length !== 2 || !(b[0] >= 0 && b[0] < 1) || !(b[1] >= 0 && b[1] < 1)) throw new RangeError(`invalid betas: ${JSON.stringify(b)}`);
    if (!(g.eps >= 0)) throw new RangeError(`invalid eps: ${g.eps}`);
    if (!(g.weightDecay >= 0)) throw new RangeError(`invalid weight decay: ${g.weightDecay}`);
  }

  /** A parameter's moments and step count (undefined before its first step). */
  moments(p: Tensor): AdamState | undefined {
    return this.state.get(p);
  }

  /**
   * Hook for subclasses: change `batch.updates` in place (or assign new tensors into the array). The default calls
   * the `transformUpdate` option. Overriding it switches the optimizer to the path that materialises updates.
   */
  protected transformUpdates(batch: UpdateBatch): void {
    this.transformOption?.(batch);
  }

  private hasMaster(p: Tensor): boolean {
    return this.masterWeights && LOW_PRECISION.has(p.dtype);
  }

  private stateFor(p: Tensor, amsgrad: boolean): AdamState {
    let s = this.state.get(p);
    if (s === undefined) {
      const master = this.hasMaster(p) ? p.to({ dtype: 'float32', copy: true }) : undefined;
      const like = master ?? p;
      s = this.initState(p, { step: 0, exp_avg: zerosLike(like), exp_avg_sq: zerosLike(like), ...(amsgrad ? { max_exp_avg_sq: zerosLike(like) } : {}), ...(master ? { master } : {}) });
    } else if (amsgrad && s.max_exp_avg_sq === undefined) {
      // amsgrad switched on for a parameter that already has moments: its maximum starts from zero, as on a first step.
      s.max_exp_avg_sq = keep(zerosLike(s.master ?? p));
    }
    return s;
  }

  /** Master weights keep float32 state whatever the parameter's dtype. */
  protected stateDtype(p: Tensor, v: Tensor): DType {
    return this.hasMaster(p) && isFloating(v.dtype) ? 'float32' : super.stateDtype(p, v);
  }

  protected stepGroup(g: ParamGroup<AdamHyper>): void {
    const { params, grads } = this.withGrads(g);
    if (params.length === 0) return;
    const states = params.map((p) => this.stateFor(p, g.amsgrad));
    for (const s of states) s.step += 1;
    if (states.some((s) => s.master)) {
      // The update moves the float32 masters with float32 gradients; the parameters receive them rounded.
      this.stepUpdate(g, params.map((p, i) => states[i].master ?? p), grads.map((gr, i) => (states[i].master ? gr.float() : gr)), states);
      params.forEach((p, i) => states[i].master && p.copy_(states[i].master!));
      return;
    }
    this.stepUpdate(g, params, grads, states);
  }

  private stepUpdate(g: ParamGroup<AdamHyper>, params: Tensor[], grads: Tensor[], states: AdamState[]): void {
    if (this.hooked) return this.stepHooked(g, params, grads, states);
    if (this.impl === 'single') {
      for (let i = 0; i < params.length; i++) this.stepOne(g, params[i], grads[i], states[i]);
      return;
    }
    if (this.impl === 'fused' || (this.impl === 'auto' && this.fusedAvailable(params[0]))) return this.stepFused(g, params, grads, states);
    this.stepForeach(g, params, grads, states);
  }

  private fusedAvailable(p: Tensor): boolean {
    const type = p.device.split(':')[0];
    return type === 'cuda' && !fusedUnsupported.has(type) && hasOp(this.fusedOp);
  }

  /**
   * The per-tensor part shared by the reference step and the hooked one: weight decay (decoupled or L2), the dense
   * moment updates, and the denominator √v̂ + eps (with the running maximum under amsgrad).
   */
  private momentsAndDenom(g: ParamGroup<AdamHyper>, p: Tensor, grad: Tensor, s: AdamState): Tensor {
    const [b1, b2] = g.betas;
    if (g.maximize) grad = grad.neg();
    if (this.decoupled) {
      if (g.lr * g.weightDecay !== 0) p.mul_(1 - g.lr * g.weightDecay);
    } else if (g.weightDecay !== 0) grad = grad.add(p, g.weightDecay);
    s.exp_avg.mul_(b1).add_(grad, 1 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    let v = s.exp_avg_sq;
    if (g.amsgrad) v = G.maximum_out(s.max_exp_avg_sq!, v, s.max_exp_avg_sq!);
    return v.sqrt().div(Math.sqrt(1 - b2 ** s.step)).add_(g.eps);
  }

  // torch's _single_tensor_adam(w).
  private stepOne(g: ParamGroup<AdamHyper>, p: Tensor, grad: Tensor, s: AdamState): void {
    const [b1] = g.betas;
    const denom = this.momentsAndDenom(g, p, grad, s);
    p.addcdiv_(s.exp_avg, denom, -(g.lr / (1 - b1 ** s.step)));
  }

  // torch's _multi_tensor_adam(w).
  private stepForeach(g: ParamGroup<AdamHyper>, params: Tensor[], grads: Tensor[], states: AdamState[]): void {
    const b1 = g.betas[0];
    const m = states.map((s) => s.exp_avg);
    if (g.maximize) grads = G._foreach_neg(grads);
    if (this.decoupled) {
      if (g.lr * g.weightDecay !== 0) G._foreach_mul__Scalar(params, 1 - g.lr * g.weightDecay);
    } else if (g.weightDecay !== 0) grads = G._foreach_add_List(grads, params, g.weightDecay);
    const denom = this.foreachMoments(g, grads, states);
    G._foreach_addcdiv__ScalarList(params, m, denom, states.map((s) => -(g.lr / (1 - b1 ** s.step))));
  }

  /** Updates m and v (and the amsgrad maximum) and returns √v̂ + ε per parameter. */
  private foreachMoments(g: ParamGroup<AdamHyper>, grads: Tensor[], states: AdamState[]): Tensor[] {
    const [b1, b2] = g.betas;
    const m = states.map((s) => s.exp_avg);
    const v = states.map((s) => s.exp_avg_sq);
    G._foreach_mul__Scalar(m, b1);
    G._foreach_add__List(m, grads, 1 - b1);
    G._foreach_mul__Scalar(v, b2);
    G._foreach_addcmul__Scalar(v, grads, grads, 1 - b2);
    let src = v;
    if (g.amsgrad) {
      src = states.map((s) => s.max_exp_avg_sq!);
      G._foreach_maximum__List(src, v);
    }
    const denom = G._foreach_sqrt(src);
    G._foreach_div__ScalarList(denom, states.map((s) => Math.sqrt(1 - b2 ** s.step)));
    G._foreach_add__Scalar(denom, g.eps);
    return denom;
  }

  private stepHooked(g: ParamGroup<AdamHyper>, params: Tensor[], grads: Tensor[], states: AdamState[]): void {
    const [b1] = g.betas;
    let updates: Tensor[];
    if (this.impl === 'single') {
      updates = params.map((p, i) => {
        const s = states[i];
        const denom = this.momentsAndDenom(g, p, grads[i], s);
        return s.exp_avg.div(denom).div_(1 - b1 ** s.step);
      });
    } else {
      if (g.maximize) grads = G._foreach_neg(grads);
      if (this.decoupled) {
        if (g.lr * g.weightDecay !== 0) G._foreach_mul__Scalar(params, 1 - g.lr * g.weightDecay);
      } else if (g.weightDecay !== 0) grads = G._foreach_add_List(grads, params, g.weightDecay);
      const denom = this.foreachMoments(g, grads, states);
      updates = G._foreach_div_List(states.map((s) => s.exp_avg), denom);
      G._foreach_div__ScalarList(updates, states.map((s) => 1 - b1 ** s.step));
    }
    const batch: UpdateBatch = { group: g, params, updates, states };
    this.transformUpdates(batch);
    if (batch.updates.length !== params.length) throw new Error(`transformUpdates: expected ${params.length} updates, got ${batch.updates.length}`);
    if (this.impl === 'single') params.forEach((p, i) => p.add_(batch.updates[i], -g.lr));
    else G._foreach_add__List(params, batch.updates, -g.lr);
  }

  private stepFused(g: ParamGroup<AdamHyper>, params: Tensor[], grads: Tensor[], states: AdamState[]): void {
    // The kernels take one device and dtype per call, as torch groups them.
    const buckets = new Map<string, number[]>();
    params.forEach((p, i) => {
      const key = `${p.device}|${p.dtype}`;
      let b = buckets.get(key);
      if (b === undefined) buckets.set(key, (b = []));
      b.push(i);
    });
    const [b1, b2] = g.betas;
    for (const idx of buckets.values()) {
      const ps = idx.map((i) => params[i]);
      const ss = idx.map((i) => states[i]);
      const steps = this.fusedStepTensors(ps, ss);
      try {
        native.call(
          opId(this.fusedOp),
          hs(ps), hs(idx.map((i) => grads[i])), hs(ss.map((s) => s.exp_avg)), hs(ss.map((s) => s.exp_avg_sq)),
          g.amsgrad ? hs(ss.map((s) => s.max_exp_avg_sq!)) : [], hs(steps),
          g.lr, b1, b2, g.weightDecay, g.eps, g.amsgrad, g.maximize, null, null,
        );
      } catch (e) {
        // A dispatch error (no kernel for this device or dtype) is raised before anything is written.
        if (this.impl === 'fused') throw e;
        fusedUnsupported.add(ps[0].device.split(':')[0]);
        this.stepForeach(g, ps, idx.map((i) => grads[i]), ss);
      }
    }
  }

  private fusedStepTensors(ps: Tensor[], ss: AdamState[]): Tensor[] {
    const out: Tensor[] = [];
    const inc: Tensor[] = [];
    ps.forEach((p, i) => {
      const n = ss[i].step;
      let c = this.fusedSteps.get(p);
      if (c === undefined) {
        c = { t: keep(G.scalar_tensor(n, 'float32', null, p.device)), n };
        this.fusedSteps.set(p, c);
      } else if (c.n === n - 1) {
        inc.push(c.t);
        c.n = n;
      } else if (c.n !== n) {
        c.t.fill_(n);
        c.n = n;
      }
      out.push(c.t);
    });
    if (inc.length > 0) G._foreach_add__Scalar(inc, 1);
    return out;
  }

  protected afterLoad(): void {
    this.clearFusedSteps();
  }

  private clearFusedSteps(): void {
    for (const c of this.fusedSteps.values()) c.t.dispose();
    this.fusedSteps.clear();
  }

  dispose(): void {
    this.clearFusedSteps();
    super.dispose();
  }
}

/** torch.optim.Adam: weight decay as L2 added to the gradient (default 0) rather than decoupled. */
export class Adam extends AdamW {
  constructor(params: ParamsArg<AdamHyper>, o: AdamWOptions = {}) {
    super(params, { ...o, weightDecay: o.weightDecay ?? 0 });
  }

  protected get decoupled(): boolean {
    return false;
  }
}
