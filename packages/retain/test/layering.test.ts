// Imports point one way: cli -> system -> engine. Inside the system (packages/retain/src) every file belongs to one
// floor of FLOORS, and a file may import its own floor or any floor below it, never one above; no files import each
// other in a circle. The engine (@retain/torch, packages/torch) never imports the system. This test reads every
// import of the sources (static, `export ... from`, dynamic import(), type-only ones too: a type still ties a file
// to the one that declares it) and names each import that breaks the rule, with the floors involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const SRC = resolve(new URL('../src', import.meta.url).pathname);
const TORCH_SRC = resolve(new URL('../../torch/src', import.meta.url).pathname);

/**
 * The floors of the system, top first. A path ending in '/' is a folder; the longest matching path decides a file's
 * floor, so train/run.ts can sit above the rest of train/.
 */
const FLOORS: { name: string; paths: string[]; holds: string }[] = [
  { name: 'package entry', paths: ['index.ts'], holds: 'what `import ... from "@retain/retain"` gives: the main entry points' },
  { name: 'cli', paths: ['cli/'], holds: 'every command: argument parsing, output, exit codes' },
  { name: 'suite', paths: ['suite/'], holds: 'the demo, the forgetting suites and the recipe catalogue, built from runs' },
  { name: 'report', paths: ['report/'], holds: 'tables, charts and the HTML report over results' },
  { name: 'tune', paths: ['tune/'], holds: 'the recipe search: candidates, successive halving over runs, its outputs' },
  { name: 'run', paths: ['config.ts', 'train/run.ts', 'train/precision.ts', 'train/stages.ts', 'train/results.ts', 'train/saved-config.ts', 'schema.ts'], holds: 'the train config, composed from every method\'s schema, and a training job from it (or a sequence of them): the loop, the results' },
  { name: 'recipes', paths: ['suite/recipes.ts'], holds: 'the one catalogue of recipes: every suite\'s lists, the demo\'s, and tune\'s knobs' },
  { name: 'synth', paths: ['synth/'], holds: 'general data written by the base model' },
  { name: 'methods', paths: ['methods/'], holds: 'the anti-forgetting methods and their registry' },
  { name: 'training loop', paths: ['train/'], holds: 'the loop, its hooks (the Method interface), checkpoints, the monitor' },
  { name: 'eval', paths: ['eval/'], holds: 'tasks, scoring, results' },
  { name: 'models', paths: ['models/'], holds: 'architectures, weights, the hub, LoRA layers and the PEFT format' },
  { name: 'data', paths: ['data/'], holds: 'records, formats, batches' },
  { name: 'tokenizers', paths: ['tokenizers/'], holds: 'the tokenizer and chat-template interfaces and their formats' },
  { name: 'overrides', paths: ['overrides.ts'], holds: 'key=value overrides of a config' },
  { name: 'foundation', paths: ['files.ts', 'lock.ts', 'errors.ts', 'options.ts'], holds: 'user files, output locks, config errors, the zod pieces every schema shares' },
];

/** Cycles that exist today and are owed a fix elsewhere; each must still exist (a fixed one is removed from here). */
const KNOWN_CYCLES: string[][] = [];

type Graph = Map<string, string[]>;

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The module specifiers a source imports: static and type imports, re-exports, dynamic import(). */
export function specifiers(source: string): string[] {
  const out: string[] = [];
  // Statements start a line; their clause may span lines up to `from '...'`.
  for (const m of source.matchAll(/^(?:import|export)\s[^;'"]*?from\s*['"]([^'"]+)['"]/gm)) out.push(m[1]);
  for (const m of source.matchAll(/^import\s*['"]([^'"]+)['"]/gm)) out.push(m[1]);
  for (const line of source.split('\n')) {
    if (/^\s*(\/\/|\*)/.test(line)) continue;
    for (const m of line.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]);
  }
  return out;
}

/** Files (relative to root, .ts) and the relative files each imports; package imports are left out. */
function graphOf(root: string): Graph {
  const g: Graph = new Map();
  for (const file of walk(root)) {
    const rel = relative(root, file);
    const deps = specifiers(readFileSync(file, 'utf8'))
      .filter((s) => s.startsWith('.'))
      .map((s) => relative(root, resolve(dirname(file), s)).replace(/\.js$/, '.ts'));
    g.set(rel, deps);
  }
  return g;
}

/** The floor index of a file (0 = top), or -1 when no floor names it. */
export function floorOf(file: string, floors = FLOORS): number {
  let best = -1;
  let len = -1;
  floors.forEach((f, i) => {
    for (const p of f.paths) {
      const hit = p.endsWith('/') ? file.startsWith(p) : file === p;
      if (hit && p.length > len) [best, len] = [i, p.length];
    }
  });
  return best;
}

/** Every import that goes up a floor, or out of the tree, as a readable line. */
export function upwardImports(g: Graph, floors = FLOORS): string[] {
  const bad: string[] = [];
  for (const [file, deps] of g) {
    const from = floorOf(file, floors);
    for (const dep of deps) {
      if (dep.startsWith('..')) {
        bad.push(`${file} imports ${dep}, outside src/ (the system must not read bench/, test/ or ../shared)`);
        continue;
      }
      const to = floorOf(dep, floors);
      if (from >= 0 && to >= 0 && to < from) bad.push(`${file} (${floors[from].name}) imports ${dep} (${floors[to].name}), a floor above it`);
    }
  }
  return bad;
}

/** The groups of files that import each other in a circle (strongly connected components of more than one file). */
export function cycles(g: Graph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!g.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const group: string[] = [];
    let w: string;
    do {
      w = stack.pop()!;
      onStack.delete(w);
      group.push(w);
    } while (w !== v);
    if (group.length > 1 || (g.get(v) ?? []).includes(v)) out.push(group.sort());
  };
  for (const v of g.keys()) if (!index.has(v)) visit(v);
  return out;
}

