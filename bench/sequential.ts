// npm run -s bench:sequential — the sequential protocol on stories260K (suite/sequential.ts): addition/subtraction,
// then multiplication, then linear equations, each a stage of `retain train`'s stages:, once per recipe; prints each
// recipe's matrix (skills after every stage, the general probe) with average accuracy, backward transfer and average
// forgetting, and one JSON object.
// Usage: npm run -s bench:sequential -- [--steps 100] [--out runs/sequential] [--only FT,replay]
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { writeSequentialConfig } from '../packages/retain/src/suite/sequential.js';
import { runStages, sequenceTable, type Sequence } from '../packages/retain/src/train/stages.js';
import { DEMO_REPLAY } from '../packages/retain/src/suite/demo.js';

const args = process.argv.slice(2);
const opt = (n: string) => (args.includes(n) ? args[args.indexOf(n) + 1] : undefined);
const steps = Number(opt('--steps') ?? 100);
const outRoot = resolve(opt('--out') ?? 'runs/sequential');
const general = { path: DEMO_REPLAY, format: { type: 'text' }, max_length: 64, name: 'tinystories' };
const RECIPES: Record<string, unknown[]> = {
  FT: [],
  replay: [{ name: 'mixing', ratio: '1:1', general }],
  L2: [{ name: 'l2', lambda: 0.05 }],
  'replay + L2': [{ name: 'mixing', ratio: '1:1', general }, { name: 'l2', lambda: 0.05 }],
};
const only = opt('--only')?.split(',');

const out: Record<string, Sequence & { seconds: number }> = {};
for (const [label, methods] of Object.entries(RECIPES)) {
  if (only && !only.includes(label)) continue;
  const t0 = performance.now();
  const cfg = writeSequentialConfig(join(outRoot, label.replace(/\W+/g, '_')), { steps, methods });
  const r = await runStages(parseYaml(readFileSync(cfg, 'utf8')), dirname(cfg), cfg, { progress: false });
  out[label] = { ...r.sequence, seconds: +((performance.now() - t0) / 1000).toFixed(0) };
  process.stderr.write(`\n${label} (${out[label].seconds} s):\n${sequenceTable(r.sequence)}\n`);
}
console.log(JSON.stringify({ benchmark: 'sequential', steps_per_stage: steps, recipes: out }, null, 2));
