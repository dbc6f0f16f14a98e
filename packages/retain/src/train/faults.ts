// What a run's environment does to its writes: a full disk (ENOSPC, or a quota: EDQUOT) while a checkpoint or the
// final model is written, and the fault injection the tests use to make it happen on demand.
import { statfsSync } from 'node:fs';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';

/** The disk filled up while writing; the message says what was kept, what is needed and what to do. */
export class DiskFullError extends Error {}

/**
 * Whether `e` (or an error it wraps, as SafetensorsError does) is the filesystem running out of space: Node's errors
 * carry the code, the addon's native writes only say it in their message.
 */
export function isDiskFull(e: unknown): boolean {
  for (let x = e as { code?: string; message?: string; cause?: unknown } | undefined, depth = 0; x && depth < 8; x = x.cause as typeof x, depth++) {
    if (x.code === 'ENOSPC' || x.code === 'EDQUOT' || /\b(ENOSPC|EDQUOT)\b|No space left on device|Disk quota exceeded/.test(x.message ?? '')) return true;
  }
  return false;
}

/** Bytes the tensors take in a safetensors file (their data; the headers are a few kB). */
export function tensorBytes(ts: Iterable<Tensor>): number {
  let n = 0;
  for (const t of ts) n += t.numel() * torch.DTYPE_SIZE[t.dtype];
  return n;
}

function mb(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * The error a full disk becomes: what was being written, the space it needs against what is free on that filesystem,
 * and which complete checkpoint the next run resumes from (`kept`: the steps of those in `dir`).
 */
export function diskFullError(what: string, dir: string, need: number, kept: number[]): DiskFullError {
  let free = '';
  try {
    const s = statfsSync(dir);
    free = `, ${mb(s.bavail * s.bsize)} is free there`;
  } catch {
    // statfs is missing on some platforms; the needed size alone still says how much to free.
  }
  const resume = kept.length ? `the newest complete checkpoint, checkpoint-${kept[kept.length - 1]}, is kept` : 'there is no complete checkpoint to resume from yet';
  return new DiskFullError(`no space left on the device writing ${what}: it needs about ${mb(need)}${free}. The partial files were removed and ${resume}. ` +
    'Free some space (or lower keep_checkpoints, or move output_dir to a larger disk) and rerun the same command to resume.');
}

/**
 * Fault injection for the tests: RETAIN_FAULT=<point>:<fault>[,...] where a point is `step-N` (after step N),
 * `checkpoint-N` (inside that checkpoint's write, its model file already written) or `final` (before the final
 * model is written), optionally `@R` for rank R only; the fault is ENOSPC (the write fails as on a full disk) or a
 * signal name (sent to this process, as a scheduler or a user would).
 */
export function injectFault(point: string, rank = 0): void {
  const spec = process.env.RETAIN_FAULT;
  if (!spec) return;
  for (const item of spec.split(',')) {
    const [at, fault] = item.split(':');
    if (at !== point && at !== `${point}@${rank}`) continue;
    if (fault === 'ENOSPC') throw Object.assign(new Error(`ENOSPC: no space left on device (injected at ${point})`), { code: 'ENOSPC' });
    process.kill(process.pid, fault as NodeJS.Signals);
  }
}

/**
 * The faults the resume tests inject after optimizer step `step`: RETAIN_KILL_AT_STEP=N dies as `kill -9` would
 * (RETAIN_KILL_RANK=R: on rank R only), and RETAIN_FAULT's `step-N` point.
 */
export function stepFaults(step: number, rank: number): void {
  const at = process.env.RETAIN_KILL_AT_STEP;
  const who = process.env.RETAIN_KILL_RANK;
  if (at && step === Number(at) && (!who || Number(who) === rank)) process.kill(process.pid, 'SIGKILL');
  injectFault(`step-${step}`, rank);
}
