// `retain train config.yaml key=value ...`: settings changed from the command line without editing the file. Keys are
// dotted paths into the config (a number indexes a list: methods.0.lambda); values are YAML, so numbers, booleans,
// null and flow lists / maps (methods=[flow,l2], format={type: alpaca}) read as they would in the file. The result is
// validated by the same schema as the file.
import { parse as parseYaml } from 'yaml';
import { ConfigError, shown } from './errors.js';

export interface Override {
  /** As given on the command line, for messages and the saved config. */
  text: string;
  path: string[];
  value: unknown;
}

/** Parses `key=value`; the value as YAML (a bad flow list is named with the override). */
export function parseOverride(text: string): Override {
  const eq = text.indexOf('=');
  const key = eq < 0 ? '' : text.slice(0, eq).trim();
  if (eq < 0 || key === '') throw new ConfigError(`override '${text}': write key=value with a dotted key, e.g. training.lr=3e-4 or methods=[flow,l2]`);
  const path = key.split('.');
  if (path.some((p) => p === '')) throw new ConfigError(`override '${text}': the key '${key}' has an empty part; write it as section.key, e.g. training.lr`);
  let value: unknown;
  try {
    value = parseYaml(text.slice(eq + 1));
  } catch (e) {
    throw new ConfigError(`override '${text}': the value is not valid YAML (${(e as Error).message.split('\n')[0]}); quote it, e.g. ${key}='"text"'`);
  }
  return { text, path, value };
}

const isSection = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object';

/** Sets one override in `raw` (changed in place), making missing sections; a list is indexed by a number. */
function setPath(raw: Record<string, unknown>, o: Override): void {
  let at: Record<string, unknown> = raw;
  o.path.forEach((key, i) => {
    const where = o.path.slice(0, i + 1).join('.');
    if (Array.isArray(at) && !/^\d+$/.test(key)) throw new ConfigError(`override '${o.text}': ${o.path.slice(0, i).join('.')} is a list; index it with a number, e.g. ${o.path.slice(0, i).join('.')}.0`);
    if (Array.isArray(at) && Number(key) > at.length) throw new ConfigError(`override '${o.text}': ${where} is past the end of a list of ${at.length}`);
    if (i === o.path.length - 1) {
      at[key] = o.value;
      return;
    }
    if (at[key] === undefined || at[key] === null) at[key] = {};
    // A method given by name alone ("flow") gets its options as a map: methods.0.tau=2 → {name: flow, tau: 2}.
    if (typeof at[key] === 'string' && o.path[0] === 'methods' && i === 1) at[key] = { name: at[key] };
    if (!isSection(at[key])) throw new ConfigError(`override '${o.text}': ${where} is ${shown(at[key])}, not a section with keys`);
    at = at[key] as Record<string, unknown>;
  });
}

/** The config as read from the file with the overrides applied in order (a later one wins). */
export function applyOverrides(raw: unknown, overrides: string[]): unknown {
  if (overrides.length === 0) return raw;
  const out = structuredClone(isSection(raw) && !Array.isArray(raw) ? raw : {}) as Record<string, unknown>;
  for (const text of overrides) setPath(out, parseOverride(text));
  return out;
}
