// What a checkpoint holds of a run (weights, optimizer, data position, RNG, methods' state) and how a run returns to
// it: a resumed run continues bit-identically on CPU.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { NonFiniteWeightsError, saveCheckpoint, type CheckpointParts } from './checkpoint.js';
import type { Run } from './options.js';
import { NonFiniteLossError } from './losses.js';

interface RunState {
  optimizer: unknown;
  loader: { epoch: number; cursor: number };
  rng: Tensor;
  methods: Record<string, { json?: unknown; tensors?: Map<string, Tensor> }>;
}

/** Writes the checkpoint of the step just taken (rank 0's job; the caller checks). */
export function saveRun(run: Run): void {
  const { ctx, methods } = run;
  const rng = torch.getRngState();
  const methodState: Record<string, unknown> = {};
  for (const m of methods) {
    const json = ctx.state.get(m.name);
    const tensors = m.stateTensors?.();
    if (json !== undefined || tensors) methodState[m.name] = { json, tensors };
  }
  try {
    const state = { optimizer: ctx.optimizer.stateDict(), loader: run.loader.state(), rng, methods: methodState };
    saveCheckpoint(run.o.outputDir!, { step: ctx.step, model: run.o.model.stateDict({ keepVars: true }), state }, run.o.keepCheckpoints ?? 2);
  } catch (e) {
    // The step's loss was finite but its update was not: say so as the NaN-loss stop does, with the same advice.
    if (e instanceof NonFiniteWeightsError) {
      throw new NonFiniteLossError(
        `weight '${e.key}' became NaN or Inf by step ${ctx.step}; training stopped and no checkpoint was written from this state. ` +
          'Lower the learning rate or enable clip_grad_norm.',
      );
    }
    throw e;
  } finally {
    rng.dispose();
  }
}

/** Puts a set-up run (parameterised, optimizer built, methods set up) where the checkpoint left it. */
export function restoreRun(run: Run, found: { path: string; parts: CheckpointParts }): void {
  const { ctx, methods, loader } = run;
  const c = found.parts;
  run.o.model.loadStateDict(c.model, { strict: true });
  torch.dispose(c.model.values());
  const s = c.state as unknown as RunState;
  ctx.optimizer.loadStateDict(s.optimizer);
  loader.restore(s.loader);
  torch.setRngState(s.rng);
  for (const m of methods) {
    const ms = s.methods?.[m.name];
    if (ms?.json !== undefined) ctx.state.set(m.name, ms.json);
    if (ms?.tensors) m.loadStateTensors?.(ms.tensors);
  }
  ctx.step = c.step;
  ctx.epoch = loader.epoch;
  run.resumedFrom = c.step;
  run.progress.note(`resumed from ${found.path} (step ${c.step})`);
}
