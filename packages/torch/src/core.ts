// The base of the TypeScript side: the native addon, dtypes, tensor handles and their lifetime.
//
// Lifetime: every tensor made inside `tidy(fn)` is released when fn returns, except what fn returns (handed to the
// enclosing scope) and what `keep()` marks. Tensors made outside any scope are released by dispose() or, as a last
// resort, by the garbage collector through a FinalizationRegistry. N-API finalizers only run when the event loop
// turns, so a synchronous training loop must rely on scopes, never on GC.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Native {
  findOp(name: string, overload: string): number;
  call(op: number, ...args: unknown[]): any;
  listOps(): [string, string, string, unknown[][], unknown[][]][];
  release(h: number): void;
  releaseMany(hs: Int32Array, n: number): void;
  liveCount(): number;
  share(h: number): number;
  shape(h: number): number[];
  strides(h: number): number[];
  dtype(h: number): number;
  device(h: number): string;
  dim(h: number): number;
  numel(h: number): number;
  item(h: number): number | boolean;
  fromBytes(data: ArrayBufferView | ArrayBuffer, dtype: number, shape: number[]): number;
  toBytes(h: number): ArrayBuffer;
  /** pread the tensor's bytes from fd at position (contiguous CPU tensor); returns the byte count. */
  readInto(h: number, fd: number, position: number): number;
  /** pwrite the tensor's bytes to fd at position (contiguous CPU tensor). */
  writeFrom(h: number, fd: number, position: number): number;
  backward(ts: number[], grads: (number | null)[] | null, retainGraph: boolean | null, createGraph: boolean): void;
  grad(h: number): number | null;
  setGrad(h: number, g: number | null): void;
  requiresGrad(h: number, value?: boolean | null): boolean;
  isLeaf(h: number): boolean;
  gradFn(h: number): string | null;
  retainGrad(h: number): void;
  gradEnabled(value?: boolean | null): boolean;
  enterInference(): number;
  exitInference(): void;
  isInference(h: number): boolean;
  manualSeed(seed: number): void;
  getRngState(): number;
  setRngState(h: number): void;
  numThreads(n?: number | null): number;
  cudaDeviceCount(): number;
  version(): string;
  externalBytes(): number;
  /** The tensor is now the garbage collector's to free: report its storage to V8 as external memory (once). */
  gcOwned(h: number): void;
  /** aten::linear, on oneDNN's GEMM for CPU float32 (native/fused.h). */
  linear(x: number, weight: number, bias: number | null): number;
  /** RMSNorm with a weight as one autograd node on CPU float32/float64 (native/fused.h); null where it does not apply. */
  rmsNorm(x: number, weight: number, eps: number): number | null;
  cudaSynchronize(): void;
  /** CUDA autocast on/off with a dtype code; returns the previous state. */
  autocast(enabled: boolean, dtype: number): boolean;
  /** [allocated bytes, peak allocated, reserved] of a CUDA device; optionally empties the cache / resets the peak. */
  cudaMemory(device?: number, emptyCache?: boolean, resetPeak?: boolean): [number, number, number];
}

function loadNative(): Native {
  const here = dirname(fileURLToPath(import.meta.url));
  const pkg = resolve(here, '..');
  const file = process.env.RETAIN_TORCH_ADDON || join(pkg, 'build', 'Release', 'retain_torch.node');
  if (!existsSync(file)) {
    throw new Error(
      `@retain/torch: the native addon is not built (${file} is missing). Run \`npm ci\` at the repository root ` +
        '(needs libtorch: `apt-get install -y libtorch-dev`, or TORCH_PYTHON=/path/to/python with torch).',
    );
  }
  return createRequire(import.meta.url)(file) as Native;
}

export const native: Native = loadNative();

/**
 * Physical cores this process may use: distinct (physical id, core id) pairs of /proc/cpuinfo, capped by the CPUs the
 * process is allowed to run on; the allowed count where cpuinfo says nothing (other systems, some containers).
 */
