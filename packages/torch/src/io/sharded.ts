// Sharded checkpoints as Hugging Face lays them out: `model-00001-of-00003.safetensors`, ... plus
// `model.safetensors.index.json` ({"metadata": {"total_size": N}, "weight_map": {tensor: shard file}}), or a single
// `model.safetensors` when everything fits in one shard.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Tensor } from '../tensor.js';
import {
  SafetensorsError, byteOrder, checkMetadata, discard, entriesOf, openSafetensors, plan, readInto, syncDir, tempPathFor,
  writeFile, loadSafetensors, type LoadOptions, type LoadedTensors, type SafetensorsFile, type TensorDict, type TensorInfo,
} from './safetensors.js';

export interface SaveShardedOptions {
  /** Largest shard in tensor bytes (default 5e9, Hugging Face's "5GB"); a bigger tensor gets a shard of its own. */
  maxShardBytes?: number;
  /** Metadata for every shard; `format: 'pt'` is added unless given, as transformers expects it. */
  metadata?: Record<string, string>;
  /** File name stem (default 'model'; PEFT adapters use 'adapter_model'). */
  name?: string;
}

export interface SaveShardedResult {
  /** Shard file names, relative to dir. */
  files: string[];
  /** The index file name, or null for a single-file checkpoint. */
  index: string | null;
  totalBytes: number;
}

function shardName(stem: string, i: number, n: number): string {
  return `${stem}-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
}

function shardPattern(stem: string): RegExp {
  const esc = stem.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${esc}-\\d{5}-of-\\d{5}\\.safetensors$`);
}

function checkStem(dir: string, stem: string): void {
  if (typeof stem !== 'string' || stem === '' || stem.includes('/') || stem.includes('\\') || stem === '.' || stem === '..') {
    throw new SafetensorsError(dir, null, `the checkpoint name must be a plain file name stem, got ${JSON.stringify(stem)}`);
  }
}

/** JSON with sorted keys at every level and 2-space indent, as transformers writes its index files. */
function sortedJson(v: unknown, indent = ''): string {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return JSON.stringify(v);
  const inner = `${indent}  `;
  const keys = Object.keys(v).sort(byteOrder);
  if (keys.length === 0) return '{}';
  const body = keys.map((k) => `${inner}${JSON.stringify(k)}: ${sortedJson((v as Record<string, unknown>)[k], inner)}`);
  return `{\n${body.join(',\n')}\n${indent}}`;
}

/**
 * Writes a checkpoint directory: one `<name>.safetensors` when the tensors fit in maxShardBytes, otherwise numbered
 * shards and an index. Each file is written atomically; all shards are complete on disk before any is renamed into
 * place and the index is replaced last, so an interrupted save leaves at worst a mix of old and new shard files of
 * the same names (never a torn file). Shards and indexes of an earlier save with another shard count are removed.
 */
