// The error a config a user wrote raises, and how a value the user wrote appears in any message about it (configs,
// overrides, method options, a model's config.json). Both sit below config.ts so that every layer can use them.

/** A config (file, override or section) that cannot be used; the message names the key and the fix. */
export class ConfigError extends Error {}

/**
 * A config value as the user wrote it, for error messages: JSON, except that NaN and ±Infinity (YAML's .nan, .inf)
 * stay themselves rather than JSON's null, and a missing value reads "nothing".
 */
export function shown(v: unknown): string {
  if (v === undefined) return 'nothing';
  return typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v) ?? String(v);
}
