// Data-parallel training (issue #8): N processes, one rank each, over c10d (Gloo on CPU, NCCL on CUDA builds that
// have it), rendezvous through a TCPStore at MASTER_ADDR:MASTER_PORT — torchrun's environment variables.
//
// The scheme (docs/DISTRIBUTED.md has the argument per method): `training.batch_size` is the GLOBAL batch. Every rank
// runs the same loader, the same batch composer and the same method hooks on the same global batch, so the sample
// order, mixing's composition, FLOW's per-batch normalisation and the batch's trained-token count are those of one
// process; each rank then forwards only its contiguous rows of the batch, and the gradients are summed over ranks
// (the loss is Σ token losses / tokens of the GLOBAL batch, so the sum of the ranks' gradients is the one-process
// gradient). Weights and optimizer state then stay identical on every rank without being sent; buffers (batch-norm
// statistics) are sent from rank 0 after each forward (replicas.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Batch } from '../data/loader.js';
import type { DistContext } from './hooks.js';
import { EXIT_RESUMABLE } from './preempt.js';

export interface DistSettings {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Rendezvous and collective timeout. */
  timeoutMs: number;
  backend: 'gloo' | 'nccl';
  /** Sum gradients during backward (c10d's Reducer) rather than after it; RETAIN_DIST_OVERLAP=0 turns it off. */
  overlap: boolean;
  /** Gradient bucket size (RETAIN_DIST_BUCKET_MB, default 25 MiB as in DDP). */
  bucketBytes: number;
}

export class DistConfigError extends Error {}

const DEFAULT_TIMEOUT_S = 300;
/** How long ranks wait for a decision of rank 0's (DistContext.fromRank0): its probes may take far longer than a collective. */
const DECISION_TIMEOUT_MS = 2 * 3600_000;

function intOf(v: string | number | undefined, what: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new DistConfigError(`${what} must be an integer, got '${v}'`);
  return n;
}

/**
 * Reads the launch settings: command-line flags first, then torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR,
 * MASTER_PORT) and RETAIN_DIST_TIMEOUT (seconds). Null when the run is a single process.
 */
export function distSettings(flags: { rank?: number; worldSize?: number; masterAddr?: string; masterPort?: number; timeout?: number } = {}, env: NodeJS.ProcessEnv = process.env): DistSettings | null {
  const worldSize = flags.worldSize ?? intOf(env.WORLD_SIZE, 'WORLD_SIZE') ?? 1;
  if (worldSize < 1) throw new DistConfigError(`world size must be at least 1, got ${worldSize}`);
  const rank = flags.rank ?? intOf(env.RANK, 'RANK');
  if (worldSize === 1) {
    // One process is rank 0; any other rank means the launch line lost its world size.
    if (rank !== undefined && rank !== 0) throw new DistConfigError(`rank ${rank} is outside 0..0: the world size is 1 (pass --world-size or set WORLD_SIZE)`);
    return null;
  }
  if (rank === undefined) throw new DistConfigError(`world size is ${worldSize} but this process has no rank: pass --rank or set RANK`);
  if (rank < 0 || rank >= worldSize) throw new DistConfigError(`rank ${rank} is outside 0..${worldSize - 1}`);
  const masterAddr = flags.masterAddr ?? env.MASTER_ADDR ?? '127.0.0.1';
  const masterPort = flags.masterPort ?? intOf(env.MASTER_PORT, 'MASTER_PORT') ?? 29500;
  if (masterPort < 1 || masterPort > 65535) throw new DistConfigError(`master port must be in 1..65535, got ${masterPort}`);
  const timeoutS = flags.timeout ?? (env.RETAIN_DIST_TIMEOUT ? Number(env.RETAIN_DIST_TIMEOUT) : DEFAULT_TIMEOUT_S);
  if (!(timeoutS > 0)) throw new DistConfigError(`the distributed timeout must be a positive number of seconds, got ${timeoutS}`);
  const overlap = !['0', 'false', 'off'].includes((env.RETAIN_DIST_OVERLAP ?? '').toLowerCase());
  const bucketMb = env.RETAIN_DIST_BUCKET_MB ? Number(env.RETAIN_DIST_BUCKET_MB) : 25;
  if (!(bucketMb > 0)) throw new DistConfigError(`RETAIN_DIST_BUCKET_MB must be a positive number of MiB, got '${env.RETAIN_DIST_BUCKET_MB}'`);
  return { rank, worldSize, masterAddr, masterPort, timeoutMs: Math.round(timeoutS * 1000), backend: 'gloo', overlap, bucketBytes: Math.round(bucketMb * 2 ** 20) };
}

