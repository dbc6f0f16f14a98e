// Optimizer base: parameter groups, per-parameter state, and a state dict that resumes a run exactly.
//
// State tensors are marked with keep(), so a step taken inside tidy() neither frees them nor leaks its
// temporaries (step() opens its own scope); they live until loadStateDict() replaces them or dispose() is called.
import { Tensor, tidy, keep, dispose, describe } from '../tensor.js';
import { isFloating, type DType } from '../core.js';
import { noGrad } from '../autograd.js';

/** Hyper-parameters every group has; each optimizer extends this with its own. */
export interface GroupHyper {
  lr: number;
  /** Set by LRScheduler: the lr its schedule multiplies (torch's `initial_lr`). */
  initialLr?: number;
  [extra: string]: unknown;
}

export type ParamGroup<H extends GroupHyper = GroupHyper> = H & { params: Tensor[] };

/** A flat list of parameters (one group), or groups that override the defaults per group. */
export type ParamsArg<H extends GroupHyper = GroupHyper> = Tensor[] | (Partial<H> & { params: Tensor[] })[];

/** Per-parameter state: tensors (moments, buffers) and numbers (step counts). */
export type ParamState = Record<string, Tensor | number | undefined>;

/**
 * What stateDict() returns. Parameters are named by their index in group order, as in torch. The tensors are the
 * optimizer's own (not copies): write them out before the next step.
 */
export interface OptimizerStateDict {
  state: Record<string, ParamState>;
  paramGroups: (Record<string, unknown> & { params: number[] })[];
}

/** A state dict split for a checkpoint: tensors for safetensors, the rest for JSON. */
export interface FlatOptimizerState {
  tensors: Map<string, Tensor>;
  meta: { format: 'retain.optim/1'; paramGroups: OptimizerStateDict['paramGroups']; state: Record<string, Record<string, number | { tensor: string }>> };
}

export abstract class Optimizer<H extends GroupHyper = GroupHyper, S extends ParamState = ParamState> {
  readonly paramGroups: ParamGroup<H>[] = [];
  /** Per-parameter state, created on a parameter's first step. */
  readonly state = new Map<Tensor, S>();
  readonly defaults: H;

  constructor(params: ParamsArg<H>, defaults: H) {
    this.defaults = defaults;
    if (!Array.isArray(params) || params.length === 0) throw new Error(`${this.constructor.name}: got an empty parameter list`);
    const groups = params[0] instanceof Tensor ? [{ params: params as Tensor[] } as Partial<H> & { params: Tensor[] }] : (params as (Partial<H> & { params: Tensor[] })[]);
    for (const g of groups) this.addParamGroup(g);
  }

  /** Adds a group; unspecified hyper-parameters come from the optimizer's defaults. */
  addParamGroup(group: Partial<H> & { params: Tensor[] }): void {
    if (group === null || typeof group !== 'object' || !Array.isArray(group.params)) {
      throw new TypeError(`a parameter group must be an object with a params array, got ${describe(group?.params ?? group)}`);
    }
    const seen = new Set<Tensor>();
    for (const g of this.paramGroups) for (const p of g.params) seen.add(p);
    for (const p of group.params) {
      if (!(p instanceof Tensor)) throw new TypeError(`optimizer parameters must be Tensors, got ${describe(p)}`);
      if (p.isDisposed) throw new Error('an optimizer parameter was disposed');
      if (!isFloating(p.dtype)) throw new TypeError(`optimizer parameters must be floating point, got ${p.dtype}`);
      if (seen.has(p)) throw new Error('some parameters appear in more than one parameter group');
      seen.add(p);
    }
    const given = Object.fromEntries(Object.entries(group).filter(([, v]) => v !== undefined));
    const g = { ...structuredClone(this.defaults), ...given, params: [...group.params] } as ParamGroup<H>;
    this.validateGroup(g);
    this.paramGroups.push(g);
  }

