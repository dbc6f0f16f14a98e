// Batching: collation into padded next-token batches, and a deterministic loader whose order is reshuffled with a
// new seed every epoch and whose position is part of a checkpoint (exact resume).
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Example } from './formats.js';

export const IGNORE_INDEX = -100;

export interface Batch {
  /** Inputs [B, T] int64 (right-padded with padId). */
  ids: Tensor;
  /** Next-token targets [B, T] int64; IGNORE_INDEX where there is no loss. */
  targets: Tensor;
  /** Per-sample class labels [B] for classification examples. */
  labels?: Tensor;
  /** Dense inputs [B, ...featureShape] for examples that carry features (images). */
  features?: Tensor;
  sampleIds: string[];
  sources: string[];
  /** Trained tokens per sample (for per-sample losses and token shares). */
  tokenCounts: number[];
}

/** Pads to the longest example; position t predicts token t+1, and only masked-in targets count. */
export function collate(examples: Example[], padId = 0): Batch {
  if (examples.length === 0) throw new Error('collate: empty batch');
  if (examples[0].features) return collateFeatures(examples);
  if (examples.every((e) => e.label !== undefined)) return collateLabelledText(examples, padId);
  const T = Math.max(...examples.map((e) => e.ids.length)) - 1;
  if (T < 1) throw new Error(`collate: examples need at least 2 tokens (sample ${examples[0].id} has ${examples[0].ids.length})`);
  const B = examples.length;
  const ids = new BigInt64Array(B * T).fill(BigInt(padId));
  const tg = new BigInt64Array(B * T).fill(BigInt(IGNORE_INDEX));
  const tokenCounts: number[] = [];
  examples.forEach((e, b) => {
    let n = 0;
    for (let t = 0; t < e.ids.length - 1; t++) {
      ids[b * T + t] = BigInt(e.ids[t]);
      if (e.lossMask[t + 1]) {
        tg[b * T + t] = BigInt(e.ids[t + 1]);
        n++;
      }
    }
    tokenCounts.push(n);
  });
  const batch: Batch = {
    ids: torch.tensor(ids, { shape: [B, T] }),
    targets: torch.tensor(tg, { shape: [B, T] }),
    sampleIds: examples.map((e) => e.id),
    sources: examples.map((e) => e.source),
    tokenCounts,
  };
  return batch;
}

/**
 * Labelled text (classification format): every token of each example is input, right-padded with padId to the
 * longest ([B, T]); one label per sample and no token targets, as for images.
 */
function collateLabelledText(examples: Example[], padId: number): Batch {
  const T = Math.max(...examples.map((e) => e.ids.length));
  const ids = new BigInt64Array(examples.length * T).fill(BigInt(padId));
  examples.forEach((e, b) => e.ids.forEach((id, t) => (ids[b * T + t] = BigInt(id))));
  return {
    ids: torch.tensor(ids, { shape: [examples.length, T] }),
    targets: torch.zeros([0], { dtype: 'int64' }),
    labels: torch.tensor(examples.map((e) => e.label!), { dtype: 'int64' }),
    sampleIds: examples.map((e) => e.id),
    sources: examples.map((e) => e.source),
    tokenCounts: examples.map(() => 1),
  };
}

// Feature examples (images): inputs [B, ...shape] and labels [B]; no token targets.
function collateFeatures(examples: Example[]): Batch {
  const shape = examples[0].featureShape!;
  const n = examples[0].features!.length;
  const data = new Float32Array(examples.length * n);
  examples.forEach((e, b) => {
    if (!e.features || e.features.length !== n) throw new Error(`collate: sample ${e.id} has ${e.features?.length ?? 0} features, expected ${n}`);
    data.set(e.features, b * n);
  });
  return {
    ids: torch.zeros([0], { dtype: 'int64' }),
    targets: torch.zeros([0], { dtype: 'int64' }),
    features: torch.tensor(data, { shape: [examples.length, ...shape] }),
    labels: torch.tensor(examples.map((e) => e.label ?? 0), { dtype: 'int64' }),
    sampleIds: examples.map((e) => e.id),
    sources: examples.map((e) => e.source),
    tokenCounts: examples.map(() => 1),
  };
}

export function disposeBatch(b: Batch): void {
  torch.dispose([b.ids, b.targets, b.labels, b.features]);
}

/** splitmix32: a small, well-mixed PRNG for data order, independent of libtorch's generator. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

/** A permutation of 0..n-1 for (seed, epoch): every epoch has its own order, the same on every run. */
export function epochOrder(n: number, seed: number, epoch: number): number[] {
  const r = rng((seed * 1000003 + epoch * 7919 + 17) >>> 0);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

export interface LoaderState {
  epoch: number;
  cursor: number;
}

/** Yields batches of example indices in epoch order; `state()` / `restore()` give the exact position. */
export class DataLoader {
  epoch = 0;
  cursor = 0;
  private order: number[];

  constructor(readonly size: number, readonly batchSize: number, readonly seed: number, readonly shuffle = true, readonly dropLast = false) {
    if (size <= 0) throw new Error('the training set is empty');
    if (!Number.isInteger(batchSize) || batchSize <= 0) throw new Error(`batch size must be a positive integer, got ${batchSize}`);
    this.order = this.makeOrder();
  }

  private makeOrder(): number[] {
    return this.shuffle ? epochOrder(this.size, this.seed, this.epoch) : Array.from({ length: this.size }, (_, i) => i);
  }

  get batchesPerEpoch(): number {
    return this.dropLast ? Math.floor(this.size / this.batchSize) : Math.ceil(this.size / this.batchSize);
  }

  /** The next batch of indices, moving to a freshly shuffled epoch when this one is exhausted. */
  next(): { indices: number[]; epoch: number; newEpoch: boolean } {
    let newEpoch = false;
    const remaining = this.size - this.cursor;
    if (remaining <= 0 || (this.dropLast && remaining < this.batchSize)) {
      this.epoch++;
      this.cursor = 0;
      this.order = this.makeOrder();
      newEpoch = true;
    }
    const indices = this.order.slice(this.cursor, this.cursor + this.batchSize);
    this.cursor += indices.length;
    return { indices, epoch: this.epoch, newEpoch };
  }

  state(): LoaderState {
    return { epoch: this.epoch, cursor: this.cursor };
  }

  restore(s: LoaderState): void {
    this.epoch = s.epoch;
    this.cursor = s.cursor;
    this.order = this.makeOrder();
  }
}
