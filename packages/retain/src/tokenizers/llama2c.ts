// The tokenizer format of llama2.c (`tok512.bin`, `tokenizer.bin`): a SentencePiece BPE vocabulary exported as
//   int32 max_token_length, then per token: float32 score, int32 byte length, the bytes.
// Encoding follows SentencePiece's BPE as llama2.c does it: a dummy-prefix space, one token per UTF-8 character (or
// byte-fallback tokens <0x00>.. at ids 3..258 when a character is unknown), then repeated merging of the adjacent pair
// whose merged string has the highest score.
import { readFileSync } from 'node:fs';

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  encode(text: string, opts?: { bos?: boolean; eos?: boolean }): number[];
  decode(ids: number[]): string;
  /** The text of one token as it appears inside a sequence (no special handling of leading spaces). */
  piece(id: number): string;
}

export class Llama2cTokenizer implements Tokenizer {
  readonly vocab: string[];
  readonly scores: Float32Array;
  readonly maxTokenLength: number;
  private readonly lookup = new Map<string, number>();
  readonly bosId = 1;
  readonly eosId = 2;

  constructor(bytes: Uint8Array, source = 'tokenizer') {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < 4) throw new Error(`${source}: too short to be a llama2.c tokenizer`);
    this.maxTokenLength = dv.getInt32(0, true);
    const vocab: string[] = [];
    const scores: number[] = [];
    const dec = new TextDecoder('utf-8');
    let off = 4;
    while (off < bytes.byteLength) {
      if (off + 8 > bytes.byteLength) throw new Error(`${source}: truncated entry at byte ${off}`);
      scores.push(dv.getFloat32(off, true));
      const len = dv.getInt32(off + 4, true);
      off += 8;
      if (len < 0 || off + len > bytes.byteLength) throw new Error(`${source}: token ${vocab.length} has a bad length ${len}`);
      vocab.push(dec.decode(bytes.subarray(off, off + len)));
      off += len;
    }
    this.vocab = vocab;
    this.scores = Float32Array.from(scores);
    // First occurrence wins, as in a sorted lookup over unique pieces.
    vocab.forEach((p, i) => {
      if (!this.lookup.has(p)) this.lookup.set(p, i);
    });
  }

  static fromFile(path: string): Llama2cTokenizer {
    return new Llama2cTokenizer(readFileSync(path), path);
  }

  get vocabSize(): number {
    return this.vocab.length;
  }

  encode(text: string, opts: { bos?: boolean; eos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (opts.bos ?? true) ids.push(this.bosId);
    if (text.length > 0) {
      const space = this.lookup.get(' ');
      if (space !== undefined) ids.push(space);
    }
    const enc = new TextEncoder();
    for (const ch of text) {
      const id = this.lookup.get(ch);
      if (id !== undefined) {
        ids.push(id);
      } else {
        // Byte fallback: the first 3 ids are <unk>, <s>, </s>, then 256 byte tokens.
        for (const b of enc.encode(ch)) ids.push(b + 3);
      }
    }
    // Greedy merges, highest score first: O(n²) like the reference, fine for prompt-sized texts.
    const start = opts.bos ?? true ? 1 : 0;
    for (;;) {
      let best = -Infinity;
      let bestId = -1;
      let bestIdx = -1;
      for (let i = start; i < ids.length - 1; i++) {
        const merged = this.vocab[ids[i]] + this.vocab[ids[i + 1]];
        const id = this.lookup.get(merged);
        if (id !== undefined && this.scores[id] > best) {
          best = this.scores[id];
          bestId = id;
          bestIdx = i;
        }
      }
      if (bestIdx < 0) break;
      ids.splice(bestIdx, 2, bestId);
    }
    if (opts.eos) ids.push(this.eosId);
    return ids;
  }

  piece(id: number): string {
    const p = this.vocab[id];
    if (p === undefined) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocab.length})`);
    return p;
  }

  decode(ids: number[]): string {
    const bytes: number[] = [];
    const enc = new TextEncoder();
    let prev = -1;
    for (const id of ids) {
      if (id === this.bosId || id === this.eosId) {
        prev = id;
        continue;
      }
      let p = this.piece(id);
      // SentencePiece drops the dummy-prefix space of the first piece after BOS.
      if ((prev === this.bosId || prev === -1) && p.startsWith(' ')) p = p.slice(1);
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p);
      if (m) bytes.push(parseInt(m[1], 16));
      else for (const b of enc.encode(p)) bytes.push(b);
      prev = id;
    }
    return new TextDecoder('utf-8').decode(Uint8Array.from(bytes));
  }
}
