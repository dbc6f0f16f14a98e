// Tiny models and data for the tests of FLOW, mixing, L2-SP, EWC, WiSE-FT and the linear probe: a 2-layer Llama over
// a 64-token vocabulary, a feature classifier with a batch-norm body, and deterministic synthetic examples.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LlamaForCausalLM } from '../src/models/llama.js';
import type { Example } from '../src/data/formats.js';
import { rng } from '../src/data/loader.js';
import type { Method, TrainContext, TrainableModel } from '../src/train/hooks.js';
import type { Batch } from '../src/data/loader.js';
import { causalLmLoss, type LossFn } from '../src/train/trainer.js';

export function tinyLlama(seed = 0): LlamaForCausalLM {
  torch.manualSeed(seed);
  return new LlamaForCausalLM({
    model_type: 'llama', vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
    num_key_value_heads: 2, max_position_embeddings: 32, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
  });
}

/** Prompt/completion-like token examples: a prompt of 2-5 tokens (no loss) and a completion of 2-6 tokens. */
export function tokenExamples(n: number, seed: number, source = 'train', prefix = 's'): Example[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const p = 2 + Math.floor(r() * 4);
    const c = 2 + Math.floor(r() * 5);
    const ids = Array.from({ length: p + c }, () => 1 + Math.floor(r() * 63));
    return { id: `${prefix}${i}`, ids, lossMask: ids.map((_, k) => (k >= p ? 1 : 0)), source };
  });
}

/** A body (linear + batch norm + ReLU) and a new head, over 4 features and 3 classes. */
export class TinyNet extends torch.nn.Module {
  fc: torch.nn.Linear;
  bn: torch.nn.BatchNorm2d;
  head: torch.nn.Linear;
  constructor() {
    super();
    this.fc = this.registerModule('fc', new torch.nn.Linear(4, 8));
    this.bn = this.registerModule('bn', new torch.nn.BatchNorm2d(8));
    this.head = this.registerModule('head', new torch.nn.Linear(8, 3));
  }
  forward(x: Tensor): Tensor {
    const h = this.fc.forward(x); // [B, 8]
    const [B] = h.shape;
    const n = this.bn.forward(h.reshape(B, 8, 1, 1)).reshape(B, 8); // [B, 8]
    return this.head.forward(n.relu()); // [B, 3]
  }
}

export function tinyNet(seed = 0): TinyNet {
  torch.manualSeed(seed);
  return new TinyNet();
}

/** Feature examples of 3 classes: the class shifts the first coordinates. */
export function featureExamples(n: number, seed: number, source = 'train'): Example[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const label = i % 3;
    const x = [label - 1 + (r() - 0.5), (r() - 0.5) * 2, label === 2 ? 1 : -1, r()];
    return { id: `f${i}`, ids: [], lossMask: [], source, label, features: Float32Array.from(x), featureShape: [4] };
  });
}

/** A state dict copy that survives scopes (compare with equal()/allclose). */
export function snapshot(model: torch.nn.Module): Map<string, Tensor> {
  return torch.noGrad(() => torch.tidy(() => {
    const out = new Map<string, Tensor>();
    for (const [k, t] of model.stateDict()) out.set(k, torch.keep(t.clone()));
    return out;
  }));
}

export function sameTensors(a: Map<string, Tensor>, b: Map<string, Tensor>, keys?: (k: string) => boolean): string[] {
  const differ: string[] = [];
  for (const [k, t] of a) {
    if (keys && !keys(k)) continue;
    const u = b.get(k);
    if (!u || !t.equal(u)) differ.push(k);
  }
  return differ;
}

/** Mean loss per trained token of one example, computed directly from logits (no collate, no trainer code). */
export function directLoss(model: LlamaForCausalLM, e: Example): number {
  return torch.noGrad(() => torch.tidy(() => {
    const ids = torch.tensor([e.ids.slice(0, -1)]); // [1, T]
    const logits = (model.forward(ids) as Tensor).reshape(e.ids.length - 1, -1).double(); // [T, V]
    const logp = logits.logSoftmax(1).data() as Float64Array;
    const V = logits.shape[1];
    let sum = 0;
    let n = 0;
    for (let t = 0; t + 1 < e.ids.length; t++) {
      if (!e.lossMask[t + 1]) continue;
      sum -= logp[t * V + e.ids[t + 1]];
      n++;
    }
    return sum / n;
  }));
}

/** A loss function that counts its calls and records each batch's samples. */
export function spyLoss(base: LossFn = causalLmLoss): { fn: LossFn; calls: number; batches: { ids: string[]; sources: string[]; tokens: number[] }[] } {
  const spy = {
    calls: 0,
    batches: [] as { ids: string[]; sources: string[]; tokens: number[] }[],
    fn: ((model: TrainableModel, b: Batch) => {
      spy.calls++;
      spy.batches.push({ ids: [...b.sampleIds], sources: [...b.sources], tokens: [...b.tokenCounts] });
      return base(model, b);
    }) as LossFn,
  };
  return spy;
}

/** A method that runs a callback at the start of chosen steps (to look at the model mid-run). */
export function atStep(steps: number[], fn: (ctx: TrainContext) => void): Method {
  return { name: 'spy', beforeStep: (ctx) => (steps.includes(ctx.step) ? fn(ctx) : undefined) };
}

/** A context for calling a method's hooks directly, outside train(). */
export function bareContext(model: TrainableModel, examples: Example[], over: Partial<TrainContext> = {}): TrainContext & { lines: Record<string, number | string>[] } {
  const lines: Record<string, number | string>[] = [];
  return {
    model,
    optimizer: null as never,
    params: model.namedParameters().filter(([, p]) => p.requiresGrad),
    step: 0,
    epoch: 0,
    totalSteps: 1,
    sampleLosses: (b) => causalLmLoss(model, b),
    log: (f) => lines.push(f),
    state: new Map(),
    examples,
    outputDir: null,
    lines,
    ...over,
  };
}

export function constant(lr: number): torch.optim.Schedule {
  return { kind: 'constant', lr };
}
