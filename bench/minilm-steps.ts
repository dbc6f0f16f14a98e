// What a MiniLM forgetting-suite run costs, per recipe, without running the suite: a few training steps of each
// recipe (the suite's own config, logged every step) and, with --score, the suite's scoring of the start model and of
// each result. The suite's time is about Σ (150 × step cost) + 12 scorings, plus FLOW's pass over the training set
// (inside its "train" time here) — steps of a probe phase cost less than fine-tuning steps, so measure enough steps
// to pass the switch (LP-FT and FLOW probe for half the steps).
//
// Usage: npm run bench:minilm-steps -- [--steps 12] [--only 'FT;SAM'] [--score] [--out runs/minilm-steps]
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { modelPath, needModel } from './models.js';
import { MINILM } from './parity/real_models.js';
import { minilmTrainConfig, prepareMinilmData, scoreMinilm, writeMinilmStart } from '../packages/retain/src/suite/minilm.js';
import { minilmRecipes } from '../packages/retain/src/suite/recipes.js';
import { runDirOf, scoredDir, selectRecipes, trainRecipe } from '../packages/retain/src/suite/common.js';
import { readSentenceSettings } from '../packages/retain/src/models/sentence.js';

const args = process.argv.slice(2);
const opt = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const steps = Number(opt('--steps') ?? 12);
const out = opt('--out') ?? 'runs/minilm-steps';
const missing = needModel(MINILM);
if (missing) throw new Error(missing);

const model = modelPath(MINILM);
const data = prepareMinilmData(out, {});
const settings = readSentenceSettings(model, 512);
const start = await writeMinilmStart(model, join(out, 'models', 'start'), 0);
const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);
if (args.includes('--score')) {
  const t0 = performance.now();
  await scoreMinilm(start, settings, data, { label: 'base' });
  console.log(`scoring the start model: ${seconds(t0)} s`);
}
const { data: dataSection, training } = minilmTrainConfig(data, steps, 0);
for (const r of selectRecipes(minilmRecipes(steps), opt('--only')?.split(';'))) {
  const runDir = runDirOf(out, r.label);
  const t0 = performance.now();
  const res = await trainRecipe({ model: start, runDir, data: dataSection, training: { ...training, log_every: 1 }, progress: false }, r);
  const trained = seconds(t0);
  const ms = res.history.filter((h) => typeof h.step_ms === 'number').map((h) => Math.round(Number(h.step_ms)));
  let scored = '';
  if (args.includes('--score')) {
    const t1 = performance.now();
    await scoreMinilm(scoredDir(res.finalDir), settings, data, { label: r.label });
    scored = `, scoring ${seconds(t1)} s`;
  }
  console.log(`${r.label}: ${trained} s for ${steps} steps (setup and save included)${scored}; step ms: ${ms.join(' ')}`);
  rmSync(runDir, { recursive: true, force: true });
}
