// The types the loop's phases share: the options a run is given (TrainOptions), its result, and the Run that setup
// (setup.ts) builds and every later phase (trainer.ts, state.ts) reads. Types only, so that the phases' files import
// them from here instead of from each other.
import type * as torch from '@retain/torch';
import type { DataLoader } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { DataSpec } from '../data/spec.js';
import type { Tokenizer } from '../tokenizers/types.js';
import type { DistContext, Method, OptimizerHyper, TrainableModel, TrainContext } from './hooks.js';
import type { LossChunkSetting } from './chunked.js';
import type { CheckpointingSetting, LayerCheckpointing } from './checkpointing.js';
import type { MetricsFilesSetting } from './metrics-files.js';
import type { LossFn } from './losses.js';
import type { Progress } from './progress.js';
import type { Replicas } from './replicas.js';

export interface TrainOptions {
  model: TrainableModel;
  /** The optimizer's hyperparameters; the loop builds it after the parameterisation phase (lr: the schedule's). */
  optimizer: OptimizerHyper;
  examples: Example[];
  lossFn?: LossFn;
  batchSize: number;
  gradAccum?: number;
  epochs?: number;
  maxSteps?: number;
  /** The learning rate at every step: its one owner. */
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
  loadData?: (spec: DataSpec, source: string) => Promise<Example[]>;
  /** Data parallelism (train/dist.ts): batchSize is the global batch; this rank trains on its rows of it. */
  dist?: DistContext | null;
  /** The run's tokenizer, for methods that read or write text (SDFT); see TrainContext.tokenizer. */
  tokenizer?: Tokenizer;
  /** SIGTERM/SIGINT/SIGUSR1 end the run after the current step, with a checkpoint (preempt.ts); for `retain train`. */
  stopOnSignals?: boolean;
  /** TensorBoard events and metrics.csv beside metrics.jsonl (metrics-files.ts); default both. */
  metricsFiles?: MetricsFilesSetting;
  /**
   * Ends the run after this step with a checkpoint, as a signal would (RunResult.preempted says so); rerunning with a
   * later pauseAt or none continues it bit-identically. `retain tune` trains its candidates rung by rung this way.
   */
  pauseAt?: number;
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

/** The methods that act at each step's hook points, found once. */
export interface StepHooks {
  composer?: Method;
  preparers: Method[];
  weighters: Method[];
  /** A method that replaces the data loss (SDFT); it gets the run's own loss for the rows it leaves alone. */
  ownLoss?: Method;
  penalties: Method[];
  forwardBackward?: Method;
}

/** The run's losses: `plain` (under autocast) for methods that backpropagate their own; `data` may chunk the head. */
export interface RunLoss {
  plain: LossFn;
  data: LossFn;
  /** Whether `data` is the chunked cross-entropy, which defers part of its backward (completeBackward). */
  chunked: boolean;
  chunk: LossChunkSetting;
}

/** What the phases of a run share: settings fixed at setup, the context (step, epoch) and the loader's position. */
export interface Run {
  o: TrainOptions;
  ctx: TrainContext;
  methods: Method[];
  hooks: StepHooks;
  loss: RunLoss;
  loader: DataLoader;
  totalSteps: number;
  accum: number;
  device: string;
  /** Rank 0, or the only process: it alone writes (metrics, checkpoints, method caches) and shows progress. */
  writer: boolean;
  progress: Progress;
  replicas: Replicas | null;
  layerCkpt: LayerCheckpointing | null;
  history: Record<string, number | string>[];
  resumedFrom: number | null;
}
