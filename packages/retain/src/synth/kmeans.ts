// K-means with k-means++ seeding (Arthur & Vassilvitskii 2007) and diverse selection: the examples closest to each
// centroid, so a rehearsal set covers every region of the embedding space instead of the densest one (the selection
// step of self-synthesised rehearsal, Huang et al. 2024). Seeded, so a run picks the same subset every time.
import { rng } from '../data/loader.js';

function dist2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

export interface KMeansResult {
  centroids: Float64Array[];
  /** Cluster of each point. */
  assignment: number[];
  /** Squared distance of each point to its centroid. */
  distances: number[];
  iterations: number;
  /** Sum of squared distances. */
  inertia: number;
}

/** k-means++: the first centre uniformly, each next one with probability proportional to D(x)², the squared distance to the nearest chosen centre. */
export function kmeansPlusPlus(points: ArrayLike<number>[], k: number, seed: number): number[] {
  const r = rng(seed);
  const chosen = [Math.floor(r() * points.length)];
  const d = points.map((p) => dist2(p, points[chosen[0]]));
  while (chosen.length < k) {
    const total = d.reduce((a, b) => a + b, 0);
    let pick: number;
    if (total === 0) {
      // Every point coincides with a centre already: take the first point not chosen yet.
      pick = points.findIndex((_, i) => !chosen.includes(i));
    } else {
      let u = r() * total;
      pick = d.length - 1;
      for (let i = 0; i < d.length; i++) {
        u -= d[i];
        if (u < 0) {
          pick = i;
          break;
        }
      }
    }
    chosen.push(pick);
    for (let i = 0; i < points.length; i++) d[i] = Math.min(d[i], dist2(points[i], points[pick]));
  }
  return chosen;
}

/** Lloyd's iterations from a k-means++ start, until no point changes cluster or maxIter. */
export function kmeans(points: ArrayLike<number>[], k: number, o: { seed?: number; maxIter?: number } = {}): KMeansResult {
  const n = points.length;
  if (n === 0) throw new Error('kmeans: no points');
  if (!(Number.isInteger(k) && k >= 1)) throw new RangeError(`kmeans: k must be a positive integer, got ${k}`);
  k = Math.min(k, n);
  const dim = points[0].length;
  const centroids = kmeansPlusPlus(points, k, o.seed ?? 0).map((i) => Float64Array.from(points[i]));
  const assignment = new Array<number>(n).fill(-1);
  const distances = new Array<number>(n).fill(0);
  let it = 0;
  for (; it < (o.maxIter ?? 100); it++) {
    let changed = false;
    for (let i = 0; i < n; i++) {
      let best = 0;
      let bd = Infinity;
      for (let c = 0; c < k; c++) {
        const dd = dist2(points[i], centroids[c]);
        if (dd < bd) {
          bd = dd;
          best = c;
        }
      }
      distances[i] = bd;
      if (assignment[i] !== best) {
        assignment[i] = best;
        changed = true;
      }
    }
    if (!changed) break;
    const sums = Array.from({ length: k }, () => new Float64Array(dim));
    const counts = new Array<number>(k).fill(0);
    for (let i = 0; i < n; i++) {
      const s = sums[assignment[i]];
      for (let j = 0; j < dim; j++) s[j] += points[i][j];
      counts[assignment[i]]++;
    }
    for (let c = 0; c < k; c++) {
      // An emptied cluster keeps its centre; the next assignment may refill it.
      if (counts[c] > 0) for (let j = 0; j < dim; j++) centroids[c][j] = sums[c][j] / counts[c];
    }
  }
  return { centroids, assignment, distances, iterations: it, inertia: distances.reduce((a, b) => a + b, 0) };
}

/** The `perCluster` points nearest each centroid (all of a smaller cluster), in their original order. */
export function selectDiverse(points: ArrayLike<number>[], k: number, perCluster: number, o: { seed?: number; maxIter?: number } = {}): { indices: number[]; result: KMeansResult } {
  const result = kmeans(points, k, o);
  const byCluster = new Map<number, number[]>();
  result.assignment.forEach((c, i) => {
    const l = byCluster.get(c);
    if (l) l.push(i);
    else byCluster.set(c, [i]);
  });
  const picked: number[] = [];
  for (const members of byCluster.values()) {
    members.sort((a, b) => result.distances[a] - result.distances[b] || a - b);
    picked.push(...members.slice(0, perCluster));
  }
  return { indices: picked.sort((a, b) => a - b), result };
}
