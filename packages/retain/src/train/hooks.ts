// The named points of the training loop where methods act, with a typed context.
//
// The loop runs in phases (trainer.ts), and each hook below says which one calls it:
//   setup      parameterize (what trains) → the one optimizer (makeOptimizer, or the run's own) → setup → resume
//   each step  beforeStep → compose (composeBatch, onEpochStart, prepareBatch) → weights (stepWeights) →
//              forward and loss terms (sampleLoss, lossTerms; forwardBackward wraps this and the backward) →
//              afterBackward → update (clip, the schedule's lr, optimizer.step) → afterStep
//   end        finish → the final checkpoint → saveFinal (`retain train`)
//
// A method declares which exclusive roles it takes (replacing the optimizer, the forward/backward, the
// parameterisation); the run refuses two methods claiming the same role before training starts, instead of letting
// plugins silently overwrite each other.
import type { Tensor } from '@retain/torch';
import type * as torch from '@retain/torch';
import type { Batch } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { DataSpec } from '../data/spec.js';
import type { Pretrained } from '../models/hub.js';
import type { Tokenizer } from '../tokenizers/types.js';

export type Role = 'optimizer-step' | 'forward-backward' | 'parameterization' | 'batch-composition' | 'data-loss';

/** What the loop needs from a model: a module whose forward maps a batch to per-sample losses. */
export interface TrainableModel extends torch.nn.Module {
  forward(...args: any[]): any;
}

export interface OptimizerLike {
  step(): void;
  zeroGrad(): void;
  paramGroups: { lr: number; params: Tensor[]; [k: string]: unknown }[];
  stateDict(): unknown;
  loadStateDict(s: any): void;
  /** Frees the optimizer's state; the loop calls it when the run ends. */
  dispose?(): void;
}

/**
 * The run's one set of optimizer hyperparameters (`training.*`). The learning rate is not among them: the schedule
 * owns it and sets every group's lr before each step. Unset fields take torch's defaults.
 */
export type OptimizerHyper =
  | {
      kind: 'adamw';
      betas?: [number, number];
      eps?: number;
      weightDecay?: number;
      /** float32 master copies of bfloat16 weights (training.precision bf16). */
      masterWeights?: boolean;
    }
  | { kind: 'sgd'; momentum?: number; weightDecay?: number };

/** Per-sample losses for a batch: sums of token losses [B] and the number of trained tokens per sample [B]. */
export interface SampleLosses {
  sums: Tensor;
  counts: Tensor;
  /**
   * Set by a loss that defers part of its backward (the chunked cross-entropy, train/chunked.ts): the caller runs it
   * right after backpropagating through `sums`, else the model's gradients are missing.
   */
  completeBackward?(): void;
}

/** Parameters with their checkpoint (state-dict) names. */
export type NamedParams = [string, Tensor][];

export interface TrainContext {
  model: TrainableModel;
  /** The run's one optimizer, built after the parameterisation phase over `params`. */
  optimizer: OptimizerLike;
  /** Trainable parameters with their checkpoint names (after any re-parameterisation); the optimizer's set. */
  params: NamedParams;
  step: number;
  epoch: number;
  /** Optimizer steps planned in total. */
  totalSteps: number;
  /** Computes per-sample losses of a batch with the current weights (methods call it: FLOW, SAM, EWC). */
  sampleLosses(batch: Batch): SampleLosses;
  /** Structured log line (goes to metrics.jsonl and the progress display). */
  log(fields: Record<string, number | string>): void;
  /** Method-private storage that survives checkpoints when the value is JSON (tensors: see Method.stateTensors). */
  state: Map<string, unknown>;
  /** The training set as the loop sees it (tokenized, templated, truncated): FLOW scores it, mixing re-collates it. */
  examples: Example[];
  /** Where the run writes (checkpoints, metrics); methods keep caches here. Null when the run writes nothing. */
  outputDir: string | null;
  /** Set by a method to end the run after the current step (the forgetting monitor); the reason is reported. */
  stop?: string;
  /** Loads a data spec (checked by the method's schema: data/spec.ts) with the run's tokenizer, when the run has one. */
  loadData?: (spec: DataSpec, source: string) => Promise<Example[]>;
  /** Set when the run is data-parallel (train/dist.ts): this process is one rank of several. */
  dist?: DistContext;
  /** True during setup of a run that resumes from a checkpoint: its setup log lines are already in the logs. */
  resuming?: boolean;
  /** The new heads the run's methods declare, known before any method's setup runs. */
  newHeads?: NewHead[];
  /** The run's tokenizer, when it has one (SDFT encodes its template and stops samples at EOS). */
  tokenizer?: Tokenizer;
}

