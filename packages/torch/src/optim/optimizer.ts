// Optimizer base: parameter groups, per-parameter state, and a state dict that resumes exactly.
// State tensors are kept (they outlive tidy scopes) and released by dispose().
import { Tensor, keep, dispose, describe } from '../tensor.js';
import { noGrad } from '../autograd.js';

export interface ParamGroup {
  params: Tensor[];
  lr: number;
  [hyper: string]: unknown;
}

export type ParamsArg = Tensor[] | (Partial<ParamGroup> & { params: Tensor[] })[];

/** The per-parameter state of an optimizer: tensors (moments) and numbers (step counts). */
export type ParamState = Record<string, Tensor | number>;

export interface OptimizerStateDict {
  /** Per parameter index (in group order): its state. */
  state: Record<string, ParamState>;
  /** Group hyper-parameters with params replaced by indices. */
  paramGroups: (Omit<ParamGroup, 'params'> & { params: number[] })[];
}

export abstract class Optimizer {
  readonly paramGroups: ParamGroup[] = [];
  readonly state = new Map<Tensor, ParamState>();

  constructor(params: ParamsArg, readonly defaults: Omit<ParamGroup, 'params'>) {
    if (!Array.isArray(params) || params.length === 0) throw new Error(`${this.constructor.name}: got an empty parameter list`);
    const groups = params[0] instanceof Tensor ? [{ params: params as Tensor[] }] : (params as Partial<ParamGroup>[]);
    for (const g of groups) this.addParamGroup(g as Partial<ParamGroup> & { params: Tensor[] });
  }

  addParamGroup(g: Partial<ParamGroup> & { params: Tensor[] }): void {
    if (!Array.isArray(g.params)) throw new TypeError(`param group params must be an array of Tensors, got ${describe(g.params)}`);
    const seen = new Set(this.paramGroups.flatMap((x) => x.params));
    for (const p of g.params) {
      if (!(p instanceof Tensor)) throw new TypeError(`optimizer params must be Tensors, got ${describe(p)}`);
      if (seen.has(p)) throw new Error('some parameters appear in more than one parameter group');
      seen.add(p);
    }
    const group = { ...this.defaults, ...g, params: [...g.params] } as ParamGroup;
    if (!(typeof group.lr === 'number' && group.lr >= 0)) throw new RangeError(`invalid learning rate: ${group.lr}`);
    this.paramGroups.push(group);
  }

  /** Sets every grad to null (PyTorch's set_to_none=True). */
  zeroGrad(): void {
    for (const g of this.paramGroups) for (const p of g.params) if (p.grad !== null) p.grad = null;
  }

  /** Applies one update to every parameter that has a gradient. */
  step(): void {
    noGrad(() => {
      for (const g of this.paramGroups) this.stepGroup(g);
    });
  }

  protected abstract stepGroup(group: ParamGroup): void;

  /** The state of one parameter, created on first use. */
  protected stateOf(p: Tensor, init: () => ParamState): ParamState {
    let s = this.state.get(p);
    if (!s) {
      s = init();
      for (const v of Object.values(s)) if (v instanceof Tensor) keep(v);
      this.state.set(p, s);
    }
    return s;
  }

  stateDict(): OptimizerStateDict {
    const index = new Map<Tensor, number>();
    let i = 0;
    for (const g of this.paramGroups) for (const p of g.params) index.set(p, i++);
    const state: Record<string, ParamState> = {};
    for (const [p, s] of this.state) {
      const k = index.get(p);
      if (k !== undefined) state[String(k)] = { ...s };
    }
    return {
      state,
      paramGroups: this.paramGroups.map((g) => ({ ...g, params: g.params.map((p) => index.get(p)!) })),
    };
  }

  /** Restores state saved by stateDict() into an optimizer over the same parameters (copies tensors). */
  loadStateDict(sd: OptimizerStateDict): void {
    if (!sd || !Array.isArray(sd.paramGroups) || typeof sd.state !== 'object') throw new Error('loadStateDict: not an optimizer state dict');
    if (sd.paramGroups.length !== this.paramGroups.length) {
      throw new Error(`loadStateDict: the saved state has ${sd.paramGroups.length} parameter groups, this optimizer has ${this.paramGroups.length}`);
    }
    const flat: Tensor[] = [];
    sd.paramGroups.forEach((sg, gi) => {
      const g = this.paramGroups[gi];
      if (sg.params.length !== g.params.length) {
        throw new Error(`loadStateDict: group ${gi} has ${sg.params.length} saved parameters, this optimizer has ${g.params.length}`);
      }
      for (const [k, v] of Object.entries(sg)) if (k !== 'params') g[k] = v;
      flat.push(...g.params);
    });
    for (const s of this.state.values()) dispose(Object.values(s).filter((v): v is Tensor => v instanceof Tensor));
    this.state.clear();
    for (const [k, s] of Object.entries(sd.state)) {
      const p = flat[Number(k)];
      if (!p) throw new Error(`loadStateDict: state for parameter ${k}, which does not exist`);
      const copy: ParamState = {};
      for (const [name, v] of Object.entries(s)) {
        if (v instanceof Tensor) {
          if (v.shape.join() !== p.shape.join() && v.numel() !== 1) {
            throw new Error(`loadStateDict: state '${name}' of parameter ${k} has shape [${v.shape}] but the parameter is [${p.shape}]`);
          }
          copy[name] = keep(v.to({ dtype: v.dtype, device: p.device, copy: true }));
        } else copy[name] = v;
      }
      this.state.set(p, copy);
    }
  }

  dispose(): void {
    for (const s of this.state.values()) dispose(Object.values(s).filter((v): v is Tensor => v instanceof Tensor));
    this.state.clear();
  }
}
