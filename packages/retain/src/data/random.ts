// Small deterministic hashing and random numbers.

/** FNV-1a over UTF-16 code units: a stable 32-bit hash of a string (seeds from names, MinHash shingles). */
export function fnv1a(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

// mulberry32: a small seeded PRNG for choices that must be the same on every run and machine (few-shot examples,
// generated problems, balanced subsets). The data loader's order uses its own generator (loader.ts `rng`).
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
