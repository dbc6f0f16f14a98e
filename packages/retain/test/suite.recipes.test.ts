// The recipe catalogue (suite/recipes.ts): it names registered methods only, every suite runs each catalogue recipe
// or says why not, and every recipe's options are accepted by its method as a config would be.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildMethods, METHODS } from '../src/methods/registry.js';
import {
  CHARLSTM_KEYS, CHARLSTM_NOT_RUN, charlstmRecipes, STORIES_BEST, type StudyBest, combined, demoRecipes, methodEntry, MNIST_NOT_RUN, MNIST_PARITY_KEYS,
  MNIST_ROT90_KEYS, mnistRecipes, NOT_IN_CATALOGUE, pairs, RECIPE_KEYS, STORIES_KEYS, STORIES_NOT_RUN, storiesRecipes,
  storiesSetup, minilmRecipes, effnetRecipes, SMOLLM2_KEYS, SMOLLM2_NOT_RUN, smollm2Recipes, type Recipe,
} from '../src/suite/recipes.js';
import { candidates, KNOBS } from '../src/tune/space.js';
import { parseTrainConfig } from '../src/config.js';
import { studyBestLine } from '../src/suite/demo.js';
import { isDeepStrictEqual } from 'node:util';

const nameOf = (e: string | Record<string, unknown>) => (typeof e === 'string' ? e : String(e.name));
const catalogueMethods = new Set(RECIPE_KEYS.map((k) => nameOf(methodEntry(k, { general: {}, head: 'h', probeSteps: 1 }))));

// A new method needs only its file and its registry line (methods.table.test.ts covers it from the registry); until
// it has a recipe here or a reason in NOT_IN_CATALOGUE, this test lists it as run by no suite.
test('the catalogue and NOT_IN_CATALOGUE name registered methods, each in one of them', (t) => {
  for (const name of catalogueMethods) assert.ok(METHODS.has(name), `a catalogue recipe uses '${name}', which is not registered`);
  for (const name of Object.keys(NOT_IN_CATALOGUE)) {
    assert.ok(METHODS.has(name), `NOT_IN_CATALOGUE names '${name}', which is not registered`);
    assert.ok(!catalogueMethods.has(name), `'${name}' has a recipe and a reason not to`);
  }
  const unplaced = [...METHODS.keys()].filter((n) => !catalogueMethods.has(n) && !(n in NOT_IN_CATALOGUE));
  if (unplaced.length) t.diagnostic(`registered methods no suite runs yet (add a recipe to suite/recipes.ts): ${unplaced.join(', ')}`);
});

test('every suite runs each catalogue recipe or says why not, never both', () => {
  const suites: [string, readonly string[], Record<string, string>][] = [
    ['stories', STORIES_KEYS, STORIES_NOT_RUN],
    ['charlstm', CHARLSTM_KEYS, CHARLSTM_NOT_RUN],
    ['mnist', [...MNIST_ROT90_KEYS, ...MNIST_PARITY_KEYS], MNIST_NOT_RUN],
    ['smollm2', SMOLLM2_KEYS, SMOLLM2_NOT_RUN],
  ];
  for (const [suite, keys, notRun] of suites) {
    const missing = RECIPE_KEYS.filter((k) => !keys.includes(k) && !(k in notRun));
    assert.deepEqual(missing, [], `${suite}: run these recipes or give the reason in its NOT_RUN`);
    const both = keys.filter((k) => k in notRun);
    assert.deepEqual(both, [], `${suite}: runs recipes its NOT_RUN says it leaves out`);
    for (const k of Object.keys(notRun)) assert.ok(RECIPE_KEYS.includes(k), `${suite}: NOT_RUN names '${k}', not a catalogue key`);
  }
});

/** `retain tune`'s candidates for every knob (tune/space.ts), on a config with no methods of its own. */
const REPLAY = { path: '/data/replay.txt', format: { type: 'text' } };

function tuneCandidates(): Recipe[] {
  const cfg = parseTrainConfig({ model: { path: 'm' }, data: { train: { path: 'd.jsonl', format: { type: 'text' } } }, training: { max_steps: 9 }, output_dir: 'o' });
  return candidates(cfg, { knobs: KNOBS.filter((k) => k !== 'lr' && k !== 'steps'), replay: REPLAY });
}

/** Every list the suites, the demo and tune run. */
function allLists(): [string, Recipe[]][] {
  const mnist = mnistRecipes('/data/mnist.jsonl', 100, '^head\\.');
  return [
    ['demo', demoRecipes('/data/replay.txt')],
    ['stories', storiesRecipes('/data/replay.txt', '/data/synth.jsonl', false).recipes],
    ['charlstm', charlstmRecipes('/data/replay.txt', 128, '/data/synth.jsonl')],
    ['mnist rot90', mnist.rot90],
    ['mnist parity', mnist.parity],
    ['tune', tuneCandidates()],
    ['minilm', minilmRecipes(100)],
    ['effnet', effnetRecipes(100)],
    ['smollm2', smollm2Recipes('/data/replay.txt')],
  ];
}

test("every recipe's options are accepted by its methods, and labels are unique within a list", () => {
  for (const [list, recipes] of allLists()) {
    const labels = recipes.map((r) => r.label);
    assert.equal(new Set(labels).size, labels.length, `${list}: repeated labels in ${labels.join(', ')}`);
    for (const r of recipes) {
      assert.doesNotThrow(() => buildMethods(r.methods), `${list} '${r.label}'`);
    }
  }
});

