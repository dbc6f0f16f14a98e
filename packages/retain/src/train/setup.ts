// The setup phase of train() (trainer.ts), everything before the first step, in PEFT's order: the output folder and
// the checkpoint to resume from, the context, the parameterisation (what trains), the one optimizer over that, the
// methods' setup, then the resumed state. Its result, a Run, is what the step phases share.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { DataLoader } from '../data/loader.js';
import { checkComposition, type Method, type OptimizerHyper, type OptimizerLike, type SetupContext, type TrainContext } from './hooks.js';
import { loadLatestCheckpoint, removeStaleTemps, setAsidePreviousRun, trimLogs, type CheckpointParts } from './checkpoint.js';
import { Progress } from './progress.js';
import { MetricsFiles } from './metrics-files.js';
import { chunkedLoss } from './chunked.js';
import { LayerCheckpointing } from './checkpointing.js';
import { causalLmLoss, type LossFn } from './losses.js';
import { Replicas } from './replicas.js';
import { restoreRun } from './state.js';
import type { Run, RunLoss, StepHooks, TrainOptions } from './options.js';




export async function setupRun(o: TrainOptions): Promise<Run> {
  const methods = o.methods ?? [];
  checkComposition(methods);
  const loss = runLoss(o);
  const layerCkpt = o.gradientCheckpointing ? new LayerCheckpointing(o.model, o.gradientCheckpointing) : null;
  const accum = o.gradAccum ?? 1;
  // A batch composer that fills part of each batch from elsewhere takes fewer training examples per step.
  const loaderBatch = methods.find((m) => m.composeBatch)?.loaderBatchSize?.(o.batchSize) ?? o.batchSize;
  const loader = new DataLoader(o.examples.length, loaderBatch, o.seed ?? 0);
  const stepsPerEpoch = Math.max(1, Math.ceil(loader.batchesPerEpoch / accum));
  const totalSteps = o.maxSteps ?? stepsPerEpoch * (o.epochs ?? 1);
  if (!(totalSteps > 0)) throw new Error('nothing to train: set epochs or max_steps to a positive number');
  const writer = !o.dist || o.dist.rank === 0;
  const progress = new Progress(totalSteps, writer && (o.progress ?? true));
  const found = prepareOutputDir(o, writer, progress);
  const history: Record<string, number | string>[] = [];
  const setup = setupContext(o, { methods, loss, totalSteps, writer, history, resuming: found !== null });

  torch.manualSeed(o.seed ?? 0);
  parameterize(setup, methods);
  const ctx: TrainContext = Object.assign(setup, { optimizer: buildOptimizer(setup, methods, o.optimizer) });
  for (const m of methods) await m.setup?.(ctx);
  ctx.resuming = false;
  const device = o.model.parameters()[0]?.device ?? 'cpu';
  const replicas = o.dist ? new Replicas(o.dist, o.model, device) : null;
  const run: Run = { o, ctx, methods, hooks: stepHooks(methods), loss, loader, totalSteps, accum, device, writer, progress, replicas, layerCkpt, history, resumedFrom: null };
  if (found) restoreRun(run, found);
  replicas?.start(ctx.params);
  return run;
}

function runLoss(o: TrainOptions): RunLoss {
  const base = o.lossFn ?? causalLmLoss;
  if (o.autocast && !o.model.parameters()[0]?.device.startsWith('cuda')) {
    throw new Error(`autocast ${o.autocast} needs the model on a CUDA device; on CPU load the model in that dtype instead (model.dtype)`);
  }
  const withAutocast = (f: LossFn): LossFn => (o.autocast ? (m, b) => torch.autocast(o.autocast!, () => f(m, b)) : f);
  const chunk = o.lossChunk ?? 'auto';
  const chunked = base === causalLmLoss && chunk !== 'off';
  const plain = withAutocast(base);
  return { plain, data: chunked ? withAutocast(chunkedLoss(base, chunk)) : plain, chunked, chunk };
}

/**
 * Readies output_dir and finds the checkpoint to resume from. Every rank resumes from the same checkpoint (output_dir
 * is shared); rank 0 alone tidies the folder.
 */
