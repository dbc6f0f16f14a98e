// Learning-rate schedules as pure functions of the step, with Hugging Face transformers' definitions
// (get_constant_schedule, get_constant_schedule_with_warmup, get_linear_schedule_with_warmup,
// get_cosine_schedule_with_warmup and get_cosine_with_min_lr_schedule_with_warmup), so a resumed run needs nothing
// but the step number. `step` counts optimizer steps already taken: the lr for the first step is lrAt(s, 0).
// A warm-up given to 'constant' makes it 'constant_with_warmup' (transformers would ignore it silently).
import type { GroupHyper } from './optimizer.js';

export type ScheduleKind = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine';

export interface Schedule {
  kind: ScheduleKind;
  /** Peak learning rate for lrAt(); LRScheduler uses each group's own lr instead. Default 1 (lrAt = the factor). */
  lr?: number;
  /** Linear warm-up from 0 over this many steps. */
  warmupSteps?: number;
  /** Warm-up as a fraction of totalSteps, rounded up (transformers' warmup_ratio); used when warmupSteps is 0 or unset. */
  warmupRatio?: number;
  /** Steps of the whole run; needed by 'linear' and 'cosine' (or passed to lrAt / lrFactor). */
  totalSteps?: number;
  /** Cosine periods over the decay; 0.5 (default) is one half-wave from the peak down to the floor. */
  numCycles?: number;
  /** Cosine floor as a fraction of the peak (transformers' min_lr_rate); 0 decays to zero. */
  minLrRatio?: number;
}

/** The name the trainer knows it by. */
export type ScheduleSpec = Schedule;

export function warmupSteps(s: Schedule, totalSteps = s.totalSteps): number {
  if (s.warmupSteps !== undefined && s.warmupSteps !== 0) return s.warmupSteps;
  if (s.warmupRatio !== undefined) return Math.ceil((totalSteps ?? 0) * s.warmupRatio);
  return 0;
}

/** Throws on a schedule that cannot be evaluated. */
export function checkSchedule(s: Schedule, totalSteps = s?.totalSteps): void {
  if (s === null || typeof s !== 'object') throw new TypeError('a schedule must be an object with a kind');
  if (!['constant', 'constant_with_warmup', 'linear', 'cosine'].includes(s.kind)) {
    throw new TypeError(`unknown schedule '${s.kind}'; use constant, constant_with_warmup, linear or cosine`);
  }
  const w = warmupSteps(s, totalSteps);
  if (!(Number.isInteger(w) && w >= 0)) throw new RangeError(`warm-up steps must be a non-negative integer, got ${w}`);
  if (s.warmupRatio !== undefined && !(s.warmupRatio >= 0 && s.warmupRatio <= 1)) throw new RangeError(`warmupRatio must be in [0, 1], got ${s.warmupRatio}`);
  if ((s.kind === 'linear' || s.kind === 'cosine') && !(Number.isInteger(totalSteps) && totalSteps! >= 0)) {
    throw new RangeError(`schedule '${s.kind}' needs totalSteps (a non-negative integer), got ${totalSteps}`);
  }
  if (s.numCycles !== undefined && !Number.isFinite(s.numCycles)) throw new RangeError(`invalid numCycles: ${s.numCycles}`);
  if (s.minLrRatio !== undefined && !(s.minLrRatio >= 0 && s.minLrRatio <= 1)) throw new RangeError(`minLrRatio must be in [0, 1], got ${s.minLrRatio}`);
  if (s.lr !== undefined && !(s.lr >= 0)) throw new RangeError(`invalid lr: ${s.lr}`);
}

/**
 * The multiplier of the peak lr after `step` optimizer steps. Past totalSteps, linear stays at 0 and cosine follows
 * its curve on (back up, with numCycles 0.5), exactly as transformers' lambdas do.
 */
export function lrFactor(s: Schedule, step: number, totalSteps = s.totalSteps): number {
  const warm = warmupSteps(s, totalSteps);
  if (step < warm) return step / Math.max(1, warm);
  const total = totalSteps as number;
  switch (s.kind) {
    case 'constant':
    case 'constant_with_warmup':
      return 1;
    case 'linear':
      if (total === undefined) throw new RangeError("schedule 'linear' needs totalSteps");
      return Math.max(0, (total - step) / Math.max(1, total - warm));
    case 'cosine': {
      if (total === undefined) throw new RangeError("schedule 'cosine' needs totalSteps");
      const progress = (step - warm) / Math.max(1, total - warm);
      const wave = 0.5 * (1 + Math.cos(Math.PI * (s.numCycles ?? 0.5) * 2 * progress));
      const floor = s.minLrRatio ?? 0;
      return Math.max(0, floor === 0 ? wave : wave * (1 - floor) + floor);
    }
    default:
      throw new TypeError(`unknown schedule '${(s as Schedule).kind}'`);
  }
}

/** The learning rate after `step` optimizer steps: (s.lr ?? 1) · lrFactor(s, step, totalSteps). */
export function lrAt(s: Schedule, step: number, totalSteps = s.totalSteps): number {
  return (s.lr ?? 1) * lrFactor(s, step, totalSteps);
}

export interface LRSchedulerState {
  step: number;
  baseLrs: number[];
}

/**
 * torch's LambdaLR with a Schedule: each group's lr is its base lr times lrFactor(step). The base lr is the group's
 * `initialLr` if set (a resumed optimizer carries it), else its lr at construction, recorded as `initialLr`.
 * Construction applies step 0; call step() after each optimizer.step().
 */
export class LRScheduler {
  readonly schedule: Schedule;
  /** Optimizer steps taken so far. */
  stepCount = 0;
  baseLrs: number[];

  constructor(readonly optimizer: { paramGroups: GroupHyper[] }, schedule: Schedule, totalSteps = schedule?.totalSteps) {
    checkSchedule(schedule, totalSteps);
    this.schedule = { ...schedule, totalSteps };
    for (const g of optimizer.paramGroups) if (g.initialLr === undefined) g.initialLr = g.lr;
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr as number);
    this.apply();
  }

  private apply(): void {
    const f = lrFactor(this.schedule, this.stepCount);
    this.optimizer.paramGroups.forEach((g, i) => {
      const base = this.baseLrs[i] ?? (g.initialLr as number | undefined) ?? g.lr;
      g.lr = base * f;
    });
  }

  /** Advances one optimizer step and sets the groups' lr for the next. */
  step(): void {
    this.stepCount++;
    this.apply();
  }

  /** The lr each group has now. */
  lastLrs(): number[] {
    return this.optimizer.paramGroups.map((g) => g.lr);
  }

  stateDict(): LRSchedulerState {
    return { step: this.stepCount, baseLrs: [...this.baseLrs] };
  }

  loadStateDict(s: LRSchedulerState): void {
    if (!s || !Number.isInteger(s.step) || s.step < 0 || !Array.isArray(s.baseLrs)) throw new TypeError('LRScheduler.loadStateDict: expected { step, baseLrs }');
    if (s.baseLrs.length !== this.optimizer.paramGroups.length) {
      throw new Error(`LRScheduler.loadStateDict: ${s.baseLrs.length} base lrs saved, the optimizer has ${this.optimizer.paramGroups.length} groups`);
    }
    this.stepCount = s.step;
    this.baseLrs = [...s.baseLrs];
    this.optimizer.paramGroups.forEach((g, i) => (g.initialLr = this.baseLrs[i]));
    this.apply();
  }
}
