// The safetensors checkpoint format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON describing each
// tensor ({dtype, shape, data_offsets}) plus optional string metadata, then the tensors' bytes, row-major and
// little-endian. Reading validates the header as strictly as the reference implementation (a file is untrusted input:
// every offset is checked before anything is read) and reads each tensor straight into its own memory, so loading
// costs one copy and never holds the file twice. Writing is atomic: a temporary file in the same directory is filled,
// fsynced and renamed over the target, so a crash leaves either the old checkpoint or the new one, never a torn one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { endianness } from 'node:os';
import { randomBytes } from 'node:crypto';
import { DTYPE_SIZE, isFloating, native, type DType, type DeviceLike } from '../core.js';
import { Tensor, keep } from '../tensor.js';
import { empty } from '../creation.js';
import { noGrad } from '../autograd.js';
import * as G from '../ops/generated.js';

// Tensor bytes are copied verbatim between memory and the file, which is only right on a little-endian host.
if (endianness() !== 'LE') throw new Error('@retain/torch io: safetensors support needs a little-endian host');

/** The reference implementation refuses larger headers; a bigger length is a corrupt or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;

// Node cannot move more than 2 GiB in one read/write call, and Linux stops at ~2 GiB anyway.
const IO_CHUNK = 1 << 30;

const FROM_FORMAT: Record<string, DType> = {
  BOOL: 'bool', U8: 'uint8', I8: 'int8', I16: 'int16', I32: 'int32', I64: 'int64',
  F16: 'float16', BF16: 'bfloat16', F32: 'float32', F64: 'float64',
};
const TO_FORMAT: Record<DType, string> = {
  bool: 'BOOL', uint8: 'U8', int8: 'I8', int16: 'I16', int32: 'I32', int64: 'I64',
  float16: 'F16', bfloat16: 'BF16', float32: 'F32', float64: 'F64',
};
// Valid in the format, but this engine has no tensor type for them; named so the error can say so instead of
// calling a legitimate file corrupt.
const UNREPRESENTABLE = new Set(['U16', 'U32', 'U64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'C64', 'C128']);

/** Every problem with a safetensors file or a save request: names the file, the tensor (when one) and the problem. */
export class SafetensorsError extends Error {
  readonly file: string;
  readonly tensor: string | null;
  constructor(file: string, tensor: string | null, problem: string, options?: { cause?: unknown }) {
    super(`${file}: ${tensor === null ? '' : `tensor '${tensor}': `}${problem}`, options);
    this.name = 'SafetensorsError';
    this.file = file;
    this.tensor = tensor;
  }
}

/** What the header says about one tensor. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  /** The dtype's name in the file (e.g. 'BF16'). */
  format: string;
  shape: number[];
  /** [begin, end) relative to the start of the data section, as written in the header. */
  dataOffsets: [number, number];
  /** Absolute position of the first byte in the file. */
  fileOffset: number;
  byteLength: number;
}

export interface ConvertOptions {
  /** Converts floating-point tensors to this dtype; integer and bool tensors keep theirs (as torch's Module.to). */
  dtype?: DType;
  /** Puts the tensors on this device (default 'cpu'). */
  device?: DeviceLike;
}

export interface LoadOptions extends ConvertOptions {
  /** Only these tensors (each must exist), or those the predicate accepts. */
  names?: Iterable<string> | ((name: string, info: TensorInfo) => boolean);
}

/** A Map of the loaded tensors, in file order, carrying the file's `__metadata__`. */
export interface LoadedTensors extends Map<string, Tensor> {
  metadata: Record<string, string>;
}

/** Tensors to save: a Map, a plain object, or [name, tensor] pairs. */
export type TensorDict = Map<string, Tensor> | Record<string, Tensor> | Iterable<readonly [string, Tensor]>;

// ---------------------------------------------------------------------------------------------------------------
// Header parsing

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function parseDType(file: string, name: string, v: unknown): [DType, string] {
  if (v === undefined) throw new SafetensorsError(file, name, "missing 'dtype'");
  if (typeof v !== 'string') throw new SafetensorsError(file, name, `'dtype' must be a string, got ${kindOf(v)}`);
  const d = FROM_FORMAT[v];
  if (d !== undefined) return [d, v];
  const known = Object.keys(FROM_FORMAT).join(', ');
  if (UNREPRESENTABLE.has(v)) {
    throw new SafetensorsError(file, name, `dtype '${v}' is valid safetensors but this engine has no such tensor type (it reads ${known})`);
  }
  throw new SafetensorsError(file, name, `unknown dtype '${v}' (expected one of ${known})`);
}

