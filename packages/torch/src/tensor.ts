// The Tensor handle, its lifetime scopes and its ergonomic methods.
//
// Lifetime: every tensor made inside `tidy(fn)` is released when fn returns, except what fn returns (handed to the
// enclosing scope) and what `keep()` marks. Tensors made outside any scope are released by dispose() or, as a last
// resort, by the garbage collector through a FinalizationRegistry. GC never runs inside a synchronous training loop,
// so loops must use scopes.
import { native, dtName, isFloating, type DType, type Scalar, type DeviceLike } from './core.js';
import * as G from './ops/generated.js';
import { formatTensor } from './format.js';


type Scope = Tensor[];
const scopes: Scope[] = [];
const gcRegistry = new FinalizationRegistry<number>((h) => {
  try {
    native.release(h);
  } catch {
    // Released already; nothing to do.
  }
});

// Hands a tensor to the garbage collector, and tells V8 how much native memory the collector would free with it.
// Tensors in a scope are not reported: the scope frees them, and V8 counting them ran useless full collections.
function gcOwn(t: Tensor): void {
  gcRegistry.register(t, t.h, t);
  native.gcOwned(t.h);
}

function track(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s !== undefined) s.push(t);
  else gcOwn(t);
}

function untrackToGc(t: Tensor): void {
  if (t.h < 0) return;
  // A tensor made outside any scope is registered already; a second registration would release its handle twice.
  gcRegistry.unregister(t);
  gcOwn(t);
}

/** Number of tensors alive in the native table (for leak tests). */
export function liveTensors(): number {
  return native.liveCount();
}

/**
 * Runs fn and releases every tensor it created, except those it returns (a Tensor, or Tensors inside arrays or plain
 * objects) and those passed to keep(). Returned tensors belong to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    releaseScope(scope, null);
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    releaseScope(scope, null);
    throw new TypeError('tidy(fn): fn must be synchronous (it returned a Promise); use explicit dispose() in async code');
  }
  const survivors = new Set<Tensor>();
  collect(result, survivors, 0);
  releaseScope(scope, survivors);
  for (const t of survivors) adopt(t);
  return result;
}

function adopt(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s !== undefined) s.push(t);
  else untrackToGc(t);
}

let releaseBuf = new Int32Array(1024);
function releaseScope(scope: Scope, survivors: Set<Tensor> | null): void {
  let n = 0;
  for (let i = 0; i < scope.length; i++) {
    const t = scope[i];
    if (t.h < 0 || t._kept || (survivors !== null && survivors.has(t))) continue;
    if (n === releaseBuf.length) {
      native.releaseMany(releaseBuf, n);
      n = 0;
    }
    releaseBuf[n++] = t.h;
    t.h = -1;
  }
  if (n > 0) native.releaseMany(releaseBuf, n);
  if (releaseBuf.length > 65536) releaseBuf = new Int32Array(1024);
}

function collect(v: unknown, out: Set<Tensor>, depth: number): void {
  if (depth > 8 || v === null || typeof v !== 'object') return;
  if (v instanceof Tensor) {
    out.add(v);
    return;
  }
  if (Array.isArray(v)) {
    for (const x of v) collect(x, out, depth + 1);
    return;
  }
  if (v instanceof Map) {
    for (const x of v.values()) collect(x, out, depth + 1);
    return;
  }
  const proto = Object.getPrototypeOf(v);
  if (proto === Object.prototype || proto === null) for (const x of Object.values(v)) collect(x, out, depth + 1);
}

/** Marks tensors to outlive the current tidy scope; the caller then owns them (dispose() or GC). */
export function keep<T extends Tensor | Tensor[] | null | undefined>(t: T): T {
  if (t == null) return t;
  const list = Array.isArray(t) ? t : [t];
  for (const x of list) {
    if (!x._kept) {
      x._kept = true;
      untrackToGc(x);
    }
  }
  return t;
}

export function dispose(ts: Tensor | Iterable<Tensor | null | undefined> | null | undefined): void {
  if (ts == null) return;
  if (ts instanceof Tensor) {
    ts.dispose();
    return;
  }
  for (const t of ts) t?.dispose();
}