/** Refuses what data parallelism cannot run as configured, before any process joins the group. */
export function checkDistConfig(cfg: { model: { device: string }; training: { batch_size: number } }, worldSize: number, localProcesses?: number): 'gloo' | 'nccl' {
  if (!Number.isInteger(worldSize) || worldSize < 1) throw new DistConfigError(`--nproc must be a positive integer, got ${worldSize}`);
  if (cfg.training.batch_size % worldSize !== 0) {
    throw new DistConfigError(`training.batch_size ${cfg.training.batch_size} is the global batch and must divide evenly over ${worldSize} processes (each takes batch_size / ${worldSize} rows); use a multiple of ${worldSize}`);
  }
  const avail = torch.distributed.available();
  if (!avail.c10d) throw new DistConfigError('data-parallel training needs c10d, but @retain/torch was built without c10d/Gloo (install libgloo-dev, then RETAIN_REBUILD=1 npm ci)');
  if (cfg.model.device.startsWith('cuda')) {
    if (!avail.nccl) throw new DistConfigError(`model.device is ${cfg.model.device} but this build has no NCCL, and Gloo here reduces CPU tensors only; train on cpu or rebuild against a CUDA PyTorch with NCCL (TORCH_PYTHON=...)`);
    const gpus = torch.cudaDeviceCount();
    if (localProcesses !== undefined && localProcesses > gpus) throw new DistConfigError(`--nproc ${localProcesses} with NCCL needs a GPU per process, and this machine has ${gpus}`);
    return 'nccl';
  }
  return 'gloo';
}

/**
 * The device this rank trains on. NCCL needs one GPU per rank, so `cuda` means the rank's own, cuda:LOCAL_RANK (the
 * torchrun convention); an explicit cuda:N is kept (one rank per machine). Gloo ranks train where the config says.
 */
export function rankDevice(device: string, localRank: number, backend: 'gloo' | 'nccl'): string {
  return backend === 'nccl' && device === 'cuda' ? `cuda:${localRank}` : device;
}

let active: DistContext | null = null;

/** The data-parallel context of this process, or null when it trains alone. */
export function activeDist(): DistContext | null {
  return active;
}

/** Joins the process group (blocks until every rank has) and makes it the active context. */
export function startDist(s: DistSettings): DistContext {
  if (active) throw new Error('data parallelism is already started in this process');
  torch.distributed.initProcessGroup({ rank: s.rank, worldSize: s.worldSize, masterAddr: s.masterAddr, masterPort: s.masterPort, timeoutMs: s.timeoutMs, backend: s.backend });
  active = {
    rank: s.rank,
    worldSize: s.worldSize,
    allReduce: (ts: Tensor[], op: 'sum' | 'max' = 'sum') => {
      for (const t of ts) torch.distributed.allReduce([t], op).wait();
    },
    broadcast: (ts: Tensor[], root = 0) => torch.distributed.broadcast(ts, root),
    fromRank0: (key: string, value: string | null) => {
      if (s.rank === 0) {
        if (value === null) throw new Error(`fromRank0('${key}'): rank 0 must supply the value`);
        torch.distributed.storeSet(key, value);
        return value;
      }
      return torch.distributed.storeGet(key, Math.max(s.timeoutMs, DECISION_TIMEOUT_MS));
    },
    // A build without c10d::Reducer still trains, with the post-backward sum.
    overlap: s.overlap && torch.distributed.available().reducer,
    bucketBytes: s.bucketBytes,
  };
  return active;
}

/** Waits for every rank, then leaves the group. */
export function stopDist(opts: { barrier?: boolean } = {}): void {
  if (!active) return;
  try {
    if (opts.barrier ?? true) torch.distributed.barrier();
  } finally {
    torch.distributed.destroyProcessGroup();
    active = null;
  }
}

/** Rows [lo, hi) of a batch of n that `rank` trains on: contiguous, as even as n allows. */
export function shardRange(n: number, rank: number, world: number): [number, number] {
  return [Math.floor((rank * n) / world), Math.floor(((rank + 1) * n) / world)];
}

/** This rank's rows of a global batch (views; the padding of the global batch is kept, as one process has it). */
export function shardBatch(b: Batch, rank: number, world: number): Batch {
  const n = b.sampleIds.length;
  const [lo, hi] = shardRange(n, rank, world);
  const rows = (t: Tensor | undefined) => (t === undefined ? undefined : t.ndim > 0 && t.shape[0] === n ? t.narrow(0, lo, hi - lo) : t.clone());
  return {
    ids: rows(b.ids)!,
    targets: rows(b.targets)!,
    labels: rows(b.labels),
    features: rows(b.features),
    sampleIds: b.sampleIds.slice(lo, hi),
    sources: b.sources.slice(lo, hi),
    tokenCounts: b.tokenCounts.slice(lo, hi),
  };
}

/** A free loopback port for the store (torch.distributed.freePort). */
export const freePort = torch.distributed.freePort;

