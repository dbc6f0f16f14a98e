// nn.Module: the registry of parameters, buffers and child modules behind every layer.
//
// Names follow PyTorch's checkpoints exactly (`layers.0.attn.q_proj.weight`), so a state dict read from a PyTorch
// checkpoint loads without renaming. Parameters and buffers are marked with keep(): a module made or used inside
// tidy() keeps its weights, and Module.dispose() is the one place that releases them.
import { Tensor, keep, tidy } from '../tensor.js';
import { noGrad } from '../autograd.js';
import { isFloating, type DType, type DeviceLike } from '../core.js';

export type StateDict = Map<string, Tensor>;
export type StateDictLike = Map<string, Tensor> | Record<string, Tensor>;

/** Options shared by the layers' constructors: where and in which dtype the parameters are made. */
export interface FactoryOptions {
  dtype?: DType;
  device?: DeviceLike;
}

export type ConvertTarget = DType | DeviceLike | { dtype?: DType; device?: DeviceLike };

export interface LoadResult {
  missingKeys: string[];
  unexpectedKeys: string[];
}

const DTYPES = new Set<string>(['uint8', 'int8', 'int16', 'int32', 'int64', 'float16', 'float32', 'float64', 'bool', 'bfloat16']);

function checkName(kind: string, name: string): void {
  if (typeof name !== 'string' || name === '') throw new TypeError(`${kind} name must be a non-empty string`);
  if (name.includes('.')) throw new TypeError(`${kind} name cannot contain '.': got '${name}'`);
}

function shapeStr(s: number[]): string {
  return `[${s.join(', ')}]`;
}

export class Module {
  /** Training mode (dropout active, batch norm on batch statistics); set through train() / eval(). */
  training = true;
  /** @internal */ readonly _parameters = new Map<string, Tensor | null>();
  /** @internal */ readonly _buffers = new Map<string, Tensor | null>();
  /** @internal */ readonly _nonPersistent = new Set<string>();
  /** @internal */ readonly _modules = new Map<string, Module | null>();

  /** Subclasses define their computation here; Module itself has none. */
  forward(..._args: any[]): any {
    throw new Error(`${this.constructor.name} has no forward()`);
  }

  // --- registration -------------------------------------------------------------------------------------------

  private checkFree(kind: string, name: string, own: Map<string, unknown>): void {
    checkName(kind, name);
    for (const m of [this._parameters, this._buffers, this._modules] as Map<string, unknown>[]) {
      if (m !== own && m.has(name)) throw new Error(`cannot register ${kind} '${name}': ${this.constructor.name} already has an attribute of that name of another kind`);
    }
  }

  /**
   * Registers a parameter (a tensor the optimizer trains) under `name`. Floating tensors get requiresGrad = true
   * unless `requiresGrad: false`. Returns the tensor, so a field can be set in the same statement. Registering the
   * same tensor in two modules ties them (both names appear in stateDict(), parameters() lists it once).
   * Registering again under a name replaces the entry; the replaced tensor is not disposed (it may be shared).
   */
  registerParameter<T extends Tensor | null>(name: string, t: T, opts: { requiresGrad?: boolean } = {}): T {
    this.checkFree('parameter', name, this._parameters);
    if (t !== null) {
      if (!(t instanceof Tensor)) throw new TypeError(`parameter '${name}' must be a Tensor or null`);
      keep(t);
      if (isFloating(t.dtype) && !t.requiresGrad && (opts.requiresGrad ?? true) && t.isLeaf) t.requiresGrad_(true);
    }
    this._parameters.set(name, t);
    return t;
  }

  /** Registers a buffer (state that is not trained, e.g. running statistics). Non-persistent ones stay out of stateDict(). */
  registerBuffer<T extends Tensor | null>(name: string, t: T, opts: { persistent?: boolean } = {}): T {
    this.checkFree('buffer', name, this._buffers);
    if (t !== null) {
      if (!(t instanceof Tensor)) throw new TypeError(`buffer '${name}' must be a Tensor or null`);
      keep(t);
    }
    this._buffers.set(name, t);
    if (opts.persistent ?? true) this._nonPersistent.delete(name);
    else this._nonPersistent.add(name);
    return t;
  }