// ---------------------------------------------------------------------------------------------------------------
// The Tensor handle. Methods live in tensor.ts (declaration merging), so that this file stays the small core.

export type IndexSpec = number | string | null | Tensor | number[];
export type ShapeArg = number[] | number;

function shapeArgs(args: (number | number[])[]): number[] {
  if (args.length === 1 && Array.isArray(args[0])) return args[0];
  return args as number[];
}

function needTensor(t: unknown, what: string): Tensor {
  if (!(t instanceof Tensor)) throw new TypeError(`${what} must be a Tensor, got ${describe(t)}`);
  return t;
}

export class Tensor {
  /** Index in the native handle table; -1 once disposed. */
  h: number;
  /** @internal */
  _kept = false;

  /** @internal Use the creation functions (tensor, zeros, ...) instead. */
  constructor(h: number) {
    this.h = h;
    track(this);
  }

  /** Releases the native tensor now. Further use throws. */
  dispose(): void {
    if (this.h < 0) return;
    gcRegistry.unregister(this);
    native.release(this.h);
    this.h = -1;
  }

  get isDisposed(): boolean {
    return this.h < 0;
  }

  // --- metadata -------------------------------------------------------------------------------------------------

  get shape(): number[] {
    return native.shape(this.h);
  }
  size(dim?: number): number | number[] {
    const s = native.shape(this.h);
    if (dim === undefined) return s;
    const d = dim < 0 ? dim + s.length : dim;
    if (d < 0 || d >= s.length) throw new RangeError(`dimension ${dim} out of range for a ${s.length}-d tensor`);
    return s[d];
  }
  get ndim(): number {
    return native.dim(this.h);
  }
  get dtype(): DType {
    return dtName(native.dtype(this.h));
  }
  get device(): string {
    return native.device(this.h);
  }
  numel(): number {
    return native.numel(this.h);
  }
  strides(): number[] {
    return native.strides(this.h);
  }
  isContiguous(): boolean {
    const shape = native.shape(this.h);
    const strides = native.strides(this.h);
    let expected = 1;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (shape[d] !== 1 && strides[d] !== expected) return false;
      expected *= shape[d];
    }
    return true;
  }

  // --- data out -------------------------------------------------------------------------------------------------

  /** The one element as a number; a bool tensor gives 1 or 0 (the addon hands back a JS boolean, which `=== 0` never matches). */
  item(): number {
    const v = native.item(this.h) as number | boolean;
    return typeof v === 'boolean' ? Number(v) : v;
  }
  /** Elements in row-major order as a typed array (int64 as BigInt64Array, bool as Uint8Array, f16/bf16 widened). */
  data(): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array {
    const d = this.dtype;
    if (d === 'float16' || d === 'bfloat16') return tidy(() => this.to('float32').data()) as Float32Array;
    const buf = native.toBytes(this.h);
    switch (d) {
      case 'float32': return new Float32Array(buf);
      case 'float64': return new Float64Array(buf);
      case 'int32': return new Int32Array(buf);
      case 'int64': return new BigInt64Array(buf);
      case 'int16': return new Int16Array(buf);
      case 'int8': return new Int8Array(buf);
      default: return new Uint8Array(buf);
    }
  }
  /** Nested JS arrays, as Python's tolist(). int64 values become numbers. */
  toArray(): any {
    const flat = this.dtype === 'bool' ? Array.from(this.data() as Uint8Array, (v) => v !== 0)
      : this.dtype === 'int64' ? Array.from(this.data() as BigInt64Array, (v) => Number(v))
      : Array.from(this.data() as Float32Array);
    const shape = this.shape;
    if (shape.length === 0) return flat[0];
    let i = 0;
    const build = (d: number): unknown[] => {
      const out: unknown[] = [];
      for (let k = 0; k < shape[d]; k++) out.push(d === shape.length - 1 ? flat[i++] : build(d + 1));
      return out;
    };
    return build(0);
  }
  toString(): string {
    return formatTensor(this);
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this.h < 0 ? 'tensor(<disposed>)' : formatTensor(this);
  }

  // --- autograd -------------------------------------------------------------------------------------------------

  get requiresGrad(): boolean {
    return native.requiresGrad(this.h);
  }
  set requiresGrad(v: boolean) {
    native.requiresGrad(this.h, v);
  }
  requiresGrad_(v = true): this {
    native.requiresGrad(this.h, v);
    return this;
  }
  /** The accumulated gradient (a new handle each read, owned by the current scope), or null. */
  get grad(): Tensor | null {
    const g = native.grad(this.h);
    return g === null ? null : new Tensor(g);
  }
  set grad(g: Tensor | null) {
    native.setGrad(this.h, g === null ? null : needTensor(g, 'grad').h);
  }
  get isLeaf(): boolean {
    return native.isLeaf(this.h);
  }
  get gradFn(): string | null {
    return native.gradFn(this.h);
  }
  retainGrad(): this {
    native.retainGrad(this.h);
    return this;
  }
  backward(gradient?: Tensor | null, opts: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
    native.backward([this.h], gradient ? [needTensor(gradient, 'gradient').h] : null, opts.retainGraph ?? null, opts.createGraph ?? false);
  }
  detach(): Tensor {
    return G.detach(this);
  }
  /**
   * A copy outside autograd: `t.detach().clone()` without the detached view's handle, which would otherwise hold the
   * storage (a model's weights, after the model is disposed) until the garbage collector finds it.
   */
  detachedClone(): Tensor {
    const view = G.detach(this);
    try {
      return G.clone(view);
    } finally {
      view.dispose();
    }
  }
  detach_(): this {
    G.detach_(this);
    return this;
  }
  /**
   * @internal Points this wrapper at src's native tensor, releasing the one it held, and disposes src's wrapper.
   * Every holder of this object (a module field, an optimizer) then sees the new value, as PyTorch's `param.data = x`;
   * nn.Module.to() converts parameters this way.
   */
  _replaceWith(src: Tensor): this {
    if (this.h < 0) throw new Error('_replaceWith: this tensor was disposed');
    const h = native.share(needTensor(src, 'src').h);
    src.dispose();
    // The GC registration holds the old handle number; move it to the new one.
    const registered = gcRegistry.unregister(this);
    if (this.h >= 0) native.release(this.h);
    this.h = h;
    if (registered) gcOwn(this);
    return this;
  }
  get isInference(): boolean {
    return native.isInference(this.h);
  }

  // --- conversion -----------------------------------------------------------------------------------------------

  /** to('float32') | to('cuda') | to({ dtype, device, copy }) */
  to(target: DType | DeviceLike | { dtype?: DType; device?: DeviceLike; copy?: boolean; nonBlocking?: boolean }): Tensor {
    const o = typeof target === 'string' ? (isDTypeName(target) ? { dtype: target as DType } : { device: target }) : target;
    return G.to_dtype_layout(this, o.dtype ?? null, null, o.device ?? null, null, o.nonBlocking ?? false, o.copy ?? false);
  }
  float(): Tensor { return this.to('float32'); }
  double(): Tensor { return this.to('float64'); }
  half(): Tensor { return this.to('float16'); }
  bfloat16(): Tensor { return this.to('bfloat16'); }
  long(): Tensor { return this.to('int64'); }
  int(): Tensor { return this.to('int32'); }
  bool(): Tensor { return this.to('bool'); }
  cpu(): Tensor { return this.to({ device: 'cpu' }); }
  cuda(index = 0): Tensor { return this.to({ device: `cuda:${index}` }); }
  clone(): Tensor { return G.clone(this); }
  contiguous(): Tensor { return G.contiguous(this); }
  copy_(src: Tensor): this { G.copy_(this, needTensor(src, 'src')); return this; }

  // --- arithmetic (Tensor or number operands, as in Python) -----------------------------------------------------

  add(o: Tensor | number, alpha?: number): Tensor {
    return o instanceof Tensor ? G.add_Tensor(this, o, alpha) : G.add_Scalar(this, num(o, 'other'), alpha);
  }
  sub(o: Tensor | number, alpha?: number): Tensor {
    return o instanceof Tensor ? G.sub_Tensor(this, o, alpha) : G.sub_Scalar(this, num(o, 'other'), alpha);
  }
  mul(o: Tensor | number): Tensor {
    return o instanceof Tensor ? G.mul_Tensor(this, o) : G.mul_Scalar(this, num(o, 'other'));
  }
  div(o: Tensor | number, roundingMode?: 'trunc' | 'floor'): Tensor {
    if (roundingMode) return o instanceof Tensor ? G.div_Tensor_mode(this, o, roundingMode) : G.div_Scalar_mode(this, num(o, 'other'), roundingMode);
    return o instanceof Tensor ? G.div_Tensor(this, o) : G.div_Scalar(this, num(o, 'other'));
  }
  rsub(o: Tensor | number): Tensor {
    return o instanceof Tensor ? G.sub_Tensor(o, this) : G.rsub_Scalar(this, num(o, 'other'));
  }
  pow(e: Tensor | number): Tensor {
    return e instanceof Tensor ? G.pow_Tensor_Tensor(this, e) : G.pow_Tensor_Scalar(this, num(e, 'exponent'));
  }
  remainder(o: Tensor | number): Tensor {
    return o instanceof Tensor ? G.remainder_Tensor(this, o) : G.remainder_Scalar(this, num(o, 'other'));
  }
  add_(o: Tensor | number, alpha?: number): this {
    if (o instanceof Tensor) G.add__Tensor(this, o, alpha); else G.add__Scalar(this, num(o, 'other'), alpha);
    return this;
  }
  sub_(o: Tensor | number, alpha?: number): this {
    if (o instanceof Tensor) G.sub__Tensor(this, o, alpha); else G.sub__Scalar(this, num(o, 'other'), alpha);
    return this;
  }
  mul_(o: Tensor | number): this {
    if (o instanceof Tensor) G.mul__Tensor(this, o); else G.mul__Scalar(this, num(o, 'other'));
    return this;
  }
  div_(o: Tensor | number): this {
    if (o instanceof Tensor) G.div__Tensor(this, o); else G.div__Scalar(this, num(o, 'other'));
    return this;
  }
  pow_(e: number): this { G.pow__Scalar(this, e); return this; }
  addcmul_(t1: Tensor, t2: Tensor, value = 1): this { G.addcmul_(this, t1, t2, value); return this; }
  addcdiv_(t1: Tensor, t2: Tensor, value = 1): this { G.addcdiv_(this, t1, t2, value); return this; }
  lerp_(end: Tensor, weight: number | Tensor): this {
    if (weight instanceof Tensor) G.lerp__Tensor(this, end, weight); else G.lerp__Scalar(this, end, weight);
    return this;
  }
  zero_(): this { G.zero_(this); return this; }
  fill_(v: number | boolean | Tensor): this {
    if (v instanceof Tensor) G.fill__Tensor(this, v); else G.fill__Scalar(this, v);
    return this;
  }
  clamp_(min?: number | null, max?: number | null): this { G.clamp_(this, min ?? null, max ?? null); return this; }
  sqrt_(): this { G.sqrt_(this); return this; }
  neg_(): this { G.neg_(this); return this; }
  exp_(): this { G.exp_(this); return this; }
  maskedFill_(mask: Tensor, value: number): this { G.masked_fill__Scalar(this, mask, value); return this; }
  uniform_(from = 0, to = 1): this { G.uniform_(this, from, to); return this; }
  normal_(mean = 0, std = 1): this { G.normal_(this, mean, std); return this; }

  neg(): Tensor { return G.neg(this); }
  abs(): Tensor { return G.abs(this); }
  sign(): Tensor { return G.sign(this); }
  sqrt(): Tensor { return G.sqrt(this); }
  rsqrt(): Tensor { return G.rsqrt(this); }
  square(): Tensor { return G.square(this); }
  exp(): Tensor { return G.exp(this); }
  log(): Tensor { return G.log(this); }
  log1p(): Tensor { return G.log1p(this); }
  sin(): Tensor { return G.sin(this); }
  cos(): Tensor { return G.cos(this); }
  tanh(): Tensor { return G.tanh(this); }
  sigmoid(): Tensor { return G.sigmoid(this); }
  relu(): Tensor { return G.relu(this); }
  floor(): Tensor { return G.floor(this); }
  ceil(): Tensor { return G.ceil(this); }
  round(): Tensor { return G.round(this); }
  reciprocal(): Tensor { return G.reciprocal(this); }
  clamp(min?: number | null, max?: number | null): Tensor { return G.clamp(this, min ?? null, max ?? null); }
  maximum(o: Tensor): Tensor { return G.maximum(this, needTensor(o, 'other')); }
  minimum(o: Tensor): Tensor { return G.minimum(this, needTensor(o, 'other')); }
  matmul(o: Tensor): Tensor { return G.matmul(this, needTensor(o, 'other')); }
  mm(o: Tensor): Tensor { return G.mm(this, needTensor(o, 'mat2')); }
  bmm(o: Tensor): Tensor { return G.bmm(this, needTensor(o, 'mat2')); }
  lerp(end: Tensor, weight: number): Tensor { return G.lerp_Scalar(this, end, weight); }

  // --- comparison -----------------------------------------------------------------------------------------------

  eq(o: Tensor | number): Tensor { return o instanceof Tensor ? G.eq_Tensor(this, o) : G.eq_Scalar(this, num(o, 'other')); }
  ne(o: Tensor | number): Tensor { return o instanceof Tensor ? G.ne_Tensor(this, o) : G.ne_Scalar(this, num(o, 'other')); }
  lt(o: Tensor | number): Tensor { return o instanceof Tensor ? G.lt_Tensor(this, o) : G.lt_Scalar(this, num(o, 'other')); }
  le(o: Tensor | number): Tensor { return o instanceof Tensor ? G.le_Tensor(this, o) : G.le_Scalar(this, num(o, 'other')); }
  gt(o: Tensor | number): Tensor { return o instanceof Tensor ? G.gt_Tensor(this, o) : G.gt_Scalar(this, num(o, 'other')); }
  ge(o: Tensor | number): Tensor { return o instanceof Tensor ? G.ge_Tensor(this, o) : G.ge_Scalar(this, num(o, 'other')); }
  logicalNot(): Tensor { return G.logical_not(this); }
  logicalAnd(o: Tensor): Tensor { return G.logical_and(this, o); }
  logicalOr(o: Tensor): Tensor { return G.logical_or(this, o); }
  isnan(): Tensor { return G.isnan(this); }
  isfinite(): Tensor { return G.isfinite(this); }
  /** Same shape and elements (torch.equal). */
  equal(o: Tensor): boolean { return G.equal(this, needTensor(o, 'other')); }
  allclose(o: Tensor, rtol = 1e-5, atol = 1e-8): boolean { return G.allclose(this, needTensor(o, 'other'), rtol, atol); }
  maskedFill(mask: Tensor, value: number | Tensor): Tensor {
    return value instanceof Tensor ? G.masked_fill_Tensor(this, mask, value) : G.masked_fill_Scalar(this, mask, value);
  }

  // --- reductions (Python overloads: no dim → whole tensor) ----------------------------------------------------

  sum(dim?: number | number[] | null, keepdim = false, opts: { dtype?: DType } = {}): Tensor {
    if (dim == null) return G.sum(this, opts.dtype ?? null);
    return G.sum_dim_IntList(this, dim, keepdim, opts.dtype ?? null);
  }
  mean(dim?: number | number[] | null, keepdim = false, opts: { dtype?: DType } = {}): Tensor {
    if (dim == null) return G.mean(this, opts.dtype ?? null);
    return G.mean_dim(this, dim, keepdim, opts.dtype ?? null);
  }
  prod(dim?: number, keepdim = false): Tensor {
    return dim == null ? G.prod(this) : G.prod_dim_int(this, dim, keepdim);
  }
  max(): Tensor;
  max(dim: number, keepdim?: boolean): [Tensor, Tensor];
  max(dim?: number, keepdim = false): Tensor | [Tensor, Tensor] {
    return dim == null ? G.max(this) : G.max_dim(this, dim, keepdim);
  }
  min(): Tensor;
  min(dim: number, keepdim?: boolean): [Tensor, Tensor];
  min(dim?: number, keepdim = false): Tensor | [Tensor, Tensor] {
    return dim == null ? G.min(this) : G.min_dim(this, dim, keepdim);
  }
  amax(dim: number | number[] = [], keepdim = false): Tensor { return G.amax(this, dim, keepdim); }
  argmax(dim?: number | null, keepdim = false): Tensor { return G.argmax(this, dim ?? null, keepdim); }
  argmin(dim?: number | null, keepdim = false): Tensor { return G.argmin(this, dim ?? null, keepdim); }
  /** Variance with Bessel's correction by default (correction = 1), as torch.var. */
  var(dim?: number | number[] | null, opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return G.var_correction(this, dim ?? null, opts.correction ?? 1, opts.keepdim ?? false);
  }
  std(dim?: number | number[] | null, opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return G.std_correction(this, dim ?? null, opts.correction ?? 1, opts.keepdim ?? false);
  }
  norm(p: number = 2, dim?: number | number[] | null, keepdim = false): Tensor {
    return dim == null ? G.norm_Scalar(this, p) : G.norm_ScalarOpt_dim(this, p, dim, keepdim);
  }
  logsumexp(dim: number | number[], keepdim = false): Tensor { return G.logsumexp(this, dim, keepdim); }
  softmax(dim: number, dtype?: DType): Tensor { return G.softmax_int(this, dim, dtype ?? null); }
  logSoftmax(dim: number, dtype?: DType): Tensor { return G.log_softmax_int(this, dim, dtype ?? null); }
  cumsum(dim: number): Tensor { return G.cumsum(this, dim); }
  any(dim?: number, keepdim = false): Tensor { return dim == null ? G.any(this) : G.any_dim(this, dim, keepdim); }
  all(dim?: number, keepdim = false): Tensor { return dim == null ? G.all(this) : G.all_dim(this, dim, keepdim); }
  topk(k: number, dim = -1, largest = true, sorted = true): [Tensor, Tensor] { return G.topk(this, k, dim, largest, sorted); }
  sort(dim = -1, descending = false): [Tensor, Tensor] { return G.sort(this, dim, descending); }

  // --- shape ----------------------------------------------------------------------------------------------------

  reshape(...shape: (number | number[])[]): Tensor { return G.reshape(this, shapeArgs(shape)); }
  view(...shape: (number | number[])[]): Tensor { return G.view(this, shapeArgs(shape)); }
  flatten(start = 0, end = -1): Tensor { return G.flatten_using_ints(this, start, end); }
  unflatten(dim: number, sizes: number[]): Tensor { return G.unflatten_int(this, dim, sizes); }
  unsqueeze(dim: number): Tensor { return G.unsqueeze(this, dim); }
  squeeze(dim?: number): Tensor { return dim == null ? G.squeeze(this) : G.squeeze_dim(this, dim); }
  transpose(d0: number, d1: number): Tensor { return G.transpose_int(this, d0, d1); }
  t(): Tensor { return G.t(this); }
  get T(): Tensor { return this.ndim < 2 ? this : G.permute(this, [...Array(this.ndim).keys()].reverse()); }
  permute(...dims: (number | number[])[]): Tensor { return G.permute(this, shapeArgs(dims)); }
  expand(...shape: (number | number[])[]): Tensor { return G.expand(this, shapeArgs(shape)); }
  expandAs(o: Tensor): Tensor { return G.expand_as(this, o); }
  repeat(...times: (number | number[])[]): Tensor { return G.repeat(this, shapeArgs(times)); }
  repeatInterleave(repeats: number, dim?: number): Tensor { return G.repeat_interleave_self_int(this, repeats, dim ?? null); }
  chunk(chunks: number, dim = 0): Tensor[] { return G.chunk(this, chunks, dim); }
  split(size: number | number[], dim = 0): Tensor[] {
    return Array.isArray(size) ? G.split_with_sizes(this, size, dim) : G.split_Tensor(this, size, dim);
  }
  narrow(dim: number, start: number, length: number): Tensor { return G.narrow(this, dim, start, length); }
  select(dim: number, index: number): Tensor { return G.select_int(this, dim, index); }
  slice(dim: number, start?: number | null, end?: number | null, step = 1): Tensor { return G.slice_Tensor(this, dim, start ?? null, end ?? null, step); }
  indexSelect(dim: number, index: Tensor): Tensor { return G.index_select(this, dim, index); }
  gather(dim: number, index: Tensor): Tensor { return G.gather(this, dim, index); }
  scatter(dim: number, index: Tensor, src: Tensor | number): Tensor {
    return src instanceof Tensor ? G.scatter_src(this, dim, index, src) : G.scatter_value(this, dim, index, src);
  }
  tril(diagonal = 0): Tensor { return G.tril(this, diagonal); }
  triu(diagonal = 0): Tensor { return G.triu(this, diagonal); }
  flip(...dims: (number | number[])[]): Tensor { return G.flip(this, shapeArgs(dims)); }
  roll(shifts: number | number[], dims: number | number[]): Tensor { return G.roll(this, shifts, dims); }

  /**
   * Python-style indexing: t.i(0), t.i(':', 2), t.i('1:5:2'), t.i('...', null), t.i(indexTensor), t.i([0, 2]).
   * Strings are slices, null adds a dimension, a bool/int tensor or number[] indexes advanced-style.
   */
  i(...spec: IndexSpec[]): Tensor {
    return indexTensor(this, spec);
  }
  /** In-place `t[spec] = value`. */
  setIndex(spec: IndexSpec[] | IndexSpec, value: Tensor | number): this {
    setIndexTensor(this, Array.isArray(spec) && !isNumberList(spec) ? (spec as IndexSpec[]) : [spec as IndexSpec], value);
    return this;
  }
}

