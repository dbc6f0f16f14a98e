// The explicit training loop. One optimizer step = `gradAccum` micro-batches; the data loss of the step is
//   Σ_i w_i · (sum of sample i's token losses) / (trained tokens in the whole step)
// which is the token mean for standard fine-tuning (w_i = 1) and FLOW's weighted loss otherwise. Methods act at the
// hook points of hooks.ts. Checkpoints are atomic and resume is exact on CPU.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { collate, DataLoader, disposeBatch, type Batch } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { Tokenizer } from '../tokenizers/llama2c.js';
import { checkComposition, type DistContext, type Method, type OptimizerLike, type SampleLosses, type TrainableModel, type TrainContext } from './hooks.js';
import { shardBatch, shardRange } from './dist.js';
import { loadLatestCheckpoint, NonFiniteWeightsError, removeStaleTemps, saveCheckpoint, setAsidePreviousRun, trimLogs } from './checkpoint.js';

import { Progress } from './progress.js';
import { batchChunk, chunkedLoss, type LossChunkSetting } from './chunked.js';
import { LayerCheckpointing, type CheckpointingSetting } from './checkpointing.js';
import { injectFault } from './faults.js';
import { StopRequest, stopAgreed, yieldToSignals } from './preempt.js';

export class NonFiniteLossError extends Error {}

/** Maps a batch to per-sample loss sums and trained-token counts. */
export type LossFn = (model: TrainableModel, batch: Batch) => SampleLosses;

/** Causal-LM loss: next-token cross-entropy per position, summed per sample. */
export const causalLmLoss: LossFn = (model, batch) => {
  const logits = model.forward(batch.ids) as Tensor; // [B, T, V]
  const [B, T, V] = logits.shape;
  const tok = torch.crossEntropy(logits.reshape(B * T, V), batch.targets.reshape(B * T), { reduction: 'none' }).view(B, T); // [B, T]
  const counts = batch.targets.ne(-100).sum(1).to('float32'); // [B]
  return { sums: tok.sum(1), counts };
};

/**
 * Classification loss over class logits [B, C] against batch.labels [B]; the model reads batch.features (images) or,
 * for text classification, the padded token ids.
 */
export const classificationLoss: LossFn = (model, batch) => {
  if (!batch.labels) throw new Error('classification loss needs labelled examples (image_classification or classification format)');
  const logits = model.forward(batch.features ?? batch.ids) as Tensor; // [B, C]
  const sums = torch.crossEntropy(logits, batch.labels, { reduction: 'none' });
  return { sums, counts: torch.onesLike(sums) };
};

export interface TrainOptions {
  model: TrainableModel;
  optimizer: OptimizerLike;
  examples: Example[];
  lossFn?: LossFn;
  batchSize: number;
  gradAccum?: number;
  epochs?: number;
  maxSteps?: number;
  schedule: torch.optim.Schedule;
  clipGradNorm?: number | null;
  seed?: number;
  padId?: number;
  methods?: Method[];
  outputDir?: string | null;
  saveEvery?: number | null;
  keepCheckpoints?: number;
  /** Resume from the newest complete checkpoint in outputDir if there is one. */
  resume?: boolean;
  evalEvery?: number | null;
  evaluate?: (ctx: TrainContext) => Record<string, number>;
  logEvery?: number;
  progress?: boolean;
  /** Mixed precision on CUDA: forward and loss under torch.autocast in this dtype (parameters stay float32). */
  autocast?: 'bfloat16' | 'float16' | null;
  /** Cross-entropy over the vocabulary in chunks of positions (train/chunked.ts); default 'auto'. */
  lossChunk?: LossChunkSetting;
  /** Activation checkpointing per decoder layer (train/checkpointing.ts): all, listed indices, or every k-th. */
  gradientCheckpointing?: CheckpointingSetting;
  /** Parameter names to train; default: every parameter with requiresGrad. */
  trainable?: (name: string) => boolean;
  /** Loads further data specs with the run's tokenizer (methods' general or held-out data); see TrainContext.loadData. */
  loadData?: (spec: unknown, source: string) => Promise<Example[]>;
  /** Data parallelism (train/dist.ts): batchSize is the global batch; this rank trains on its rows of it. */
  dist?: DistContext | null;
  /** The run's tokenizer, for methods that read or write text (SDFT); see TrainContext.tokenizer. */
  tokenizer?: Tokenizer;
  /** SIGTERM/SIGINT/SIGUSR1 end the run after the current step, with a checkpoint (preempt.ts); for `retain train`. */
  stopOnSignals?: boolean;
}

