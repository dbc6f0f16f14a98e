// A data record as every reader yields it, the error a bad record or file raises, and how a message lists a
// record's fields. Readers, formats and conversations all speak this vocabulary, so it sits below them.

/** One record of a data file: its fields as parsed, plus an id (the file's own, or one retain assigns). */
export type Record_ = Record<string, unknown> & { id: string };

/** A data file or record that cannot be used; the message names the file or record and the fix. */
export class DataError extends Error {}

/** The fields a record has, for a message about one it lacks ('id' is left out: retain adds one when the file has none). */
export function recordFields(r: Record<string, unknown>): string {
  const keys = Object.keys(r).filter((k) => k !== 'id');
  return keys.length ? `record has: ${keys.join(', ')}` : 'record has no fields';
}