function isNumberList(v: unknown[]): boolean {
  return v.length > 0 && v.every((x) => typeof x === 'number');
}

const DTYPE_NAMES = new Set(['uint8', 'int8', 'int16', 'int32', 'int64', 'float16', 'float32', 'float64', 'bool', 'bfloat16']);
function isDTypeName(s: string): boolean {
  return DTYPE_NAMES.has(s);
}

function num(v: unknown, what: string): Scalar {
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  throw new TypeError(`${what} must be a Tensor or a number, got ${describe(v)}`);
}

function parseSlice(s: string, size: number): { start: number | null; end: number | null; step: number } {
  const parts = s.split(':').map((p) => p.trim());
  if (parts.length > 3) throw new TypeError(`bad slice '${s}'`);
  const n = (p: string | undefined): number | null => {
    if (p === undefined || p === '') return null;
    const v = Number(p);
    if (!Number.isInteger(v)) throw new TypeError(`bad slice '${s}': '${p}' is not an integer`);
    return v;
  };
  const step = n(parts[2]) ?? 1;
  if (step <= 0) throw new RangeError(`slice step must be positive, got ${step} in '${s}'`);
  void size;
  return { start: n(parts[0]), end: n(parts[1]), step };
}

function indexTensor(t: Tensor, spec: IndexSpec[]): Tensor {
  return tidyResult(() => {
    if (spec.filter((s) => s === '...').length > 1) throw new TypeError("an index can only have a single ellipsis ('...')");
    // Dimensions the explicit entries consume; an ellipsis stands for the rest.
    let consumed = 0;
    for (const s of spec) {
      if (s === null || s === '...') continue;
      consumed += s instanceof Tensor && s.dtype === 'bool' ? s.ndim : 1;
    }
    if (consumed > t.ndim) throw new RangeError(`too many indices for a tensor of dimension ${t.ndim}`);
    let x = t;
    let dim = 0;
    const advanced: (Tensor | null)[] = [];
    let hasAdvanced = false;
    for (let k = 0; k < spec.length; k++) {
      const s = spec[k];
      if (s === '...') {
        const skip = t.ndim - consumed;
        for (let j = 0; j < skip; j++) advanced.push(null);
        dim += skip;
        continue;
      }
      if (s === null) {
        x = x.unsqueeze(dim);
        advanced.push(null);
        dim++;
        continue;
      }
      if (typeof s === 'number') {
        const size = x.shape[dim];
        if (size === undefined) throw new RangeError(`too many indices for a tensor of dimension ${t.ndim}`);
        if (s >= size || s < -size) throw new RangeError(`index ${s} is out of bounds for dimension ${dim} with size ${size}`);
        x = x.select(dim, s);
        continue;
      }
      if (typeof s === 'string') {
        const size = x.shape[dim];
        if (size === undefined) throw new RangeError(`too many indices for a tensor of dimension ${t.ndim}`);
        const { start, end, step } = parseSlice(s, size);
        if (!(start === null && end === null && step === 1)) x = x.slice(dim, start, end, step);
        advanced.push(null);
        dim++;
        continue;
      }
      const idx = Array.isArray(s) ? fromNested(s, 'int64') : needTensor(s, 'index');
      hasAdvanced = true;
      advanced.push(idx);
      dim += idx.dtype === 'bool' ? idx.ndim : 1;
    }
    if (!hasAdvanced) return x === t ? G.alias(t) : x;
    return G.index_Tensor(x, advanced);
  });
}

