// Record readers: JSONL, JSON (array, or {data: [...]}), CSV/TSV (RFC 4180 quoting, CRLF tolerated), Parquet
// (every codec hyparquet-compressors decodes), Arrow IPC and Hugging Face save_to_disk folders (arrow.ts), and plain
// text. Every record gets a stable `id` (the file's base name and the row number unless the record has its
// own `id`) that follows the sample through training and evaluation.
import { existsSync, statSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { decodeUtf8, FS_ERRORS, readUserFile } from '../files.js';
import { readLines } from './lines.js';
import { DataError, type Record_ } from './records.js';
import { isSavedDataset, readArrowRows, savedDatasetFiles, SavedDatasetError } from './arrow.js';

/**
 * A text data file as UTF-8: a byte-order mark (Windows editors write one) is dropped; UTF-16 is refused by name, and
 * so is any other byte that is not UTF-8, with its line.
 */
function need(path: string): string {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`);
  const buf = readUserFile(path);
  if (buf.length >= 2 && ((buf[0] === 0xff && buf[1] === 0xfe) || (buf[0] === 0xfe && buf[1] === 0xff))) {
    throw new DataError(`${path}: the file is UTF-16; data files must be UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 in > out)`);
  }
  const start = buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0;
  try {
    return decodeUtf8(buf, path, start);
  } catch (e) {
    throw new DataError((e as Error).message);
  }
}

// Where each record starts in its file (1-based line), and whether its text spans lines as the file does (plain
// text, CSV) or sits on the record's one line (JSONL), so that errors about a record's content can point at a line.
const ORIGIN = new WeakMap<object, { line: number; multiline: boolean }>();

/** The file line holding `offset` of the record's string field `field` (its first line without one), when known. */
export function recordLine(r: Record_, field?: string, offset = 0): number | undefined {
  const o = ORIGIN.get(r);
  if (!o) return undefined;
  const v = field === undefined ? undefined : r[field];
  return o.line + (o.multiline && typeof v === 'string' ? v.slice(0, offset).split('\n').length - 1 : 0);
}

function withIds(rows: Record<string, unknown>[], path: string, origin?: { lines: number[]; multiline: boolean }): Record_[] {
  const stem = basename(path, extname(path));
  return rows.map((r, i) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new DataError(`${path}: record ${i + 1} is not an object`);
    const own = r.id;
    const rec = { ...r, id: typeof own === 'string' || typeof own === 'number' ? String(own) : `${stem}:${i}` };
    if (origin) ORIGIN.set(rec, { line: origin.lines[i], multiline: origin.multiline });
    return rec;
  });
}

/** JSONL, streamed line by line (lines.ts): a file past Node's string limit reads as any other. */
export function readJsonl(path: string): Record_[] {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`);
  if (statSync(path).isDirectory()) throw new DataError(`${path}: ${FS_ERRORS.EISDIR}`);
  const rows: Record<string, unknown>[] = [];
  const lines: number[] = [];
  for (const { text, line } of readLines(path)) {
    if (!text.trim()) continue;
    try {
      rows.push(JSON.parse(text));
      lines.push(line);
    } catch (e) {
      throw new DataError(`${path}:${line}: not valid JSON (${(e as Error).message})`);
    }
  }
  return withIds(rows, path, { lines, multiline: false });
}

export function readJson(path: string): Record_[] {
  let v: unknown;
  try {
    v = JSON.parse(need(path));
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw new DataError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  const arr = Array.isArray(v) ? v : v && typeof v === 'object' && Array.isArray((v as { data?: unknown }).data) ? (v as { data: unknown[] }).data : null;
  if (!arr) throw new DataError(`${path}: expected a JSON array of records (or an object with a "data" array)`);
  return withIds(arr as Record<string, unknown>[], path);
}

/**
 * Parses delimited text with quoted fields ("" escapes a quote); the first row is the header. `lines`, when given,
 * receives the file line each data row starts on.
 */
export function parseDelimited(text: string, delimiter: string, source = 'csv', lines?: number[]): Record<string, string>[] {
  const rows: string[][] = [];
  const starts: number[] = [];
  let field = '';
  let row: string[] = [];
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else {
        if (c === '\n') line++;
        field += c;
      }
      continue;
    }
    if (c === '"' && field === '') quoted = true;
    else if (c === delimiter) {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      field = '';
      if (row.length > 1 || row[0] !== '') {
        rows.push(row);
        starts.push(rowLine);
      }
      row = [];
      rowLine = ++line;
    } else field += c;
  }
  if (quoted) throw new DataError(`${source}: a quoted field is not closed`);
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
    starts.push(rowLine);
  }
  if (rows.length === 0) return [];
  lines?.push(...starts.slice(1));
  const header = rows[0];
  return rows.slice(1).map((r, i) => {
    if (r.length !== header.length) throw new DataError(`${source}: row ${i + 2} has ${r.length} fields, the header has ${header.length}`);
    return Object.fromEntries(header.map((h, j) => [h, r[j]]));
  });
}

