// One writer per output: two `retain train` on the same output_dir (or two `retain eval -o` on the same file) would
// interleave their writes — the second resuming from a checkpoint the first is still extending, metrics.jsonl holding
// every step twice. A lock file names its holder (pid, host, start time); the atomic create ('wx') decides between two
// starters however close together they come.
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';

export interface LockHolder {
  pid: number;
  host: string;
  started: string;
  command: string;
}

export interface OutputLock {
  file: string;
  /** Removes the lock file if it is still this process's (idempotent; also runs at process exit). */
  release(): void;
}

/** Someone else holds the lock: the message names the holder and what to do. */
export class LockedError extends Error {}

/** A takeover of a stale lock older than this was abandoned by a process that died mid-takeover. */
const TAKEOVER_STALE_MS = 30_000;

/** Whether a process of this host still runs (EPERM: it does, under another user). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Creates `file` holding `text`, failing with EEXIST when it exists (the atomic step the lock rests on). */
function createExclusive(file: string, text: string): void {
  const fd = openSync(file, 'wx');
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

function readHolder(file: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(file, 'utf8')) as LockHolder;
    return Number.isInteger(h?.pid) && typeof h.host === 'string' ? h : null;
  } catch {
    return null; // gone meanwhile, or torn by a kill between create and write
  }
}

function describe(h: LockHolder): string {
  return `process ${h.pid} on ${h.host}, started ${h.started}${h.command ? ` (${h.command})` : ''}`;
}

/**
 * A lock held by a process that no longer exists on this host: taken over under a second, short-lived lock, so that
 * of two starters finding the same stale lock only one removes it (the other would remove the winner's new lock).
 */
function takeOverStale(file: string, stale: LockHolder | null, text: string): boolean {
  const guard = `${file}.takeover`;
  try {
    createExclusive(guard, text);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const age = Date.now() - (statSync(guard, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
    if (age > TAKEOVER_STALE_MS) rmSync(guard, { force: true });
    return false;
  }
  try {
    const now = readHolder(file);
    // Still the stale holder we looked at (or still unreadable): ours to replace.
    if (JSON.stringify(now) !== JSON.stringify(stale)) return false;
    rmSync(file, { force: true });
    try {
      createExclusive(file, text);
    } catch (e) {
      // A plain starter got in between the removal and this create: it holds the lock now.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
    return true;
  } finally {
    rmSync(guard, { force: true });
  }
}

/**
 * Takes the lock `file` for this process, or throws LockedError naming the live holder. A lock left by a process
 * that is gone (same host) is taken over and `notice` says so; a holder on another host cannot be checked from here,
 * so its lock stands until removed by hand. `what` names the output in messages ("output_dir runs/x").
 */
export function acquireLock(file: string, what: string, notice: (msg: string) => void = (m) => console.error(`retain: ${m}`)): OutputLock {
  mkdirSync(dirname(file), { recursive: true });
  const me: LockHolder = { pid: process.pid, host: hostname(), started: new Date().toISOString(), command: process.argv.slice(2).join(' ') };
  const text = JSON.stringify(me) + '\n';
  for (let attempt = 0; ; attempt++) {
    try {
      createExclusive(file, text);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const h = readHolder(file);
    const sameHost = h !== null && h.host === me.host;
    if (h && sameHost && h.pid === process.pid) throw new LockedError(`${what} is already in use by this process (lock ${file}); one output cannot be written twice at once`);
    if (h && (!sameHost || pidAlive(h.pid))) {
      throw new LockedError(`${what} is in use by ${describe(h)} (lock ${file}); wait for that run to end or use another output. ` +
        (sameHost ? `If ${h.pid} is not a retain run, remove the lock file.` : `If that run is over, remove the lock file (a process on another host cannot be checked from here).`));
    }
    // h === null: a lock torn between create and write by a kill; treated as stale once it is old enough to not be
    // a starter still writing it.
    if (h === null && Date.now() - (statSync(file, { throwIfNoEntry: false })?.mtimeMs ?? 0) < 2000 && attempt < 20) {
      sleep(100);
      continue;
    }
    if (takeOverStale(file, h, text)) {
      notice(`took over the lock of ${what} from ${h ? `${describe(h)}, which is no longer running` : 'an unreadable lock file'} (${file})`);
      break;
    }
    // Another starter is taking it over: look again once it is done.
    sleep(20);
    if (attempt >= 50) throw new LockedError(`${what}: could not take the lock ${file} (another process keeps taking it over); try again`);
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.off('exit', release);
    const h = readHolder(file);
    if (h?.pid === me.pid && h.started === me.started) rmSync(file, { force: true });
  };
  // Error exits and process.exit() pass here too; a SIGKILL leaves the lock, which the next run takes over as stale.
  process.on('exit', release);
  return { file, release };
}

/** The lock of an output folder (a run's output_dir, a report's --out): `<dir>/.retain.lock`. */
export function lockOutputDir(dir: string, what = `output_dir ${dir}`, notice?: (msg: string) => void): OutputLock {
  return acquireLock(join(dir, '.retain.lock'), what, notice);
}

/** The lock of an output file (results JSON, synthesised records): `<file>.lock` beside it. */
export function lockOutputFile(file: string, notice?: (msg: string) => void): OutputLock {
  return acquireLock(`${file}.lock`, file, notice);
}

/**
 * Runs `fn` holding `lock` and releases it however `fn` ends. A command that fails keeps its lock only until the
 * process exits, which is enough for the CLI but not for code (and tests) that run several commands in one process.
 */
export async function whileLocked<T>(lock: OutputLock, fn: () => Promise<T> | T): Promise<T> {
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