test('the demo and the suites keep their recipes: labels, order and the options that differ per setup', () => {
  assert.deepEqual(demoRecipes('/r').map((r) => r.label), ['FT', 'mix 1:1', 'FLOW', 'L2', 'LoRA', 'WiSE-FT', 'L2 + HFT', STORIES_BEST.recipe(storiesSetup('/r')).label]);
  assert.deepEqual(charlstmRecipes('/r', 128).map((r) => r.label), ['FT', 'mix 1:1', 'FLOW', 'L2', 'EWC', 'SAM', 'MoFO', 'WiSE-FT', 'mix+FLOW+L2']);
  const ewc = charlstmRecipes('/r', 128).find((r) => r.label === 'EWC')!.methods[0];
  assert.deepEqual(ewc, { name: 'ewc', lambda: 10000, data: { path: '/r', format: { type: 'text' }, max_length: 129, name: 'shakespeare' }, fisher: 'per_sample', fisher_samples: 256 });
  const m = mnistRecipes('/o', 100, '^head\\.');
  assert.deepEqual(m.parity.map((r) => r.label), ['parity FT', 'parity probe', 'parity LP-FT', 'parity FLOW (vision)']);
  assert.deepEqual(m.parity[2].methods, [{ name: 'probe', head: '^head\\.', then: 'finetune', probe_steps: 50 }]);
  assert.deepEqual(m.rot90.find((r) => r.label === 'rot90 L2')!.methods, [{ name: 'l2', lambda: 0.5, reduction: 'sum' }]);
  const stories = storiesRecipes('/r', '/s', false).recipes.map((r) => r.label);
  assert.deepEqual(stories, ['FT', 'mix 1:1', 'FLOW', 'SAM', 'L2', 'EWC', 'MoFO', 'LoRA', 'WiSE-FT', 'HFT', 'probe (tied head)', 'mix 1:1 (synth)', 'EWC (synth Fisher)']);
  const smol = smollm2Recipes('/r');
  assert.deepEqual(smol.map((r) => r.label), ['FT', 'mix 1:1', 'FLOW', 'SAM', 'L2', 'EWC', 'MoFO', 'LoRA', 'WiSE-FT', 'HFT', 'distill', 'SDFT', 'SDFT + mix 1:1', 'mix 1:1 + L2', 'L2 + HFT']);
  const general = { path: '/r', format: { type: 'text' }, max_length: 32, name: 'tinystories' };
  assert.deepEqual(smol.find((r) => r.label === 'EWC')!.methods, [{ name: 'ewc', lambda: 50, data: general, fisher: 'per_batch', fisher_samples: 32 }]);
  assert.deepEqual(smol.find((r) => r.label === 'SDFT + mix 1:1')!.methods, [{ name: 'sdft', max_tokens: 6 }, { name: 'mixing', ratio: '1:1', general }]);
});

test('pairs: every pair in order, the refused ones with the composition rule that refused them', () => {
  const s = storiesSetup('/r');
  const single = ['l2', 'lora', 'hft'].map((k) => ({ label: k, methods: [methodEntry(k, s)] }));
  const p = pairs(single);
  assert.deepEqual(p.recipes.map((r) => r.label), ['l2 + hft']);
  assert.deepEqual(p.refused.map((r) => r.label), ['l2 + lora', 'lora + hft']);
  assert.match(p.refused[0].reason, /LoRA freezes them/);
  assert.deepEqual(combined(['l2', 'hft'], s), { label: 'L2 + HFT', methods: [{ name: 'l2', lambda: 0.05, reduction: 'sum' }, 'hft'] });
});

test('a recipe without what it needs, or an unknown one, is an error naming it', () => {
  assert.throws(() => methodEntry('ewc'), /recipe 'ewc' needs the setup's general data/);
  assert.throws(() => methodEntry('lpft', { head: 'h' }), /recipe 'lpft' needs the setup's probeSteps/);
  assert.throws(() => methodEntry('nope'), /unknown recipe 'nope'; the catalogue has mix, flow, sam/);
  assert.equal(methodEntry('flow'), 'flow', 'a recipe without options is the bare name, as a config writes it');
});

test("the demo's best-recipe row: one of the frontier study's candidates, printed with the study's interval or 'not measured yet'", () => {
  assert.deepEqual(demoRecipes('/r').at(-1), STORIES_BEST.recipe(storiesSetup('/r')));
  const best = STORIES_BEST.recipe({ general: REPLAY });
  assert.ok(tuneCandidates().some((c) => isDeepStrictEqual(c.methods, best.methods)), `${best.label}: not a recipe the frontier study searches`);
  assert.match(STORIES_BEST.source, /^npm run -s bench:frontier -- --only stories /);
  const none: StudyBest = { ...STORIES_BEST, interval: null, note: 'no study yet' };
  assert.equal(studyBestLine(none), `"${STORIES_BEST.label}" is the best recipe found for this setup (${STORIES_BEST.source}); interval: not measured yet — no study yet.`);
  const measured: StudyBest = { ...none, interval: { forgetting: { mean: 0.41, half: 0.2 }, target: { mean: 30, half: null }, seeds: 3, steps: 150, protocol: 'equal steps', date: '2026-12-04' } };
  assert.match(studyBestLine(measured), /study interval \(95%, 3 seeds, 150 steps, equal steps, 2026-12-04\): forgetting 0\.41 ± 0\.20 points, target 30\.00 points \(no study yet\)\.$/);
});