function parseShape(file: string, name: string, v: unknown): number[] {
  if (v === undefined) throw new SafetensorsError(file, name, "missing 'shape'");
  if (!Array.isArray(v)) throw new SafetensorsError(file, name, `'shape' must be an array of non-negative integers, got ${kindOf(v)}`);
  let numel = 1;
  v.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new SafetensorsError(file, name, `'shape' entry ${i} is ${kindOf(d)}; dimensions must be non-negative integers`);
    }
    numel *= d;
  });
  if (!Number.isSafeInteger(numel)) throw new SafetensorsError(file, name, `'shape' [${v.join(', ')}] has too many elements`);
  return v as number[];
}

function parseOffsets(file: string, name: string, v: unknown): [number, number] {
  if (v === undefined) throw new SafetensorsError(file, name, "missing 'data_offsets'");
  const ok = Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0);
  if (!ok) throw new SafetensorsError(file, name, `'data_offsets' must be [begin, end], two non-negative integers; got ${JSON.stringify(v)}`);
  const [b, e] = v as [number, number];
  if (e < b) throw new SafetensorsError(file, name, `'data_offsets' [${b}, ${e}] ends before it begins`);
  return [b, e];
}

function parseMetadata(file: string, v: unknown): Record<string, string> {
  // serde reads a JSON null as an absent Option, so the reference implementation accepts it.
  if (v === undefined || v === null) return {};
  if (!isPlainObject(v)) throw new SafetensorsError(file, null, `'__metadata__' must be an object of strings, got ${kindOf(v)}`);
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw new SafetensorsError(file, null, `'__metadata__' value for key '${k}' must be a string, got ${kindOf(x)}`);
  }
  return Object.fromEntries(Object.entries(v)) as Record<string, string>;
}

/**
 * Checks a header against the data section length and returns its tensors in file order. The format requires the
 * tensors' byte ranges to tile the data section exactly (no overlaps, no holes, nothing after the last one): this
 * is what stops two names from aliasing one range and a file from smuggling other content.
 */
export function parseHeader(file: string, raw: Uint8Array, dataStart: number, dataLength: number): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new SafetensorsError(file, null, 'the header is not valid UTF-8');
  }
  if (!text.startsWith('{')) {
    throw new SafetensorsError(file, null, `the header is not a JSON object (it must start with '{', found ${JSON.stringify(text.slice(0, 16))})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(file, null, `the header is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) throw new SafetensorsError(file, null, `the header is not a JSON object, got ${kindOf(json)}`);

  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(file, entry);
      continue;
    }
    if (!isPlainObject(entry)) {
      throw new SafetensorsError(file, name, `the entry must be an object with 'dtype', 'shape' and 'data_offsets', got ${kindOf(entry)}`);
    }
    const [dtype, format] = parseDType(file, name, entry.dtype);
    const shape = parseShape(file, name, entry.shape);
    const dataOffsets = parseOffsets(file, name, entry.data_offsets);
    const numel = shape.reduce((a, b) => a * b, 1);
    const need = numel * DTYPE_SIZE[dtype];
    const [b, e] = dataOffsets;
    if (e - b !== need) {
      throw new SafetensorsError(file, name, `'data_offsets' [${b}, ${e}] span ${e - b} bytes but shape [${shape.join(', ')}] of ${format} needs ${need}`);
    }
    if (e > dataLength) {
      throw new SafetensorsError(file, name, `'data_offsets' [${b}, ${e}] run past the end of the data section (${dataLength} bytes follow the header): the file is truncated — an interrupted download or copy? Fetch it again`);
    }
    tensors.push({ name, dtype, format, shape, dataOffsets, fileOffset: dataStart + b, byteLength: need });
  }

  tensors.sort((x, y) => x.dataOffsets[0] - y.dataOffsets[0] || x.dataOffsets[1] - y.dataOffsets[1]);
  let end = 0;
  let prev: TensorInfo | null = null;
  for (const t of tensors) {
    const [b, e] = t.dataOffsets;
    if (b < end) {
      throw new SafetensorsError(file, t.name, `'data_offsets' [${b}, ${e}] overlap those of tensor '${prev!.name}' [${prev!.dataOffsets.join(', ')}]`);
    }
    if (b > end) {
      throw new SafetensorsError(file, t.name, `'data_offsets' [${b}, ${e}] leave data bytes ${end}..${b} unused; the format does not allow holes`);
    }
    end = e;
    prev = t;
  }
  if (end !== dataLength) {
    throw new SafetensorsError(file, null, `the data section has ${dataLength} bytes but the tensors cover only ${end}; trailing bytes are not allowed`);
  }
  return { tensors, metadata };
}