function prepareOutputDir(o: TrainOptions, writer: boolean, progress: Progress): { path: string; parts: CheckpointParts } | null {
  if (o.outputDir && writer) mkdirSync(o.outputDir, { recursive: true });
  const found = o.resume && o.outputDir ? loadLatestCheckpoint(o.outputDir, (m) => writer && progress.note(`resume: ${m}`)) : null;
  if (!o.outputDir || !writer) return found;
  const stale = removeStaleTemps(o.outputDir);
  if (stale.length) progress.note(`removed what an interrupted run left half-written: ${stale.join(', ')}`);
  // Log lines past the point this run starts from are redone; with no checkpoint, all of them.
  if (o.resume) trimLogs(o.outputDir, found?.parts.step ?? -1);
  else {
    const aside = setAsidePreviousRun(o.outputDir);
    if (aside) progress.note(`resume: false — the previous run's checkpoints, logs and final model in ${o.outputDir} were moved to ${aside}`);
  }
  return found;
}

interface ContextParts {
  methods: Method[];
  loss: RunLoss;
  totalSteps: number;
  writer: boolean;
  history: Record<string, number | string>[];
  resuming: boolean;
}

function setupContext(o: TrainOptions, c: ContextParts): SetupContext {
  const metricsFile = o.outputDir && c.writer ? join(o.outputDir, 'metrics.jsonl') : null;
  // TensorBoard events and metrics.csv follow metrics.jsonl (opened after prepareOutputDir trimmed it for a resume).
  const metricsOut = metricsFile ? MetricsFiles.open(o.outputDir!, o.metricsFiles ?? { tensorboard: true, csv: true }) : null;
  const ctx: SetupContext = {
    model: o.model,
    params: o.model.namedParameters().filter(([n, p]) => p.requiresGrad && (o.trainable ? o.trainable(n) : true)),
    step: 0,
    epoch: 0,
    totalSteps: c.totalSteps,
    // Methods that backpropagate through their losses (EWC) get the plain loss; without grad, chunking only saves memory.
    sampleLosses: (b) => (torch.isGradEnabled() ? c.loss.plain : c.loss.data)(o.model, b),
    log: (fields) => {
      const line = { step: ctx.step, ...fields };
      c.history.push(line);
      // A resumed run's setup repeats lines the log already holds (FLOW's τ, the monitor's base).
      if (metricsFile && !ctx.resuming) {
        appendFileSync(metricsFile, JSON.stringify(line) + '\n');
        metricsOut?.add(line);
      }
    },
    state: new Map(),
    examples: o.examples,
    outputDir: c.writer ? o.outputDir ?? null : null,
    loadData: o.loadData,
    resuming: c.resuming,
    newHeads: c.methods.flatMap((m) => (m.newHead ? [m.newHead] : [])),
    ...(o.tokenizer ? { tokenizer: o.tokenizer } : {}),
    ...(o.dist ? { dist: o.dist } : {}),
  };
  return ctx;
}

/** The parameterisation phase: methods that decide what trains (LoRA, HFT, a probe) act before any optimizer exists. */
function parameterize(ctx: SetupContext, methods: Method[]): void {
  for (const m of methods) {
    const params = m.parameterize?.(ctx);
    if (params) ctx.params = params;
  }
  if (ctx.params.length === 0) {
    throw new Error('nothing to train: no parameter of the model requires a gradient (were they all frozen before training?)');
  }
}

/** The run's one optimizer over ctx.params: a method's that replaces the update (MoFO), or AdamW or SGD. */
function buildOptimizer(ctx: SetupContext, methods: Method[], hyper: OptimizerHyper): OptimizerLike {
  const maker = methods.find((m) => m.makeOptimizer);
  if (maker) return maker.makeOptimizer!(ctx, hyper);
  const params: Tensor[] = ctx.params.map(([, p]) => p);
  // lr 0 until the first step: the schedule, lr's one owner, sets every group's lr before each step.
  if (hyper.kind === 'sgd') return new torch.optim.SGD(params, { lr: 0, momentum: hyper.momentum, weightDecay: hyper.weightDecay });
  return new torch.optim.AdamW(params, { lr: 0, betas: hyper.betas, eps: hyper.eps, weightDecay: hyper.weightDecay, masterWeights: hyper.masterWeights });
}

function stepHooks(methods: Method[]): StepHooks {
  return {
    composer: methods.find((m) => m.composeBatch),
    preparers: methods.filter((m) => m.prepareBatch),
    weighters: methods.filter((m) => m.stepWeights),
    ownLoss: methods.find((m) => m.sampleLoss),
    penalties: methods.filter((m) => m.lossTerms),
    forwardBackward: methods.find((m) => m.forwardBackward),
  };
}
