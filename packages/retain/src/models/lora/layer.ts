// The LoRA layer: y = x·W₀ᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ with s = (α/r)·scale (docs/METHODS.md §8).
//
// It is a Module, not an nn.Linear: Llama's forward fuses sibling projections into one GEMM only for plain Linear
// layers, and this one must run its own forward. It exposes Linear's fields (weight, bias, inFeatures,
// outFeatures) so code that reads them keeps working, and it registers the base weight under the same name
// ('weight'), so the model's state dict keeps every pretrained key and adds `<path>.lora_A.weight` [r, in] and
// `<path>.lora_B.weight` [out, r] — the keys PEFT's adapter files use under `base_model.model.`.
//
// Adapters of a half-precision base are kept in float32 (as PEFT does by default): the input is cast up for the
// adapter's two small products and the result cast back before it is added.
//
// GPT-2's Conv1D layers (y = x·W + b, W stored [in, out]) take adapters too: A and B keep Linear's orientation (PEFT
// stores them so for Conv1D as well, with fan_in_fan_out: true), and only the merge transposes B·A into W's layout.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { Conv1D } from '../gpt2.js';

const { nn } = torch;

export interface LoraLayerOptions {
  r: number;
  alpha: number;
  dropout?: number;
  /** rsLoRA: s = α/√r instead of α/r (only read from adapter files that ask for it). */
  rslora?: boolean;
}

/** The layers an adapter can wrap. */
export type AdaptableLayer = torch.nn.Linear | Conv1D;

export function isAdaptable(m: unknown): m is AdaptableLayer {
  return m instanceof nn.Linear || m instanceof Conv1D;
}

export class LoraLinear extends nn.Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly r: number;
  readonly alpha: number;
  readonly dropoutP: number;
  readonly rslora: boolean;
  /** The base is a Conv1D: weight [in, out] (PEFT's fan_in_fan_out). */
  readonly fanInFanOut: boolean;
  weight: Tensor;
  bias: Tensor | null;
  lora_A: torch.nn.Linear;
  lora_B: torch.nn.Linear;
  /** Whether the base weight required grad before wrapping (restored when the adapter is unloaded). */
  readonly baseRequiresGrad: boolean;
  private userScale = 1;
  /** The s that is currently folded into `weight` (null when unmerged). */
  private mergedScaling: number | null = null;

  constructor(base: AdaptableLayer, o: LoraLayerOptions) {
    super();
    if (!Number.isInteger(o.r) || o.r <= 0) throw new Error(`lora: r must be a positive integer, got ${o.r}`);
    if (!(typeof o.alpha === 'number' && Number.isFinite(o.alpha))) throw new Error(`lora: alpha must be a number, got ${o.alpha}`);
    const p = o.dropout ?? 0;
    if (!(p >= 0 && p < 1)) throw new Error(`lora: dropout must be in [0, 1), got ${o.dropout}`);
    this.inFeatures = base.inFeatures;
    this.outFeatures = base.outFeatures;
    this.r = o.r;
    this.alpha = o.alpha;
    this.dropoutP = p;
    this.rslora = o.rslora ?? false;
    this.fanInFanOut = base instanceof Conv1D;
    this.baseRequiresGrad = base.weight.requiresGrad;
    this.weight = this.registerParameter('weight', base.weight, { requiresGrad: false });
    this.bias = this.registerParameter('bias', base.bias, { requiresGrad: false });
    const wd = base.weight.dtype;
    const dtype = wd === 'float32' || wd === 'float64' ? wd : 'float32';
    const device = base.weight.device;
    // A: kaiming-uniform with a = √5 (nn.Linear's own initialisation, and PEFT's default); B: zero, so the wrapped
    // layer starts as exactly the pretrained one.
    this.lora_A = this.registerModule('lora_A', new nn.Linear(this.inFeatures, this.r, { bias: false, dtype, device }));
    this.lora_B = this.registerModule('lora_B', new nn.Linear(this.r, this.outFeatures, { bias: false, dtype, device }));
    nn.init.zeros_(this.lora_B.weight);
  }

  /** s = (α/r)·scale, or (α/√r)·scale under rsLoRA. */
  get scaling(): number {
    return (this.rslora ? this.alpha / Math.sqrt(this.r) : this.alpha / this.r) * this.userScale;
  }

  /** Multiplies the adapter's contribution by `s` (WiSE-FT on an adapter: s = α). Works merged or not. */
  get scale(): number {
    return this.userScale;
  }
  set scale(s: number) {
    if (!Number.isFinite(s)) throw new Error(`lora: scale must be a finite number, got ${s}`);
    const was = this.mergedScaling;
    this.userScale = s;
    if (was !== null) {
      this.foldIn(this.scaling - was);
      this.mergedScaling = this.scaling;
    }
  }

  get merged(): boolean {
    return this.mergedScaling !== null;
  }

  /** ΔW = s·B·A in the base weight's layout ([out, in], or [in, out] for Conv1D) and dtype (no graph). */
  delta(s = this.scaling): Tensor {
    return torch.noGrad(() => torch.tidy(() => this.product().mul(s).to(this.weight.dtype)));
  }

  /** B·A laid out as the base weight: [out, r]·[r, in] -> [out, in], transposed to [in, out] for Conv1D. */
  private product(): Tensor {
    const d = this.lora_B.weight.matmul(this.lora_A.weight);
    return this.fanInFanOut ? d.t() : d;
  }

  private foldIn(s: number): void {
    if (s === 0) return;
    torch.noGrad(() => torch.tidy(() => {
      // W ← W + s·B·A, computed in the adapter's precision and rounded once into W's.
      const d = this.product();
      if (d.dtype === this.weight.dtype) this.weight.add_(d, s);
      else this.weight.copy_(this.weight.to(d.dtype).add(d, s));
    }));
  }

  /** W ← W₀ + s·B·A; the adapter then adds nothing in forward until unmerge(). */
  merge(): void {
    if (this.merged) return;
    this.foldIn(this.scaling);
    this.mergedScaling = this.scaling;
  }

  /** W ← W − s·B·A (exact up to the rounding of the two additions). */
  unmerge(): void {
    if (!this.merged) return;
    this.foldIn(-this.mergedScaling!);
    this.mergedScaling = null;
  }

  private baseForward(x: Tensor): Tensor {
    if (!this.fanInFanOut) return torch.linear(x, this.weight, this.bias);
    // Conv1D: b + x·W over the flattened leading dimensions, [..., in] -> [..., out]
    return torch.ops.addmm(this.bias!, x.reshape(-1, this.inFeatures), this.weight).view([...x.shape.slice(0, -1), this.outFeatures]);
  }

  forward(x: Tensor): Tensor {
    // [..., in] -> [..., out]
    const y = this.baseForward(x);
    const s = this.scaling;
    if (this.merged || s === 0) return y;
    const a = this.lora_A.weight;
    let h = x.dtype === a.dtype ? x : x.to(a.dtype);
    if (this.dropoutP > 0 && this.training) h = torch.dropout(h, this.dropoutP, true);
    // [..., in] -> [..., r] -> [..., out]
    let d = torch.linear(torch.linear(h, a), this.lora_B.weight);
    if (d.dtype !== y.dtype) d = d.to(y.dtype);
    return y.add(d, s);
  }

  extraRepr(): string {
    return `in_features=${this.inFeatures}, out_features=${this.outFeatures}, r=${this.r}, alpha=${this.alpha}, dropout=${this.dropoutP}${this.merged ? ', merged' : ''}`;
  }
}
