// Finding the layers to adapt, swapping them for LoRA layers, and back.
import * as torch from '@retain/torch';
import { Conv1D } from '../gpt2.js';
import { isAdaptable, LoraLinear, type AdaptableLayer, type LoraLayerOptions } from './layer.js';

const { nn } = torch;

/**
 * Which Linear layers get adapters, by module path (e.g. `model.layers.0.self_attn.q_proj`):
 * - a list: each entry is a module name matched against the path's last parts (`q_proj`, `self_attn.q_proj`), a short
 *   alias (q k v o gate up down), or `/regex/` tested against the whole path;
 * - one string: 'all-linear' (every Linear but the output head), or a regular expression the whole path must match
 *   (PEFT's meaning of a string target_modules).
 */
export type Targets = string | string[];

export const DEFAULT_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];
const ALIASES: Record<string, string> = { q: 'q_proj', k: 'k_proj', v: 'v_proj', o: 'o_proj', gate: 'gate_proj', up: 'up_proj', down: 'down_proj' };
const HEADS = new Set(['lm_head', 'score', 'classifier', 'head']);

export function targetMatcher(targets: Targets): (path: string) => boolean {
  if (typeof targets === 'string') {
    if (targets === 'all-linear') return (p) => !HEADS.has(p.split('.').pop()!);
    const re = new RegExp(`^(?:${targets})$`);
    return (p) => re.test(p);
  }
  if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string' && t !== '')) {
    throw new Error(`lora: targets must be a non-empty list of module names or patterns, or one pattern string; got ${JSON.stringify(targets)}`);
  }
  const tests = targets.map((t): ((p: string) => boolean) => {
    if (t.length > 2 && t.startsWith('/') && t.endsWith('/')) {
      const re = new RegExp(t.slice(1, -1));
      return (p) => re.test(p);
    }
    const name = ALIASES[t] ?? t;
    return (p) => p === name || p.endsWith(`.${name}`);
  });
  return (p) => tests.some((f) => f(p));
}

/** The model's LoRA layers with their module paths. */
export function loraModules(model: torch.nn.Module): [string, LoraLinear][] {
  return model.namedModules().filter((e): e is [string, LoraLinear] => e[1] instanceof LoraLinear);
}

// Puts `child` where the module at `path` was: in the parent's registry and in the parent's field of that name
// (Llama's layers call this.q_proj.forward, not the registry).
function replaceModule(root: torch.nn.Module, path: string, child: torch.nn.Module): void {
  const dot = path.lastIndexOf('.');
  const parent = root.getSubmodule(dot < 0 ? '' : path.slice(0, dot));
  const name = path.slice(dot + 1);
  const old = parent._modules.get(name);
  parent._modules.set(name, child);
  const fields = parent as unknown as Record<string, unknown>;
  if (fields[name] === old) fields[name] = child;
}

/**
 * Replaces every targeted nn.Linear (or GPT-2 Conv1D) with a LoraLinear around it; returns the wrapped paths. Throws
 * when none match. `o` may depend on the path (an adapter file's rank_pattern / alpha_pattern).
 */
export function wrapLinears(model: torch.nn.Module, targets: Targets, o: LoraLayerOptions | ((path: string) => LoraLayerOptions)): string[] {
  const match = targetMatcher(targets);
  const linears = model.namedModules().filter(([p, m]) => p !== '' && isAdaptable(m)) as [string, AdaptableLayer][];
  const chosen = linears.filter(([p]) => match(p));
  const notLinear = model.namedModules().filter(([p, m]) => p !== '' && match(p) && !isAdaptable(m) && !(m instanceof LoraLinear));
  if (notLinear.length && typeof targets !== 'string') {
    throw new Error(`lora: ${notLinear.map(([p, m]) => `${p} (${m.constructor.name})`).slice(0, 5).join(', ')} matched the targets but only Linear layers can take an adapter`);
  }
  if (chosen.length === 0) {
    const names = [...new Set(linears.map(([p]) => p.split('.').pop()!))].sort();
    // PEFT's rule, which surprises: one string is a pattern for the whole path, so 'q_proj' alone matches nothing.
    const asName = typeof targets === 'string' && names.includes(targets)
      ? `; a single string is a regular expression the whole path must match (as in PEFT), e.g. '.*\\.${targets}' — for module names give a list: [${targets}]`
      : '';
    throw new Error(`lora: no Linear layer matches targets ${JSON.stringify(targets)}; this model's Linear layers are named: ${names.join(', ')}${asName}`);
  }
  for (const [path, lin] of chosen) replaceModule(model, path, new LoraLinear(lin, typeof o === 'function' ? o(path) : o));
  return chosen.map(([p]) => p);
}

/** Sets every LoRA layer's scale (WiSE-FT for adapters: θ₀ + α·ΔW). */
export function setAdapterScale(model: torch.nn.Module, scale: number): void {
  for (const [, l] of loraModules(model)) l.scale = scale;
}

export function mergeAdapters(model: torch.nn.Module): void {
  for (const [, l] of loraModules(model)) l.merge();
}

export function unmergeAdapters(model: torch.nn.Module): void {
  for (const [, l] of loraModules(model)) l.unmerge();
}

/**
 * Folds each adapter into its base weight (W₀ + s·B·A) and puts a plain nn.Linear (or Conv1D) holding that weight
 * back in the layer's place, so the model is the architecture it was (and Llama's fused projections apply again). The
 * adapter tensors are released; the weight tensor is kept (same object) with its pre-LoRA requiresGrad.
 */
export function mergeAndUnload(model: torch.nn.Module): void {
  for (const [path, l] of loraModules(model)) {
    l.merge();
    // A 1×1 layer, then given the real weight: avoids drawing (and holding) a full random matrix only to drop it.
    const plain: AdaptableLayer = torch.noGrad(() => (l.fanInFanOut ? new Conv1D(1, 1) : new nn.Linear(1, 1, { bias: false })));
    const drop = [...plain._parameters.values()];
    plain._parameters.set('weight', l.weight);
    plain.weight = l.weight;
    plain.registerParameter('bias', l.bias);
    (plain as { bias: torch.Tensor | null }).bias = l.bias;
    (plain as unknown as { inFeatures: number; outFeatures: number }).inFeatures = l.inFeatures;
    (plain as unknown as { inFeatures: number; outFeatures: number }).outFeatures = l.outFeatures;
    torch.dispose(drop.filter((t): t is torch.Tensor => t !== null));
    l.weight.requiresGrad = l.baseRequiresGrad;
    if (l.bias) l.bias.requiresGrad = l.baseRequiresGrad;
    l.lora_A.dispose();
    l.lora_B.dispose();
    replaceModule(model, path, plain);
  }
}