function setIndexTensor(t: Tensor, spec: IndexSpec[], value: Tensor | number): void {
  tidy(() => {
    const hasAdvanced = spec.some((s) => s instanceof Tensor || Array.isArray(s));
    const v = value instanceof Tensor ? value : G.scalar_tensor(value, t.dtype, null, t.device);
    if (!hasAdvanced) {
      const view = indexTensor(t, spec);
      G.copy_(view, G.expand_as(v, view));
      return;
    }
    // Advanced indexing writes through index_put_ on the basic-indexed view.
    const basic: IndexSpec[] = [];
    const adv: (Tensor | null)[] = [];
    for (const s of spec) {
      if (s instanceof Tensor || Array.isArray(s)) {
        basic.push(':');
        adv.push(Array.isArray(s) ? fromNested(s, 'int64') : s);
      } else if (typeof s === 'number') {
        basic.push(s);
      } else {
        basic.push(s);
        adv.push(null);
      }
    }
    const view = indexTensor(t, basic);
    G.index_put_(view, adv, v.to(t.dtype));
  });
}

// tidy that returns a single tensor (internal helper for composite methods).
function tidyResult(fn: () => Tensor): Tensor {
  return tidy(fn);
}

// Minimal nested-array → tensor used by indexing; the public factory lives in creation.ts.
export function fromNested(data: unknown, dtype: DType): Tensor {
  const shape: number[] = [];
  let cur: unknown = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0];
  }
  const flat = (data as unknown[]).flat(Infinity as 1) as number[];
  const n = shape.reduce((a, b) => a * b, 1);
  if (flat.length !== n) throw new RangeError('nested array is ragged: every row must have the same length');
  let arr: ArrayBufferView;
  switch (dtype) {
    case 'int64': arr = BigInt64Array.from(flat, (v) => BigInt(Math.trunc(Number(v)))); break;
    case 'int32': arr = Int32Array.from(flat); break;
    case 'float64': arr = Float64Array.from(flat); break;
    case 'bool': arr = Uint8Array.from(flat, (v) => (v ? 1 : 0)); break;
    case 'uint8': arr = Uint8Array.from(flat); break;
    default: {
      const f = Float32Array.from(flat);
      if (dtype === 'float32') arr = f;
      else return tidy(() => new Tensor(native.fromBytes(f, 6, shape)).to(dtype));
    }
  }
  return new Tensor(native.fromBytes(arr, codeOf(dtype), shape));
}

