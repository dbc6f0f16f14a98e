// The tokenizer format of llama2.c (`tok512.bin`, `tokenizer.bin`): a SentencePiece BPE vocabulary exported as
//   int32 max_token_length, then per token: float32 score, int32 byte length, the bytes.
// Encoding follows SentencePiece's BPE as llama2.c does it: a dummy-prefix space, one token per UTF-8 character (or
// byte-fallback tokens <0x00>.. at ids 3..258 when a character is unknown), then repeated merging of the adjacent pair
// whose merged string has the highest score.
import { readUserFile } from '../files.js';
import type { Tokenizer } from './types.js';

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
    return new Llama2cTokenizer(readUserFile(path), path);
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
    // Greedy merges as the reference does them — the highest-scoring adjacent pair first, the leftmost among equals —
    // but with a heap of candidate pairs over a linked list, so a long text costs O(n log n), not the reference's
    // O(n²) rescans (a 500,000-character corpus took over half an hour that way).
    const start = opts.bos ?? true ? 1 : 0;
    const merged = this.mergeGreedy(ids.slice(start));
    ids.length = start;
    for (const t of merged) ids.push(t);
    if (opts.eos) ids.push(this.eosId);
    return ids;
  }

  /** Applies the merges to a token sequence (see encode). */
  private mergeGreedy(seq: number[]): number[] {
    const n = seq.length;
    if (n < 2) return seq;
    const tok = Int32Array.from(seq);
    const prev = new Int32Array(n).map((_, i) => i - 1);
    const next = new Int32Array(n).map((_, i) => (i + 1 < n ? i + 1 : -1));
    const alive = new Uint8Array(n).fill(1);
    // Max-heap of [score, left position, left token, right token]; stale entries are skipped when popped.
    const heap: [number, number, number, number][] = [];
    const before = (a: [number, number, number, number], b: [number, number, number, number]) => a[0] > b[0] || (a[0] === b[0] && a[1] < b[1]);
    const push = (e: [number, number, number, number]) => {
      heap.push(e);
      let i = heap.length - 1;
      while (i > 0) {
        const p = (i - 1) >> 1;
        if (!before(heap[i], heap[p])) break;
        [heap[i], heap[p]] = [heap[p], heap[i]];
        i = p;
      }
    };
    const pop = () => {
      const top = heap[0];
      const last = heap.pop()!;
      if (heap.length) {
        heap[0] = last;
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < heap.length && before(heap[l], heap[m])) m = l;
          if (r < heap.length && before(heap[r], heap[m])) m = r;
          if (m === i) break;
          [heap[i], heap[m]] = [heap[m], heap[i]];
          i = m;
        }
      }
      return top;
    };
    const consider = (i: number) => {
      const j = i >= 0 ? next[i] : -1;
      if (j < 0) return;
      const id = this.lookup.get(this.vocab[tok[i]] + this.vocab[tok[j]]);
      if (id !== undefined) push([this.scores[id], i, tok[i], tok[j]]);
    };
    for (let i = 0; i < n - 1; i++) consider(i);
    while (heap.length) {
      const [, i, a, b] = pop();
      const j = next[i];
      if (!alive[i] || j < 0 || tok[i] !== a || tok[j] !== b) continue;
      tok[i] = this.lookup.get(this.vocab[a] + this.vocab[b])!;
      alive[j] = 0;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      consider(prev[i]);
      consider(i);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(tok[i]);
    return out;
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
