// torch.distributed for TypeScript: one default process group over PyTorch's own c10d (native/dist.cc) — a TCPStore
// rendezvous, Gloo on CPU, NCCL on CUDA where the build has it — and a DDP-style gradient reducer on top.
//
// Collectives are matched by call order across processes, exactly as in torch.distributed: every rank must issue the
// same collectives in the same order with tensors of the same shapes. Failures (a peer that died, a timeout) are JS
// exceptions naming the rank; nothing waits past the group's timeout.
import { createServer } from 'node:net';
import { native } from './core.js';
import { Tensor, tidy, wrap, hs } from './tensor.js';
import { zeros, tensor as makeTensor } from './creation.js';
import { noGrad } from './autograd.js';
import * as G from './ops/generated.js';

export type ReduceOp = 'sum' | 'avg' | 'max' | 'min' | 'product';
export type Backend = 'gloo' | 'nccl';

interface DistNative {
  distAvailable(): { c10d: boolean; gloo: boolean; nccl: boolean };
  distInit(rank: number, world: number, addr: string, port: number, timeoutMs: number, backend: string): void;
  distAllreduce(handles: number[], op: string): number;
  distWait(work: number): void;
  distBroadcast(handles: number[], root: number): void;
  distAllgather(handles: number[]): number[];
  distBarrier(): void;
  distDestroy(): void;
  distInfo(): { rank: number; worldSize: number; backend: Backend; pending: number } | null;
  distReducerNew(handles: number[], names: (string | null)[], bucketBytes: number, firstBucketBytes: number): { id: number; buckets: number[][] };
  distReducerPrepare(id: number, outputs: number[]): number[];
  distReducerFree(id: number): void;
  distStoreSet?(key: string, value: string): void;
  distStoreGet?(key: string, timeoutMs: number): string;
}

const dn = native as unknown as DistNative;

/** What this build of the addon can do: c10d at all, Gloo, NCCL, and c10d's Reducer (all-reduce during backward). */
export function available(): { c10d: boolean; gloo: boolean; nccl: boolean; reducer: boolean } {
  if (typeof dn.distAvailable !== 'function') return { c10d: false, gloo: false, nccl: false, reducer: false };
  const a = dn.distAvailable() as { c10d: boolean; gloo: boolean; nccl: boolean; reducer?: boolean };
  return { ...a, reducer: a.reducer ?? false };
}

export interface InitOptions {
  rank: number;
  worldSize: number;
  /** Address of rank 0, which hosts the TCPStore. */
  masterAddr: string;
  masterPort: number;
  /** Rendezvous and per-collective timeout (default 300 s). */
  timeoutMs?: number;
  backend?: Backend;
}

/** Joins the default process group; blocks until every rank has joined (or the timeout passes). */
export function initProcessGroup(o: InitOptions): void {
  const a = available();
  const backend = o.backend ?? 'gloo';
  if (!a.c10d) throw new Error('torch.distributed: @retain/torch was built without c10d/Gloo (install libgloo-dev, then RETAIN_REBUILD=1 npm ci)');
  if (backend === 'nccl' && !a.nccl) throw new Error('torch.distributed: this build has no NCCL (needs a CUDA libtorch with NCCL headers at build time); use the gloo backend');
  dn.distInit(o.rank, o.worldSize, o.masterAddr, o.masterPort, o.timeoutMs ?? 300_000, backend);
}

export function isInitialized(): boolean {
  return typeof dn.distInfo === 'function' && dn.distInfo() !== null;
}

function info(fn: string): { rank: number; worldSize: number; backend: Backend } {
  const i = typeof dn.distInfo === 'function' ? dn.distInfo() : null;
  if (!i) throw new Error(`torch.distributed.${fn}: the process group is not initialised`);
  return i;
}

export function getRank(): number {
  return info('getRank').rank;
}

export function getWorldSize(): number {
  return info('getWorldSize').worldSize;
}

export function getBackend(): Backend {
  return info('getBackend').backend;
}

/** An asynchronous collective in flight; wait() once before reading its tensors. */
export class Work {
  private done = false;
  constructor(private readonly id: number) {}
  wait(): void {
    if (this.done) return;
    this.done = true;
    dn.distWait(this.id);
  }
}

/** Starts an in-place reduction of `tensors` across ranks (several tensors: one coalesced collective, one dtype). */
export function allReduce(tensors: Tensor[], op: ReduceOp = 'sum'): Work {
  return new Work(dn.distAllreduce(hs(tensors), op));
}

/** In-place, synchronous: every rank ends with root's values. */
export function broadcast(tensors: Tensor[], root = 0): void {
  dn.distBroadcast(hs(tensors), root);
}

/** Every rank's copy of `t` (same shape on every rank), in rank order. */
export function allGather(t: Tensor): Tensor[] {
  return dn.distAllgather(hs([t])).map(wrap);
}

/** A free TCP port on this machine for the store (there is a short race with other programs, as with torchrun). */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const a = srv.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

