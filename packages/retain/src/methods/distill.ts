// Distillation replay — Learning without Forgetting (Li & Hoiem, ECCV 2016, arXiv 1606.09282), docs/METHODS.md §12: the
// loss gains λ_d·T²·KL(softmax(z₀/T) ‖ softmax(z/T)), averaged over the trained tokens of a batch of general data,
// where z₀ are the frozen base model's logits and z the model's. No labels are needed: `data` is replay text or what
// `retain synth` wrote (§3), loaded like mixing's general data. The T² keeps the term's gradient scale independent of
// T (Hinton et al. 2015). Defaults from the paper: T = 2 and weight λ_o = 1.
//
// Base logits are computed on the fly, not cached: at the start of every step θ₀ (a copy of every parameter taken at
// setup, which runs before a resumed run loads its checkpoint) is swapped into the model for one no-grad, eval-mode
// forward of that step's general batch, and the weights are put back bit for bit. Only the base log-probabilities of
// the trained positions are kept for the step ([N, V]). This is done before the step's forward passes, since copying
// into parameters later would invalidate the tensors autograd saved. With LoRA the adapters are scaled to 0 instead
// (the base is W₀ exactly). A cost: one extra copy of the parameters while swapping, and one forward per step.
//
// The general batch of step s is a pure function of s (positions s·b … s·b+b−1 of a stream that reshuffles the data,
// seeded, on every pass), so a resumed run and SAM's second pass see the same batch with no state to save.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { disposeBatch, epochOrder, IGNORE_INDEX, type Batch } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { Method, TrainableModel, TrainContext } from '../train/hooks.js';
import { z } from 'zod';
import { dataSpec, type DataSpec, type GivenExamples } from '../data/spec.js';
import { integer, nonNegative, parseOptions, positive, positiveInt } from '../options.js';
import { collateOn, keepModes, modelDevice, resolveData, type Options } from './support.js';
import { loraModules } from './lora/index.js';

export const distillOptions = z.object({
  data: dataSpec('general text to distil on').describe('General text to distil on: replay text or what retain synth wrote (a data spec, like data.train).'),
  weight: nonNegative().default(1).describe('Weight λ_d of the distillation term.'),
  temperature: positive().default(2).describe('Softmax temperature T of both distributions (the term is scaled by T²).'),
  batch_size: positiveInt(1e6).default(4).describe('General examples per step.'),
  seed: integer().default(0).describe('Seed of the general stream\'s shuffles.'),
}).strict();
const NEW_HEAD = 'a new head has no base predictions to distil toward (θ₀ would be its random initialisation)';

/**
 * λ·T²·mean over rows of KL(p₀ ‖ p): `baseLogProbs` [N, V] are log softmax(z₀/T) (no gradient), `logits` [N, V] the
 * model's raw logits. A scalar in the caller's scope.
 */
export function distillKl(baseLogProbs: Tensor, logits: Tensor, temperature: number, weight: number): Tensor {
  return torch.tidy(() => {
    const logp = logits.div(temperature).logSoftmax(-1); // [N, V]
    const kl = baseLogProbs.exp().mul(baseLogProbs.sub(logp)).sum(-1); // [N]
    return kl.mean().mul(weight * temperature * temperature);
  });
}

/** Flat indices [N] of the trained positions of a batch (targets ≠ ignore). */
function trainedPositions(b: Batch): Tensor {
  return torch.tidy(() => torch.ops.nonzero(b.targets.reshape(-1).ne(IGNORE_INDEX)).reshape(-1));
}

/** The model's logits at the trained positions, [N, V]. */
function logitsAt(model: TrainableModel, b: Batch, pos: Tensor): Tensor {
  return torch.tidy(() => {
    const logits = model.forward(b.ids) as Tensor; // [B, T, V]
    return logits.reshape(-1, logits.shape[2]).indexSelect(0, pos);
  });
}

export class Distill implements Method {
  readonly name = 'distill';
  readonly conflicts = { probe: NEW_HEAD, flow_vision: NEW_HEAD };
  readonly weight: number;
  readonly temperature: number;
  readonly batchSize: number;
  readonly seed: number;
  private readonly dataSpec: DataSpec | GivenExamples;
  data: Example[] = [];
  /** θ₀ by parameter name. */
  private base = new Map<string, Tensor>();
  /** The current step's general batch, its trained positions and the base log-probabilities there. */
  current: { step: number; examples: Example[]; batch: Batch; pos: Tensor; baseLogProbs: Tensor } | null = null;

