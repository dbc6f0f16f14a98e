// Tensor factories, in the spirit of torch.tensor / zeros / ones / rand / randn / arange / full.
import { native, DTYPE_CODE, type DType, type DeviceLike } from './core.js';
import { Tensor, fromNested, tidy, describe } from './tensor.js';
import * as G from './ops/generated.js';

export interface Options {
  dtype?: DType;
  device?: DeviceLike;
  requiresGrad?: boolean;
}

type Nested = number | boolean | Nested[];
type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array | Uint16Array;

const TYPED_DTYPE: [new (...a: any[]) => TypedData, DType][] = [
  [Float32Array, 'float32'], [Float64Array, 'float64'], [Int32Array, 'int32'], [BigInt64Array, 'int64'],
  [Uint8Array, 'uint8'], [Int8Array, 'int8'], [Int16Array, 'int16'],
];

function finish(t: Tensor, o: Options): Tensor {
  if (o.requiresGrad) t.requiresGrad_(true);
  return t;
}

function inferDType(data: unknown): DType {
  let cur: unknown = data;
  while (Array.isArray(cur)) cur = cur[0];
  if (typeof cur === 'boolean') return 'bool';
  const flat = Array.isArray(data) ? (data as unknown[]).flat(Infinity as 1) : [data];
  return flat.every((v) => typeof v === 'number' && Number.isInteger(v)) && flat.length > 0 ? 'int64' : 'float32';
}

/**
 * torch.tensor: from nested arrays, a number, or a typed array (with `shape` for multi-d typed data).
 * Integers give int64 and other numbers float32, as in Python. Always copies.
 */
export function tensor(data: Nested | TypedData, opts: Options & { shape?: number[] } = {}): Tensor {
  return tidy(() => {
    let t: Tensor;
    if (ArrayBuffer.isView(data)) {
      const entry = TYPED_DTYPE.find(([C]) => data instanceof C);
      if (!entry) throw new TypeError(`unsupported typed array ${describe(data)}`);
      const shape = opts.shape ?? [(data as TypedData).length];
      t = new Tensor(native.fromBytes(data, DTYPE_CODE[entry[1]], shape));
      if (opts.dtype && opts.dtype !== entry[1]) t = t.to(opts.dtype);
    } else if (typeof data === 'number' || typeof data === 'boolean') {
      const d = opts.dtype ?? (typeof data === 'boolean' ? 'bool' : Number.isInteger(data) ? 'int64' : 'float32');
      t = G.scalar_tensor(data, d);
    } else if (Array.isArray(data)) {
      const flat = data.flat(Infinity as 1);
      for (const v of flat) {
        if (typeof v !== 'number' && typeof v !== 'boolean') throw new TypeError(`tensor(): elements must be numbers or booleans, got ${describe(v)}`);
      }
      const d = opts.dtype ?? inferDType(data);
      t = fromNested(data, d);
    } else {
      throw new TypeError(`tensor(): cannot build a tensor from ${describe(data)}`);
    }
    if (opts.device && opts.device !== 'cpu') t = t.to({ device: opts.device });
    return finish(t, opts);
  });
}

/** Wraps raw little-endian bytes (e.g. a file slice) as a tensor of the given dtype and shape; copies once. */
export function fromBytes(bytes: ArrayBufferView | ArrayBuffer, dtype: DType, shape: number[]): Tensor {
  return new Tensor(native.fromBytes(bytes, DTYPE_CODE[dtype], shape));
}

function sizeArgs(shape: number | number[]): number[] {
  return Array.isArray(shape) ? shape : [shape];
}

export function zeros(shape: number | number[], o: Options = {}): Tensor {
  return finish(G.zeros(sizeArgs(shape), o.dtype ?? 'float32', null, o.device ?? null), o);
}
export function ones(shape: number | number[], o: Options = {}): Tensor {
  return finish(G.ones(sizeArgs(shape), o.dtype ?? 'float32', null, o.device ?? null), o);
}
export function empty(shape: number | number[], o: Options = {}): Tensor {
  return finish(G.empty_memory_format(sizeArgs(shape), o.dtype ?? 'float32', null, o.device ?? null), o);
}
export function full(shape: number | number[], value: number | boolean, o: Options = {}): Tensor {
  const d = o.dtype ?? (typeof value === 'boolean' ? 'bool' : 'float32');
  return finish(G.full(sizeArgs(shape), value, d, null, o.device ?? null), o);
}
/** Uniform on [0, 1). */
export function rand(shape: number | number[], o: Options = {}): Tensor {
  return finish(G.rand(sizeArgs(shape), o.dtype ?? 'float32', null, o.device ?? null), o);
}
/** Standard normal. */
export function randn(shape: number | number[], o: Options = {}): Tensor {
  return finish(G.randn(sizeArgs(shape), o.dtype ?? 'float32', null, o.device ?? null), o);
}
export function randint(low: number, high: number, shape: number | number[], o: Options = {}): Tensor {
  return finish(G.randint_low(low, high, sizeArgs(shape), o.dtype ?? 'int64', null, o.device ?? null), o);
}
export function randperm(n: number, o: Options = {}): Tensor {
  return finish(G.randperm(n, o.dtype ?? 'int64', null, o.device ?? null), o);
}
/** arange(end) or arange(start, end, step); integer arguments give int64, as in Python. */
export function arange(a: number, b?: number, step = 1, o: Options = {}): Tensor {
  const [start, end] = b === undefined ? [0, a] : [a, b];
  const d = o.dtype ?? ([start, end, step].every(Number.isInteger) ? 'int64' : 'float32');
  return finish(G.arange_start_step(start, end, step, d, null, o.device ?? null), o);
}
export function linspace(start: number, end: number, steps: number, o: Options = {}): Tensor {
  return finish(G.linspace(start, end, steps, o.dtype ?? 'float32', null, o.device ?? null), o);
}
export function eye(n: number, o: Options = {}): Tensor {
  return finish(G.eye(n, o.dtype ?? 'float32', null, o.device ?? null), o);
}
export function zerosLike(t: Tensor, o: Options = {}): Tensor {
  return finish(G.zeros_like(t, o.dtype ?? null, null, o.device ?? null), o);
}
export function onesLike(t: Tensor, o: Options = {}): Tensor {
  return finish(G.ones_like(t, o.dtype ?? null, null, o.device ?? null), o);
}
export function fullLike(t: Tensor, value: number, o: Options = {}): Tensor {
  return finish(G.full_like(t, value, o.dtype ?? null, null, o.device ?? null), o);
}
export function randnLike(t: Tensor): Tensor {
  return G.randn_like(t);
}
