// HFT, half fine-tuning (Hui et al., ACL 2025, arXiv 2404.18466), docs/METHODS.md §10.
//
// Half of each transformer block trains and the other half stays at its pretrained value, chosen by category: in
// attention 2 of {q,k,v,o}; in the MLP 2 of {gate,up,down} in half of the layers and 1 of 3 in the other half (so the
// MLP is half-trained on average too). The choice is drawn again at every epoch from a seeded generator: the draw for
// epoch e depends only on (seed, e), so a resumed run draws the same halves.
//
// How frozen stays frozen, bit for bit: a frozen tensor gets requiresGrad = false, so backward leaves its .grad null,
// and every optimizer here (AdamW, SGD, MoFO's) skips a parameter whose grad is null — no decoupled weight decay, no
// momentum carrying it on, no step count. Zeroing the gradient instead would not be enough: AdamW would still decay
// the weights and move them by its momentum. The frozen tensor's optimizer moments pause with it and resume when a
// later epoch unfreezes it (with its own step count, so the bias correction continues where it stopped). Gradient
// clipping and SAM's ‖g‖ then cover the trained half only, and backward skips the frozen weights' gradients.
// afterBackward also drops any gradient that something else put on a frozen tensor.
//
// Parameters outside the seven projection categories (embeddings, norms, the output head) follow `others`: 'train'
// (default) or 'freeze'.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Method, Role, SetupContext, TrainContext } from '../train/hooks.js';
import { rng } from '../data/loader.js';
import { z } from 'zod';
import { integer, parseOptions } from '../options.js';

export const hftOptions = z.object({
  seed: integer().default(0).describe('Seed of the per-epoch draw of the half that trains.'),
  others: z.enum(['train', 'freeze']).default('train').describe('What happens to parameters that are not q/k/v/o/gate/up/down projections (embeddings, norms, the head).'),
}).strict();

const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
const MLP = ['gate_proj', 'up_proj', 'down_proj'] as const;
const CATEGORY = /(?:^|\.)layers\.(\d+)\.(?:[\w.]*\.)?(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.[\w.]+$/;

/** The modules that train in one draw: layer index → projection names. */
export type HftDraw = Map<number, Set<string>>;

function shuffled<T>(xs: readonly T[], r: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** The trained half for an epoch: a pure function of (layers, seed, epoch). */
export function hftDraw(layers: number[], seed: number, epoch: number): HftDraw {
  const r = rng((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
  // Which layers train 2 of the 3 MLP projections: half of them; with an odd count the middle one is a coin flip.
  const order = shuffled(layers, r);
  const twoCount = Math.floor(layers.length / 2) + (layers.length % 2 === 1 && r() < 0.5 ? 1 : 0);
  const twoMlp = new Set(order.slice(0, twoCount));
  const draw: HftDraw = new Map();
  for (const l of layers) {
    const train = new Set<string>([...shuffled(ATTN, r).slice(0, 2), ...shuffled(MLP, r).slice(0, twoMlp.has(l) ? 2 : 1)]);
    draw.set(l, train);
  }
  return draw;
}

export class Hft implements Method {
  readonly name = 'hft';
  readonly roles: Role[] = [];
  readonly conflicts = {
    lora: 'HFT chooses which pretrained weights train, and under LoRA none of them do (only the adapters train)',
    probe: 'a linear probe trains only the new head, so there is no half of the body for HFT to choose',
  };
  readonly seed: number;
  readonly others: 'train' | 'freeze';
  /** Epoch of the current draw, and the draw. */
  epoch = -1;
  draw: HftDraw = new Map();
  /** Every parameter HFT governs, with whether it trains in the current draw. */
  readonly governed = new Map<Tensor, { name: string; layer: number | null; category: string | null; trains: boolean }>();

  constructor(o: Record<string, unknown> = {}) {
    ({ seed: this.seed, others: this.others } = parseOptions('hft', hftOptions, o));
  }

  /** Governs every trainable parameter (the optimizer holds them all; a frozen one is skipped) and draws epoch 0. */
  parameterize(ctx: SetupContext): void {
    for (const [name, p] of ctx.params) {
      const m = CATEGORY.exec(name);
      this.governed.set(p, { name, layer: m ? Number(m[1]) : null, category: m ? m[2] : null, trains: true });
    }
    if (![...this.governed.values()].some((g) => g.category)) {
      throw new Error('hft: the model has no layers.N.{q,k,v,o,gate,up,down}_proj parameters to choose halves from');
    }
    this.apply(ctx, ctx.epoch);
  }

  onEpochStart(ctx: TrainContext, epoch: number): void {
    this.apply(ctx, epoch);
  }

  afterBackward(): void {
    for (const [p, g] of this.governed) if (!g.trains && p.grad !== null) p.grad = null;
  }

  /** Draws the halves for `epoch` and sets requiresGrad accordingly. */
  apply(ctx: SetupContext | null, epoch: number): void {
    const layers = [...new Set([...this.governed.values()].filter((g) => g.layer !== null).map((g) => g.layer!))].sort((a, b) => a - b);
    this.draw = hftDraw(layers, this.seed, epoch);
    this.epoch = epoch;
    let trained = 0;
    let total = 0;
    for (const [p, g] of this.governed) {
      g.trains = g.category === null ? this.others === 'train' : this.draw.get(g.layer!)!.has(g.category);
      p.requiresGrad = g.trains;
      if (!g.trains) p.grad = null;
      if (g.category !== null) {
        total += p.numel();
        if (g.trains) trained += p.numel();
      }
    }
    const summary = layers.map((l) => `${l}:${[...this.draw.get(l)!].map((c) => c.replace('_proj', '')).sort().join(',')}`).join(' ');
    ctx?.log({ kind: 'hft', epoch, hft_training: summary, hft_trained_fraction: +(trained / Math.max(1, total)).toFixed(4) });
  }

  stateTensors(): Map<string, Tensor> {
    return new Map([['epoch', torch.tensor(this.epoch, { dtype: 'int64' })]]);
  }

  loadStateTensors(t: Map<string, Tensor>): void {
    const e = t.get('epoch');
    if (e) this.apply(null, e.item());
  }
}
