// Linear probe and LP-FT (docs/METHODS.md §11): train only a new classification head on the frozen pretrained body; with
// `then: finetune`, switch to fine-tuning everything after `probe_steps` steps (or `probe_epochs` epochs), starting
// from the probed head.
//
// Frozen means bit-identical: body parameters get requiresGrad = false, so backward leaves their grad null and the
// optimizers skip them entirely (no weight decay, no momentum). The body also runs in eval mode during the probe, so
// dropout is off and batch-norm statistics do not move: the head learns on the body's fixed features. The phase is a
// pure function of the step (or epoch), applied at the start of every step, so a resumed run lands in the right one.
import type { Tensor } from '@retain/torch';
import type { Method, NewHead, SetupContext, TrainContext } from '../train/hooks.js';
import { z } from 'zod';
import { num, parseOptions, refuse, regex } from '../options.js';
import { matchParams, type Options } from './support.js';

/** The probe's fields, shared with flow_vision (whose probe always goes on to fine-tune). */
export const probeFields = {
  head: regex("a regular expression matching the new head's parameter names, e.g. '^classifier\\.'").describe("Matches the new head's parameter names (checkpoint names); everything else is the frozen body."),
  probe_steps: num('a non-negative integer', { int: true, min: 0, max: Number.MAX_SAFE_INTEGER }).optional().describe('Steps of the probe phase before fine-tuning everything.'),
  probe_epochs: num('a non-negative integer', { int: true, min: 0, max: Number.MAX_SAFE_INTEGER }).optional().describe('Epochs of the probe phase, instead of probe_steps.'),
};

/** The probe phase's settings as a HeadProbe takes them, checked. */
export interface ProbePhase {
  head: RegExp;
  then: 'none' | 'finetune';
  probe_steps?: number;
  probe_epochs?: number;
}

/** The rules that tie then, probe_steps and probe_epochs together. */
export function checkPhase(o: ProbePhase, ctx: z.RefinementCtx): void {
  const steps = o.probe_steps !== undefined;
  const epochs = o.probe_epochs !== undefined;
  if (steps && epochs) refuse(ctx, 'give probe_steps or probe_epochs, not both');
  else if (o.then === 'finetune' && !steps && !epochs) refuse(ctx, 'then: finetune needs probe_steps or probe_epochs (how long the probe phase lasts)');
  else if (o.then === 'none' && (steps || epochs)) refuse(ctx, 'probe_steps/probe_epochs only apply with then: finetune (a plain probe trains the head for the whole run)');
}

export const probeOptions = z.object({
  head: probeFields.head,
  then: z.enum(['none', 'finetune']).default('none').describe('none: train only the head for the whole run; finetune: LP-FT, fine-tune everything after the probe phase.'),
  probe_steps: probeFields.probe_steps,
  probe_epochs: probeFields.probe_epochs,
}).strict().superRefine(checkPhase);

/** The phase logic of a linear probe, shared by `probe` and FLOW's vision variant; it is the run's new head. */
export class HeadProbe implements NewHead {
  readonly head: RegExp;
  readonly then: 'none' | 'finetune';
  readonly probeSteps: number | null;
  readonly probeEpochs: number | null;
  private headParams = new Set<Tensor>();
  private bodyParams: Tensor[] = [];
  private headModules: string[] = [];
  /** requiresGrad and training flags as the run set them, restored when fine-tuning starts. */
  private trainable = new Map<Tensor, boolean>();
  private modes: [boolean, { training: boolean }][] = [];
  private phase: 'probe' | 'finetune' | null = null;

  /** `o` comes checked by the method's schema (checkPhase). */
  constructor(readonly method: string, o: ProbePhase) {
    this.head = o.head;
    this.then = o.then;
    this.probeSteps = o.probe_steps ?? null;
    this.probeEpochs = o.probe_epochs ?? null;
  }

