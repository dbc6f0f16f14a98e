// Checkpoints that a SIGKILL cannot corrupt: everything of step N is written into `checkpoint-N.tmp/`, flushed, and
// only then renamed to `checkpoint-N/`; `latest` is replaced atomically afterwards. A resumed run reads the newest
// complete checkpoint and continues bit-identically on CPU (weights, optimizer, schedule, RNG, data position).
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { firstNonFinite } from '../models/weights.js';
import { diskFullError, injectFault, isDiskFull, tensorBytes } from './faults.js';
import { pidAlive } from '../lock.js';

/** Splits a JSON-like object holding tensors into plain JSON (tensors replaced by references) and a tensor map. */
export function splitTensors(v: unknown, prefix: string, out: Map<string, Tensor>): unknown {
  if (v instanceof torch.Tensor) {
    const key = prefix || 'value';
    out.set(key, v);
    return { __tensor__: key };
  }
  if (Array.isArray(v)) return v.map((x, i) => splitTensors(x, `${prefix}.${i}`, out));
  if (v instanceof Map) return { __map__: [...v.entries()].map(([k, x], i) => [k, splitTensors(x, `${prefix}.m${i}`, out)]) };
  if (v && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[k] = splitTensors(x, prefix ? `${prefix}.${k}` : k, out);
    return o;
  }
  if (typeof v === 'number' && !Number.isFinite(v)) return { __number__: String(v) };
  return v;
}

export function joinTensors(v: unknown, tensors: Map<string, Tensor>): unknown {
  if (Array.isArray(v)) return v.map((x) => joinTensors(x, tensors));
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o.__tensor__ === 'string') {
      const t = tensors.get(o.__tensor__);
      if (!t) throw new Error(`checkpoint is missing tensor '${o.__tensor__}'`);
      return t;
    }
    if (Array.isArray(o.__map__)) return new Map((o.__map__ as [string, unknown][]).map(([k, x]) => [k, joinTensors(x, tensors)]));
    if (typeof o.__number__ === 'string') return Number(o.__number__);
    const r: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(o)) r[k] = joinTensors(x, tensors);
    return r;
  }
  return v;
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    fsyncSync(fd);
    closeSync(fd);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  }
}

/** Replaces `file` whole: written beside it, flushed, renamed over it. */
export function writeTextAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, file);
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeTextAtomic(file, JSON.stringify(value, null, 2));
}

/** A checkpoint was refused because a weight is NaN or Inf (the run diverged between two finite losses). */
export class NonFiniteWeightsError extends Error {
  constructor(message: string, readonly key: string) {
    super(message);
  }
}

export interface CheckpointParts {
  step: number;
  /** Model tensors by checkpoint key. */
  model: Map<string, Tensor>;
  /** Any JSON-like state (optimizer, scheduler, loader, methods), tensors allowed anywhere inside. */
  state: Record<string, unknown>;
}

/** Writes checkpoint-<step>/ under dir atomically and points `latest` at it; keeps the newest `keep` checkpoints. */
export function saveCheckpoint(dir: string, parts: CheckpointParts, keep = 2): string {
  const name = `checkpoint-${parts.step}`;
  const bad = firstNonFinite(parts.model);
  if (bad !== null) throw new NonFiniteWeightsError(`refusing to save checkpoint ${name}: weight '${bad}' holds NaN or Inf`, bad);
  mkdirSync(dir, { recursive: true });
  const final = join(dir, name);
  const tmp = join(dir, `${name}.tmp`);
  rmSync(tmp, { recursive: true, force: true });
  const stateTensors = new Map<string, Tensor>();
  const json = splitTensors(parts.state, '', stateTensors);
  try {
    mkdirSync(tmp);
    torch.io.saveSafetensors(join(tmp, 'model.safetensors'), parts.model, { format: 'pt' });
    injectFault(name);
    torch.io.saveSafetensors(join(tmp, 'state.safetensors'), stateTensors, { format: 'pt' });
    writeJsonAtomic(join(tmp, 'state.json'), { step: parts.step, state: json });
    fsyncDir(tmp);
  } catch (e) {
    // The checkpoints before stay whole (and all of them: keep_checkpoints counts complete ones only).
    rmSync(tmp, { recursive: true, force: true });
    if (!isDiskFull(e)) throw e;
    const need = tensorBytes(parts.model.values()) + tensorBytes(stateTensors.values());
    throw diskFullError(`checkpoint ${name} in ${dir}`, dir, need, listCheckpoints(dir));
  }
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  fsyncDir(dir);
  writeJsonAtomic(join(dir, 'latest.json'), { checkpoint: name, step: parts.step });
  // Old checkpoints go only after the new one is complete.
  const all = listCheckpoints(dir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(dir, `checkpoint-${old}`), { recursive: true, force: true });
  return final;
}