  constructor(o: Options = {}) {
    const p = parseOptions(this.name, distillOptions, o);
    this.dataSpec = p.data;
    this.weight = p.weight;
    this.temperature = p.temperature;
    this.batchSize = p.batch_size;
    this.seed = p.seed;
  }

  async setup(ctx: TrainContext): Promise<void> {
    this.data = await resolveData(this.name, ctx, this.dataSpec, 'distill');
    const bad = this.data.find((e) => e.ids.length < 2 || !e.lossMask.some((m, t) => t > 0 && m));
    if (bad) throw new Error(`distill: general sample '${bad.id}' has no trained token to distil on (it needs at least 2 tokens)`);
    torch.noGrad(() => {
      for (const [n, p] of ctx.model.namedParameters()) this.base.set(n, torch.keep(p.detachedClone()));
    });
    ctx.log({ kind: this.name, distill_weight: this.weight, distill_temperature: this.temperature, distill_batch_size: this.batchSize, distill_examples: this.data.length, distill_base: 'on the fly (θ₀ swapped in, no grad)' });
  }

  /** The general examples of step s. */
  batchFor(step: number): Example[] {
    const n = this.data.length;
    const out: Example[] = [];
    let order: number[] = [];
    let pass = -1;
    for (let g = step * this.batchSize; g < (step + 1) * this.batchSize; g++) {
      const p = Math.floor(g / n);
      if (p !== pass) {
        pass = p;
        order = epochOrder(n, this.seed, p);
      }
      out.push(this.data[order[g % n]]);
    }
    return out;
  }

  beforeStep(ctx: TrainContext): void {
    this.release();
    // Under data parallelism the penalty is added on rank 0 only (the trainer counts penalties once).
    if (ctx.dist && ctx.dist.rank !== 0) return;
    const examples = this.batchFor(ctx.step);
    const batch = collateOn(examples, modelDevice(ctx.model));
    const pos = torch.keep(trainedPositions(batch));
    const baseLogProbs = torch.keep(torch.tidy(() => this.withBase(ctx.model, () => logitsAt(ctx.model, batch, pos).div(this.temperature).logSoftmax(-1)))); // [N, V]
    this.current = { step: ctx.step, examples, batch, pos, baseLogProbs };
  }

  /** Runs fn with θ₀ in the model (LoRA: adapters scaled to 0), without autograd, in eval mode; θ comes back exactly. */
  private withBase<T>(model: TrainableModel, fn: () => T): T {
    const lora = loraModules(model).map(([, l]) => l);
    const scales = lora.map((l) => l.scale);
    const saved: [Tensor, Tensor][] = [];
    return torch.noGrad(() => keepModes(model, () => {
      model.eval();
      try {
        if (lora.length) for (const l of lora) l.scale = 0;
        else {
          for (const [n, p] of model.namedParameters()) {
            const p0 = this.base.get(n);
            if (!p0) continue;
            saved.push([p, torch.keep(p.detachedClone())]);
            p.copy_(p0);
          }
        }
        return fn();
      } finally {
        lora.forEach((l, i) => (l.scale = scales[i]));
        for (const [p, s] of saved) {
          p.copy_(s);
          s.dispose();
        }
      }
    }));
  }

  lossTerms(ctx: TrainContext): { name: string; value: Tensor }[] {
    const c = this.current;
    if (!c || c.step !== ctx.step) throw new Error('distill: the step began without beforeStep (the loop must call it before the loss)');
    return [{ name: this.name, value: distillKl(c.baseLogProbs, logitsAt(ctx.model, c.batch, c.pos), this.temperature, this.weight) }];
  }

  private release(): void {
    if (!this.current) return;
    disposeBatch(this.current.batch);
    torch.dispose([this.current.pos, this.current.baseLogProbs]);
    this.current = null;
  }

  finish(): void {
    this.release();
  }

  dispose(): void {
    this.release();
    torch.dispose(this.base.values());
    this.base.clear();
  }
}