export interface TrainResult {
  steps: number;
  finalLoss: number;
  history: Record<string, number | string>[];
  resumedFrom: number | null;
  /** Why the run ended before its planned steps (a method asked it to stop), or null. */
  stopped?: string | null;
  /** The signal that stopped the run after a checkpoint (it resumes from there), or null. */
  preempted?: string | null;
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
  const methods = o.methods ?? [];
  checkComposition(methods);
  const baseLoss = o.lossFn ?? causalLmLoss;
  if (o.autocast && !o.model.parameters()[0]?.device.startsWith('cuda')) {
    throw new Error(`autocast ${o.autocast} needs the model on a CUDA device; on CPU load the model in that dtype instead (model.dtype)`);
  }
  const withAutocast = (f: LossFn): LossFn => (o.autocast ? (m, b) => torch.autocast(o.autocast!, () => f(m, b)) : f);
  const lossFn = withAutocast(baseLoss);
  // The step's loss with the head chunked where that saves memory; it defers part of its backward (completeBackward).
  const lossChunk = o.lossChunk ?? 'auto';
  const chunks = baseLoss === causalLmLoss && lossChunk !== 'off';
  const dataLoss = chunks ? withAutocast(chunkedLoss(baseLoss, lossChunk)) : lossFn;
  const ckpt = o.gradientCheckpointing ? new LayerCheckpointing(o.model, o.gradientCheckpointing) : null;
  const accum = o.gradAccum ?? 1;
  const seed = o.seed ?? 0;
  // A batch composer that fills part of each batch from elsewhere takes fewer training examples per step.
  const loaderBatch = methods.find((m) => m.composeBatch)?.loaderBatchSize?.(o.batchSize) ?? o.batchSize;
  const loader = new DataLoader(o.examples.length, loaderBatch, seed);
  const stepsPerEpoch = Math.max(1, Math.ceil(loader.batchesPerEpoch / accum));
  const totalSteps = o.maxSteps ?? stepsPerEpoch * (o.epochs ?? 1);
  if (!(totalSteps > 0)) throw new Error('nothing to train: set epochs or max_steps to a positive number');
  const history: Record<string, number | string>[] = [];
  const dist = o.dist ?? null;
  // Under data parallelism only rank 0 writes (metrics, checkpoints, method caches) and shows progress.
  const writer = !dist || dist.rank === 0;
  const metricsFile = o.outputDir && writer ? join(o.outputDir, 'metrics.jsonl') : null;
  if (o.outputDir && writer) mkdirSync(o.outputDir, { recursive: true });
  const progress = new Progress(totalSteps, writer && (o.progress ?? true));
  // Every rank resumes from the same checkpoint (output_dir is shared); rank 0 alone tidies the folder.
  const found = o.resume && o.outputDir ? loadLatestCheckpoint(o.outputDir, (m) => writer && progress.note(`resume: ${m}`)) : null;
  if (o.outputDir && writer) {
    const stale = removeStaleTemps(o.outputDir);
    if (stale.length) progress.note(`removed what an interrupted run left half-written: ${stale.join(', ')}`);
    // Log lines past the point this run starts from are redone; with no checkpoint, all of them.
    if (o.resume) trimLogs(o.outputDir, found?.parts.step ?? -1);
    else {
      const aside = setAsidePreviousRun(o.outputDir);
      if (aside) progress.note(`resume: false — the previous run's checkpoints, logs and final model in ${o.outputDir} were moved to ${aside}`);
    }
  }

