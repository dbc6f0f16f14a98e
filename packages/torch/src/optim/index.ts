// Optimizers (SGD, AdamW, Adam), gradient clipping and learning-rate schedules.
export {
  Optimizer, flattenStateDict, unflattenStateDict,
  type GroupHyper, type ParamGroup, type ParamsArg, type ParamState, type OptimizerStateDict, type FlatOptimizerState,
} from './optimizer.js';
export { SGD, type SGDHyper, type SGDOptions, type SGDState } from './sgd.js';
export { AdamW, Adam, type AdamHyper, type AdamImpl, type AdamWOptions, type AdamState, type UpdateBatch } from './adamw.js';
export { clipGradNorm_, clipGradValue_, type ClipOptions } from './clip.js';
export { lrAt, lrFactor, warmupSteps, checkSchedule, LRScheduler, type Schedule, type ScheduleKind, type LRSchedulerState } from './schedule.js';