/** The context of the setup phase, before the optimizer exists (parameterize, makeOptimizer). */
export type SetupContext = Omit<TrainContext, 'optimizer'>;

/**
 * Data parallelism as methods see it. Every rank runs the same loop over the same global batches and trains on its
 * own rows of each; the trainer sums the gradients. A method whose setup computes over data (FLOW's scores, EWC's
 * Fisher) shares the work by `rank` and combines it with these collectives, which every rank must call in the same
 * order. Only rank 0 writes files.
 */
export interface DistContext {
  rank: number;
  worldSize: number;
  /** Sums (or takes the max of) each tensor over all ranks, in place; synchronous. */
  allReduce(tensors: Tensor[], op?: 'sum' | 'max'): void;
  /** Every rank gets root's values, in place. */
  broadcast(tensors: Tensor[], root?: number): void;
  /**
   * A decision rank 0 makes for every rank, after work the others need not repeat (the forgetting monitor's probes):
   * rank 0 passes `value` and gets it back, the others pass null and wait for it through the rendezvous store, with a
   * deadline of its own (hours, not the collectives' timeout). Every rank calls it with the same fresh key.
   */
  fromRank0(key: string, value: string | null): string;
  /**
   * How the trainer sums gradients: during backward through c10d's Reducer (default where the build has it), or after
   * backward (reduceGradients; RETAIN_DIST_OVERLAP=0). Both give the same sums.
   */
  overlap?: boolean;
  /** Gradient bucket size in bytes (RETAIN_DIST_BUCKET_MB; default 25 MiB, DDP's). */
  bucketBytes?: number;
}

/**
 * A head a method adds and fits from scratch (a linear probe's classifier). It has no pretrained value: methods that
 * anchor to θ₀ (L2-SP, EWC) leave it out, and WiSE-FT interpolates it against the head as the probe left it.
 */
export interface NewHead {
  /** Matches the head's parameter (and state-dict) names. */
  pattern: RegExp;
  /** Whether the head is still being fitted on the frozen body at this step (a pure function of step and epoch). */
  probing(ctx: SetupContext): boolean;
}

/** What a method needs to write the final output of `retain train` itself. */
export interface FinalSave {
  model: TrainableModel;
  /** The directory to write (output_dir/final). */
  dir: string;
  /** The loaded model with its config and tokenizer files, for savePretrained. */
  pretrained: Pretrained;
  /** The model path from the config (an adapter's base_model_name_or_path). */
  basePath: string;
}

