// The explicit training loop, in phases as a torchtune recipe has them: setup (setup.ts, resume included), then per
// optimizer step: compose the batch → its sample weights → forward and loss terms → backward and the gradient sum →
// the update → log, evaluate, checkpoint. Methods act at the hook points of hooks.ts; data parallelism (replicas.ts)
// and the tests' fault injection (faults.ts) are called at fixed points. Checkpoints are atomic and resume is exact
// on CPU.
//
// One optimizer step = `gradAccum` micro-batches; the data loss of the step is
//   Σ_i w_i · (sum of sample i's token losses) / (trained tokens in the whole step)
// which is the token mean for standard fine-tuning (w_i = 1) and FLOW's weighted loss otherwise.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { collate, disposeBatch, type Batch } from '../data/loader.js';
import type { SampleLosses } from './hooks.js';
import { batchChunk } from './chunked.js';
import { stepFaults } from './faults.js';
import { StopRequest, stopAgreed, yieldToSignals } from './preempt.js';
import { NonFiniteLossError } from './losses.js';
import { setupRun } from './setup.js';
import type { Run, TrainOptions, TrainResult } from './options.js';
import { saveRun } from './state.js';

export { causalLmLoss, classificationLoss, NonFiniteLossError, type LossFn } from './losses.js';
export type { TrainOptions, TrainResult } from './options.js';



/** One optimizer step as its phases hand it on. */
interface Step {
  micro: Batch[];
  /** Per micro-batch, the sample weights [B] of each weighting method (null: weight 1). */
  weights: (Tensor | null)[][];
  /** Rows of each micro-batch in the global batch (before a rank keeps its own). */
  globalRows: number[];
  /** Trained tokens of the whole (global) step: the loss's normaliser. */
  tokens: number;
  /** The loss terms' values, for the log. */
  terms: Record<string, number>;
  startedAt: number;
}

/** Running figures for the log and the result. */
interface Tally {
  finalLoss: number;
  tokens: number;
  t0: number;
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  const stop = o.stopOnSignals ? new StopRequest((m) => console.error(`retain: ${m}`)) : null;
  try {
    return await trainLoop(o, stop);
  } finally {
    stop?.uninstall();
  }
}

async function trainLoop(o: TrainOptions, stop: StopRequest | null): Promise<TrainResult> {
  const run = await setupRun(o);
  try {
    const { finalLoss, preempted } = await runSteps(run, stop);
    const result = { steps: run.ctx.step, finalLoss, history: run.history, resumedFrom: run.resumedFrom };
    if (preempted) {
      run.progress.done();
      return { ...result, stopped: null, preempted };
    }
    for (const m of run.methods) await m.finish?.(run.ctx);
    if (o.outputDir && run.writer && o.saveEvery) saveRun(run);
    run.progress.done();
    return { ...result, stopped: run.ctx.stop ?? null };
  } finally {
    run.ctx.optimizer.dispose?.();
  }
}

/** The steps until the plan, a method or a signal ends them. */
async function runSteps(run: Run, stop: StopRequest | null): Promise<{ finalLoss: number; preempted: string | null }> {
  const { ctx } = run;
  const tally: Tally = { finalLoss: NaN, tokens: 0, t0: performance.now() };
  const paused = () => run.o.pauseAt !== undefined && ctx.step >= run.o.pauseAt && ctx.step < run.totalSteps;
  try {
    // Resumed at or past the pause step (killed after the pause's checkpoint): nothing to train before pausing again.
    if (paused()) return { finalLoss: tally.finalLoss, preempted: `paused at step ${ctx.step}` };
    while (ctx.step < run.totalSteps) {
      const step = composeStep(run);
      weighStep(run, step);
      run.replicas?.shard(step.micro, step.weights);
      const loss = forwardBackward(run, step);
      const { lr, gradNorm } = update(run, loss);
      report(run, step, tally, { loss, lr, gradNorm });
      checkpoint(run);
      stepFaults(ctx.step, run.replicas?.rank ?? 0);
      if (ctx.stop) {
        run.progress.note(ctx.stop);
        break;
      }
      if (stop && ctx.step < run.totalSteps && (await stopHere(stop, run))) return { finalLoss: tally.finalLoss, preempted: stop.signal ?? 'a signal to another rank' };
      if (paused()) {
        if (run.o.outputDir && run.writer && !(run.o.saveEvery && ctx.step % run.o.saveEvery === 0)) saveRun(run);
        return { finalLoss: tally.finalLoss, preempted: `paused at step ${ctx.step}` };
      }
    }
    return { finalLoss: tally.finalLoss, preempted: null };
  } finally {
    run.replicas?.dispose();
    run.layerCkpt?.dispose();
  }
}

