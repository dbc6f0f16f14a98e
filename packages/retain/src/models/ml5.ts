// Reader for ml5.js's exported TensorFlow checkpoints: a folder with `manifest.json` and one raw little-endian
// float32 file per variable. The manifest maps each TensorFlow variable name to `{ filename, shape }`:
//
//   { "rnnlm/softmax_w": { "filename": "rnnlm_softmax_w", "shape": [128, 65] }, ... }
//
// Tensors come back under module-path keys made by one reversible rule, tfToKey: every '/' of the TensorFlow name
// becomes '.', so `rnnlm/multi_rnn_cell/cell_0/basic_lstm_cell/weights` is the parameter
// `rnnlm.multi_rnn_cell.cell_0.basic_lstm_cell.weights` of a module tree mirroring TensorFlow's variable scopes, and
// keyToTf turns it back. A TensorFlow name that already holds a '.' would make the rule ambiguous and is refused.
import { readFileSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';

export interface Ml5Entry {
  filename: string;
  shape: number[];
}

export type Ml5Manifest = Record<string, Ml5Entry>;

/** TensorFlow variable name → module key ('/' → '.'). */
export function tfToKey(name: string): string {
  if (name.includes('.')) throw new Error(`TensorFlow variable name '${name}' contains '.', which the '/' → '.' key rule cannot represent`);
  if (name === '' || name.split('/').some((p) => p === '')) throw new Error(`TensorFlow variable name '${name}' has an empty scope`);
  return name.split('/').join('.');
}

/** Module key → TensorFlow variable name ('.' → '/'), the inverse of tfToKey. */
export function keyToTf(key: string): string {
  return key.split('.').join('/');
}

/** Reads and checks manifest.json of an ml5 model folder. */
export function readMl5Manifest(dir: string): Ml5Manifest {
  const path = join(dir, 'manifest.json');
  if (!existsSync(path)) throw new Error(`${dir}: no manifest.json (an ml5 model folder has one beside its weight files)`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`${path}: expected an object of variable name → { filename, shape }`);
  const out: Ml5Manifest = {};
  for (const [name, v] of Object.entries(raw as Record<string, unknown>)) {
    const e = v as Partial<Ml5Entry> | null;
    if (!e || typeof e.filename !== 'string' || e.filename === '') throw new Error(`${path}: entry '${name}' has no filename`);
    // The file name is joined to the folder: a path separator or '..' could read outside it.
    if (/[\\/]/.test(e.filename) || e.filename === '..' || e.filename === '.') throw new Error(`${path}: entry '${name}' names the file '${e.filename}', which is not a plain file name`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new Error(`${path}: entry '${name}' has shape ${JSON.stringify(e.shape)}, expected an array of non-negative integers`);
    }
    out[name] = { filename: e.filename, shape: e.shape };
  }
  return out;
}

/**
 * Loads every variable of an ml5 model folder as float32 tensors keyed by tfToKey(name). Each file's size must be
 * exactly 4 bytes per element of its manifest shape; the error names the variable, the file and both sizes.
 * `skip` lists TensorFlow names to leave out (e.g. optimiser state saved beside the weights).
 */
export function readMl5(dir: string, opts: { skip?: string[] } = {}): Map<string, torch.Tensor> {
  const manifest = readMl5Manifest(dir);
  const skip = new Set(opts.skip ?? []);
  for (const s of skip) if (!(s in manifest)) throw new Error(`${dir}/manifest.json: no variable '${s}' to skip (has ${Object.keys(manifest).join(', ')})`);
  // Check every file before reading any, so a damaged folder fails whole with all problems listed.
  const problems: string[] = [];
  for (const [name, e] of Object.entries(manifest)) {
    if (skip.has(name)) continue;
    const file = join(dir, e.filename);
    const want = 4 * e.shape.reduce((a, b) => a * b, 1);
    if (!existsSync(file)) {
      problems.push(`'${name}': file ${e.filename} is missing`);
      continue;
    }
    const have = statSync(file).size;
    if (have !== want) problems.push(`'${name}': file ${e.filename} has ${have} bytes, but shape [${e.shape.join(', ')}] of float32 needs ${want}`);
  }
  if (problems.length) throw new Error(`${dir}: ml5 weights do not match manifest.json:\n\t${problems.join('\n\t')}`);
  const out = new Map<string, torch.Tensor>();
  for (const [name, e] of Object.entries(manifest)) {
    if (skip.has(name)) continue;
    const key = tfToKey(name);
    if (out.has(key)) throw new Error(`${dir}/manifest.json: two variables map to the key '${key}'`);
    // The files are little-endian float32, as the engine's CPU tensors on every platform Node runs on.
    out.set(key, torch.fromBytes(readFileSync(join(dir, e.filename)), 'float32', e.shape));
  }
  return out;
}
