// Reading files a user named (configs, data, task files, tokenizers). Node's own errors for a folder given where a
// file is needed (EISDIR) and for bytes that are not UTF-8 (silently U+FFFD) name neither the path nor the line.
import { readFileSync, statSync } from 'node:fs';
import { isUtf8 } from 'node:buffer';

/** What each Node filesystem error code means, in words a user can act on. */
export const FS_ERRORS: Record<string, string> = {
  EEXIST: 'a file is in the way where a folder is needed (or the target exists)',
  EISDIR: 'is a folder, where a file is needed',
  ENOTDIR: 'part of this path is a file, where a folder is needed',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted (permissions, or an immutable file)',
  ENOSPC: 'no space left on the device',
  EROFS: 'read-only filesystem',
  ENOENT: 'no such file or folder',
  EMFILE: 'too many open files',
};

/** A Node filesystem error as "<path>: <what it means> (<syscall>)", or null for any other error. */
export function describeFsError(e: Error): string | null {
  const { code, path, dest, syscall } = e as NodeJS.ErrnoException & { dest?: string };
  if (!code || !(code in FS_ERRORS) || !path) return null;
  return `${path}${dest ? ` → ${dest}` : ''}: ${FS_ERRORS[code]} (${syscall ?? 'fs'} ${code})`;
}

/** The bytes of `path`; a folder is refused with its path (readFileSync's EISDIR has none). */
export function readUserFile(path: string): Buffer {
  if (statSync(path, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`${path}: ${FS_ERRORS.EISDIR}`);
  return readFileSync(path);
}

/**
 * `buf` (from byte `start`) as UTF-8, refusing bytes that are not: decoded leniently they would become U+FFFD and be
 * trained or scored as such. The error names the file's first bad line and the fix; `firstLine` is the file line
 * `buf` starts on (a streamed piece of a file).
 */
export function decodeUtf8(buf: Buffer, path: string, start = 0, firstLine = 1): string {
  if (isUtf8(buf.subarray(start))) return buf.toString('utf8', start);
  let line = firstLine;
  for (let from = start; from < buf.length; line++) {
    const nl = buf.indexOf(0x0a, from);
    const end = nl < 0 ? buf.length : nl;
    if (!isUtf8(buf.subarray(from, end))) break;
    from = end + 1;
  }
  throw new Error(`${path}:${line}: not valid UTF-8 (a Latin-1 or Windows-1252 file?); convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8 in > out`);
}
