// A process that trains many runs (a forgetting suite, `retain tune`) must not keep any run's tensors: a handle left
// behind (a detached view from stateDict(), a method's temporary) pins a whole model's storage, which on SmolLM2
// grew a suite by 0.6–2.5 GB per recipe until the kernel stopped it. Every tensor handle a run makes is released.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { DEFAULT_MODEL, DEMO_REPLAY, prepareDemoData } from '../src/suite/demo.js';
import { smollm2Recipes } from '../src/suite/recipes.js';
import { trainRecipe } from '../src/suite/common.js';
import { loadEvalModel } from '../src/eval/model.js';

test('training a run of every suite recipe (and SDFT with an EMA teacher), then loading its result, leaves no tensor behind', { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-leaks-'));
  try {
    const demo = prepareDemoData(dir, { trainSize: 16, testSize: 4, seed: 0 });
    const data = { train: { path: demo.train, format: { type: 'prompt_completion' }, max_length: 64 } };
    const training = { max_steps: 2, batch_size: 4, lr: 3e-4, seed: 0, log_every: 1 };
    const recipes = [...smollm2Recipes(DEMO_REPLAY), { label: 'SDFT ema', methods: [{ name: 'sdft', teacher: 'ema', max_tokens: 4 }] }];
    const left: string[] = [];
    for (const r of recipes) {
      const before = torch.liveTensors();
      const res = await trainRecipe({ model: DEFAULT_MODEL, runDir: join(dir, 'run'), data, training, progress: false }, r);
      const trained = torch.liveTensors() - before;
      const m = await loadEvalModel(res.finalDir);
      m.module.dispose();
      const loaded = torch.liveTensors() - before - trained;
      if (trained || loaded) left.push(`${r.label}: ${trained} after training, ${loaded} after loading its final model`);
    }
    assert.deepEqual(left, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
