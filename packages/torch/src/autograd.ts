// Grad-mode scopes, multi-tensor backward, RNG seeding.
import { native, DTYPE_CODE } from './core.js';
import { Tensor, describe } from './tensor.js';

/** Runs fn with gradient recording off (torch.no_grad). */
export function noGrad<T>(fn: () => T): T {
  const prev = native.gradEnabled(false);
  try {
    return fn();
  } finally {
    native.gradEnabled(prev);
  }
}

/** Runs fn with gradient recording on (torch.enable_grad). */
export function enableGrad<T>(fn: () => T): T {
  const prev = native.gradEnabled(true);
  try {
    return fn();
  } finally {
    native.gradEnabled(prev);
  }
}

export function isGradEnabled(): boolean {
  const prev = native.gradEnabled(null);
  return prev;
}

/** torch.inference_mode: no autograd bookkeeping at all; tensors made here can never join a graph. */
export function inferenceMode<T>(fn: () => T): T {
  native.enterInference();
  try {
    return fn();
  } finally {
    native.exitInference();
  }
}

/** torch.autograd.backward over several roots. */
export function backward(tensors: Tensor[], grads?: (Tensor | null)[] | null, opts: { retainGraph?: boolean; createGraph?: boolean } = {}): void {
  for (const t of tensors) if (!(t instanceof Tensor)) throw new TypeError(`backward: expected Tensors, got ${describe(t)}`);
  native.backward(tensors.map((t) => t.h), grads ? grads.map((g) => (g ? g.h : null)) : null, opts.retainGraph ?? null, opts.createGraph ?? false);
}

/** Seeds libtorch's default CPU generator (and CUDA's when present), as torch.manual_seed. */
export function manualSeed(seed: number): void {
  native.manualSeed(seed);
}

/** The CPU generator's state as a uint8 tensor (for exact resume). */
export function getRngState(): Tensor {
  return new Tensor(native.getRngState());
}

export function setRngState(state: Tensor): void {
  native.setRngState(state.h);
}

export function setNumThreads(n: number): number {
  return native.numThreads(n);
}

export function getNumThreads(): number {
  return native.numThreads(null);
}

export function cudaDeviceCount(): number {
  return native.cudaDeviceCount();
}

export function torchVersion(): string {
  return native.version();
}

/**
 * torch.autocast('cuda', dtype): inside fn, CUDA ops that benefit run in bf16 (or f16) while parameters stay float32.
 * Gradients flow back in each parameter's own dtype.
 */
let autocastDepth = 0;
export function autocast<T>(dtype: 'bfloat16' | 'float16', fn: () => T): T {
  // Only the outermost region switches the mode, so nested regions cannot turn it off early.
  if (autocastDepth++ === 0) native.autocast(true, DTYPE_CODE[dtype]);
  try {
    return fn();
  } finally {
    if (--autocastDepth === 0) native.autocast(false, DTYPE_CODE[dtype]);
  }
}
