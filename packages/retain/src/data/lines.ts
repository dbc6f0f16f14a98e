// A text file read line by line in fixed-size chunks, so that a file past Node's string limit (~512 MB: one
// readFileSync().toString() fails on it) streams with memory bounded by the chunk and the longest line.
import { closeSync, openSync, readSync } from 'node:fs';
import { constants } from 'node:buffer';
import { decodeUtf8 } from '../files.js';
import { DataError } from './records.js';

export interface Line {
  text: string;
  /** 1-based line number in the file. */
  line: number;
}

const CHUNK_BYTES = 1 << 20;

/** The bytes before a line's '\n', without a '\r' that ends them (CRLF files). */
function lineText(bytes: Buffer, path: string, line: number): string {
  const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.length - 1 : bytes.length;
  if (end > constants.MAX_STRING_LENGTH) throw new DataError(`${path}:${line}: the line is ${end} bytes, past the ${constants.MAX_STRING_LENGTH} characters one JavaScript string holds; split the record`);
  try {
    return decodeUtf8(bytes.subarray(0, end), path, 0, line);
  } catch (e) {
    throw new DataError((e as Error).message);
  }
}

/** A byte-order mark: UTF-16 is refused by name, UTF-8's skipped (Windows editors write one). */
function bomLength(head: Buffer, path: string): number {
  if (head.length >= 2 && ((head[0] === 0xff && head[1] === 0xfe) || (head[0] === 0xfe && head[1] === 0xff))) {
    throw new DataError(`${path}: the file is UTF-16; data files must be UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 in > out)`);
  }
  return head.length >= 3 && head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf ? 3 : 0;
}

/**
 * The lines of a UTF-8 file (split at '\n', a trailing '\r' dropped; a last line without '\n' included), read
 * `chunkBytes` at a time. A line's bytes are gathered before decoding, so a character split across chunks is whole.
 */
export function* readLines(path: string, chunkBytes = CHUNK_BYTES): Generator<Line> {
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(chunkBytes);
    let pieces: Buffer[] = [];
    let line = 1;
    let first = true;
    for (;;) {
      const n = readSync(fd, chunk, 0, chunkBytes, null);
      if (n === 0) break;
      let data = chunk.subarray(0, n);
      if (first) {
        // The mark is judged on the file's first 3 bytes, even when chunks are smaller.
        while (data.length < 3) {
          const more = Buffer.alloc(chunkBytes);
          const m = readSync(fd, more, 0, chunkBytes, null);
          if (m === 0) break;
          data = Buffer.concat([data, more.subarray(0, m)]);
        }
        data = data.subarray(bomLength(data, path));
        first = false;
      }
      let from = 0;
      for (let nl = data.indexOf(0x0a, from); nl >= 0; nl = data.indexOf(0x0a, from)) {
        const bytes = pieces.length ? Buffer.concat([...pieces, data.subarray(from, nl)]) : data.subarray(from, nl);
        pieces = [];
        yield { text: lineText(bytes, path, line), line };
        line++;
        from = nl + 1;
      }
      // The unfinished line is copied: the chunk buffer is reused by the next read.
      if (from < data.length) pieces.push(Buffer.from(data.subarray(from)));
    }
    if (pieces.length) yield { text: lineText(Buffer.concat(pieces), path, line), line };
  } finally {
    closeSync(fd);
  }
}
