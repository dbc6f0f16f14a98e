// Learning-rate schedules as pure functions of the step (0-based, before the optimizer step), so a resumed run
// needs nothing but the step number. Warm-up is linear from 0; decays follow Hugging Face's definitions.
export interface ScheduleSpec {
  kind: 'constant' | 'linear' | 'cosine';
  lr: number;
  warmupSteps?: number;
  /** Fraction of total steps used for warm-up when warmupSteps is not given (e.g. 0.06). */
  warmupRatio?: number;
  /** Cosine floor as a fraction of lr (0 = decay to zero). */
  minLrRatio?: number;
}

export function warmupOf(s: ScheduleSpec, total: number): number {
  return s.warmupSteps ?? Math.ceil((s.warmupRatio ?? 0) * total);
}

export function lrAt(s: ScheduleSpec, step: number, total: number): number {
  const warm = warmupOf(s, total);
  if (step < warm) return (s.lr * step) / Math.max(1, warm);
  const progress = (step - warm) / Math.max(1, total - warm);
  switch (s.kind) {
    case 'constant':
      return s.lr;
    case 'linear':
      return s.lr * Math.max(0, 1 - progress);
    case 'cosine': {
      const floor = s.minLrRatio ?? 0;
      return s.lr * (floor + (1 - floor) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
    }
    default:
      throw new Error(`unknown schedule '${(s as ScheduleSpec).kind}'; use constant, linear or cosine`);
  }
}

/** Sets each group's lr from a schedule at a step; keeps per-group multipliers (`lrScale`). */
export class LRScheduler {
  step = 0;
  constructor(readonly optimizer: { paramGroups: { lr: number; lrScale?: unknown }[] }, readonly spec: ScheduleSpec, readonly totalSteps: number) {
    this.apply();
  }
  private apply(): void {
    const lr = lrAt(this.spec, this.step, this.totalSteps);
    for (const g of this.optimizer.paramGroups) g.lr = lr * ((g.lrScale as number | undefined) ?? 1);
  }
  /** Advance one optimizer step. */
  advance(): void {
    this.step++;
    this.apply();
  }
  get lr(): number {
    return lrAt(this.spec, this.step, this.totalSteps);
  }
  stateDict(): { step: number } {
    return { step: this.step };
  }
  loadStateDict(s: { step: number }): void {
    this.step = s.step;
    this.apply();
  }
}