/** Steps of the complete checkpoints in dir, ascending (unfinished `.tmp` folders are ignored). */
export function listCheckpoints(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((f) => /^checkpoint-(\d+)$/.exec(f))
    .filter((m): m is RegExpExecArray => !!m && existsSync(join(dir, m[0], 'state.json')))
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

export function loadCheckpoint(path: string): CheckpointParts {
  for (const f of ['model.safetensors', 'state.safetensors', 'state.json']) {
    if (!existsSync(join(path, f))) throw new Error(`checkpoint ${path} is incomplete: ${f} is missing`);
  }
  let meta: { step: number; state: unknown };
  try {
    meta = JSON.parse(readFileSync(join(path, 'state.json'), 'utf8'));
  } catch (e) {
    throw new Error(`checkpoint ${path}: state.json is not valid JSON (${(e as Error).message})`);
  }
  const st = meta?.state as Record<string, unknown> | undefined;
  const missing = ['optimizer', 'loader', 'rng'].filter((k) => !st || typeof st !== 'object' || !(k in st));
  if (!Number.isInteger(meta?.step) || meta.step < 0 || missing.length) {
    throw new Error(`checkpoint ${path}: state.json is not a training state written by retain (${missing.length ? `no ${missing.join(', ')}` : `step ${JSON.stringify(meta?.step)}`})`);
  }
  const model = torch.io.loadSafetensors(join(path, 'model.safetensors'));
  // saveCheckpoint refuses such weights, but a file can be damaged later (or written by an older retain): resumed,
  // they would give NaN losses at once that the run would blame on the learning rate.
  const bad = firstNonFinite(model);
  if (bad !== null) {
    torch.dispose(model.values());
    throw new Error(`checkpoint ${path}: weight '${bad}' holds NaN or Inf`);
  }
  try {
    const tensors = torch.io.loadSafetensors(join(path, 'state.safetensors'));
    return { step: meta.step, model, state: joinTensors(meta.state, tensors) as Record<string, unknown> };
  } catch (e) {
    torch.dispose(model.values());
    throw e;
  }
}

/**
 * The newest checkpoint in `dir` that loads, for resuming. A damaged or incomplete newer one (a disk that filled up,
 * a file edited by hand) is reported through `warn` and the next older one is tried, so a run never restarts from
 * scratch — or stops — while a good checkpoint exists; when none loads, the error lists each and says what to do.
 */
export function loadLatestCheckpoint(dir: string, warn: (msg: string) => void): { path: string; parts: CheckpointParts } | null {
  if (!existsSync(dir)) return null;
  const complete = new Set(listCheckpoints(dir));
  const failures: string[] = [];
  for (const f of readdirSync(dir)) {
    const m = /^checkpoint-(\d+)$/.exec(f);
    if (m && !complete.has(Number(m[1]))) failures.push(`${f}: incomplete (no state.json)`);
  }
  for (const step of [...complete].sort((a, b) => b - a)) {
    const path = join(dir, `checkpoint-${step}`);
    try {
      const parts = loadCheckpoint(path);
      for (const f of failures) warn(`skipped ${f}`);
      return { path, parts };
    } catch (e) {
      failures.push(`checkpoint-${step}: ${(e as Error).message}`);
    }
  }
  if (failures.length) {
    throw new Error(`cannot resume in ${dir}: no checkpoint there loads:\n  ${failures.join('\n  ')}\nremove the damaged checkpoint folders, or set resume: false to start over (the previous run's files are then moved aside)`);
  }
  return null;
}

/**
 * Removes what a killed run was writing when it died: `final.tmp-<pid>` / `final.old-<pid>` (savePretrained),
 * `latest.json.tmp-<pid>`, the logs' and run_config.yaml's `.tmp-<pid>` (writeTextAtomic), `checkpoint-N.tmp/` (saveCheckpoint). A
 * file whose process is still alive is left alone. Returns the names removed.
 */
export function removeStaleTemps(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const removed: string[] = [];
  for (const f of readdirSync(dir)) {
    const m = /^(?:final|latest\.json|metrics\.(?:jsonl|csv)|monitor\.jsonl|results\.json|run_config\.yaml)\.(?:tmp|old)-(\d+)$|^checkpoint-\d+\.tmp$/.exec(f);
    if (!m || (m[1] !== undefined && Number(m[1]) !== process.pid && pidAlive(Number(m[1])))) continue;
    rmSync(join(dir, f), { recursive: true, force: true });
    removed.push(f);
  }
  return removed;
}

/** What a run leaves in its output_dir (method caches such as FLOW's stay: they are keyed by model and data). */
const RUN_FILES = /^(checkpoint-\d+(\.tmp)?|latest\.json|metrics\.(jsonl|csv)|monitor\.jsonl|events\.out\.tfevents\..+|final)$/;

/**
 * A run that does not resume (resume: false) must not mix with an earlier run in the same output_dir — its
 * checkpoints would be resumed later, its metrics appended to. They are moved into `previous-<time>/` (nothing is
 * deleted); returns that folder, or null when there was nothing.
 */
export function setAsidePreviousRun(dir: string): string | null {
  if (!existsSync(dir)) return null;
  const old = readdirSync(dir).filter((f) => RUN_FILES.test(f));
  if (!old.length) return null;
  const aside = join(dir, `previous-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(aside);
  for (const f of old) renameSync(join(dir, f), join(aside, f));
  return aside;
}

/**
 * On resume from `step`: drops log lines of the steps after it, which the resumed run is about to redo (−1: all of
 * them, for a restart with no checkpoint). A resumed run does not write its setup lines (step 0) again.
 */
export function trimLogs(dir: string, step: number): void {
  for (const f of ['metrics.jsonl', 'monitor.jsonl']) {
    const file = join(dir, f);
    if (!existsSync(file)) continue;
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
    const keep = lines.filter((l) => {
      try {
        return Number(JSON.parse(l).step) <= step;
      } catch {
        return false; // a line torn by the kill
      }
    });
    if (keep.length !== lines.length) writeTextAtomic(file, keep.length ? keep.join('\n') + '\n' : '');
  }
}
