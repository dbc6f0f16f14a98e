// The setup phase's order (hooks.ts): methods decide what trains (parameterize) before the run's one optimizer is
// built over exactly that set; a method that replaces the update builds it from the run's hyperparameters
// (makeOptimizer); the schedule sets every group's lr before each step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { train } from '../src/train/trainer.js';
import type { Method, OptimizerHyper, TrainContext } from '../src/train/hooks.js';
import { Lora, loraModules } from '../src/methods/lora/index.js';
import { Mofo, MofoAdamW } from '../src/methods/mofo.js';
import { constant, sameTensors, snapshot, tinyLlama, tokenExamples } from './methods-a.fixtures.js';

/** A method that records the run's optimizer parameters once setup sees it. */
function optimizerSpy(): Method & { params: Tensor[]; optimizer: TrainContext['optimizer'] | null } {
  const spy = {
    name: 'optimizer-spy',
    params: [] as Tensor[],
    optimizer: null as TrainContext['optimizer'] | null,
    setup(ctx: TrainContext) {
      spy.optimizer = ctx.optimizer;
      spy.params = ctx.optimizer.paramGroups.flatMap((g) => g.params);
    },
  };
  return spy;
}

test('the optimizer is built after parameterize, over exactly the set it returns; the rest stays bit-identical', async () => {
  const model = tinyLlama(1);
  const before = snapshot(model);
  const head: Method = {
    name: 'head-only',
    roles: ['parameterization'],
    parameterize(ctx) {
      for (const p of ctx.model.parameters()) p.requiresGrad = false;
      const mine = ctx.model.namedParameters().filter(([n]) => n === 'lm_head.weight');
      for (const [, p] of mine) p.requiresGrad = true;
      return mine;
    },
  };
  const spy = optimizerSpy();
  await train({ model, optimizer: { kind: 'adamw' }, examples: tokenExamples(8, 2), batchSize: 4, maxSteps: 2, schedule: constant(0.05), methods: [head, spy], progress: false });
  const lmHead = model.namedParameters().find(([n]) => n === 'lm_head.weight')![1];
  assert.equal(spy.params.length, 1);
  assert.ok(spy.params[0] === lmHead, 'the one optimizer parameter is the head the method returned');
  assert.deepEqual(sameTensors(before, snapshot(model)), ['lm_head.weight'], 'only the returned parameter moved');
  model.dispose();
});

test("LoRA's parameterisation: the run's optimizer holds the adapters and nothing else", async () => {
  const model = tinyLlama(2);
  const spy = optimizerSpy();
  await train({ model, optimizer: { kind: 'adamw' }, examples: tokenExamples(8, 3), batchSize: 4, maxSteps: 1, schedule: constant(0.01), methods: [new Lora({ r: 2 }), spy], progress: false });
  const adapters = loraModules(model).flatMap(([, l]) => [l.lora_A.weight, l.lora_B.weight]);
  assert.equal(adapters.length, 28, '7 projections × 2 layers, A and B each');
  assert.equal(spy.params.length, adapters.length);
  assert.ok(spy.params.every((p, i) => p === adapters[i]), 'the optimizer parameters are the adapters, in model order');
  model.dispose();
});

test("makeOptimizer receives the run's hyperparameters; the schedule sets every group's lr before each step", async () => {
  const model = tinyLlama(3);
  const given: OptimizerHyper = { kind: 'adamw', betas: [0.8, 0.9], weightDecay: 0.05 };
  const seen: OptimizerHyper[] = [];
  const lrs: number[][] = [];
  const own: Method = {
    name: 'own-optimizer',
    roles: ['optimizer-step'],
    makeOptimizer(ctx, hyper) {
      seen.push(hyper);
      const ps = ctx.params.map(([, p]) => p);
      return new torch.optim.SGD([{ params: ps.slice(0, 3) }, { params: ps.slice(3), lr: 123 }], { lr: 7 });
    },
    afterStep: (ctx) => void lrs.push(ctx.optimizer.paramGroups.map((g) => g.lr)),
  };
  const schedule: torch.optim.Schedule = { kind: 'linear', lr: 0.1, warmupSteps: 2 };
  await train({ model, optimizer: given, examples: tokenExamples(8, 4), batchSize: 2, maxSteps: 5, schedule, methods: [own], progress: false });
  assert.deepEqual(seen, [given]);
  const expected = [0, 1, 2, 3, 4].map((s) => torch.optim.lrAt(schedule, s, 5));
  assert.deepEqual(lrs, expected.map((lr) => [lr, lr]));
  assert.ok(expected[0] < expected[1] && expected[4] < expected[2], 'warm-up then decay');
  model.dispose();
});

test("MoFO is the run's optimizer, with the run's AdamW settings (bias and norm tensors at weight decay 0)", async () => {
  const model = tinyLlama(4);
  const spy = optimizerSpy();
  await train({ model, optimizer: { kind: 'adamw', betas: [0.85, 0.95], eps: 1e-6, weightDecay: 0.2 }, examples: tokenExamples(8, 5), batchSize: 4, maxSteps: 1, schedule: constant(0.01), methods: [new Mofo({ alpha: 0.1 }), spy], progress: false });
  assert.ok(spy.optimizer instanceof MofoAdamW);
  const groups = spy.optimizer.paramGroups;
  assert.deepEqual(groups.map((g) => [g.betas, g.eps, g.weightDecay]), [[[0.85, 0.95], 1e-6, 0.2], [[0.85, 0.95], 1e-6, 0]]);
  assert.equal(spy.params.length, model.parameters().length, 'every trainable tensor, once');
  model.dispose();
});

test('a run whose parameters are all frozen is refused before training', async () => {
  const model = tinyLlama(5);
  for (const p of model.parameters()) p.requiresGrad = false;
  await assert.rejects(
    train({ model, optimizer: { kind: 'sgd' }, examples: tokenExamples(4, 6), batchSize: 2, maxSteps: 1, schedule: constant(0.1), progress: false }),
    /nothing to train: no parameter of the model requires a gradient/,
  );
  model.dispose();
});