  const ctx: TrainContext = {
    model: o.model,
    optimizer: o.optimizer,
    params: o.model.namedParameters().filter(([n, p]) => p.requiresGrad && (o.trainable ? o.trainable(n) : true)),
    step: 0,
    epoch: 0,
    totalSteps,
    // Methods that backpropagate through their losses (EWC) get the plain loss; without grad, chunking only saves memory.
    sampleLosses: (b) => (torch.isGradEnabled() ? lossFn : dataLoss)(o.model, b),
    log: (fields) => {
      const line = { step: ctx.step, ...fields };
      history.push(line);
      // A resumed run's setup repeats lines the log already holds (FLOW's τ, the monitor's base).
      if (metricsFile && !ctx.resuming) appendFileSync(metricsFile, JSON.stringify(line) + '\n');
    },
    state: new Map(),
    examples: o.examples,
    outputDir: writer ? o.outputDir ?? null : null,
    loadData: o.loadData,
    resuming: found !== null,
    newHeads: methods.flatMap((m) => (m.newHead ? [m.newHead] : [])),
    ...(o.tokenizer ? { tokenizer: o.tokenizer } : {}),
    ...(dist ? { dist } : {}),
  };

  torch.manualSeed(seed);
  let resumedFrom: number | null = null;
  for (const m of methods) await m.setup?.(ctx);
  ctx.resuming = false;
  if (found) {
    const { path: ckpt, parts: c } = found;
    o.model.loadStateDict(c.model, { strict: true });
    torch.dispose(c.model.values());
    const s = c.state as { optimizer: unknown; loader: { epoch: number; cursor: number }; rng: Tensor; methods: Record<string, { json?: unknown; tensors?: Map<string, Tensor> }> };
    o.optimizer.loadStateDict(s.optimizer);
    loader.restore(s.loader);
    torch.setRngState(s.rng);
    for (const m of methods) {
      const ms = s.methods?.[m.name];
      if (ms?.json !== undefined) ctx.state.set(m.name, ms.json);
      if (ms?.tensors) m.loadStateTensors?.(ms.tensors);
    }
    ctx.step = c.step;
    ctx.epoch = loader.epoch;
    resumedFrom = c.step;
    progress.note(`resumed from ${ckpt} (step ${c.step})`);
  }
  // Every rank starts from rank 0's weights, as DDP does: a method's random initialisation (LoRA) or a checkpoint read
  // on another machine cannot leave the replicas apart.
  if (dist) torch.noGrad(() => torch.tidy(() => dist.broadcast(ctx.params.map(([, p]) => p.detach()), 0)));
  // Buffers (batch-norm running statistics) move with each rank's own rows. As under DDP (which broadcasts them from
  // rank 0 before every forward) every forward starts from rank 0's; here they are sent right after each forward, so
  // that between steps too — the final model, checkpoints, eval-mode passes in hooks (FLOW's scores at a probe
  // switch, EWC's Fisher, a probe's body) — every rank holds rank 0's statistics.
  const buffers = dist ? modelBuffers(o.model) : [];
  const syncBuffers = () => {
    if (buffers.length) torch.noGrad(() => dist!.broadcast(buffers, 0));
  };
  syncBuffers();