  /** Throws on hyper-parameters this optimizer cannot use; runs for new and for loaded groups. */
  protected validateGroup(g: ParamGroup<H>): void {
    if (!(typeof g.lr === 'number' && g.lr >= 0)) throw new RangeError(`invalid learning rate: ${g.lr}`);
  }

  /** All parameters, in group order (the order stateDict indexes them by). */
  params(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /** Sets every gradient to null (torch's set_to_none=True), or zeroes them in place. */
  zeroGrad(setToNone = true): void {
    if (setToNone) {
      for (const g of this.paramGroups) for (const p of g.params) p.grad = null;
      return;
    }
    tidy(() => {
      for (const g of this.paramGroups) for (const p of g.params) p.grad?.zero_();
    });
  }

  /** One update of every parameter that has a gradient; parameters whose grad is null are left alone. */
  step(): void {
    noGrad(() =>
      tidy(() => {
        for (const g of this.paramGroups) this.stepGroup(g);
      }),
    );
  }

  protected abstract stepGroup(group: ParamGroup<H>): void;

  /** The parameters of a group that have gradients, with those gradients (handles owned by the step's scope). */
  protected withGrads(g: ParamGroup<H>): { params: Tensor[]; grads: Tensor[] } {
    const params: Tensor[] = [];
    const grads: Tensor[] = [];
    for (const p of g.params) {
      const gr = p.grad;
      if (gr === null) continue;
      params.push(p);
      grads.push(gr);
    }
    return { params, grads };
  }

  /** A parameter's state, or undefined before its first step. */
  getState(p: Tensor): S | undefined {
    return this.state.get(p);
  }

  /** The dtype a loaded state tensor takes: floating state in the parameter's dtype, as torch does. */
  protected stateDtype(p: Tensor, v: Tensor): DType {
    return isFloating(v.dtype) ? p.dtype : v.dtype;
  }

  /** Registers new state for p; its tensors are kept past the current scope. */
  protected initState(p: Tensor, s: S): S {
    for (const v of Object.values(s)) if (v instanceof Tensor) keep(v);
    this.state.set(p, s);
    return s;
  }

  stateDict(): OptimizerStateDict {
    const index = new Map<Tensor, number>();
    for (const p of this.params()) index.set(p, index.size);
    const state: Record<string, ParamState> = {};
    for (const [p, s] of this.state) {
      const k = index.get(p);
      if (k !== undefined) state[String(k)] = { ...s };
    }
    const paramGroups = this.paramGroups.map((g) => {
      const { params, ...hyper } = g;
      return { ...structuredClone(hyper), params: params.map((p) => index.get(p)!) };
    });
    return { state, paramGroups };
  }

  /**
   * Restores a stateDict() into an optimizer over the same parameters in the same group structure: the groups'
   * hyper-parameters (lr included) and every state tensor, copied onto each parameter's device (floating state in
   * the parameter's dtype, as torch does).
   */
  loadStateDict(sd: OptimizerStateDict): void {
    if (!sd || typeof sd !== 'object' || !Array.isArray(sd.paramGroups) || typeof sd.state !== 'object' || sd.state === null) {
      throw new TypeError('loadStateDict: expected { state, paramGroups } as made by stateDict()');
    }
    if (sd.paramGroups.length !== this.paramGroups.length) {
      throw new Error(`loadStateDict: the saved state has ${sd.paramGroups.length} parameter groups, this optimizer has ${this.paramGroups.length}`);
    }
    const flat: Tensor[] = [];
    const groups = sd.paramGroups.map((sg, gi) => {
      const g = this.paramGroups[gi];
      if (!Array.isArray(sg.params) || sg.params.length !== g.params.length) {
        throw new Error(`loadStateDict: group ${gi} has ${sg.params?.length} saved parameters, this optimizer has ${g.params.length}`);
      }
      flat.push(...g.params);
      const { params: _saved, ...hyper } = sg;
      const merged = { ...g, ...structuredClone(hyper), params: g.params } as ParamGroup<H>;
      this.validateGroup(merged);
      return merged;
    });
    // Check and copy everything before touching this optimizer, so a bad state dict leaves it as it was.
    const loaded = new Map<Tensor, S>();
    try {
      tidy(() => {
        for (const [k, s] of Object.entries(sd.state)) {
          const p = flat[Number(k)];
          if (!/^\d+$/.test(k) || p === undefined) throw new Error(`loadStateDict: state for parameter ${k}, which this optimizer does not have`);
          const copy: ParamState = {};
          for (const [name, v] of Object.entries(s)) {
            if (v === undefined) continue;
            if (v instanceof Tensor) {
              if (v.numel() !== 1 && v.shape.join() !== p.shape.join()) {
                throw new Error(`loadStateDict: state '${name}' of parameter ${k} has shape [${v.shape}], the parameter has [${p.shape}]`);
              }
              copy[name] = keep(v.to({ dtype: this.stateDtype(p, v), device: p.device, copy: true }));
            } else if (typeof v === 'number' && Number.isFinite(v)) {
              copy[name] = v;
            } else {
              throw new TypeError(`loadStateDict: state '${name}' of parameter ${k} is ${describe(v)}, expected a Tensor or a finite number`);
            }
          }
          loaded.set(p, copy as S);
        }
      });
    } catch (e) {
      for (const s of loaded.values()) disposeState(s);
      throw e;
    }
    this.dispose();
    groups.forEach((g, gi) => (this.paramGroups[gi] = g));
    for (const [p, s] of loaded) this.state.set(p, s);
    this.afterLoad();
  }

  /** Subclasses drop caches derived from state here. */
  protected afterLoad(): void {}

  /** Releases every state tensor (the parameters are the caller's). */
  dispose(): void {
    for (const s of this.state.values()) disposeState(s);
    this.state.clear();
  }
}

function disposeState(s: ParamState): void {
  dispose(Object.values(s).filter((v): v is Tensor => v instanceof Tensor));
}

/**
 * Splits a state dict into named tensors (`state.<param>.<name>`, for safetensors) and a JSON-able rest; the
 * tensors are the optimizer's own, not copies.
 */
export function flattenStateDict(sd: OptimizerStateDict, prefix = ''): FlatOptimizerState {
  const tensors = new Map<string, Tensor>();
  const state: FlatOptimizerState['meta']['state'] = {};
  for (const [k, s] of Object.entries(sd.state)) {
    const entry: Record<string, number | { tensor: string }> = {};
    for (const [name, v] of Object.entries(s)) {
      if (v === undefined) continue;
      if (v instanceof Tensor) {
        const key = `${prefix}state.${k}.${name}`;
        tensors.set(key, v);
        entry[name] = { tensor: key };
      } else entry[name] = v;
    }
    state[k] = entry;
  }
  return { tensors, meta: { format: 'retain.optim/1', paramGroups: structuredClone(sd.paramGroups), state } };
}

/** The inverse of flattenStateDict: `tensors` may be a Map (as loadSafetensors returns) or a plain object. */
export function unflattenStateDict(tensors: Map<string, Tensor> | Record<string, Tensor>, meta: FlatOptimizerState['meta']): OptimizerStateDict {
  if (!meta || meta.format !== 'retain.optim/1') throw new TypeError(`unflattenStateDict: unknown format ${JSON.stringify(meta?.format)}`);
  const get = (key: string): Tensor => {
    const t = tensors instanceof Map ? tensors.get(key) : tensors[key];
    if (!(t instanceof Tensor)) throw new Error(`unflattenStateDict: tensor '${key}' is missing`);
    return t;
  };
  const state: Record<string, ParamState> = {};
  for (const [k, s] of Object.entries(meta.state)) {
    const entry: ParamState = {};
    for (const [name, v] of Object.entries(s)) entry[name] = typeof v === 'number' ? v : get(v.tensor);
    state[k] = entry;
  }
  return { state, paramGroups: structuredClone(meta.paramGroups) };
}
