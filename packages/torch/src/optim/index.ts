// Optimizers, gradient clipping and learning-rate schedules.
export { Optimizer, type ParamGroup, type ParamsArg, type ParamState, type OptimizerStateDict } from './optimizer.js';
export { SGD, type SGDOptions } from './sgd.js';
export { AdamW, Adam, type AdamWOptions, type AdamState } from './adamw.js';
export { clipGradNorm_, clipGradValue_ } from './clip.js';
export { lrAt, warmupOf, LRScheduler, type ScheduleSpec } from './schedule.js';