// ---------------------------------------------------------------------------------------------------------------
// Reading

function readFully(fd: number, dst: Uint8Array, position: number, file: string, name: string | null): void {
  let done = 0;
  while (done < dst.length) {
    const n = fs.readSync(fd, dst, done, Math.min(IO_CHUNK, dst.length - done), position + done);
    // The size was checked at open; a short read means the file was truncated under us.
    if (n === 0) throw new SafetensorsError(file, name, `the file ended at byte ${position + done} while reading (was it truncated?)`);
    done += n;
  }
}

function normalizeBool(bytes: Uint8Array): void {
  // torch assumes a bool byte is 0 or 1 (other values break ~, sum and comparisons), while the reference reader
  // passes any non-zero byte through as true; storing 1 keeps both the file readable and the tensor sound.
  for (let i = 0; i < bytes.length; i++) if (bytes[i] > 1) bytes[i] = 1;
}

function isCpu(device: DeviceLike | undefined): boolean {
  return device === undefined || device === 'cpu' || device.startsWith('cpu:');
}

function targetDType(info: TensorInfo, conv: ConvertOptions): DType {
  return conv.dtype !== undefined && isFloating(info.dtype) ? conv.dtype : info.dtype;
}

/** Whether a tensor can be read straight into its final memory, or must pass through a staging buffer first. */
function needsStaging(info: TensorInfo, conv: ConvertOptions): boolean {
  return info.byteLength > 0 && (targetDType(info, conv) !== info.dtype || !isCpu(conv.device));
}

/** A reusable uint8 CPU buffer for tensors that are converted, moved, or gathered around file I/O. */
class Staging {
  private t: Tensor | null = null;

  reserve(n: number): void {
    if (this.t !== null && this.t.numel() >= n) return;
    this.dispose();
    this.t = keep(empty([n], { dtype: 'uint8' }));
  }

  /** A uint8 tensor [n] aliasing the first n bytes of the buffer (dispose it after use). */
  take(n: number): Tensor {
    this.reserve(n);
    return G.narrow(this.t!, 0, 0, n);
  }

  dispose(): void {
    this.t?.dispose();
    this.t = null;
  }
}

function ioError(e: unknown, file: string, name: string | null): unknown {
  const msg = (e as Error).message ?? '';
  return /file ended|read failed|write failed/.test(msg) ? new SafetensorsError(file, name, msg.replace(/^(readInto|writeFrom): /, '')) : e;
}

function readTensor(fd: number, file: string, info: TensorInfo, conv: ConvertOptions, staging: Staging): Tensor {
  const dtype = targetDType(info, conv);
  if (info.byteLength === 0) return empty(info.shape, { dtype, device: conv.device });
  if (!needsStaging(info, conv) && dtype !== 'bool') {
    // Straight from the file into the tensor's memory: one copy, and no JS buffer keeps it alive afterwards.
    const t = empty(info.shape, { dtype });
    try {
      native.readInto(t.h, fd, info.fileOffset);
    } catch (e) {
      t.dispose();
      throw ioError(e, file, info.name);
    }
    return t;
  }
  return noGrad(() => {
    const raw = staging.take(info.byteLength);
    try {
      native.readInto(raw.h, fd, info.fileOffset);
      // torch assumes a bool byte is 0 or 1 (other values break ~, sum and comparisons), while the reference reader
      // passes any non-zero byte through as true; storing 1 keeps the tensor sound.
      if (info.dtype === 'bool') G.clamp_(raw, null, 1);
      const typed = G.view_dtype(raw, info.dtype);
      const shaped = G.view(typed, info.shape);
      try {
        // copy: the staging memory is reused for the next tensor.
        return shaped.to({ dtype, device: conv.device ?? 'cpu', copy: true });
      } finally {
        shaped.dispose();
        typed.dispose();
      }
    } catch (e) {
      throw ioError(e, file, info.name);
    } finally {
      raw.dispose();
    }
  });
}

