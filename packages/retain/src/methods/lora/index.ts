// LoRA (Hu et al. 2021; Biderman et al. 2024, "LoRA Learns Less and Forgets Less"), docs/METHODS.md §8, as a method of
// the training loop: W = W₀ + (α/r)·B·A on the target layers, A random (kaiming-uniform, a = √5), B = 0, and only A
// and B train — every pretrained tensor, embeddings and head included, is frozen.
//
// Defaults: r = 8, α = 16 (α = 2r, Biderman et al.'s recommendation), dropout 0, targets q,k,v,o,gate,up,down (all
// linear layers of a Llama block). The FLOW comparison used r = 64, α = r: set them in the config.
//
// parameterize() swaps the layers and freezes everything else before the run's optimizer exists (and before a
// checkpoint is loaded, so a resumed run finds the adapter keys in the model); the adapters are what it returns, the
// set the optimizer is built over.
// The final save (`retain train`) writes the adapter in PEFT's layout into output_dir/final; with save_merged, the
// merged model (W₀ + s·B·A, adapters removed) goes to output_dir/final/merged as a Hugging Face directory too.
//
// `adapter: dir` starts from an adapter PEFT or retain saved instead of a fresh one: its layers, r and α (per layer
// under rank_pattern / alpha_pattern) and weights come from the files, and training continues it. Base tensors the
// file replaces (PEFT's bias "lora_only"/"all", modules_to_save) are loaded and kept frozen; the final adapter carries
// them again, so it describes the same model over the same base.
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { FinalSave, Method, NamedParams, Role, SetupContext, TrainContext } from '../../train/hooks.js';
import { savePretrained } from '../../models/hub.js';
import { LoraLinear } from '../../models/lora/layer.js';
import { DEFAULT_TARGETS, loraModules, mergeAndUnload, setAdapterScale, wrapLinears, type Targets } from '../../models/lora/wrap.js';
import { loadAdapter, saveAdapter, type CarriedTensors } from '../../models/lora/peft.js';
import { z } from 'zod';
import { bool, mark, num, parseOptions, refuse } from '../../options.js';

export { LoraLinear } from '../../models/lora/layer.js';
export { DEFAULT_TARGETS, loraModules, mergeAdapters, mergeAndUnload, setAdapterScale, targetMatcher, unmergeAdapters, wrapLinears, type Targets } from '../../models/lora/wrap.js';
export { loadAdapter, readAdapterConfig, saveAdapter, PEFT_PREFIX, type AdapterConfig, type LoadedAdapter } from '../../models/lora/peft.js';

/** Options an adapter's adapter_config.json fixes, so they cannot be set beside `adapter`. */
const FIXED_BY_ADAPTER = ['r', 'alpha', 'dropout', 'targets'] as const;
const TARGETS_WHAT = 'a list of layer names, or one regular expression the whole module path must match';

export const loraOptions = z.preprocess((o, ctx) => {
  const raw = (o ?? {}) as Record<string, unknown>;
  const given = FIXED_BY_ADAPTER.filter((k) => raw[k] !== undefined);
  if (raw.adapter !== undefined && given.length) refuse(ctx, `${given.join(', ')} cannot be set with adapter; the adapter's adapter_config.json fixes them (drop ${given.join(', ')}, or drop adapter to start a fresh one)`);
  return o;
}, z.object({
  r: num('a positive integer', { int: true, min: 1, max: 1e6 }).default(8).describe('Rank of the adapters.'),
  alpha: num('a number').optional().describe('Scale numerator: the update is (alpha/r)·B·A; default 2·r (Biderman et al.).'),
  dropout: num('a number in [0, 1)', { min: 0, lt: 1 }).default(0).describe('Dropout on the adapters\' input.'),
  targets: z.union([z.string(), z.array(z.string()).min(1, TARGETS_WHAT)], { errorMap: () => ({ message: TARGETS_WHAT }) })
    .default(DEFAULT_TARGETS).describe('Linear layers that get an adapter: names such as [q_proj, v_proj], or one regular expression over the module path (as in PEFT).'),
  save_merged: bool().default(false).describe('Also write the merged model (adapters folded in) to output_dir/final/merged.'),
  adapter: mark(z.string({ invalid_type_error: 'the path of a saved adapter directory' }).min(1, 'the path of a saved adapter directory'), 'path').optional()
    .describe('Continue this saved adapter (PEFT layout, relative to the config file) instead of starting a fresh one.'),
}).strict().transform((o) => ({ ...o, alpha: o.alpha ?? 2 * o.r })));