export function readCsv(path: string, delimiter?: string): Record_[] {
  const d = delimiter ?? (/\.tsv$|\.txt$/i.test(path) ? '\t' : ',');
  const lines: number[] = [];
  return withIds(parseDelimited(need(path), d, path, lines), path, { lines, multiline: true });
}

/** Plain text as one record per blank-line-separated document (`split: 'paragraph'`), per line, or whole. */
export function readText(path: string, split: 'paragraph' | 'line' | 'none' = 'paragraph'): Record_[] {
  // Windows line ends stay in the text (a character vocabulary without '\r' reads '\r\n' as '\n'); they only
  // separate lines and paragraphs here.
  const t = need(path);
  const parts = split === 'none' ? [{ text: t, line: 1 }] : splitLines(t, split === 'line' ? /\r?\n/g : /\r?\n\s*\n/g);
  const kept = parts.filter((p) => p.text.trim());
  return withIds(kept.map(({ text }) => ({ text })), path, { lines: kept.map((p) => p.line), multiline: true });
}

/** Splits at each match of `sep` (global), with the line each piece starts on. */
function splitLines(t: string, sep: RegExp): { text: string; line: number }[] {
  const out: { text: string; line: number }[] = [];
  let start = 0;
  let line = 1;
  for (const m of t.matchAll(sep)) {
    out.push({ text: t.slice(start, m.index), line });
    const next = m.index + m[0].length;
    line += t.slice(start, next).split('\n').length - 1;
    start = next;
  }
  out.push({ text: t.slice(start), line });
  return out;
}

// Parquet codecs with a decompressor (hyparquet's own SNAPPY, the rest from hyparquet-compressors), for the error
// about any other.
const PARQUET_CODECS = 'zstd, gzip, brotli, snappy, lz4 or uncompressed';

export async function readParquet(path: string): Promise<Record_[]> {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`);
  const [{ parquetReadObjects }, { compressors }] = await Promise.all([import('hyparquet'), import('hyparquet-compressors')]);
  const buf = readUserFile(path);
  const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  let rows: Record<string, unknown>[];
  try {
    rows = (await parquetReadObjects({ file, compressors })) as Record<string, unknown>[];
  } catch (e) {
    const codec = /unsupported compression codec: (\w+)/.exec((e as Error).message)?.[1];
    if (codec) throw new DataError(`${path}: pages compressed with ${codec}, which retain cannot decompress; write the file with ${PARQUET_CODECS} (pyarrow: pq.write_table(table, path, compression='zstd'))`);
    throw new DataError(`${path}: not a readable Parquet file (${(e as Error).message})`);
  }
  return withIds(rows.map(plainNumbers), path);
}

/** Arrow IPC data: one .arrow file, or every shard of a Hugging Face save_to_disk folder in state.json's order. */
export async function readArrow(path: string, folder: boolean): Promise<Record_[]> {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`);
  try {
    const rows = await readArrowRows(folder ? savedDatasetFiles(path) : [path]);
    return withIds(rows.map(plainNumbers), path);
  } catch (e) {
    throw e instanceof SavedDatasetError ? new DataError(e.message) : e;
  }
}

/**
 * 64-bit integers (BigInt in both hyparquet and Arrow) become numbers when a double holds them exactly, else decimal
 * strings, at any depth, so that records stay JSON-friendly.
 */
function plainNumbers<T>(v: T): T {
  if (typeof v === 'bigint') return (Number.isSafeInteger(Number(v)) ? Number(v) : String(v)) as T;
  if (Array.isArray(v)) return v.map(plainNumbers) as T;
  if (v && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainNumbers(x)])) as T;
  }
  return v;
}

/** Chooses the reader by extension. */
export async function readRecords(path: string, opts: { format?: string; textSplit?: 'paragraph' | 'line' | 'none' } = {}): Promise<Record_[]> {
  // Before the extension is looked at: a folder's has none, and 'unknown data format' would hide what is wrong.
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) {
    if (isSavedDataset(path)) return readArrow(path, true);
    throw new DataError(`${path}: ${FS_ERRORS.EISDIR} (or a Hugging Face save_to_disk folder, with state.json and data-*.arrow)`);
  }
  const ext = (opts.format ?? extname(path).slice(1)).toLowerCase();
  switch (ext) {
    case 'jsonl': case 'ndjson': return readJsonl(path);
    case 'json': return readJson(path);
    case 'csv': return readCsv(path, ',');
    case 'tsv': return readCsv(path, '\t');
    case 'parquet': return readParquet(path);
    case 'arrow': return readArrow(path, false);
    case 'txt': case 'text': case 'md': return readText(path, opts.textSplit);
    default: throw new DataError(`${path}: unknown data format '${ext}'; use jsonl, json, csv, tsv, parquet, arrow or txt, or a save_to_disk folder (or set reader)`);
  }
}
