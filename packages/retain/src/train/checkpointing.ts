// Activation checkpointing per decoder layer (training.gradient_checkpointing): a checkpointed layer keeps only its
// input during the forward and is recomputed, with grad on, during backward.
//
// @retain/torch has no JS-defined autograd Function, so the graph is cut at each checkpointed layer's output:
//   forward:  y = layer(x) under no_grad; the model goes on from y' = y.detach().requiresGrad_() (a leaf); the tape
//             keeps x (with its graph, if it has one), the layer's other arguments and the RNG state;
//   backward: the caller's backward stops at the leaves y'; then, last layer first, the layer is recomputed from x
//             with the RNG state replayed (dropout draws the same masks) and backpropagated with y'.grad, which
//             reaches the parameters and x: the previous checkpointed layer's leaf, or the graph below it.
// The plain forward is untouched where checkpointing is off, and under no_grad (evaluation) the layers run as usual.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { TrainableModel } from './hooks.js';

/** training.gradient_checkpointing: every layer, the listed layer indices, or every k-th layer (0, k, 2k, ...). */
export type CheckpointingSetting = boolean | number[] | { every: number };

type Forward = (...args: unknown[]) => Tensor;
interface LayerLike { forward: Forward }

interface Entry {
  layer: LayerLike;
  forward: Forward;
  /** Own handles (torch.native.share) of the layer's arguments: the model may dispose its own after the loop. */
  args: unknown[];
  /** The leaf the model continued from; its .grad is the layer output's gradient after the caller's backward. */
  output: Tensor;
  rng: Tensor;
}

/** The decoder layers of a causal LM: model.layers (Llama family, Gemma) or transformer.h (GPT-2); null otherwise. */
export function decoderLayers(model: TrainableModel): LayerLike[] | null {
  const m = model as unknown as { model?: { layers?: Iterable<LayerLike> }; transformer?: { h?: Iterable<LayerLike> } };
  const list = m.model?.layers ?? m.transformer?.h;
  return list ? [...list] : null;
}

/** The layer indices a setting selects among n layers, with an error naming the key where it cannot apply. */
export function checkpointedLayers(setting: CheckpointingSetting, n: number): number[] {
  if (setting === false) return [];
  if (setting === true) return Array.from({ length: n }, (_, i) => i);
  if (Array.isArray(setting)) {
    const bad = setting.filter((i) => !(Number.isInteger(i) && i >= 0 && i < n));
    if (bad.length) throw new Error(`training.gradient_checkpointing: layer ${bad.join(', ')} does not exist; the model has layers 0..${n - 1}`);
    return [...new Set(setting)].sort((a, b) => a - b);
  }
  return Array.from({ length: n }, (_, i) => i).filter((i) => i % setting.every === 0);
}

/** A second handle to the same tensor (and its .grad); plain objects of tensors (Gemma's masks) are copied field by field. */
function own(v: unknown): unknown {
  if (v instanceof torch.Tensor) return torch.keep(new torch.Tensor(torch.native.share(v.h)));
  if (v && Object.getPrototypeOf(v) === Object.prototype) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, own(x)]));
  return v;
}

function release(v: unknown): void {
  if (v instanceof torch.Tensor) v.dispose();
  else if (v && Object.getPrototypeOf(v) === Object.prototype) Object.values(v).forEach(release);
}

export class LayerCheckpointing {
  readonly layers: number[];
  private tape: Entry[] = [];
  private restore: (() => void)[] = [];
  private recording = 0;

  constructor(model: TrainableModel, setting: CheckpointingSetting) {
    const all = decoderLayers(model);
    if (!all) throw new Error('training.gradient_checkpointing: this model has no decoder layers to checkpoint (it applies to causal LMs: the Llama family, Gemma, GPT-2)');
    this.layers = checkpointedLayers(setting, all.length);
    for (const i of this.layers) {
      const layer = all[i];
      const forward = layer.forward;
      layer.forward = (...args: unknown[]) => this.forward(layer, forward, args);
      this.restore.push(() => void (layer.forward = forward));
    }
  }

  private forward(layer: LayerLike, forward: Forward, args: unknown[]): Tensor {
    if (!this.recording || !torch.isGradEnabled()) return forward.apply(layer, args);
    const rng = torch.keep(torch.getRngState());
    const y = torch.noGrad(() => forward.apply(layer, args));
    const output = y.detach().requiresGrad_(true);
    y.dispose();
    this.tape.push({ layer, forward, args: args.map(own), output: own(output) as Tensor, rng });
    return output;
  }

  /** Recomputes the taped layers, last first, and backpropagates their outputs' gradients; empties the tape. */
  backward(): void {
    try {
      while (this.tape.length) {
        const e = this.tape[this.tape.length - 1];
        const g = e.output.grad;
        if (g) torch.tidy(() => this.recompute(e, g));
        this.drop(this.tape.pop()!);
      }
    } finally {
      this.clear();
    }
  }

  private recompute(e: Entry, grad: Tensor): void {
    const now = torch.getRngState();
    torch.setRngState(e.rng);
    try {
      const y = torch.enableGrad(() => e.forward.apply(e.layer, e.args));
      if (y.requiresGrad) y.backward(grad);
    } finally {
      torch.setRngState(now);
      now.dispose();
    }
  }

  /** Forgets a forward that will not be backpropagated (a step that failed half-way). */
  clear(): void {
    for (const e of this.tape.splice(0)) this.drop(e);
  }

  /**
   * Runs the forward of a step with the layers checkpointed (a fresh tape); backward() must follow the caller's
   * backward. Outside it the layers run plain, so a method's own forward and backward (EWC's Fisher) are unaffected.
   */
  record<T>(fn: () => T): T {
    this.clear();
    this.recording++;
    try {
      return fn();
    } finally {
      this.recording--;
    }
  }

  /** Gives the layers back their own forwards. */
  dispose(): void {
    this.clear();
    for (const r of this.restore.splice(0)) r();
  }

  private drop(e: Entry): void {
    e.args.forEach(release);
    e.output.dispose();
    e.rng.dispose();
  }
}