/**
 * Sums a few numbers over ranks, in float64 so every rank gets the same bits (a step's loss, counts). NCCL reduces
 * CUDA tensors only, so under NCCL they travel on `device` (the rank's GPU); Gloo takes them on the CPU.
 */
export function sumScalars(xs: number[], device = 'cpu'): number[] {
  return noGrad(() => tidy(() => {
    let t = makeTensor(Float64Array.from(xs), { shape: [xs.length] });
    if (getBackend() === 'nccl') t = t.to({ device });
    allReduce([t], 'sum').wait();
    return Array.from((t.device === 'cpu' ? t : t.to({ device: 'cpu' })).data() as Float64Array);
  }));
}

/** Puts a small string into the rendezvous store under `key` (namespaced apart from c10d's own keys). */
export function storeSet(key: string, value: string): void {
  if (typeof dn.distStoreSet !== 'function') throw new Error('torch.distributed.storeSet: this build of @retain/torch predates it (RETAIN_REBUILD=1 npm ci)');
  dn.distStoreSet(key, value);
}

/**
 * Waits up to `timeoutMs` for `key` in the rendezvous store and returns its value. Unlike a collective this wait has
 * its own deadline, so ranks can wait for one rank's long computation (rank 0's forgetting probes) without the
 * group's timeout; a writer that dies ends the wait at once.
 */
export function storeGet(key: string, timeoutMs: number): string {
  if (typeof dn.distStoreGet !== 'function') throw new Error('torch.distributed.storeGet: this build of @retain/torch predates it (RETAIN_REBUILD=1 npm ci)');
  return dn.distStoreGet(key, timeoutMs);
}

export function barrier(): void {
  dn.distBarrier();
}

/** Leaves the group (pending works are abandoned). Safe to call when no group exists. */
export function destroyProcessGroup(): void {
  if (typeof dn.distDestroy === 'function') dn.distDestroy();
}

// ---------------------------------------------------------------------------------------------------------------
// Gradient reduction, as DDP does it: gradients are flattened into buckets of about `bucketBytes` (25 MB, DDP's
// default) in reverse parameter order — roughly the order backward produces them — and each bucket's all-reduce is
// launched as soon as it is flattened, so communication of bucket k overlaps flattening of k+1..n and the
// scatter-back of earlier ones. Every work is waited before this returns, that is before the optimizer step.

export interface ReduceGradsOptions {
  /** Bucket size in bytes (default 25 MiB). */
  bucketBytes?: number;
  /** 'sum' (default) or 'avg' of the gradients over ranks. */
  op?: 'sum' | 'avg';
  /** Scalars reduced (summed) in the same round, returned in order: the step's loss, counts. */
  scalars?: number[];
}

export interface ReduceGradsResult {
  scalars: number[];
  buckets: number;
}

interface Bucket {
  params: Tensor[];
  numels: number[];
  dtype: Tensor['dtype'];
  device: string;
}

/** Groups parameters into buckets: reverse order, one dtype and device per bucket, about `bytes` each. */
export function gradBuckets(params: Tensor[], bytes = 25 * 2 ** 20): Bucket[] {
  const out: Bucket[] = [];
  let cur: Bucket | null = null;
  let curBytes = 0;
  for (let i = params.length - 1; i >= 0; i--) {
    const p = params[i];
    const n = p.numel();
    const dtype = p.dtype;
    const device = p.device;
    const size = n * ({ float64: 8, float32: 4, float16: 2, bfloat16: 2 } as Record<string, number>)[dtype];
    if (!cur || cur.dtype !== dtype || cur.device !== device || curBytes + size > bytes) {
      if (cur && cur.params.length) out.push(cur);
      cur = { params: [], numels: [], dtype, device };
      curBytes = 0;
    }
    cur.params.push(p);
    cur.numels.push(n);
    curBytes += size;
  }
  if (cur && cur.params.length) out.push(cur);
  return out;
}

/**
 * Reduces the `.grad` of every parameter across ranks, in place. A null gradient counts as zeros; a parameter whose
 * gradient is null on every rank keeps a null gradient (as an unused parameter has in one process), so optimizers
 * that skip gradient-less parameters behave as they would alone.
 */