export interface Method {
  readonly name: string;
  /** Exclusive roles this method takes; two methods with one role cannot run together. */
  readonly roles?: Role[];
  /** Methods this one cannot be combined with, and why. */
  readonly conflicts?: { [method: string]: string };
  /** The head this method adds and fits from scratch (probe, flow_vision). */
  readonly newHead?: NewHead;
  /** Why this method needs every training example to be one sample; `retain train` refuses packed data (data.train.pack) with it. */
  readonly wholeExamples?: string;
  /**
   * Setup, first: decides what trains before any optimizer exists, as PEFT does (LoRA swaps in adapters, HFT and a
   * probe freeze parts). Returns the run's trainable parameters when it replaces them; the optimizer is then built
   * over those. Runs before a resumed run loads its checkpoint, so the checkpoint's keys find their tensors.
   */
  parameterize?(ctx: SetupContext): NamedParams | void;
  /**
   * Setup, after parameterize: builds the run's one optimizer over ctx.params in place of the run's own AdamW or SGD
   * (MoFO), from the run's hyperparameters. The loop sets every group's lr from the schedule before each step and
   * saves and restores the optimizer's state in checkpoints.
   */
  makeOptimizer?(ctx: SetupContext, hyper: OptimizerHyper): OptimizerLike;
  /** Setup, once the optimizer exists and before a checkpoint is loaded: compute weights, Fisher, θ₀. */
  setup?(ctx: TrainContext): void | Promise<void>;
  /** Step, compose: build the batch of this step (mixing composes it from several sources). */
  composeBatch?(ctx: TrainContext, next: () => Batch): Batch;
  /** With composeBatch: how many training-set examples one `next()` yields when a step holds `batchSize` in all (m:n mixing). */
  loaderBatchSize?(batchSize: number): number;
  /** Step, first: before its batches are composed (LP-FT's phase switch, EWC's lazy Fisher). */
  beforeStep?(ctx: TrainContext): void;
  /**
   * Step, weights: per-sample loss weights [B] for each micro-batch of an optimizer step (FLOW), given all of them at
   * once so that a per-step rule (normalisation, batch median) does not depend on grad_accum; null keeps weight 1.
   */
  stepWeights?(ctx: TrainContext, micro: Batch[]): (Tensor | null)[];
  /**
   * Step, compose: each micro-batch once per step, after composition and before its trained tokens are counted: SDFT
   * samples the student's responses here and sets those rows' tokenCounts to the sampled lengths (the step's normaliser).
   */
  prepareBatch?(ctx: TrainContext, batch: Batch): void;
  /** Step, forward: replaces the data loss of a micro-batch (SDFT's reverse KL); `plain` is the run's own loss, for rows it leaves alone. */
  sampleLoss?(ctx: TrainContext, batch: Batch, plain: (batch: Batch) => SampleLosses): SampleLosses;
  /** Step, loss terms: extra scalar losses added to the data loss before backward (L2-SP, EWC). */
  lossTerms?(ctx: TrainContext): { name: string; value: Tensor }[];
  /** Step, forward and backward: replaces the plain pass; `closure` computes the loss and backpropagates it (SAM). */
  forwardBackward?(ctx: TrainContext, closure: () => number): number;
  /** Step, after backward: gradients exist, before clipping and the update (HFT masks frozen halves). */
  afterBackward?(ctx: TrainContext): void;
  /** Step, last: after the update, with ctx.step counting it. */
  afterStep?(ctx: TrainContext): void;
  /** Step, compose: when the loader starts an epoch (HFT's draw). */
  onEpochStart?(ctx: TrainContext, epoch: number): void;
  /** End: after the last step, before the final save (WiSE-FT interpolation, LoRA merge). */
  finish?(ctx: TrainContext): void | Promise<void>;
  /** End: writes the run's final output into `dir` in place of the full model (LoRA: the adapter in PEFT's layout). */
  saveFinal?(f: FinalSave): void | Promise<void>;
  /** Checkpoint: tensors to store so a resumed run continues exactly (restored by loadStateTensors at resume). */
  stateTensors?(): Map<string, Tensor>;
  loadStateTensors?(t: Map<string, Tensor>): void;
}

/** Refuses combinations up front: a shared exclusive role, or a declared conflict. */
export function checkComposition(methods: Method[]): void {
  const seen = new Map<Role, string>();
  const names = new Set<string>();
  for (const m of methods) {
    if (names.has(m.name)) throw new Error(`method '${m.name}' is listed twice`);
    names.add(m.name);
    for (const r of m.roles ?? []) {
      const other = seen.get(r);
      if (other) throw new Error(`methods '${other}' and '${m.name}' cannot run together: both take the ${r} role`);
      seen.set(r, m.name);
    }
  }
  for (const m of methods) {
    for (const [other, why] of Object.entries(m.conflicts ?? {})) {
      if (names.has(other)) throw new Error(`methods '${m.name}' and '${other}' cannot run together: ${why}`);
    }
  }
}