  const device = o.model.parameters()[0]?.device ?? 'cpu';
  const nextBatch = (): Batch => {
    const { indices, epoch, newEpoch } = loader.next();
    if (newEpoch || ctx.epoch !== epoch) {
      ctx.epoch = epoch;
      for (const m of methods) m.onEpochStart?.(ctx, epoch);
    }
    const b = collate(indices.map((i) => o.examples[i]), o.padId ?? 0);
    if (device === 'cpu') return b;
    const moved = { ...b, ids: b.ids.to({ device }), targets: b.targets.to({ device }), labels: b.labels?.to({ device }), features: b.features?.to({ device }) };
    disposeBatch(b);
    return moved;
  };
  const composer = methods.find((m) => m.composeBatch);
  const weighters = methods.filter((m) => m.stepWeights);
  const penalties = methods.filter((m) => m.lossTerms);
  const fb = methods.find((m) => m.forwardBackward);
  const stepper = methods.find((m) => m.optimizerStep);
  const preparers = methods.filter((m) => m.prepareBatch);
  // A method may replace the data loss (SDFT); it gets the run's own loss for the rows it leaves alone.
  const ownLoss = methods.find((m) => m.sampleLoss);
  const stepLoss = (b: Batch): SampleLosses => (ownLoss ? ownLoss.sampleLoss!(ctx, b, (x) => dataLoss(o.model, x)) : dataLoss(o.model, b));

  // Under data parallelism the gradient sum overlaps backward by default: c10d's Reducer (torch DDP's engine) launches
  // each bucket's all-reduce from the parameters' grad-accumulator hooks while backward goes on. It is built over the
  // trainable parameters and rebuilt (identically on every rank) if a method changes which those are.
  let reducer: torch.distributed.GradReducer | null = null;
  const reducerFor = (ps: [string, Tensor][]): torch.distributed.GradReducer => {
    if (!reducer || ps.length !== reducer.params.length || ps.some(([, p], i) => p !== reducer!.params[i])) {
      reducer?.dispose();
      reducer = new torch.distributed.GradReducer(ps.map(([, p]) => p), { bucketBytes: dist?.bucketBytes, names: ps.map(([n]) => n) });
    }
    return reducer;
  };

