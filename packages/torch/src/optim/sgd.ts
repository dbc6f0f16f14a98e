// torch.optim.SGD, step for step: weight decay added to the gradient, momentum buffer seeded with the first
// gradient, dampening, Nesterov, maximize.
import { Tensor } from '../tensor.js';
import { Optimizer, type ParamGroup, type ParamsArg } from './optimizer.js';

export interface SGDOptions {
  lr?: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
  maximize?: boolean;
}

export class SGD extends Optimizer {
  constructor(params: ParamsArg, o: SGDOptions = {}) {
    const d = { lr: o.lr ?? 1e-3, momentum: o.momentum ?? 0, dampening: o.dampening ?? 0, weightDecay: o.weightDecay ?? 0, nesterov: o.nesterov ?? false, maximize: o.maximize ?? false };
    if (d.momentum < 0) throw new RangeError(`invalid momentum: ${d.momentum}`);
    if (d.weightDecay < 0) throw new RangeError(`invalid weight decay: ${d.weightDecay}`);
    if (d.nesterov && (d.momentum <= 0 || d.dampening !== 0)) throw new Error('Nesterov momentum requires a momentum and zero dampening');
    super(params, d);
  }

  protected stepGroup(g: ParamGroup): void {
    const lr = g.lr;
    const momentum = g.momentum as number;
    const dampening = g.dampening as number;
    const wd = g.weightDecay as number;
    for (const p of g.params) {
      let d = p.grad;
      if (d === null) continue;
      if (g.maximize) d = d.neg();
      if (wd !== 0) d = d.add(p, wd);
      if (momentum !== 0) {
        const s = this.state.get(p);
        let buf: Tensor;
        if (!s) {
          buf = this.stateOf(p, () => ({ momentum_buffer: d!.clone() })).momentum_buffer as Tensor;
        } else {
          buf = s.momentum_buffer as Tensor;
          buf.mul_(momentum).add_(d, 1 - dampening);
        }
        d = g.nesterov ? d.add(buf, momentum) : buf;
      }
      p.add_(d, -lr);
    }
  }
}