export class Lora implements Method {
  readonly name = 'lora';
  readonly roles: Role[] = ['parameterization'];
  // Methods that act on the pretrained weights themselves find them frozen under LoRA: their effect would silently
  // vanish (a penalty on tensors that no longer train is constant) or fight over what trains.
  readonly conflicts = {
    l2: 'L2-SP pulls the pretrained weights toward θ₀, and LoRA freezes them, so the penalty would do nothing (regularise the adapters with weight decay instead)',
    ewc: "EWC holds the pretrained weights near θ₀ with their Fisher, and LoRA freezes them, so the penalty would do nothing",
    probe: 'a linear probe trains only the head and LoRA only the adapters; they disagree on what trains',
    flow_vision: "flow_vision's linear probe trains only the head and LoRA only the adapters; they disagree on what trains",
  };
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly targets: Targets;
  readonly saveMerged: boolean;
  readonly adapter: string | null;
  /** Paths of the wrapped layers (after setup). */
  wrapped: string[] = [];
  /** Base tensors a loaded adapter replaced, to write again with the final adapter. */
  private carry: CarriedTensors | null = null;

  constructor(o: Record<string, unknown> = {}) {
    const p = parseOptions('lora', loraOptions, o);
    this.adapter = p.adapter ?? null;
    this.r = p.r;
    this.alpha = p.alpha;
    this.dropout = p.dropout;
    this.targets = p.targets;
    this.saveMerged = p.save_merged;
  }

  parameterize(ctx: SetupContext): NamedParams {
    const model = ctx.model;
    this.model = model;
    if (loraModules(model).length) this.wrapped = loraModules(model).map(([p]) => p);
    else if (this.adapter) {
      const loaded = loadAdapter(model, this.adapter);
      this.carry = loaded.carried;
      this.wrapped = loraModules(model).map(([p]) => p);
    } else this.wrapped = wrapLinears(model, this.targets, { r: this.r, alpha: this.alpha, dropout: this.dropout });
    for (const p of model.parameters()) p.requiresGrad = false;
    const adapters: Tensor[] = [];
    for (const [, l] of loraModules(model)) {
      for (const w of [l.lora_A.weight, l.lora_B.weight]) {
        w.requiresGrad = true;
        adapters.push(w);
      }
    }
    const base = model.parameters().reduce((n, p) => n + (p.requiresGrad ? 0 : p.numel()), 0);
    const train = adapters.reduce((n, p) => n + p.numel(), 0);
    const [, first] = loraModules(model)[0];
    ctx.log({ kind: 'lora', lora_layers: this.wrapped.length, lora_r: first.r, lora_alpha: first.alpha, lora_trainable: train, lora_frozen: base, ...(this.adapter ? { lora_adapter: this.adapter } : {}) });
    return model.namedParameters().filter(([, p]) => p.requiresGrad);
  }

  /** Scales every adapter (WiSE-FT's α for LoRA). */
  setScale(model: TrainContext['model'], scale: number): void {
    setAdapterScale(model, scale);
  }

  // The adapters' scales are not in the state dict; the checkpoint written after finish() (WiSE-FT's α applied)
  // carries them, so a run resumed from it saves the same adapter.
  private model: TrainContext['model'] | null = null;

  stateTensors(): Map<string, Tensor> {
    const layers = this.model ? loraModules(this.model) : [];
    return new Map(layers.length ? [['scale', torch.tensor(Float64Array.from(layers.map(([, l]) => l.scale)))]] : []);
  }

  loadStateTensors(t: Map<string, Tensor>): void {
    const s = t.get('scale');
    if (!s || !this.model) return;
    const values = Array.from(s.data() as Float64Array);
    const layers = loraModules(this.model);
    if (values.length !== layers.length) throw new Error(`lora: the checkpoint has scales for ${values.length} adapters, the model has ${layers.length}`);
    layers.forEach(([, l], i) => (l.scale = values[i]));
  }

  saveFinal(f: FinalSave): void {
    saveAdapter(f.model, f.dir, { baseModel: f.basePath, carry: this.carry });
    if (this.saveMerged) {
      mergeAndUnload(f.model);
      savePretrained(f.pretrained, join(f.dir, 'merged'));
    }
  }
}

export function isLoraLayer(m: unknown): m is LoraLinear {
  return m instanceof LoraLinear;
}
