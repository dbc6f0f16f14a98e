// Hugging Face `datasets` folders written by `save_to_disk`: state.json lists the shards (Arrow IPC stream files,
// data-00000-of-0000N.arrow) in row order, dataset_info.json describes the features. A DatasetDict is a folder with
// dataset_dict.json ({"splits": [...]}) and one such folder per split. Rows come back as plain JSON-like objects.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

/** A save_to_disk problem the user can fix, with the folder or file named; readers.ts turns it into a DataError. */
export class SavedDatasetError extends Error {}

/** Whether `dir` looks like a save_to_disk folder (a Dataset or a DatasetDict). */
export function isSavedDataset(dir: string): boolean {
  return existsSync(join(dir, 'state.json')) || existsSync(join(dir, 'dataset_dict.json'));
}

/** The shard files of a saved Dataset, in order; a DatasetDict is refused with its splits named. */
export function savedDatasetFiles(dir: string): string[] {
  if (existsSync(join(dir, 'dataset_dict.json'))) {
    const splits = readJsonFile<{ splits?: unknown }>(join(dir, 'dataset_dict.json')).splits;
    const names = Array.isArray(splits) ? splits.map(String) : [];
    throw new SavedDatasetError(`${dir}: a DatasetDict (splits: ${names.join(', ') || 'none listed'}); point the path at one split's folder, e.g. ${join(dir, names[0] ?? 'train')}`);
  }
  const state = readJsonFile<{ _data_files?: { filename?: unknown }[] }>(join(dir, 'state.json'));
  const files = state._data_files;
  if (!Array.isArray(files) || files.some((f) => typeof f?.filename !== 'string')) {
    throw new SavedDatasetError(`${join(dir, 'state.json')}: no _data_files list of {filename}; is this a folder written by datasets' save_to_disk?`);
  }
  return files.map((f) => {
    const path = join(dir, basename(f.filename as string));
    if (!existsSync(path)) throw new SavedDatasetError(`${path}: listed in state.json but missing; the save_to_disk folder is incomplete (save it again)`);
    return path;
  });
}

function readJsonFile<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (e) {
    throw new SavedDatasetError(`${path}: not readable JSON (${(e as Error).message})`);
  }
}

/** The rows of Arrow IPC files (stream or file format), in order, as plain objects (nested lists and structs too). */
export async function readArrowRows(files: string[]): Promise<Record<string, unknown>[]> {
  const { tableFromIPC } = await import('apache-arrow');
  const rows: Record<string, unknown>[] = [];
  for (const file of files) {
    let table;
    try {
      table = tableFromIPC(readFileSync(file));
    } catch (e) {
      throw new SavedDatasetError(`${file}: not a readable Arrow IPC file (${(e as Error).message})`);
    }
    for (const row of table) rows.push(plainArrow(row) as Record<string, unknown>);
  }
  return rows;
}

/** Arrow's row proxies and vectors (both have toJSON) turned into objects and arrays, recursively. */
function plainArrow(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || v instanceof Date || ArrayBuffer.isView(v)) return v;
  const json = typeof (v as { toJSON?: unknown }).toJSON === 'function' ? (v as { toJSON(): unknown }).toJSON() : v;
  if (Array.isArray(json)) return json.map(plainArrow);
  if (json === null || typeof json !== 'object') return json;
  return Object.fromEntries(Object.entries(json).map(([k, x]) => [k, plainArrow(x)]));
}
