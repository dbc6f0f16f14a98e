// torch.optim.SGD, operation for operation: maximize negates the gradient first, weight decay is added to it (L2),
// the momentum buffer starts as a copy of the first (decayed) gradient and then follows
// buf = momentum·buf + (1 − dampening)·d, and Nesterov steps along d + momentum·buf.
import { Tensor } from '../tensor.js';
import * as G from '../ops/generated.js';
import { Optimizer, type GroupHyper, type ParamGroup, type ParamsArg, type ParamState } from './optimizer.js';

export interface SGDHyper extends GroupHyper {
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  maximize: boolean;
}

export interface SGDOptions extends Partial<SGDHyper> {
  /** One `_foreach_*` call per operation over a group (default), or the per-tensor loop. */
  foreach?: boolean;
}

export interface SGDState extends ParamState {
  momentum_buffer: Tensor;
}

export class SGD extends Optimizer<SGDHyper, SGDState> {
  foreach: boolean;

  constructor(params: ParamsArg<SGDHyper>, o: SGDOptions = {}) {
    super(params, {
      lr: o.lr ?? 1e-3,
      momentum: o.momentum ?? 0,
      dampening: o.dampening ?? 0,
      weightDecay: o.weightDecay ?? 0,
      nesterov: o.nesterov ?? false,
      maximize: o.maximize ?? false,
    });
    this.foreach = o.foreach ?? true;
  }

  protected validateGroup(g: ParamGroup<SGDHyper>): void {
    super.validateGroup(g);
    if (!(g.momentum >= 0)) throw new RangeError(`invalid momentum: ${g.momentum}`);
    if (!(g.weightDecay >= 0)) throw new RangeError(`invalid weight decay: ${g.weightDecay}`);
    if (typeof g.dampening !== 'number' || Number.isNaN(g.dampening)) throw new RangeError(`invalid dampening: ${g.dampening}`);
    if (g.nesterov && (g.momentum <= 0 || g.dampening !== 0)) throw new Error('Nesterov momentum requires a momentum and zero dampening');
  }

  protected stepGroup(g: ParamGroup<SGDHyper>): void {
    const { params, grads } = this.withGrads(g);
    if (params.length === 0) return;
    if (this.foreach) this.stepForeach(g, params, grads);
    else for (let i = 0; i < params.length; i++) this.stepOne(g, params[i], grads[i]);
  }

  private stepOne(g: ParamGroup<SGDHyper>, p: Tensor, grad: Tensor): void {
    let d = g.maximize ? grad.neg() : grad;
    if (g.weightDecay !== 0) d = d.add(p, g.weightDecay);
    if (g.momentum !== 0) {
      const s = this.state.get(p);
      let buf: Tensor;
      if (s === undefined) {
        buf = this.initState(p, { momentum_buffer: d.clone() }).momentum_buffer;
      } else {
        buf = s.momentum_buffer;
        buf.mul_(g.momentum).add_(d, 1 - g.dampening);
      }
      d = g.nesterov ? d.add(buf, g.momentum) : buf;
    }
    p.add_(d, -g.lr);
  }

  private stepForeach(g: ParamGroup<SGDHyper>, params: Tensor[], grads: Tensor[]): void {
    // Never write into the gradients: the caller may still read them (torch's foreach path can, with Nesterov).
    let d = g.maximize ? G._foreach_neg(grads) : grads;
    if (g.weightDecay !== 0) d = G._foreach_add_List(d, params, g.weightDecay);
    if (g.momentum !== 0) {
      const bufs: Tensor[] = [];
      const old: Tensor[] = [];
      const oldD: Tensor[] = [];
      params.forEach((p, i) => {
        const s = this.state.get(p);
        if (s === undefined) bufs.push(this.initState(p, { momentum_buffer: d[i].clone() }).momentum_buffer);
        else {
          bufs.push(s.momentum_buffer);
          old.push(s.momentum_buffer);
          oldD.push(d[i]);
        }
      });
      if (old.length > 0) {
        G._foreach_mul__Scalar(old, g.momentum);
        G._foreach_add__List(old, oldD, 1 - g.dampening);
      }
      d = g.nesterov ? G._foreach_add_List(d, bufs, g.momentum) : bufs;
    }
    G._foreach_add__List(params, d, -g.lr);
  }
}