const fdRegistry = new FinalizationRegistry<number>((fd) => {
  try {
    fs.closeSync(fd);
  } catch {
    // Closed already.
  }
});

/** An open safetensors file: the header is parsed, tensors are read on demand. close() when done. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  /** Tensor descriptions by name, in file order. */
  readonly tensors: Map<string, TensorInfo>;
  private fd: number;
  private staging = new Staging();

  /** @internal Use openSafetensors(). */
  constructor(file: string) {
    this.path = file;
    const fd = fs.openSync(file, 'r');
    try {
      const st = fs.fstatSync(fd);
      // Opening a folder succeeds on Linux; reading it fails with an EISDIR that names no path.
      if (st.isDirectory()) throw new SafetensorsError(file, null, 'is a folder, where a file is needed');
      const size = st.size;
      if (size < 8) throw new SafetensorsError(file, null, `the file has ${size} bytes, too short for the 8-byte header length`);
      const prefix = new Uint8Array(8);
      readFully(fd, prefix, 0, file, null);
      const n = new DataView(prefix.buffer).getBigUint64(0, true);
      if (n > BigInt(size - 8)) {
        throw new SafetensorsError(file, null, `the header length ${n} is larger than the ${size - 8} bytes that follow it (not a safetensors file, or truncated)`);
      }
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError(file, null, `the header length ${n} is larger than the ${MAX_HEADER_BYTES}-byte limit (corrupt file?)`);
      }
      const headerLength = Number(n);
      const raw = new Uint8Array(headerLength);
      readFully(fd, raw, 8, file, null);
      const dataStart = 8 + headerLength;
      const { tensors, metadata } = parseHeader(file, raw, dataStart, size - dataStart);
      this.metadata = metadata;
      this.tensors = new Map(tensors.map((t) => [t.name, t]));
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    this.fd = fd;
    fdRegistry.register(this, fd, this);
  }

  /** Tensor names in file order. */
  get names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      const some = this.names.slice(0, 8).map((n) => `'${n}'`).join(', ');
      throw new SafetensorsError(this.path, name, `no such tensor (the file has ${this.tensors.size}${this.tensors.size ? `: ${some}${this.tensors.size > 8 ? ', …' : ''}` : ''})`);
    }
    return info;
  }

  /** Reads one tensor; it belongs to the caller's scope as any new tensor does. */
  get(name: string, opts: ConvertOptions = {}): Tensor {
    if (this.fd < 0) throw new SafetensorsError(this.path, name, 'the file was closed');
    return readTensor(this.fd, this.path, this.info(name), opts, this.staging);
  }

  /** @internal Sizes the staging buffer once for a batch of reads. */
  _reserveFor(infos: TensorInfo[], conv: ConvertOptions): void {
    let n = 0;
    for (const i of infos) if (needsStaging(i, conv)) n = Math.max(n, i.byteLength);
    if (n > 0) this.staging.reserve(n);
  }

  close(): void {
    this.staging.dispose();
    if (this.fd < 0) return;
    fdRegistry.unregister(this);
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/** Opens a safetensors file and validates its header; read tensors with get(name), then close(). */
export function openSafetensors(file: string): SafetensorsFile {
  return new SafetensorsFile(file);
}

function selectNames(f: SafetensorsFile, names: LoadOptions['names']): TensorInfo[] {
  if (names === undefined) return [...f.tensors.values()];
  if (typeof names === 'function') return [...f.tensors.values()].filter((i) => names(i.name, i));
  const wanted = new Set(names);
  for (const n of wanted) f.info(n);
  return [...f.tensors.values()].filter((i) => wanted.has(i.name));
}

/** @internal Reads the given tensors of an open file into `out`; on failure disposes what it read. */
export function readInto(f: SafetensorsFile, infos: TensorInfo[], opts: ConvertOptions, out: Map<string, Tensor>): void {
  const added: Tensor[] = [];
  try {
    f._reserveFor(infos, opts);
    for (const info of infos) {
      const t = f.get(info.name, opts);
      added.push(t);
      out.set(info.name, t);
    }
  } catch (e) {
    for (const t of added) t.dispose();
    throw e;
  }
}

/** Reads a safetensors file (or the tensors `opts.names` selects) into a Map carrying the file's metadata. */
export function loadSafetensors(file: string, opts: LoadOptions = {}): LoadedTensors {
  const f = openSafetensors(file);
  try {
    const out = new Map<string, Tensor>() as LoadedTensors;
    out.metadata = f.metadata;
    readInto(f, selectNames(f, opts.names), opts, out);
    return out;
  } finally {
    f.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

/** @internal Turns the accepted tensor collections into [name, tensor] pairs, refusing repeated names. */
export function entriesOf(file: string, tensors: TensorDict): [string, Tensor][] {
  if (tensors === null || typeof tensors !== 'object') throw new SafetensorsError(file, null, `tensors must be a Map, an object or [name, tensor] pairs, got ${kindOf(tensors)}`);
  const pairs: [string, Tensor][] = [];
  if (Symbol.iterator in tensors) {
    for (const pair of tensors as Iterable<readonly [string, Tensor]>) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new SafetensorsError(file, null, `expected [name, tensor] pairs, got ${kindOf(pair)}`);
      pairs.push([pair[0], pair[1]]);
    }
  } else {
    for (const [k, v] of Object.entries(tensors)) pairs.push([k, v]);
  }
  const seen = new Set<string>();
  for (const [name] of pairs) {
    if (typeof name !== 'string') throw new SafetensorsError(file, null, `tensor names must be strings, got ${kindOf(name)}`);
    if (name === '__metadata__') throw new SafetensorsError(file, name, "the name '__metadata__' is reserved for the file's metadata");
    if (seen.has(name)) throw new SafetensorsError(file, name, 'two tensors have this name');
    seen.add(name);
  }
  return pairs;
}

/** @internal */
export function checkMetadata(file: string, metadata: unknown): Record<string, string> {
  if (metadata === undefined || metadata === null) return {};
  if (!isPlainObject(metadata)) throw new SafetensorsError(file, null, `metadata must be an object of strings, got ${kindOf(metadata)}`);
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') {
      throw new SafetensorsError(file, null, `metadata value for key '${k}' must be a string, got ${kindOf(v)} (safetensors metadata maps strings to strings; JSON.stringify it)`);
    }
  }
  return metadata as Record<string, string>;
}

