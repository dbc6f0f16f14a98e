// Deduplication of synthesised text: exact duplicates after normalisation, and near duplicates by the Jaccard
// similarity of word n-gram sets. MinHash signatures split into LSH bands find the candidate pairs (so checking a new
// text costs about the same whatever the number already kept); the exact Jaccard of the two n-gram sets then decides,
// so the threshold means what it says rather than a MinHash estimate of it.
import { fnv1a } from '../data/random.js';

/** Lower case, letters and digits only, single spaces: the key under which two texts count as the same. */
export function normalize(text: string): string {
  return text.toLowerCase().normalize('NFKC').replace(/[^\p{L}\p{N}]+/gu, ' ').trim();
}

/** Word n-grams of the normalised text (the whole text as one gram when it is shorter than n words). */
export function shingles(text: string, n: number): Set<string> {
  const w = normalize(text).split(' ').filter(Boolean);
  const out = new Set<string>();
  if (w.length === 0) return out;
  if (w.length < n) {
    out.add(w.join(' '));
    return out;
  }
  for (let i = 0; i + n <= w.length; i++) out.add(w.slice(i, i + n).join(' '));
  return out;
}

export function jaccard(a: Set<string>, b: Set<string>): number {
  if (a.size === 0 && b.size === 0) return 1;
  let inter = 0;
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  for (const x of small) if (large.has(x)) inter++;
  return inter / (a.size + b.size - inter);
}


// A 32-bit finaliser (murmur3's): each signature row hashes the shingle's hash with its own seed.
function mix(x: number, seed: number): number {
  let h = (x ^ seed) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

export function minhash(set: Set<string>, perms: number): Uint32Array {
  const sig = new Uint32Array(perms).fill(0xffffffff);
  for (const s of set) {
    const h = fnv1a(s);
    for (let p = 0; p < perms; p++) {
      const v = mix(h, Math.imul(p + 1, 0x9e3779b1));
      if (v < sig[p]) sig[p] = v;
    }
  }
  return sig;
}

export interface DedupOptions {
  /** Drop texts whose normalised form was seen before. Default true. */
  exact?: boolean;
  /** Drop texts whose word n-gram Jaccard similarity with a kept text reaches this (0..1); null turns it off. Default 0.7. */
  jaccard?: number | null;
  /** Words per n-gram. Default 3. */
  ngram?: number;
  /** LSH bands × rows per band = MinHash permutations. Defaults 16 × 4: pairs at Jaccard 0.5 are found with
   * probability 1 − (1 − 0.5⁴)¹⁶ ≈ 0.64, at 0.7 with ≈ 0.98, at 0.8 with > 0.999. */
  bands?: number;
  rows?: number;
}

export type DedupVerdict = { keep: true } | { keep: false; reason: 'duplicate' | 'near_duplicate'; of: number; similarity: number };

/** Keeps an index of accepted texts; `check` says whether a new one is new enough, `add` records it. */
export class Deduplicator {
  private readonly exactKeys = new Map<string, number>();
  private readonly sets: Set<string>[] = [];
  private readonly buckets = new Map<string, number[]>();
  readonly exact: boolean;
  readonly threshold: number | null;
  readonly n: number;
  readonly bands: number;
  readonly rows: number;

  constructor(o: DedupOptions = {}) {
    this.exact = o.exact ?? true;
    this.threshold = o.jaccard === undefined ? 0.7 : o.jaccard;
    this.n = o.ngram ?? 3;
    this.bands = o.bands ?? 16;
    this.rows = o.rows ?? 4;
    if (this.threshold !== null && !(this.threshold > 0 && this.threshold <= 1)) throw new RangeError(`dedup: jaccard threshold must be in (0, 1], got ${this.threshold}`);
    if (!(Number.isInteger(this.n) && this.n >= 1)) throw new RangeError(`dedup: ngram must be a positive integer, got ${this.n}`);
  }

  /** The options with their defaults filled in. */
  get settings(): Required<DedupOptions> {
    return { exact: this.exact, jaccard: this.threshold, ngram: this.n, bands: this.bands, rows: this.rows };
  }

  get size(): number {
    return this.sets.length;
  }

  private bandKeys(set: Set<string>): string[] {
    const sig = minhash(set, this.bands * this.rows);
    return Array.from({ length: this.bands }, (_, b) => `${b}:${Array.from(sig.subarray(b * this.rows, (b + 1) * this.rows)).join(',')}`);
  }

  check(text: string): DedupVerdict {
    const key = normalize(text);
    if (this.exact) {
      const hit = this.exactKeys.get(key);
      if (hit !== undefined) return { keep: false, reason: 'duplicate', of: hit, similarity: 1 };
    }
    if (this.threshold === null) return { keep: true };
    const set = shingles(text, this.n);
    const seen = new Set<number>();
    let best: DedupVerdict = { keep: true };
    for (const k of this.bandKeys(set)) {
      for (const j of this.buckets.get(k) ?? []) {
        if (seen.has(j)) continue;
        seen.add(j);
        const sim = jaccard(set, this.sets[j]);
        if (sim >= this.threshold && (best.keep || sim > best.similarity)) best = { keep: false, reason: 'near_duplicate', of: j, similarity: sim };
      }
    }
    return best;
  }

  /** Records an accepted text; returns its index. */
  add(text: string): number {
    const i = this.sets.length;
    const key = normalize(text);
    if (!this.exactKeys.has(key)) this.exactKeys.set(key, i);
    const set = shingles(text, this.n);
    this.sets.push(set);
    if (this.threshold !== null) {
      for (const k of this.bandKeys(set)) {
        const list = this.buckets.get(k);
        if (list) list.push(i);
        else this.buckets.set(k, [i]);
      }
    }
    return i;
  }
}

/** The texts of `texts` that survive deduplication in order (first occurrence kept), with the reason for each drop. */
export function dedupe(texts: string[], o: DedupOptions = {}): { kept: number[]; dropped: { index: number; reason: string; of: number }[] } {
  const d = new Deduplicator(o);
  const kept: number[] = [];
  const dropped: { index: number; reason: string; of: number }[] = [];
  texts.forEach((t, i) => {
    const v = d.check(t);
    if (v.keep) {
      d.add(t);
      kept.push(i);
    } else dropped.push({ index: i, reason: v.reason, of: kept[v.of] });
  });
  return { kept, dropped };
}