/** Phase 1: the step's micro-batches, composed (mixing) and prepared (SDFT's samples), with their trained tokens. */
function composeStep(run: Run): Step {
  const { ctx, hooks } = run;
  for (const m of run.methods) m.beforeStep?.(ctx);
  const startedAt = performance.now();
  const next = () => nextBatch(run);
  const micro: Batch[] = [];
  for (let a = 0; a < run.accum; a++) micro.push(hooks.composer ? hooks.composer.composeBatch!(ctx, next) : next());
  for (const m of hooks.preparers) for (const b of micro) m.prepareBatch!(ctx, b);
  const tokens = micro.reduce((s, b) => s + b.tokenCounts.reduce((x, y) => x + y, 0), 0);
  if (tokens === 0) throw new Error(`step ${ctx.step + 1}: the batch has no trained tokens (are all completions truncated away?)`);
  return { micro, weights: micro.map(() => []), globalRows: micro.map((b) => b.sampleIds.length), tokens, terms: {}, startedAt };
}

/** The loader's next batch, collated onto the model's device; methods hear when an epoch starts. */
function nextBatch(run: Run): Batch {
  const { ctx, o } = run;
  const { indices, epoch, newEpoch } = run.loader.next();
  if (newEpoch || ctx.epoch !== epoch) {
    ctx.epoch = epoch;
    for (const m of run.methods) m.onEpochStart?.(ctx, epoch);
  }
  const b = collate(indices.map((i) => o.examples[i]), o.padId ?? 0);
  const device = run.device;
  if (device === 'cpu') return b;
  const moved = { ...b, ids: b.ids.to({ device }), targets: b.targets.to({ device }), labels: b.labels?.to({ device }), features: b.features?.to({ device }) };
  disposeBatch(b);
  return moved;
}

/**
 * Phase 2: sample weights of the whole step's (global) micro-batches, so that a per-step rule (FLOW's normalisation,
 * batch median) sees what one process without accumulation sees; under data parallelism each rank then keeps its rows.
 */
function weighStep(run: Run, step: Step): void {
  for (const w of run.hooks.weighters) w.stepWeights!(run.ctx, step.micro).forEach((t, i) => step.weights[i].push(t && torch.keep(t)));
}

/** Phase 3: forward, loss terms and backward of the step (a method may run them its own way: SAM); the step's loss. */
function forwardBackward(run: Run, step: Step): number {
  const fb = run.hooks.forwardBackward;
  const closure = () => lossAndBackward(run, step);
  const loss = fb ? fb.forwardBackward!(run.ctx, closure) : closure();
  step.micro.forEach(disposeBatch);
  for (const ws of step.weights) torch.dispose(ws);
  return loss;
}

/** Computes the step's loss and backpropagates it, micro-batch by micro-batch, summed over ranks; SAM calls it twice. */
function lossAndBackward(run: Run, step: Step): number {
  for (const [, p] of run.ctx.params) p.grad = null;
  const last = step.micro.length - 1;
  run.replicas?.beginStep(run.ctx.params, step.globalRows[last], overlapAllowed(run, step.micro[last]));
  let total = 0;
  step.micro.forEach((_, i) => {
    total += torch.tidy(() => microBatch(run, step, i));
    run.replicas?.syncBuffers();
  });
  return run.replicas ? run.replicas.endStep(total) : total;
}

/** A chunked loss and checkpointed layers backpropagate in several passes, which the overlapping Reducer cannot follow. */
function overlapAllowed(run: Run, last: Batch): boolean {
  const chunkedLast = run.loss.chunked && last.sampleIds.length > 0 && batchChunk(run.o.model, last, run.loss.chunk) !== null;
  return !chunkedLast && !run.layerCkpt;
}

/** One micro-batch: its weighted data loss, the loss terms (once per step), backward; returns the loss's value. */
function microBatch(run: Run, step: Step, i: number): number {
  const b = step.micro[i];
  // A rank's share of a short last batch can be empty: it adds no data gradient, only (rank 0) the penalties.
  const data = b.sampleIds.length > 0 ? dataLoss(run, step, i) : null;
  let loss = data?.loss ?? null;
  // Penalties depend on the weights only; summed over ranks they must count once.
  if (i === 0 && run.writer) loss = addLossTerms(run, step, loss);
  if (!loss) return 0;
  const value = loss.item();
  if (loss.requiresGrad) backward(run, loss, i === step.micro.length - 1, data?.completeBackward);
  return value;
}

/** Σ_i w_i · (sample i's loss sum) / (the step's trained tokens) for micro-batch i; the forward runs here. */
function dataLoss(run: Run, step: Step, i: number): { loss: Tensor; completeBackward?: () => void } {
  const b = step.micro[i];
  const sl = run.layerCkpt ? run.layerCkpt.record(() => sampleLosses(run, b)) : sampleLosses(run, b);
  let sums = sl.sums; // [B]
  for (const w of step.weights[i]) if (w) sums = sums.mul(w);
  return { loss: sums.sum().div(step.tokens), completeBackward: sl.completeBackward };
}

