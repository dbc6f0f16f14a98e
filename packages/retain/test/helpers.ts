// Test helpers for @retain/retain: where the shared real data and models live, and how to skip without them.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** ../shared relative to the repository root (docs/DATA.md). */
export const SHARED = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '..', '..', '..', '..', 'shared');

export function sharedPath(...parts: string[]): string {
  return join(SHARED, ...parts);
}

/** Skip reason when a shared file is missing (tests must say so, never pass silently). */
export function needShared(...parts: string[]): string | false {
  const p = sharedPath(...parts);
  return existsSync(p) ? false : `needs ${p} (the shared real data/models folder beside the repository)`;
}
