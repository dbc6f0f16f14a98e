// Semantic-similarity scoring of a sentence encoder, as MTEB's STS tasks score it: the cosine similarity of each pair's
// embeddings against the gold relatedness, by Spearman's rank correlation (ties take their average rank, as
// scipy.stats.spearmanr does).
import * as torch from '@retain/torch';
import type { SentenceEncoder } from '../models/sentence.js';

/** 1-based ranks with ties given the mean of the ranks they span. */
export function averageRanks(x: number[]): number[] {
  const order = x.map((_, i) => i).sort((a, b) => x[a] - x[b]);
  const ranks = new Array<number>(x.length);
  for (let i = 0; i < order.length; ) {
    let j = i;
    while (j + 1 < order.length && x[order[j + 1]] === x[order[i]]) j++;
    for (let k = i; k <= j; k++) ranks[order[k]] = (i + j) / 2 + 1;
    i = j + 1;
  }
  return ranks;
}

export function pearson(x: number[], y: number[]): number {
  if (x.length !== y.length || x.length < 2) throw new RangeError(`pearson needs two lists of one length, at least 2 (got ${x.length} and ${y.length})`);
  const mx = x.reduce((a, v) => a + v, 0) / x.length;
  const my = y.reduce((a, v) => a + v, 0) / y.length;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < x.length; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}

export function spearman(x: number[], y: number[]): number {
  return pearson(averageRanks(x), averageRanks(y));
}

export interface ScoredPair { a: string; b: string; score: number }

/**
 * Cosine similarity of each pair and the Spearman correlation with the gold scores. Each distinct sentence is
 * embedded once.
 */
export function relatednessSpearman(encoder: SentenceEncoder, pairs: ScoredPair[], batchSize = 64): { spearman: number; cosines: number[] } {
  const texts = [...new Set(pairs.flatMap((p) => [p.a, p.b]))];
  const index = new Map(texts.map((t, i) => [t, i]));
  const cosines = torch.tidy(() => {
    const emb = encoder.encode(texts, batchSize); // [N, H]
    const pick = (side: 'a' | 'b') => emb.indexSelect(0, torch.tensor(pairs.map((p) => index.get(p[side])!), { dtype: 'int64' }));
    return torch.ops.cosine_similarity(pick('a'), pick('b'), 1).toArray() as number[];
  });
  return { spearman: spearman(cosines, pairs.map((p) => p.score)), cosines };
}