function codeOf(d: DType): number {
  return ({ uint8: 0, int8: 1, int16: 2, int32: 3, int64: 4, float16: 5, float32: 6, float64: 7, bool: 11, bfloat16: 15 } as const)[d];
}

void isFloating;

export function wrap(h: number): Tensor {
  return new Tensor(h);
}

export function wrapOpt(h: number | null | undefined): Tensor {
  return (h == null ? null : new Tensor(h)) as Tensor;
}

export function wrapList(hs: (number | null)[]): Tensor[] {
  return hs.map((h) => wrapOpt(h));
}

function checkTensor(t: unknown, what: string): number {
  if (!(t instanceof Tensor)) throw new TypeError(`${what} must be a Tensor, got ${describe(t)}`);
  return t.h;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'an object';
  return typeof v;
}

export function hs(ts: Tensor[]): number[] {
  if (!Array.isArray(ts)) throw new TypeError(`expected an array of Tensors, got ${describe(ts)}`);
  return ts.map((t) => checkTensor(t, 'list element'));
}

export function ohs(ts: (Tensor | null)[]): (number | null)[] {
  if (!Array.isArray(ts)) throw new TypeError(`expected an array of Tensors, got ${describe(ts)}`);
  return ts.map((t) => (t == null ? null : checkTensor(t, 'list element')));
}
