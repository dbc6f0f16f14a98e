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