/** The run's data loss, or a method's in its place (SDFT) with the run's own for the rows it leaves alone. */
function sampleLosses(run: Run, b: Batch): SampleLosses {
  const own = run.hooks.ownLoss;
  const data = (x: Batch) => run.loss.data(run.o.model, x);
  return own ? own.sampleLoss!(run.ctx, b, data) : data(b);
}

/** Adds the methods' loss terms (L2-SP, EWC) to the loss and notes their values for the log. */
function addLossTerms(run: Run, step: Step, loss: Tensor | null): Tensor | null {
  for (const p of run.hooks.penalties) {
    for (const term of p.lossTerms!(run.ctx)) {
      step.terms[term.name] = term.value.item();
      loss = loss ? loss.add(term.value) : term.value;
    }
  }
  return loss;
}

/** Phase 4: backward of one micro-batch (the last one's through the overlapping gradient sum), then deferred passes. */
function backward(run: Run, loss: Tensor, last: boolean, completeBackward?: () => void): void {
  if (run.replicas) run.replicas.backward(loss, last);
  else loss.backward();
  // The deferred passes recompute parts of the forward, so under the forward's autocast.
  const deferred = () => {
    completeBackward?.();
    run.layerCkpt?.backward();
  };
  if (run.o.autocast) torch.autocast(run.o.autocast, deferred);
  else deferred();
}

/** Phase 5: the update: methods' gradient fix-ups (HFT), clipping, the schedule's lr for every group, the step. */
function update(run: Run, loss: number): { lr: number; gradNorm: number } {
  const { o, ctx } = run;
  if (!Number.isFinite(loss)) {
    throw new NonFiniteLossError(
      `loss became ${loss} at step ${ctx.step + 1}; training stopped and no checkpoint was written from this state. ` +
        'Lower the learning rate, enable clip_grad_norm, or check the data for empty or broken examples.',
    );
  }
  for (const m of run.methods) m.afterBackward?.(ctx);
  const gradNorm = o.clipGradNorm ? torch.optim.clipGradNorm_(ctx.params.map(([, p]) => p), o.clipGradNorm) : NaN;
  const lr = torch.optim.lrAt(o.schedule, ctx.step, run.totalSteps);
  for (const g of ctx.optimizer.paramGroups) g.lr = lr;
  torch.tidy(() => ctx.optimizer.step());
  ctx.step++;
  for (const m of run.methods) m.afterStep?.(ctx);
  return { lr, gradNorm };
}

/** Phase 6: the step's log line, the progress display and, when due, the evaluation. */
function report(run: Run, step: Step, tally: Tally, r: { loss: number; lr: number; gradNorm: number }): void {
  const { o, ctx } = run;
  tally.finalLoss = r.loss;
  tally.tokens += step.tokens;
  const tps = tally.tokens / Math.max((performance.now() - tally.t0) / 1000, 1e-9);
  if (ctx.step % (o.logEvery ?? 1) === 0 || ctx.step === run.totalSteps) {
    const norm: Record<string, number> = Number.isNaN(r.gradNorm) ? {} : { grad_norm: +r.gradNorm.toFixed(6) };
    const stepMs = +(performance.now() - step.startedAt).toFixed(2);
    ctx.log({ epoch: ctx.epoch, loss: +r.loss.toFixed(6), lr: r.lr, tokens: step.tokens, tokens_per_s: +tps.toFixed(1), step_ms: stepMs, ...norm, ...step.terms });
  }
  run.progress.update(ctx.step, { loss: r.loss, tokensPerSec: tps });
  if (o.evaluate && o.evalEvery && ctx.step % o.evalEvery === 0) ctx.log({ ...o.evaluate(ctx), kind: 'eval' });
}

/** Phase 7: the checkpoint every save_every steps (the last step's is written after finish). */
function checkpoint(run: Run): void {
  const { o, ctx } = run;
  if (o.outputDir && run.writer && o.saveEvery && ctx.step % o.saveEvery === 0 && ctx.step < run.totalSteps) saveRun(run);
}

/**
 * After a step: whether a stop signal (received by any rank) ends the run here. If so, rank 0 writes the step's
 * checkpoint (unless save_every just did), which is what the rerun resumes from.
 */
async function stopHere(stop: StopRequest, run: Run): Promise<boolean> {
  const { o, ctx } = run;
  await yieldToSignals();
  if (!stopAgreed(stop.signal !== null, o.dist, run.device)) return false;
  const savedNow = o.saveEvery && ctx.step % o.saveEvery === 0;
  if (o.outputDir && run.writer && !savedNow) saveRun(run);
  return true;
}