const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === [...b].sort()[i]);

test('every source file of the system sits on a floor', () => {
  const unplaced = [...graphOf(SRC).keys()].filter((f) => floorOf(f) < 0);
  assert.deepEqual(unplaced, [], `place these files on a floor of FLOORS in this test: ${unplaced.join(', ')}`);
});

test('no import goes up a floor', () => {
  const bad = upwardImports(graphOf(SRC));
  assert.deepEqual(bad, [], `imports against the direction ${FLOORS.map((f) => f.name).join(' -> ')}:\n  ${bad.join('\n  ')}`);
});

test('no files import each other in a circle (besides the known ones, which must still exist)', () => {
  const found = cycles(graphOf(SRC));
  const unknown = found.filter((c) => !KNOWN_CYCLES.some((k) => same(c, k)));
  assert.deepEqual(unknown, [], `import cycles: ${unknown.map((c) => c.join(' <-> ')).join('; ')}`);
  const fixed = KNOWN_CYCLES.filter((k) => !found.some((c) => same(c, k)));
  assert.deepEqual(fixed, [], `these cycles are gone; remove them from KNOWN_CYCLES: ${fixed.map((c) => c.join(' <-> ')).join('; ')}`);
});

test('the engine (packages/torch) never imports the system', () => {
  const bad: string[] = [];
  for (const file of walk(TORCH_SRC)) {
    for (const s of specifiers(readFileSync(file, 'utf8'))) {
      if (s.startsWith('@retain/retain') || (s.startsWith('.') && !resolve(dirname(file), s).startsWith(TORCH_SRC))) bad.push(`${relative(TORCH_SRC, file)} imports ${s}`);
    }
  }
  assert.deepEqual(bad, []);
});

// The checker on hand-made graphs, so a broken parser or rule cannot pass the tests above by finding nothing.
test('the checker: finds upward imports, imports out of the tree, cycles and every kind of import statement', () => {
  const floors = [{ name: 'top', paths: ['top/'], holds: '' }, { name: 'mid', paths: ['mid/', 'top/low.ts'], holds: '' }, { name: 'low', paths: ['low/'], holds: '' }];
  assert.equal(floorOf('top/low.ts', floors), 1, 'the longest matching path decides');
  assert.equal(floorOf('elsewhere/x.ts', floors), -1);
  const g: Graph = new Map([
    ['top/a.ts', ['mid/b.ts', 'low/c.ts']],
    ['mid/b.ts', ['low/c.ts', 'top/a.ts']],
    ['low/c.ts', ['../bench/x.ts']],
    ['top/low.ts', ['low/c.ts']],
  ]);
  assert.deepEqual(upwardImports(g, floors), [
    'mid/b.ts (mid) imports top/a.ts (top), a floor above it',
    'low/c.ts imports ../bench/x.ts, outside src/ (the system must not read bench/, test/ or ../shared)',
  ]);
  assert.deepEqual(cycles(g), [['mid/b.ts', 'top/a.ts']]);
  const src = [
    "import { a } from './a.js';",
    "import type {\n  B,\n  C,\n} from '../b.js';",
    "export { d } from './d.js';",
    "import './side.js';",
    "  const m = await import('../m.js');",
    "// a comment naming import('./not.js') is not an import",
    "const s = 'from \\'./nor.js\\'';",
  ].join('\n');
  assert.deepEqual(specifiers(src), ['./a.js', '../b.js', './d.js', './side.js', '../m.js']);
});