interface Planned {
  name: string;
  tensor: Tensor;
  dtype: DType;
  shape: number[];
  byteLength: number;
}

/** @internal Checks every tensor before anything is written, so a bad one cannot fail the write halfway. */
export function plan(file: string, pairs: [string, Tensor][]): Planned[] {
  return pairs.map(([name, tensor]) => {
    if (!(tensor instanceof Tensor)) throw new SafetensorsError(file, name, `expected a Tensor, got ${kindOf(tensor)}`);
    if (tensor.isDisposed) throw new SafetensorsError(file, name, 'the tensor was disposed');
    let dtype: DType;
    try {
      dtype = tensor.dtype;
    } catch (e) {
      throw new SafetensorsError(file, name, `its dtype cannot be saved (${(e as Error).message}); supported: ${Object.keys(TO_FORMAT).join(', ')}`);
    }
    if (TO_FORMAT[dtype] === undefined) throw new SafetensorsError(file, name, `dtype ${dtype} cannot be saved`);
    const shape = tensor.shape;
    return { name, tensor, dtype, shape, byteLength: tensor.numel() * DTYPE_SIZE[dtype] };
  });
}

/** Orders keys by UTF-8 bytes, as the reference implementation (Rust strings) does, so the output is deterministic. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function buildHeader(items: Planned[], offsets: Map<string, [number, number]>, metadata: Record<string, string>): Buffer {
  // Assembled by hand because a JS object would put integer-like names ('0', '1', ...) first.
  const parts: string[] = [];
  const metaKeys = Object.keys(metadata).sort(byteOrder);
  if (metaKeys.length > 0) {
    parts.push(`"__metadata__":{${metaKeys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(',')}}`);
  }
  for (const it of [...items].sort((a, b) => byteOrder(a.name, b.name))) {
    const entry = { dtype: TO_FORMAT[it.dtype], shape: it.shape, data_offsets: offsets.get(it.name) };
    parts.push(`${JSON.stringify(it.name)}:${JSON.stringify(entry)}`);
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  // Padding to 8 bytes keeps every tensor in the data section aligned for readers that map the file.
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

function writeFully(fd: number, src: Uint8Array, position: number): void {
  let done = 0;
  while (done < src.length) {
    done += fs.writeSync(fd, src, done, Math.min(IO_CHUNK, src.length - done), position + done);
  }
}

/** @internal Writes a complete safetensors file at tmp (created exclusively) and fsyncs it. */
export function writeFile(tmp: string, items: Planned[], metadata: Record<string, string>): void {
  // Widest elements first, so each tensor starts at a multiple of its element size.
  const layout = [...items].sort((a, b) => DTYPE_SIZE[b.dtype] - DTYPE_SIZE[a.dtype] || byteOrder(a.name, b.name));
  const offsets = new Map<string, [number, number]>();
  let pos = 0;
  for (const it of layout) {
    offsets.set(it.name, [pos, pos + it.byteLength]);
    pos += it.byteLength;
  }
  const header = buildHeader(items, offsets, metadata);
  const fd = fs.openSync(tmp, 'wx', 0o644);
  const staging = new Staging();
  try {
    writeFully(fd, header, 0);
    let at = header.length;
    for (const it of layout) {
      if (it.byteLength > 0) writeTensor(fd, it, at, staging);
      at += it.byteLength;
    }
    fs.fsyncSync(fd);
  } finally {
    staging.dispose();
    fs.closeSync(fd);
  }
}