export function reduceGradients(params: Tensor[], o: ReduceGradsOptions = {}): ReduceGradsResult {
  const backend = getBackend();
  const world = getWorldSize();
  const op = o.op ?? 'sum';
  const scalars = o.scalars ?? [];
  const buckets = gradBuckets(params, o.bucketBytes);
  return noGrad(() => tidy(() => {
    const works: Work[] = [];
    const flats: Tensor[] = [];
    for (const b of buckets) {
      const parts = b.params.map((p, k) => {
        const g = p.grad;
        return g === null ? zeros([b.numels[k]], { dtype: b.dtype, device: b.device }) : g.reshape(-1);
      });
      let flat = parts.length === 1 ? parts[0].clone() : G.cat(parts);
      // Gloo reduces CPU tensors and has no bfloat16 sum: such buckets travel as CPU float32.
      if (backend === 'gloo' && (b.device !== 'cpu' || b.dtype === 'bfloat16')) flat = flat.to({ device: 'cpu', dtype: b.dtype === 'bfloat16' ? 'float32' : b.dtype });
      flats.push(flat);
      works.push(allReduce([flat], 'sum'));
    }
    // One small reduction carries which parameters have a gradient anywhere, and the caller's scalars (float64).
    let meta = makeTensor(Float64Array.from([...params.map((p) => (p.grad === null ? 0 : 1)), ...scalars]), { shape: [params.length + scalars.length] });
    if (backend === 'nccl') meta = meta.to({ device: params[0]?.device ?? 'cpu' }); // NCCL reduces CUDA tensors only
    works.push(allReduce([meta], 'sum'));
    for (const w of works) w.wait();
    const m = (meta.device === 'cpu' ? meta : meta.to({ device: 'cpu' })).data() as Float64Array;
    const present = new Map<Tensor, boolean>(params.map((p, i) => [p, m[i] > 0]));
    buckets.forEach((b, k) => {
      let flat = flats[k];
      if (op === 'avg') flat = flat.div(world);
      if (flat.device !== b.device || flat.dtype !== b.dtype) flat = flat.to({ device: b.device, dtype: b.dtype });
      let off = 0;
      b.params.forEach((p, j) => {
        const n = b.numels[j];
        const slice = flat.narrow(0, off, n).view(p.shape);
        off += n;
        if (!present.get(p)) return;
        const g = p.grad;
        if (g !== null) g.copy_(slice);
        else p.grad = slice.clone(); // the grad slot holds the native tensor; this scope releases only the handle
      });
    });
    return { scalars: Array.from(m.subarray(params.length)), buckets: buckets.length };
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// Gradient reduction overlapped with backward: c10d's own Reducer, the engine of torch DDP, built natively over the
// process group (native/dist.cc). Each parameter's gradient is copied into its bucket the moment backward produces
// it, a bucket's all-reduce starts as soon as its last gradient is in, and backward() returns only after every
// bucket is summed and written back into .grad. Parameters that a round does not reach are found from the autograd
// graph, so they cannot stall the other buckets; one that no rank used keeps .grad = null.

export interface GradReducerOptions {
  /** Bucket size in bytes (default 25 MiB, DDP's). */
  bucketBytes?: number;
  /** Cap of the first bucket to fill (default 1 MiB, DDP's), so that communication starts early in backward. */
  firstBucketBytes?: number;
  /** Parameter names, for the Reducer's error messages. */
  names?: string[];
}

export class GradReducer {
  private id: number | null;
  /** How many buckets the Reducer formed (DDP's size-capped assignment). */
  readonly bucketCount: number;
  readonly params: readonly Tensor[];

  /**
   * `params` in model order; they are handed to the Reducer last first, the order in which backward produces their
   * gradients, so that bucket 0 fills first. Every rank must build its reducer from the same parameters in the same
   * order.
   */
  constructor(params: Tensor[], o: GradReducerOptions = {}) {
    if (!available().reducer) throw new Error('torch.distributed.GradReducer: this build has no c10d::Reducer; use reduceGradients after backward');
    this.params = params;
    const rev = [...params].reverse();
    const names = o.names ? [...o.names].reverse() : rev.map(() => null);
    const r = dn.distReducerNew(hs(rev), names, o.bucketBytes ?? 25 * 2 ** 20, o.firstBucketBytes ?? 2 ** 20);
    this.id = r.id;
    this.bucketCount = r.buckets.length;
  }

  /**
   * Makes the next backward sum the gradients over ranks, and returns the outputs to run that backward from. What is
   * summed is whatever .grad holds once backward is done with a parameter, so micro-batches run before it without
   * prepare() accumulate locally, as under DDP's no_sync; a parameter that only such a micro-batch used is reached
   * through an exact-zero term added to the first output (its value is unchanged). Every rank must call it before
   * the same backward; backward() returns once the sums are in .grad.
   */
  prepare(outputs: Tensor[]): Tensor[] {
    if (this.id === null) throw new Error('GradReducer: used after dispose()');
    const hsIn = hs(outputs);
    const hsOut = dn.distReducerPrepare(this.id, hsIn);
    return hsOut.map((h, i) => (h === hsIn[i] ? outputs[i] : wrap(h)));
  }

  /**
   * Runs the reducing backward from `output` (one returned by prepare()). With unused-parameter search on, the Reducer
   * also all-reduces its used-parameter map outside the bucket hook, and a peer's death there surfaces as Gloo's raw
   * text ("Read error ... Connection reset by peer"), which names neither the collective nor the rank: such an error
   * gets the prefix every other collective failure has.
   */
  backward(output: Tensor): void {
    try {
      output.backward();
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      if (/c10d allreduce failed/.test(msg) || !/gloo|nccl|connection|timed out|broken pipe/i.test(msg)) throw e;
      throw new Error(`c10d allreduce failed on rank ${getRank()} of ${getWorldSize()}: ${msg}`);
    }
  }

  /** Removes the reducer's hooks from the parameters. */
  dispose(): void {
    if (this.id !== null && typeof dn.distReducerFree === 'function') dn.distReducerFree(this.id);
    this.id = null;
  }
}