  let finalLoss = NaN;
  const t0 = performance.now();
  let tokensSeen = 0;
  let preempted: string | null = null;
  while (ctx.step < totalSteps) {
    for (const m of methods) m.beforeStep?.(ctx);
    const stepStart = performance.now();
    const micro: Batch[] = [];
    for (let a = 0; a < accum; a++) micro.push(composer ? composer.composeBatch!(ctx, nextBatch) : nextBatch());
    for (const m of preparers) for (const b of micro) m.prepareBatch!(ctx, b);
    const totalTokens = micro.reduce((s, b) => s + b.tokenCounts.reduce((x, y) => x + y, 0), 0);
    if (totalTokens === 0) throw new Error(`step ${ctx.step + 1}: the batch has no trained tokens (are all completions truncated away?)`);
    const extra: Record<string, number> = {};
    // Sample weights of the whole step's (global) micro-batches, so that a per-step rule (FLOW's normalisation, batch
    // median) sees what one process without accumulation sees; under data parallelism each rank then keeps its rows.
    const microWeights: (Tensor | null)[][] = micro.map(() => []);
    for (const w of weighters) w.stepWeights!(ctx, micro).forEach((t, i) => microWeights[i].push(t && torch.keep(t)));
    const globalRows = micro.map((b) => b.sampleIds.length);
    if (dist) {
      micro.forEach((b, i) => {
        const [lo, hi] = shardRange(b.sampleIds.length, dist.rank, dist.worldSize);
        microWeights[i] = microWeights[i].map((w) => {
          if (!w) return w;
          const mine = torch.keep(w.narrow(0, lo, hi - lo));
          w.dispose();
          return mine;
        });
        micro[i] = shardBatch(b, dist.rank, dist.worldSize);
        disposeBatch(b);
      });
    }

    // Computes the step's loss and backpropagates it; SAM calls this twice.
    const closure = (): number => {
      let total = 0;
      for (const p of ctx.params) p[1].grad = null;
      // The reducing backward is the last micro-batch's (the ones before accumulate locally, as under DDP's no_sync).
      // Every rank must run it, so the overlapped sum is used only when that micro-batch gives each rank a row — a
      // fact of the global batch that all ranks share; otherwise this step sums after backward.
      const trainable = dist ? ctx.params.filter(([, p]) => p.requiresGrad) : [];
      // A chunked loss and checkpointed layers backpropagate in several passes, which the overlapping Reducer cannot follow.
      const chunkedLast = chunks && micro[micro.length - 1].sampleIds.length > 0 && batchChunk(o.model, micro[micro.length - 1], lossChunk) !== null;
      const red = dist?.overlap && !chunkedLast && !ckpt && trainable.length > 0 && globalRows[micro.length - 1] >= dist.worldSize ? reducerFor(trainable) : null;
      micro.forEach((b, i) => {
        torch.tidy(() => {
          // A rank's share of a short last batch can be empty: it adds no data gradient, only (rank 0) the penalties.
          let loss: Tensor | null = null;
          let completeBackward: (() => void) | undefined;
          if (b.sampleIds.length > 0) {
            const sl = ckpt ? ckpt.record(() => stepLoss(b)) : stepLoss(b);
            completeBackward = sl.completeBackward;
            let sums = sl.sums;
            for (const wt of microWeights[i]) if (wt) sums = sums.mul(wt);
            loss = sums.sum().div(totalTokens);
          }
          // Penalties depend on the weights only; summed over ranks they must count once.
          if (i === 0 && writer) {
            for (const p of penalties) {
              for (const term of p.lossTerms!(ctx)) {
                extra[term.name] = term.value.item();
                loss = loss ? loss.add(term.value) : term.value;
              }
            }
          }
          if (loss) {
            total += loss.item();
            if (loss.requiresGrad) {
              if (red && i === micro.length - 1) red.backward(red.prepare([loss])[0]);
              else loss.backward();
              // The deferred passes recompute parts of the forward, so under the forward's autocast.
              const deferred = () => {
                completeBackward?.();
                ckpt?.backward();
              };
              if (o.autocast) torch.autocast(o.autocast, deferred);
              else deferred();
            }
          }
        });
        syncBuffers();
      });
      // The rows' gradients summed over ranks are the global batch's gradient; the loss is summed with them, so every
      // rank sees the same loss (and the same non-finite-loss decision).
      if (red) [total] = torch.distributed.sumScalars([total], device);
      else if (dist) total = torch.distributed.reduceGradients(trainable.map(([, p]) => p), { scalars: [total], bucketBytes: dist.bucketBytes }).scalars[0];
      return total;
    };

    const loss = fb ? fb.forwardBackward!(ctx, closure) : closure();
    micro.forEach(disposeBatch);
    for (const ws of microWeights) torch.dispose(ws);
    if (!Number.isFinite(loss)) {
      throw new NonFiniteLossError(
        `loss became ${loss} at step ${ctx.step + 1}; training stopped and no checkpoint was written from this state. ` +
          'Lower the learning rate, enable clip_grad_norm, or check the data for empty or broken examples.',
      );
    }
    for (const m of methods) m.afterBackward?.(ctx);
    let gradNorm = NaN;
    if (o.clipGradNorm) gradNorm = torch.optim.clipGradNorm_(ctx.params.map((p) => p[1]), o.clipGradNorm);
    const lr = torch.optim.lrAt(o.schedule, ctx.step, totalSteps);
    for (const g of o.optimizer.paramGroups) g.lr = lr * ((g.lrScale as number | undefined) ?? 1);
    torch.tidy(() => (stepper ? stepper.optimizerStep!(ctx) : o.optimizer.step()));
    ctx.step++;
    for (const m of methods) m.afterStep?.(ctx);
    finalLoss = loss;
    tokensSeen += totalTokens;
    const elapsed = (performance.now() - t0) / 1000;
    const tps = tokensSeen / Math.max(elapsed, 1e-9);
    const logEvery = o.logEvery ?? 1;
    if (ctx.step % logEvery === 0 || ctx.step === totalSteps) {
      ctx.log({ epoch: ctx.epoch, loss: +loss.toFixed(6), lr, tokens: totalTokens, tokens_per_s: +tps.toFixed(1), step_ms: +(performance.now() - stepStart).toFixed(2), ...(Number.isNaN(gradNorm) ? {} : { grad_norm: +gradNorm.toFixed(6) }), ...extra });
    }
    progress.update(ctx.step, { loss, tokensPerSec: tps });
    if (o.evaluate && o.evalEvery && ctx.step % o.evalEvery === 0) ctx.log({ ...o.evaluate(ctx), kind: 'eval' });
    if (o.outputDir && writer && o.saveEvery && ctx.step % o.saveEvery === 0 && ctx.step < totalSteps) save(o, ctx, loader, methods);
    // Fault injection for the resume tests: die as `kill -9` would, right after this step (RETAIN_KILL_RANK: one rank).
    if (process.env.RETAIN_KILL_AT_STEP && ctx.step === Number(process.env.RETAIN_KILL_AT_STEP) &&
        (!process.env.RETAIN_KILL_RANK || Number(process.env.RETAIN_KILL_RANK) === (dist?.rank ?? 0))) process.kill(process.pid, 'SIGKILL');
    injectFault(`step-${ctx.step}`, dist?.rank ?? 0);
    if (ctx.stop) {
      progress.note(ctx.stop);
      break;
    }
    if (stop && ctx.step < totalSteps && await stopHere(stop, o, ctx, loader, methods)) {
      preempted = stop.signal ?? 'a signal to another rank';
      break;
    }
  }
  (reducer as torch.distributed.GradReducer | null)?.dispose();
  ckpt?.dispose();
  if (preempted) {
    progress.done();
    return { steps: ctx.step, finalLoss, history, resumedFrom, stopped: null, preempted };
  }
  for (const m of methods) await m.finish?.(ctx);
  if (o.outputDir && writer && o.saveEvery) save(o, ctx, loader, methods);
  progress.done();
  return { steps: ctx.step, finalLoss, history, resumedFrom, stopped: ctx.stop ?? null };
}