  registerModule<M extends Module | null>(name: string, m: M): M {
    this.checkFree('module', name, this._modules);
    if (m !== null && !(m instanceof Module)) throw new TypeError(`module '${name}' must be a Module or null`);
    this._modules.set(name, m);
    return m;
  }

  // --- lookup -------------------------------------------------------------------------------------------------

  /** The module at a dotted path ('' is this module), e.g. getSubmodule('layers.0.attn'). */
  getSubmodule(path: string): Module {
    if (path === '') return this;
    let m: Module = this;
    const parts = path.split('.');
    for (let i = 0; i < parts.length; i++) {
      const next = m._modules.get(parts[i]);
      if (!next) throw new Error(`${m.constructor.name} has no submodule '${parts[i]}' (looking up '${path}')`);
      m = next;
    }
    return m;
  }

  /** The parameter at a dotted path, e.g. getParameter('layers.0.attn.q_proj.weight'). */
  getParameter(path: string): Tensor {
    const dot = path.lastIndexOf('.');
    const m = this.getSubmodule(dot < 0 ? '' : path.slice(0, dot));
    const p = m._parameters.get(path.slice(dot + 1));
    if (!p) throw new Error(`${m.constructor.name} has no parameter '${path.slice(dot + 1)}' (looking up '${path}')`);
    return p;
  }

  getBuffer(path: string): Tensor {
    const dot = path.lastIndexOf('.');
    const m = this.getSubmodule(dot < 0 ? '' : path.slice(0, dot));
    const b = m._buffers.get(path.slice(dot + 1));
    if (!b) throw new Error(`${m.constructor.name} has no buffer '${path.slice(dot + 1)}' (looking up '${path}')`);
    return b;
  }

  // --- traversal ----------------------------------------------------------------------------------------------

  namedChildren(): [string, Module][] {
    const out: [string, Module][] = [];
    for (const [n, m] of this._modules) if (m) out.push([n, m]);
    return out;
  }

  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module and every descendant, depth first, each once (a shared module keeps its first name). */
  namedModules(prefix = '', memo: Set<Module> = new Set()): [string, Module][] {
    if (memo.has(this)) return [];
    memo.add(this);
    const out: [string, Module][] = [[prefix, this]];
    for (const [n, m] of this.namedChildren()) out.push(...m.namedModules(prefix ? `${prefix}.${n}` : n, memo));
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  private namedMembers(which: '_parameters' | '_buffers', prefix: string, recurse: boolean, removeDuplicate: boolean): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    const mods: [string, Module][] = recurse ? this.namedModules(prefix, removeDuplicate ? new Set() : new ProbeSet()) : [[prefix, this]];
    for (const [mp, m] of mods) {
      for (const [n, t] of m[which]) {
        if (!t) continue;
        if (removeDuplicate) {
          if (seen.has(t)) continue;
          seen.add(t);
        }
        out.push([mp ? `${mp}.${n}` : n, t]);
      }
    }
    return out;
  }

  /** [name, parameter] pairs in registration order; a tied parameter is listed once, under its first name. */
  namedParameters(opts: { prefix?: string; recurse?: boolean; removeDuplicate?: boolean } = {}): [string, Tensor][] {
    return this.namedMembers('_parameters', opts.prefix ?? '', opts.recurse ?? true, opts.removeDuplicate ?? true);
  }

  parameters(recurse = true): Tensor[] {
    return this.namedParameters({ recurse }).map(([, p]) => p);
  }

  namedBuffers(opts: { prefix?: string; recurse?: boolean; removeDuplicate?: boolean } = {}): [string, Tensor][] {
    return this.namedMembers('_buffers', opts.prefix ?? '', opts.recurse ?? true, opts.removeDuplicate ?? true);
  }

