// TensorBoard event files, written without TensorFlow: npm has no maintained TensorBoard writer, and the format is
// small. A file is a sequence of TFRecords, each
//   uint64 length | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data   (little-endian)
// whose data is an Event protobuf: wall_time (field 1, double), step (2, int64), then file_version (3, string) in the
// first record or summary (5, Summary) after it; Summary.value (1, repeated Value), Value.tag (1, string) and
// Value.simple_value (2, float32). TensorBoard reads such scalars as TensorFlow's tf.summary.scalar wrote them in TF 1.
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum TFRecord uses; 0xE3069283 for "123456789". */
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(b: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masking, which keeps a CRC of data that itself holds CRCs from being degenerate. */
function maskedCrc(b: Uint8Array): number {
  const c = crc32c(b);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord frame around `data`. */
export function tfRecord(data: Uint8Array): Buffer {
  const head = Buffer.alloc(12);
  head.writeBigUInt64LE(BigInt(data.length), 0);
  head.writeUInt32LE(maskedCrc(head.subarray(0, 8)), 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(maskedCrc(data), 0);
  return Buffer.concat([head, data, tail]);
}

/**
 * The data of each complete, intact record of an event file, in order. A frame torn by a kill (short, or failing its
 * CRC) ends the list: nothing after it can be framed reliably.
 */
export function readRecords(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at + 12 <= buf.length) {
    const len = Number(buf.readBigUInt64LE(at));
    if (buf.readUInt32LE(at + 8) !== maskedCrc(buf.subarray(at, at + 8)) || at + 16 + len > buf.length) break;
    const data = buf.subarray(at + 12, at + 12 + len);
    if (buf.readUInt32LE(at + 12 + len) !== maskedCrc(data)) break;
    out.push(data);
    at += 16 + len;
  }
  return out;
}

// ---- protobuf, the few wire forms an Event needs ----

/** Base-128 varint of a non-negative integer up to 2^53 (steps), without BigInt. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

const key = (field: number, wire: number) => varint(field * 8 + wire);

function lengthDelimited(field: number, bytes: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([...key(field, 2), ...varint(bytes.length)]), bytes]);
}

function summaryValue(tag: string, value: number): Buffer {
  const f = Buffer.alloc(4);
  f.writeFloatLE(value, 0);
  return Buffer.concat([lengthDelimited(1, Buffer.from(tag, 'utf8')), Buffer.from(key(2, 5)), f]);
}

export interface Scalar {
  tag: string;
  value: number;
}

/** An Event message: the file-version header when `fileVersion` is given, else a summary of scalars. */
export function eventBytes(e: { wallTime: number; step: number; fileVersion?: string; scalars?: Scalar[] }): Buffer {
  if (!Number.isSafeInteger(e.step) || e.step < 0) throw new Error(`event step must be a non-negative integer, got ${e.step}`);
  const wall = Buffer.alloc(8);
  wall.writeDoubleLE(e.wallTime, 0);
  // proto3 leaves out a field at its default (step 0), as protobuf's own serializer does.
  const parts: Buffer[] = [Buffer.from(key(1, 1)), wall, Buffer.from(e.step ? [...key(2, 0), ...varint(e.step)] : [])];
  if (e.fileVersion !== undefined) parts.push(lengthDelimited(3, Buffer.from(e.fileVersion, 'utf8')));
  else parts.push(lengthDelimited(5, Buffer.concat((e.scalars ?? []).map((s) => lengthDelimited(1, summaryValue(s.tag, s.value))))));
  return Buffer.concat(parts);
}

/** The step of an Event message (0 when absent, as protobuf defaults it). */
export function eventStep(data: Buffer): number {
  let at = 0;
  const readVarint = (): number => {
    let n = 0;
    let scale = 1;
    for (;;) {
      const b = data[at++];
      if (b === undefined) throw new Error('event record ends inside a varint');
      n += (b & 0x7f) * scale;
      if (b < 0x80) return n;
      scale *= 0x80;
    }
  };
  while (at < data.length) {
    const k = readVarint();
    const [field, wire] = [Math.floor(k / 8), k % 8];
    if (field === 2 && wire === 0) return readVarint();
    if (wire === 0) readVarint();
    else if (wire === 1) at += 8;
    else if (wire === 5) at += 4;
    else if (wire === 2) {
      const len = readVarint(); // before `at +=` reads `at`
      at += len;
    }
    else throw new Error(`event record has an unexpected protobuf wire type ${wire}`);
  }
  return 0;
}

const EVENT_FILE = /^events\.out\.tfevents\./;
let fileCounter = 0;

/** TensorBoard's own naming (it finds files by "tfevents" and orders them by the time in the name). */
function eventFileName(now: number): string {
  return `events.out.tfevents.${Math.floor(now)}.${hostname()}.${process.pid}.${fileCounter++}`;
}

/**
 * Appends scalar events to one event file in `dir`. Opening keeps, from the event files already there (an earlier
 * part of a resumed run), the events up to `keepThrough` — the steps the resumed run does not redo — moved verbatim
 * (wall times included) into the new file, which replaces them.
 */
export class EventFileWriter {
  readonly path: string;

  constructor(dir: string, keepThrough: number, now = Date.now() / 1000) {
    const old = existsSync(dir) ? readdirSync(dir).filter((f) => EVENT_FILE.test(f)).sort() : [];
    const kept = old.flatMap((f) => readRecords(readFileSync(join(dir, f))).slice(1).filter((d) => eventStep(d) <= keepThrough));
    this.path = join(dir, eventFileName(now));
    const header = eventBytes({ wallTime: now, step: 0, fileVersion: 'brain.Event:2' });
    writeFileSync(this.path, Buffer.concat([header, ...kept].map(tfRecord)));
    for (const f of old) if (join(dir, f) !== this.path) rmSync(join(dir, f), { force: true });
  }

  add(step: number, scalars: Scalar[], wallTime = Date.now() / 1000): void {
    if (scalars.length) appendFileSync(this.path, tfRecord(eventBytes({ wallTime, step, scalars })));
  }
}