export function physicalCores(cpuinfo: string | null = readCpuinfo()): number {
  const allowed = availableParallelism();
  const cores = new Set<string>();
  let socket = '0';
  for (const line of cpuinfo?.split('\n') ?? []) {
    const [k, v] = line.split(':').map((x) => x.trim());
    if (k === 'physical id') socket = v;
    else if (k === 'core id') cores.add(`${socket}:${v}`);
  }
  return cores.size ? Math.min(cores.size, allowed) : allowed;
}

function readCpuinfo(): string | null {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return null;
  }
}

// PyTorch runs its CPU kernels on every physical core unless OMP_NUM_THREADS says otherwise. Debian's libtorch 1.13
// starts with one thread (at::get_num_threads() is 1 on a 2-core VM), which left half the machine idle in every
// `retain train`, `eval` and suite. With OMP_NUM_THREADS set (tests, data-parallel workers), libtorch's count stands.
if (!process.env.OMP_NUM_THREADS) {
  const cores = physicalCores();
  if (native.numThreads(null) < cores) native.numThreads(cores);
}

// ---------------------------------------------------------------------------------------------------------------
// dtypes

export type DType = 'uint8' | 'int8' | 'int16' | 'int32' | 'int64' | 'float16' | 'float32' | 'float64' | 'bool' | 'bfloat16';
export type Scalar = number | boolean;
export type DeviceLike = string;

// c10::ScalarType codes; stable across torch versions.
export const DTYPE_CODE: Record<DType, number> = {
  uint8: 0, int8: 1, int16: 2, int32: 3, int64: 4, float16: 5, float32: 6, float64: 7, bool: 11, bfloat16: 15,
};
const CODE_DTYPE: DType[] = [];
for (const [k, v] of Object.entries(DTYPE_CODE)) CODE_DTYPE[v] = k as DType;

export const DTYPE_SIZE: Record<DType, number> = {
  uint8: 1, int8: 1, int16: 2, int32: 4, int64: 8, float16: 2, float32: 4, float64: 8, bool: 1, bfloat16: 2,
};

export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}

export function dt(d: DType | null | undefined): number | null | undefined {
  if (d == null) return d;
  const c = DTYPE_CODE[d];
  if (c === undefined) throw new TypeError(`unknown dtype '${d}'; expected one of ${Object.keys(DTYPE_CODE).join(', ')}`);
  return c;
}

export function dtName(code: number): DType {
  const d = CODE_DTYPE[code];
  if (!d) throw new TypeError(`dtype code ${code} has no name in this API`);
  return d;
}

export function dev(d: DeviceLike | null | undefined): string | null | undefined {
  if (d == null) return d;
  if (typeof d !== 'string') throw new TypeError(`device must be a string such as 'cpu' or 'cuda:0', got ${typeof d}`);
  return d;
}

// ---------------------------------------------------------------------------------------------------------------
// Op resolution: generated wrappers name their op by index; ids are looked up in the dispatcher on first use, so a
// wrapper for an op the current libtorch lacks fails only when called, with a message naming it.

export function opResolver(names: string[]): (i: number) => number {
  const ids = new Int32Array(names.length).fill(-1);
  return (i: number) => {
    const id = ids[i];
    if (id >= 0) return id;
    const full = names[i];
    const dot = full.lastIndexOf('.');
    return (ids[i] = native.findOp(full.slice(0, dot), full.slice(dot + 1)));
  };
}

const opCache = new Map<string, number>();
/** Resolves `aten::name.overload` (overload may be empty) once; throws if this libtorch does not have it. */
export function opId(qualified: string): number {
  let id = opCache.get(qualified);
  if (id === undefined) {
    const dot = qualified.indexOf('.', qualified.indexOf('::') + 2);
    const name = dot < 0 ? qualified : qualified.slice(0, dot);
    const overload = dot < 0 ? '' : qualified.slice(dot + 1);
    id = native.findOp(name, overload);
    opCache.set(qualified, id);
  }
  return id;
}

/** Whether this libtorch has an operator (e.g. `aten::scaled_dot_product_attention`). */
export function hasOp(qualified: string): boolean {
  try {
    opId(qualified);
    return true;
  } catch {
    return false;
  }
}

