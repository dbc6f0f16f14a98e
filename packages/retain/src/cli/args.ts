// Number parsers for command-line options, shared by every command so that a bad value ("-n -3", "--limit 1.5")
// is refused by commander with the option's name, before any model is loaded; and the wording of filesystem errors.
import { InvalidArgumentError } from 'commander';

/** Any finite number. */
export function num(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`'${v}' is not a number`);
  return n;
}

/** Any integer that a double holds exactly: 1e300 is an integer to JavaScript, and a count of it never ends. */
export function int(v: string): number {
  const n = num(v);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`'${v}' is not an integer`);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`'${v}' is too large; at most ${Number.MAX_SAFE_INTEGER} in size`);
  return n;
}

/** An integer ≥ 1 (counts, steps, sizes). */
export function positiveInt(v: string): number {
  const n = int(v);
  if (n < 1) throw new InvalidArgumentError(`'${v}' must be a positive integer`);
  return n;
}

/** An integer ≥ 0 (0 meaning "off", as top-k). */
export function nonNegativeInt(v: string): number {
  const n = int(v);
  if (n < 0) throw new InvalidArgumentError(`'${v}' must be an integer ≥ 0`);
  return n;
}

/** A number ≥ 0 (temperatures, budgets). */
export function nonNegative(v: string): number {
  const n = num(v);
  if (n < 0) throw new InvalidArgumentError(`'${v}' must be a number ≥ 0`);
  return n;
}

/** A probability mass in (0, 1] (top-p). */
export function unitInterval(v: string): number {
  const n = num(v);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError(`'${v}' must be in (0, 1]`);
  return n;
}

export const FS_ERRORS: Record<string, string> = {
  EEXIST: 'a file is in the way where a folder is needed (or the target exists)',
  EISDIR: 'is a folder, where a file is needed',
  ENOTDIR: 'part of this path is a file, where a folder is needed',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted (permissions, or an immutable file)',
  ENOSPC: 'no space left on the device',
  EROFS: 'read-only filesystem',
  ENOENT: 'no such file or folder',
  EMFILE: 'too many open files',
};

/** A Node filesystem error as "<path>: <what it means> (<syscall>)", or null for any other error. */
export function describeFsError(e: Error): string | null {
  const { code, path, dest, syscall } = e as NodeJS.ErrnoException & { dest?: string };
  if (!code || !(code in FS_ERRORS) || !path) return null;
  return `${path}${dest ? ` → ${dest}` : ''}: ${FS_ERRORS[code]} (${syscall ?? 'fs'} ${code})`;
}