function writeTensor(fd: number, it: Planned, position: number, staging: Staging): void {
  const t = it.tensor;
  if (t.device === 'cpu' && t.isContiguous()) {
    // The tensor's own memory goes to the file: no copy, and no JS view pinning it.
    native.writeFrom(t.h, fd, position);
    return;
  }
  // GPU or strided tensors are gathered into the reused CPU buffer rather than a fresh copy per tensor.
  noGrad(() => {
    const raw = staging.take(it.byteLength);
    const typed = G.view_dtype(raw, it.dtype);
    const shaped = G.view(typed, it.shape);
    try {
      G.copy_(shaped, t);
      native.writeFrom(raw.h, fd, position);
    } finally {
      shaped.dispose();
      typed.dispose();
      raw.dispose();
    }
  });
}

/** @internal A temporary name beside the target, so the final rename stays within one file system. */
export function tempPathFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
}

/** @internal Makes renames in dir durable; some platforms cannot fsync a directory, which then stays best effort. */
export function syncDir(dir: string): void {
  let fd = -1;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Not supported here (e.g. Windows); the rename itself is still atomic.
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

/** @internal Removes a temporary file after a failure, keeping the original error. */
export function discard(tmp: string): void {
  try {
    fs.unlinkSync(tmp);
  } catch {
    // It was never created, or is gone already.
  }
}

/**
 * Writes tensors (any device, any layout; bool, integer, float16/bfloat16/float32/float64) and string metadata to a
 * safetensors file, atomically: the old file stays intact until the new one is complete on disk.
 */
export function saveSafetensors(file: string, tensors: TensorDict, metadata?: Record<string, string> | null): void {
  const items = plan(file, entriesOf(file, tensors));
  const meta = checkMetadata(file, metadata);
  const tmp = tempPathFor(file);
  try {
    writeFile(tmp, items, meta);
    fs.renameSync(tmp, file);
  } catch (e) {
    discard(tmp);
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(file, null, `writing failed, the previous file (if any) is unchanged: ${(e as Error).message}`, { cause: e });
  }
  syncDir(path.dirname(file));
}