/**
 * Threads per worker when the user set none: the physical cores shared out, as one process uses them (torchrun sets OMP_NUM_THREADS=1; libtorch would
 * otherwise start one thread per core in every worker, N× oversubscribing the machine). An OMP_NUM_THREADS already in
 * the environment is kept; `training.threads` in the config still sets the worker's own intra-op count.
 */
export function workerThreads(nproc: number, cores: number, env: NodeJS.ProcessEnv = process.env): { threads: number; fromEnv: boolean } {
  const given = Number(env.OMP_NUM_THREADS);
  if (env.OMP_NUM_THREADS && Number.isInteger(given) && given > 0) return { threads: given, fromEnv: true };
  return { threads: Math.max(1, Math.floor(cores / nproc)), fromEnv: false };
}

export interface LaunchOptions {
  nproc: number;
  /** The command each worker runs: argv after the node executable. */
  args: string[];
  masterPort?: number;
  timeoutS?: number;
  /** After one worker fails, how long the others get to fail on their own (with their error) before SIGTERM. */
  graceMs?: number;
  log?: (line: string) => void;
}

/**
 * Single-machine launcher (what torchrun does): N copies of `retain train` with RANK/WORLD_SIZE/MASTER_ADDR/
 * MASTER_PORT set. Resolves with the exit code for the whole run: 0 only when every worker succeeded, EXIT_RESUMABLE
 * when all of them stopped after a signal with a checkpoint.
 */
export async function launchWorkers(o: LaunchOptions): Promise<number> {
  const log = o.log ?? ((l: string) => console.error(l));
  const port = o.masterPort ?? (await freePort());
  const timeoutS = o.timeoutS ?? (process.env.RETAIN_DIST_TIMEOUT ? Number(process.env.RETAIN_DIST_TIMEOUT) : DEFAULT_TIMEOUT_S);
  const { threads, fromEnv } = workerThreads(o.nproc, torch.physicalCores());
  log(`retain: launching ${o.nproc} worker processes (Gloo, store at 127.0.0.1:${port}, timeout ${timeoutS} s, ${threads} thread${threads === 1 ? '' : 's'} each${fromEnv ? ' from OMP_NUM_THREADS' : ' (OMP_NUM_THREADS; training.threads overrides)'}); rank 0 writes checkpoints, metrics and the final model`);
  const children: ChildProcess[] = [];
  const exits: Promise<{ rank: number; code: number | null; signal: NodeJS.Signals | null }>[] = [];
  for (let rank = 0; rank < o.nproc; rank++) {
    const env = { ...process.env, RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(o.nproc), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), RETAIN_DIST_TIMEOUT: String(timeoutS), OMP_NUM_THREADS: String(threads) };
    // Each worker leads its own process group: a terminal's Ctrl-C signals the foreground group, and a worker in the
    // launcher's group got it twice (from the terminal and forwarded below), and a second signal means "stop now".
    // Now the launcher alone receives it and forwards it once.
    const child = spawn(process.execPath, o.args, { env, detached: true, stdio: ['ignore', rank === 0 ? 'inherit' : 'ignore', 'inherit'] });
    children.push(child);
    exits.push(new Promise((res) => child.on('exit', (code, signal) => res({ rank, code, signal }))));
  }
  // Ctrl-C, a kill of the launcher or a scheduler's SIGUSR1 reaches the workers too, which then agree on a step to
  // stop after (preempt.ts).
  // A hang-up (the terminal closed) no longer reaches the workers' own groups; they stop with a checkpoint instead.
  const forward = (sig: NodeJS.Signals) => children.forEach((c) => c.exitCode === null && c.kill(sig === 'SIGHUP' ? 'SIGTERM' : sig));
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGUSR1', 'SIGHUP'];
  for (const s of signals) process.on(s, forward);
  let failed = false;
  let killer: NodeJS.Timeout | null = null;
  const results = await Promise.all(exits.map((p) => p.then((r) => {
    if (r.code !== 0 && r.code !== EXIT_RESUMABLE) {
      log(`retain: rank ${r.rank} ${r.signal ? `was killed by ${r.signal}` : `exited with code ${r.code}`}`);
      if (!failed) {
        failed = true;
        killer = setTimeout(() => {
          for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
        }, o.graceMs ?? 15_000);
      }
    }
    return r;
  })));
  if (killer) clearTimeout(killer);
  for (const s of signals) process.off(s, forward);
  // Every rank stopped after the same checkpointed step: the run as a whole can resume.
  if (results.every((r) => r.code === EXIT_RESUMABLE)) return EXIT_RESUMABLE;
  const bad = results.filter((r) => r.code !== 0);
  if (bad.length) log(`retain: data-parallel run failed (${bad.map((r) => `rank ${r.rank}: ${r.signal ?? `code ${r.code}`}`).join(', ')})`);
  return bad.length ? 1 : 0;
}