  /** Finds the head and freezes the body for the probe phase; the body stays in the optimizer's set for LP-FT. */
  parameterize(ctx: SetupContext): void {
    const named = ctx.model.namedParameters();
    const head = matchParams(this.method, named, this.head, 'the head pattern');
    this.headParams = new Set(head.map(([, p]) => p));
    this.bodyParams = named.filter(([, p]) => !this.headParams.has(p)).map(([, p]) => p);
    this.headModules = [...new Set(head.map(([n]) => n.slice(0, Math.max(0, n.lastIndexOf('.')))))];
    for (const [, p] of named) this.trainable.set(p, p.requiresGrad);
    this.modes = ctx.model.modules().map((m) => [m.training, m]);
    if (!head.some(([, p]) => p.requiresGrad)) throw new Error(`${this.method}: the head parameters (${head.map(([n]) => n).join(', ')}) are frozen; nothing would train`);
    ctx.log({ kind: this.method, probe_head_tensors: head.length, probe_head_params: head.reduce((s, [, p]) => s + p.numel(), 0), probe_body_tensors: this.bodyParams.length, probe_then: this.then, ...(this.probeSteps !== null ? { probe_steps: this.probeSteps } : {}), ...(this.probeEpochs !== null ? { probe_epochs: this.probeEpochs } : {}) });
    this.apply(ctx);
  }

  get pattern(): RegExp {
    return this.head;
  }

  /** Whether this step belongs to the probe phase. */
  probing(ctx: SetupContext): boolean {
    if (this.then === 'none') return true;
    if (this.probeSteps !== null) return ctx.step < this.probeSteps;
    return ctx.epoch < this.probeEpochs!;
  }

  /** Puts parameters and module modes into the current phase; returns true when the phase just changed to fine-tuning. */
  apply(ctx: SetupContext): boolean {
    const phase = this.probing(ctx) ? 'probe' : 'finetune';
    if (phase === 'probe') {
      if (this.phase !== 'probe') for (const p of this.bodyParams) p.requiresGrad = false;
      // Re-asserted every step: an evaluation between steps puts the whole model back into train mode.
      for (const [path, m] of ctx.model.namedModules()) m.training = this.headModules.some((h) => path === h || path.startsWith(h + '.'));
    }
    const switched = phase === 'finetune' && this.phase !== 'finetune';
    if (switched) {
      for (const p of this.bodyParams) p.requiresGrad = this.trainable.get(p) ?? false;
      for (const [t, m] of this.modes) m.training = t;
      if (this.phase === 'probe') ctx.log({ kind: this.method, probe_phase: 'finetune', probe_switch_step: ctx.step, probe_switch_epoch: ctx.epoch });
    }
    this.phase = phase;
    return switched;
  }

  /** Drops any gradient that reached the body during the probe (another method may have put one there). */
  dropBodyGrads(ctx: TrainContext): void {
    if (this.phase !== 'probe') return;
    // Setting null needs no read: reading .grad would make a handle per tensor.
    for (const p of this.bodyParams) p.grad = null;
    void ctx;
  }
}

/** `probe`: a linear probe on the frozen body, or LP-FT with `then: finetune`. */
export class LinearProbe implements Method {
  readonly name: string = 'probe';
  readonly conflicts = {
    hft: 'both decide which parameters train',
    flow_vision: 'flow_vision runs its own linear probe before fine-tuning',
  };
  readonly probe: HeadProbe;

  constructor(o: Options = {}) {
    this.probe = new HeadProbe('probe', parseOptions('probe', probeOptions, o));
  }

  get newHead(): NewHead {
    return this.probe;
  }

  parameterize(ctx: SetupContext): void {
    this.probe.parameterize(ctx);
  }

  beforeStep(ctx: TrainContext): void {
    this.probe.apply(ctx);
  }

  onEpochStart(ctx: TrainContext): void {
    this.probe.apply(ctx);
  }

  afterBackward(ctx: TrainContext): void {
    this.probe.dropBodyGrads(ctx);
  }
}