  buffers(recurse = true): Tensor[] {
    return this.namedBuffers({ recurse }).map(([, b]) => b);
  }

  /** Calls fn on every descendant, then on this module (PyTorch's order). */
  apply(fn: (m: Module) => void): this {
    for (const m of this.children()) m.apply(fn);
    fn(this);
    return this;
  }

  /** Number of parameter elements (tied parameters count once). */
  numParameters(opts: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const p of this.parameters()) if (!opts.trainableOnly || p.requiresGrad) n += p.numel();
    return n;
  }

  // --- state dict ---------------------------------------------------------------------------------------------

  /**
   * Parameters and persistent buffers by checkpoint name, in PyTorch's order (each module's own parameters, then its
   * buffers, then its children). Values are detached aliases owned by the current scope: writing into them writes
   * into the module, disposing them does not. With keepVars the registered tensors themselves are returned.
   */
  stateDict(opts: { prefix?: string; keepVars?: boolean } = {}): StateDict {
    const out: StateDict = new Map();
    this.collectState(opts.prefix ?? '', opts.keepVars ?? false, out);
    return out;
  }

  private collectState(prefix: string, keepVars: boolean, out: StateDict): void {
    for (const [n, p] of this._parameters) if (p) out.set(prefix + n, keepVars ? p : p.detach());
    for (const [n, b] of this._buffers) if (b && !this._nonPersistent.has(n)) out.set(prefix + n, keepVars ? b : b.detach());
    for (const [n, m] of this._modules) if (m) m.collectState(`${prefix}${n}.`, keepVars, out);
  }

  /** The tensors stateDict() names, without making aliases. */
  private stateTargets(): Map<string, Tensor> {
    return this.stateDict({ keepVars: true });
  }

  /**
   * Copies a state dict into this module's parameters and buffers in place (the same Tensor objects keep their
   * identity, so optimizers built before stay valid), converting dtype and device as needed. Nothing is copied when
   * a check fails: missing or unexpected keys fail under strict (the default), a shape mismatch always fails; the
   * error lists every problem. Returns the missing and unexpected keys (non-empty only when strict is false).
   */
  loadStateDict(sd: StateDictLike, opts: { strict?: boolean } = {}): LoadResult {
    const strict = opts.strict ?? true;
    const given = sd instanceof Map ? sd : new Map(Object.entries(sd));
    const targets = this.stateTargets();
    const missingKeys: string[] = [];
    const unexpectedKeys: string[] = [];
    const problems: string[] = [];
    for (const k of targets.keys()) if (!given.has(k)) missingKeys.push(k);
    for (const k of given.keys()) if (!targets.has(k)) unexpectedKeys.push(k);
    for (const [k, dst] of targets) {
      const src = given.get(k);
      if (src === undefined) continue;
      if (!(src instanceof Tensor)) {
        problems.push(`value for ${k} is not a Tensor`);
        continue;
      }
      if (src.isDisposed) {
        problems.push(`value for ${k} was disposed`);
        continue;
      }
      const a = src.shape;
      const b = dst.shape;
      if (a.length !== b.length || a.some((v, i) => v !== b[i])) {
        problems.push(`size mismatch for ${k}: copying a param with shape ${shapeStr(a)} from checkpoint, the shape in current model is ${shapeStr(b)}.`);
      }
    }
    if (strict) {
      if (unexpectedKeys.length) problems.unshift(`Unexpected key(s) in state_dict: ${unexpectedKeys.map((k) => `"${k}"`).join(', ')}.`);
      if (missingKeys.length) problems.unshift(`Missing key(s) in state_dict: ${missingKeys.map((k) => `"${k}"`).join(', ')}.`);
    }
    if (problems.length) {
      throw new Error(`Error(s) in loading state_dict for ${this.constructor.name}:\n\t${problems.join('\n\t')}`);
    }
    noGrad(() => {
      for (const [k, dst] of targets) {
        const src = given.get(k);
        // copy_ converts dtype and device, and leaves dst's identity (and its place in any optimizer) alone.
        if (src !== undefined && src !== dst) dst.copy_(src);
      }
    });
    return { missingKeys, unexpectedKeys };
  }

  // --- modes --------------------------------------------------------------------------------------------------

  /** Sets the mode of this module and, through their own train(), of its children (so overrides see it). */
  train(mode = true): this {
    this.training = mode;
    for (const m of this.children()) m.train(mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Stops gradients to every parameter (requiresGrad = false), e.g. to fine-tune only an adapter. */
  freeze(): this {
    for (const p of this.parameters()) p.requiresGrad = false;
    return this;
  }

  unfreeze(): this {
    for (const p of this.parameters()) if (isFloating(p.dtype)) p.requiresGrad = true;
    return this;
  }

  /** Drops accumulated gradients (grad = null, as PyTorch's zero_grad(set_to_none=True)). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  // --- conversion ---------------------------------------------------------------------------------------------

  /**
   * Converts parameters and buffers in place: to(dtype) changes floating tensors only (integer buffers such as
   * num_batches_tracked stay int64), to(device) moves everything. The Tensor objects stay the same, so references
   * held elsewhere (fields, optimizers) follow; gradients are converted along.
   */
  to(target: ConvertTarget): this {
    const o = typeof target === 'string' ? (DTYPES.has(target) ? { dtype: target as DType } : { device: target }) : target;
    const all = new Set<Tensor>([...this.parameters(), ...this.buffers()]);
    noGrad(() => tidy(() => {
      for (const t of all) {
        const dtype = o.dtype && isFloating(t.dtype) && o.dtype !== t.dtype ? o.dtype : undefined;
        const device = o.device && !sameDevice(t.device, o.device) ? o.device : undefined;
        if (!dtype && !device) continue;
        const spec = { dtype, device };
        const g = t.grad;
        const requiresGrad = t.requiresGrad;
        const converted = t.to({ ...spec, copy: true });
        if (requiresGrad) converted.requiresGrad_(true);
        if (g) converted.grad = g.to(spec);
        t._replaceWith(converted);
      }
    }));
    return this;
  }

  float(): this { return this.to('float32'); }
  double(): this { return this.to('float64'); }
  half(): this { return this.to('float16'); }
  bfloat16(): this { return this.to('bfloat16'); }
  cpu(): this { return this.to({ device: 'cpu' }); }
  cuda(index = 0): this { return this.to({ device: `cuda:${index}` }); }

  /** Releases every parameter and buffer of this module and its descendants; the module cannot be used after. */
  dispose(): void {
    for (const m of this.modules()) {
      for (const t of m._parameters.values()) t?.dispose();
      for (const t of m._buffers.values()) t?.dispose();
    }
  }

  // --- printing -----------------------------------------------------------------------------------------------

  /** The constructor arguments shown by toString(), as PyTorch's extra_repr. */
  extraRepr(): string {
    return '';
  }

  toString(): string {
    const children = this.namedChildren();
    const extra = this.extraRepr();
    if (children.length === 0) return `${this.constructor.name}(${extra})`;
    const lines: string[] = [];
    if (extra) lines.push(...extra.split('\n'));
    for (const [n, m] of children) lines.push(`(${n}): ${m.toString().split('\n').join('\n  ')}`);
    return `${this.constructor.name}(\n  ${lines.join('\n  ')}\n)`;
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.toString();
  }
}

// namedModules(memo) with removeDuplicate = false: a memo that never remembers, so shared modules repeat.
class ProbeSet extends Set<Module> {
  override has(): boolean {
    return false;
  }
}

function sameDevice(a: string, b: string): boolean {
  const norm = (d: string) => (d === 'cuda' ? 'cuda:0' : d);
  return norm(a) === norm(b);
}