export function saveSharded(dir: string, tensors: TensorDict, opts: SaveShardedOptions = {}): SaveShardedResult {
  const stem = opts.name ?? 'model';
  checkStem(dir, stem);
  const max = opts.maxShardBytes ?? 5e9;
  if (!(typeof max === 'number' && max > 0)) throw new SafetensorsError(dir, null, `maxShardBytes must be a positive number, got ${String(max)}`);
  const items = plan(dir, entriesOf(dir, tensors));
  const metadata = { format: 'pt', ...checkMetadata(dir, opts.metadata ?? null) };
  fs.mkdirSync(dir, { recursive: true });

  // Greedy in the caller's order, as Hugging Face splits a state dict, so shards follow the model's layer order; a
  // tensor over the limit gets a shard of its own without closing the one being filled.
  const groups: (typeof items)[] = [];
  let cur: typeof items = [];
  let curBytes = 0;
  for (const it of items) {
    if (it.byteLength > max) {
      groups.push([it]);
      continue;
    }
    if (cur.length > 0 && curBytes + it.byteLength > max) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(it);
    curBytes += it.byteLength;
  }
  if (cur.length > 0 || groups.length === 0) groups.push(cur);

  const single = groups.length === 1;
  const files = single ? [`${stem}.safetensors`] : groups.map((_, i) => shardName(stem, i, groups.length));
  const indexName = `${stem}.safetensors.index.json`;
  const totalBytes = items.reduce((a, it) => a + it.byteLength, 0);
  const temps: string[] = [];
  try {
    groups.forEach((g, i) => {
      const tmp = tempPathFor(path.join(dir, files[i]));
      temps.push(tmp);
      writeFile(tmp, g, metadata);
    });
    let indexTmp: string | null = null;
    if (!single) {
      const weightMap = Object.fromEntries(groups.flatMap((g, i) => g.map((it) => [it.name, files[i]])));
      const text = `${sortedJson({ metadata: { total_size: totalBytes }, weight_map: weightMap })}\n`;
      indexTmp = tempPathFor(path.join(dir, indexName));
      temps.push(indexTmp);
      const fd = fs.openSync(indexTmp, 'wx', 0o644);
      try {
        fs.writeFileSync(fd, text);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    files.forEach((f, i) => fs.renameSync(temps[i], path.join(dir, f)));
    if (indexTmp !== null) fs.renameSync(indexTmp, path.join(dir, indexName));
  } catch (e) {
    for (const t of temps) discard(t);
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(dir, null, `writing the checkpoint failed: ${(e as Error).message}`, { cause: e });
  }

  // Leftovers of an earlier save would shadow or contradict this one (transformers prefers a lone model.safetensors).
  const keepSet = new Set(files);
  const pattern = shardPattern(stem);
  for (const f of fs.readdirSync(dir)) {
    const stale = (pattern.test(f) || f === `${stem}.safetensors` || (single && f === indexName)) && !keepSet.has(f);
    if (stale) fs.rmSync(path.join(dir, f), { force: true });
  }
  syncDir(dir);
  return { files, index: single ? null : indexName, totalBytes };
}

function safeShardFile(indexPath: string, tensor: string, f: unknown): string {
  if (typeof f !== 'string' || f === '') {
    throw new SafetensorsError(indexPath, tensor, `'weight_map' must map to a shard file name, got ${JSON.stringify(f)}`);
  }
  if (path.isAbsolute(f) || f.split(/[\\/]/).includes('..')) {
    throw new SafetensorsError(indexPath, tensor, `shard '${f}' is outside the checkpoint directory`);
  }
  return f;
}

function readIndex(indexPath: string): Map<string, string[]> {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (e) {
    throw new SafetensorsError(indexPath, null, `cannot read the index: ${(e as Error).message}`, { cause: e });
  }
  const wm = (json as { weight_map?: unknown } | null)?.weight_map;
  if (wm === null || typeof wm !== 'object' || Array.isArray(wm)) {
    throw new SafetensorsError(indexPath, null, "the index has no 'weight_map' object");
  }
  const byFile = new Map<string, string[]>();
  for (const [name, f] of Object.entries(wm)) {
    const file = safeShardFile(indexPath, name, f);
    let list = byFile.get(file);
    if (list === undefined) byFile.set(file, (list = []));
    list.push(name);
  }
  return byFile;
}

/**
 * A weights file inside a checkpoint folder must be there: a symbolic link out of it (to /etc/shadow, another user's
 * files) would be opened and its first bytes quoted back as a header length. Links that stay inside the folder are
 * fine, and so is the Hugging Face cache layout, where `snapshots/<revision>/*.safetensors` link to `../../blobs/`.
 */
function checkInside(dir: string, file: string): void {
  if (!fs.lstatSync(file, { throwIfNoEntry: false })?.isSymbolicLink()) return;
  let target: string;
  try {
    target = fs.realpathSync(file);
  } catch {
    throw new SafetensorsError(file, null, 'is a symbolic link to nothing (its target is missing); copy the weights file into the checkpoint folder');
  }
  const real = fs.realpathSync(dir);
  const roots = [real];
  if (path.basename(path.dirname(real)) === 'snapshots') roots.push(path.dirname(path.dirname(real)));
  if (!roots.some((r) => target.startsWith(r + path.sep))) {
    throw new SafetensorsError(file, null, `is a symbolic link to ${target}, outside the checkpoint folder ${dir}; retain reads weights only from inside it (copy the file into the folder)`);
  }
}

/** Where a checkpoint's tensors are: each file with the names the index lists in it (null: all of a single file). */
function checkpointFiles(target: string, stem: string): { indexPath: string | null; files: Map<string, string[] | null> } {
  checkStem(target, stem);
  let single: string | null = null;
  let indexPath: string | null = null;
  if (fs.statSync(target, { throwIfNoEntry: false })?.isDirectory()) {
    const idx = path.join(target, `${stem}.safetensors.index.json`);
    const one = path.join(target, `${stem}.safetensors`);
    // lstat, not exists: a dangling link is reported as one (checkInside), not as no checkpoint at all.
    const here = (p: string) => fs.lstatSync(p, { throwIfNoEntry: false }) !== undefined;
    if (here(idx)) indexPath = idx;
    else if (here(one)) single = one;
    else throw new SafetensorsError(target, null, `no checkpoint here: neither ${stem}.safetensors.index.json nor ${stem}.safetensors exists`);
  } else if (target.endsWith('.json')) {
    indexPath = target;
  } else {
    return { indexPath: null, files: new Map([[target, null]]) };
  }
  const dir = indexPath ? path.dirname(indexPath) : target;
  if (single !== null) {
    checkInside(dir, single);
    return { indexPath: null, files: new Map([[single, null]]) };
  }
  checkInside(dir, indexPath!);
  const files = new Map<string, string[] | null>();
  for (const [shard, names] of readIndex(indexPath!)) {
    const file = path.join(dir, shard);
    checkInside(dir, file);
    files.set(file, names);
  }
  return { indexPath, files };
}

/** Opens one file of a checkpoint; a shard that cannot be opened is named by the index that lists it. */
function openShard(indexPath: string | null, file: string, listed: string[] | null): SafetensorsFile {
  try {
    return openSafetensors(file);
  } catch (e) {
    if (e instanceof SafetensorsError || indexPath === null) throw e;
    throw new SafetensorsError(indexPath, listed?.[0] ?? null, `cannot open its shard '${path.relative(path.dirname(indexPath), file)}': ${(e as Error).message}`, { cause: e });
  }
}

/**
 * What a checkpoint holds, from its headers alone (no tensor data is read): every tensor's dtype and shape. A loader
 * checks a model's configuration against this before building the model, so that a config claiming more than the
 * weights hold fails at once rather than after allocating it.
 */
export function readShardedHeaders(target: string, opts: { name?: string } = {}): Map<string, TensorInfo> {
  const out = new Map<string, TensorInfo>();
  const { indexPath, files } = checkpointFiles(target, opts.name ?? 'model');
  for (const [file, listed] of files) {
    const f = openShard(indexPath, file, listed);
    try {
      for (const [name, info] of f.tensors) out.set(name, info);
    } finally {
      f.close();
    }
  }
  return out;
}

/**
 * Loads a checkpoint: a directory holding `<name>.safetensors.index.json` and its shards, or `<name>.safetensors`;
 * or the path of an index file or of a single .safetensors file. Returns the tensors with the shards' metadata.
 * When a directory holds both an index and a single file, the index wins (saveSharded replaces it last). A file that
 * is a symbolic link out of the checkpoint folder is refused (checkInside).
 */
export function loadSharded(target: string, opts: LoadOptions & { name?: string } = {}): LoadedTensors {
  const { indexPath, files } = checkpointFiles(target, opts.name ?? 'model');
  if (indexPath === null) return loadSafetensors([...files.keys()][0], opts);
  const byFile = files as Map<string, string[]>;
  const names = opts.names;
  const wanted = names === undefined || typeof names === 'function' ? null : new Set(names);
  if (wanted !== null) {
    const all = new Set([...byFile.values()].flat());
    for (const n of wanted) if (!all.has(n)) throw new SafetensorsError(indexPath, n, "no such tensor in the index's weight_map");
  }

  const out = new Map<string, Tensor>() as LoadedTensors;
  out.metadata = {};
  try {
    for (const [shard, listed] of byFile) {
      const f = openShard(indexPath, shard, listed);
      try {
        const infos: TensorInfo[] = [];
        for (const name of listed) {
          const info = f.tensors.get(name);
          if (info === undefined) throw new SafetensorsError(f.path, name, `listed in ${path.basename(indexPath)} but missing from this shard`);
          const take = wanted !== null ? wanted.has(name) : typeof names === 'function' ? names(name, info) : true;
          if (take) infos.push(info);
        }
        Object.assign(out.metadata, f.metadata);
        readInto(f, infos, opts, out);
      } finally {
        f.close();
      }
    }
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}