/**
 * After a step: whether a stop signal (received by any rank) ends the run here. If so, rank 0 writes the step's
 * checkpoint (unless save_every just did), which is what the rerun resumes from.
 */
async function stopHere(stop: StopRequest, o: TrainOptions, ctx: TrainContext, loader: DataLoader, methods: Method[]): Promise<boolean> {
  await yieldToSignals();
  const device = o.model.parameters()[0]?.device ?? 'cpu';
  if (!stopAgreed(stop.signal !== null, o.dist, device)) return false;
  const savedNow = o.saveEvery && ctx.step % o.saveEvery === 0;
  if (o.outputDir && (!o.dist || o.dist.rank === 0) && !savedNow) save(o, ctx, loader, methods);
  return true;
}

/** The persistent buffers of a model (state-dict entries that are not parameters), as registered. */
function modelBuffers(model: TrainableModel): Tensor[] {
  const params = new Set(model.parameters());
  return [...model.stateDict({ keepVars: true }).values()].filter((t) => !params.has(t));
}

function save(o: TrainOptions, ctx: TrainContext, loader: DataLoader, methods: Method[]): void {
  const rng = torch.getRngState();
  const methodState: Record<string, unknown> = {};
  for (const m of methods) {
    const json = ctx.state.get(m.name);
    const tensors = m.stateTensors?.();
    if (json !== undefined || tensors) methodState[m.name] = { json, tensors };
  }
  try {
    saveCheckpoint(o.outputDir!, { step: ctx.step, model: o.model.stateDict(), state: { optimizer: o.optimizer.stateDict(), loader: loader.state(), rng, methods: methodState } }, o.keepCheckpoints ?? 2);
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
