// The settings a `retain train` run used, saved in its output_dir: the file, the command line's overrides and every
// default, as YAML that `retain train` reads back to the same config.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import type { TrainConfig } from '../config.js';
import { writeTextAtomic } from './checkpoint.js';

/** Not `config.yaml`: a user's own config may sit in the output folder under that name. */
export const RUN_CONFIG = 'run_config.yaml';

/** A shell word as typed: quoted when it holds characters the shell reads. */
const quoted = (w: string) => (/^[\w.,=/:+@%-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`);

/** Writes output_dir/run_config.yaml (atomically) and returns its path. */
export function saveRunConfig(cfg: TrainConfig, file: string, overrides: string[]): string {
  const out = join(cfg.output_dir, RUN_CONFIG);
  const head = [
    `# retain train ${[resolve(file), ...overrides].map(quoted).join(' ')}`,
    `# The settings this run used: the file${overrides.length ? ', the overrides above' : ''} and every default (paths made absolute).`,
  ];
  mkdirSync(cfg.output_dir, { recursive: true });
  writeTextAtomic(out, `${head.join('\n')}\n${stringifyYaml(cfg)}`);
  return out;
}
