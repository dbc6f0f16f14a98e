// Record readers: JSONL, JSON (array, or {data: [...]}), CSV/TSV (RFC 4180 quoting, CRLF tolerated), Parquet,
// and plain text. Every record gets a stable `id` (the file's base name and the row number unless the record has its
// own `id`) that follows the sample through training and evaluation.
import { readFileSync, existsSync } from 'node:fs';
import { basename, extname } from 'node:path';

export type Record_ = Record<string, unknown> & { id: string };

export class DataError extends Error {}

/** A text data file as UTF-8: a byte-order mark (Windows editors write one) is dropped; UTF-16 is refused by name. */
function need(path: string): string {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`);
  const buf = readFileSync(path);
  if (buf.length >= 2 && ((buf[0] === 0xff && buf[1] === 0xfe) || (buf[0] === 0xfe && buf[1] === 0xff))) {
    throw new DataError(`${path}: the file is UTF-16; data files must be UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 in > out)`);
  }
  const start = buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0;
  return buf.toString('utf8', start);
}

function withIds(rows: Record<string, unknown>[], path: string): Record_[] {
  const stem = basename(path, extname(path));
  return rows.map((r, i) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new DataError(`${path}: record ${i + 1} is not an object`);
    const own = r.id;
    return { ...r, id: typeof own === 'string' || typeof own === 'number' ? String(own) : `${stem}:${i}` };
  });
}

export function readJsonl(path: string): Record_[] {
  const rows: Record<string, unknown>[] = [];
  need(path).split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    try {
      rows.push(JSON.parse(line));
    } catch (e) {
      throw new DataError(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
  });
  return withIds(rows, path);
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

/** Parses delimited text with quoted fields ("" escapes a quote); the first row is the header. */
export function parseDelimited(text: string, delimiter: string, source = 'csv'): Record<string, string>[] {
  const rows: string[][] = [];
  let field = '';
  let row: string[] = [];
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += c;
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
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
    } else field += c;
  }
  if (quoted) throw new DataError(`${source}: a quoted field is not closed`);
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  if (rows.length === 0) return [];
  const header = rows[0];
  return rows.slice(1).map((r, i) => {
    if (r.length !== header.length) throw new DataError(`${source}: row ${i + 2} has ${r.length} fields, the header has ${header.length}`);
    return Object.fromEntries(header.map((h, j) => [h, r[j]]));
  });
}

export function readCsv(path: string, delimiter?: string): Record_[] {
  const d = delimiter ?? (/\.tsv$|\.txt$/i.test(path) ? '\t' : ',');
  return withIds(parseDelimited(need(path), d, path), path);
}

/** Plain text as one record per blank-line-separated document (`split: 'paragraph'`), per line, or whole. */
export function readText(path: string, split: 'paragraph' | 'line' | 'none' = 'paragraph'): Record_[] {
  // Windows line ends stay in the text (a character vocabulary without '\r' reads '\r\n' as '\n'); they only
  // separate lines and paragraphs here.
  const t = need(path);
  const parts = split === 'none' ? [t] : split === 'line' ? t.split(/\r?\n/) : t.split(/\r?\n\s*\n/);
  return withIds(parts.filter((p) => p.trim()).map((text) => ({ text })), path);
}

export async function readParquet(path: string): Promise<Record_[]> {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`);
  const { parquetReadObjects } = await import('hyparquet');
  const buf = readFileSync(path);
  const file = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const rows = (await parquetReadObjects({ file })) as Record<string, unknown>[];
  // BigInt columns become numbers when they fit, so records stay JSON-friendly.
  for (const r of rows) for (const [k, v] of Object.entries(r)) if (typeof v === 'bigint') r[k] = Number(v);
  return withIds(rows, path);
}

/** Chooses the reader by extension. */
export async function readRecords(path: string, opts: { format?: string; textSplit?: 'paragraph' | 'line' | 'none' } = {}): Promise<Record_[]> {
  const ext = (opts.format ?? extname(path).slice(1)).toLowerCase();
  switch (ext) {
    case 'jsonl': case 'ndjson': return readJsonl(path);
    case 'json': return readJson(path);
    case 'csv': return readCsv(path, ',');
    case 'tsv': return readCsv(path, '\t');
    case 'parquet': return readParquet(path);
    case 'txt': case 'text': case 'md': return readText(path, opts.textSplit);
    default: throw new DataError(`${path}: unknown data format '${ext}'; use jsonl, json, csv, tsv, parquet or txt (or set format)`);
  }
}
