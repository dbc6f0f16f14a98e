// Arithmetic problems in the style of the DeepMind mathematics dataset's families (arithmetic__add_or_sub,
// arithmetic__mul, algebra__linear_1d), generated deterministically from a seed. Small numbers and lower case, so
// that a 260K-parameter TinyStories model can read them with its 512-token vocabulary and can learn some of them.

import { mulberry32 as rng } from '../data/random.js';

export interface ArithProblem {
  id: string;
  family: 'add_or_sub' | 'mul' | 'linear_1d';
  prompt: string;
  completion: string;
  answer: string;
}


const int = (r: () => number, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

function addOrSub(r: () => number): [string, number] {
  const a = int(r, 0, 20);
  const b = int(r, 0, 20);
  const forms: [string, number][] = [
    [`what is ${a} + ${b}?`, a + b],
    [`what is ${a} - ${b}?`, a - b],
    [`calculate ${a} + ${b}.`, a + b],
    [`add ${a} and ${b}.`, a + b],
    [`subtract ${b} from ${a}.`, a - b],
    [`sum ${a} and ${b}.`, a + b],
  ];
  return forms[int(r, 0, forms.length - 1)];
}

function mul(r: () => number): [string, number] {
  const a = int(r, 0, 12);
  const b = int(r, 0, 12);
  const forms: [string, number][] = [
    [`what is ${a} * ${b}?`, a * b],
    [`multiply ${a} and ${b}.`, a * b],
    [`calculate ${a} * ${b}.`, a * b],
  ];
  return forms[int(r, 0, forms.length - 1)];
}

function linear1d(r: () => number): [string, number] {
  const x = int(r, -9, 9);
  const a = int(r, 1, 5);
  const b = int(r, 0, 9);
  const c = a * x + b;
  return [`solve ${a}*x + ${b} = ${c} for x.`, x];
}

const FAMILIES = { add_or_sub: addOrSub, mul, linear_1d: linear1d };

/**
 * `n` distinct problems, families drawn at random. Problems whose text appears in `exclude` (a held-out split) are skipped,
 * so train and test never share a question.
 */
export function arithmeticProblems(n: number, seed: number, opts: { families?: (keyof typeof FAMILIES)[]; exclude?: Set<string> } = {}): ArithProblem[] {
  const r = rng(seed);
  const fams = opts.families ?? (Object.keys(FAMILIES) as (keyof typeof FAMILIES)[]);
  const seen = new Set<string>(opts.exclude ?? []);
  const out: ArithProblem[] = [];
  let tries = 0;
  while (out.length < n) {
    if (++tries > n * 200) throw new Error(`arithmeticProblems: only ${out.length} distinct problems found for ${n} requested`);
    // Families at random rather than in turn, so a small family running out of fresh problems does not stall.
    const family = fams[int(r, 0, fams.length - 1)];
    const [q, a] = FAMILIES[family](r);
    if (seen.has(q)) continue;
    seen.add(q);
    out.push({ id: `${family}-${seed}-${out.length}`, family, prompt: `question: ${q}\nanswer:`, completion: ` ${a}`, answer: String(a) });
  }
  return out;
}
