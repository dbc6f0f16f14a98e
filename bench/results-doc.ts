// docs/RESULTS.md blocks that a benchmark rewrites with --write-docs: the text between `<!-- <marker>:start -->` and
// `<!-- <marker>:end -->` is replaced, or the block is appended (under `heading`, when given) if the markers are absent.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const RESULTS = join(new URL('..', import.meta.url).pathname, 'docs', 'RESULTS.md');

export function writeResultsBlock(marker: string, body: string, heading?: string): void {
  const start = `<!-- ${marker}:start -->`;
  const end = `<!-- ${marker}:end -->`;
  const doc = readFileSync(RESULTS, 'utf8');
  const block = `${start}\n${body.trim()}\n${end}`;
  const i = doc.indexOf(start);
  const j = doc.indexOf(end);
  writeFileSync(RESULTS, i >= 0 && j > i ? doc.slice(0, i) + block + doc.slice(j + end.length) : `${doc.trimEnd()}\n\n${heading ? `${heading}\n\n` : ''}${block}\n`);
}
