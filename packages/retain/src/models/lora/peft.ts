// LoRA adapters on disk in PEFT's layout, so that `PeftModel.from_pretrained(base, dir)` reads what retain writes and
// retain reads adapters trained with PEFT (checked against peft 0.21 by bench/parity/peft.ts):
//   adapter_config.json        peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, base_model_name_or_path,
//                              task_type "CAUSAL_LM", bias, fan_in_fan_out, use_rslora, rank_pattern, alpha_pattern, ...
//   adapter_model.safetensors  base_model.model.<module path>.lora_A.weight [r, in]
//                              base_model.model.<module path>.lora_B.weight [out, r]
// Files PEFT writes may also hold tensors that replace base ones: biases (bias "lora_only": <path>.base_layer.bias of
// the adapted layers; "all": every bias) and modules_to_save (<module>.weight); retain copies those into the model.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LoraLinear } from './layer.js';
import { loraModules, wrapLinears, type Targets } from './wrap.js';
import { refusePickle } from '../weights.js';

export const PEFT_PREFIX = 'base_model.model.';

export interface AdapterConfig {
  peft_type: 'LORA';
  task_type: string | null;
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  base_model_name_or_path: string | null;
  bias: 'none' | 'lora_only' | 'all';
  fan_in_fan_out?: boolean;
  use_rslora?: boolean;
  use_dora?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  modules_to_save?: string[] | null;
  [k: string]: unknown;
}

/** Base tensors an adapter file replaces (trained biases, modules_to_save), by model key, with the settings naming them. */
export interface CarriedTensors {
  bias: AdapterConfig['bias'];
  modules_to_save: string[] | null;
  keys: string[];
}

/** What loadAdapter put into a model: the file's config, and the base tensors it replaced (null when none). */
export interface LoadedAdapter {
  config: AdapterConfig;
  carried: CarriedTensors | null;
}

/**
 * PEFT's rule for rank_pattern / alpha_pattern: the first key (in file order) that matches the end of the module path
 * at a dot boundary, as a regular expression, gives the value; otherwise the default.
 */
export function patternValue(pattern: Record<string, number> | undefined | null, path: string, fallback: number): number {
  for (const [key, v] of Object.entries(pattern ?? {})) if (new RegExp(`^(.*\\.)?(${key})$`).test(path)) return v;
  return fallback;
}

/** The most frequent value (ties: the first seen), for an adapter file's r and lora_alpha. */
function mode(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Writes adapter_config.json and adapter_model.safetensors for every LoRA layer of `model` into dir. Layers of other
 * rank or α than most go into rank_pattern / alpha_pattern under their full path (escaped, so it matches that layer
 * alone under PEFT's rule). `carry` writes base tensors a loaded adapter had replaced under PEFT's keys again.
 */
export function saveAdapter(model: torch.nn.Module, dir: string, opts: { baseModel?: string | null; carry?: CarriedTensors | null } = {}): AdapterConfig {
  const layers = loraModules(model);
  if (layers.length === 0) throw new Error('saveAdapter: the model has no LoRA layers');
  const [firstPath, first] = layers[0];
  const odd = layers.find(([, l]) => l.dropoutP !== first.dropoutP || l.rslora !== first.rslora || l.fanInFanOut !== first.fanInFanOut);
  if (odd) throw new Error(`saveAdapter: layer ${odd[0]} has dropout/rsLoRA/layer kind different from ${firstPath}; one PEFT adapter file holds one setting of each`);
  const tensors = new Map<string, Tensor>();
  for (const [path, l] of layers) {
    tensors.set(`${PEFT_PREFIX}${path}.lora_A.weight`, l.lora_A.weight.detach());
    // PEFT has no per-layer scale: a scaled adapter (WiSE-FT's α) is saved with the scale folded into B, so the
    // file describes the model as it is.
    tensors.set(`${PEFT_PREFIX}${path}.lora_B.weight`, l.scale === 1 ? l.lora_B.weight.detach() : torch.noGrad(() => l.lora_B.weight.mul(l.scale)));
  }
  const carry = opts.carry ?? null;
  if (carry) {
    const sd = model.stateDict({ keepVars: true });
    const wrapped = new Set(layers.map(([p]) => p));
    for (const k of carry.keys) {
      const dot = k.lastIndexOf('.');
      // A wrapped layer's own tensors live under base_layer in PEFT's model.
      const key = wrapped.has(k.slice(0, dot)) ? `${k.slice(0, dot)}.base_layer${k.slice(dot)}` : k;
      tensors.set(`${PEFT_PREFIX}${key}`, sd.get(k)!.detach());
    }
  }
  const r = mode(layers.map(([, l]) => l.r));
  const alpha = mode(layers.map(([, l]) => l.alpha));
  const config: AdapterConfig = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r,
    lora_alpha: alpha,
    lora_dropout: first.dropoutP,
    target_modules: [...new Set(layers.map(([p]) => p.split('.').pop()!))].sort(),
    base_model_name_or_path: opts.baseModel ?? null,
    bias: carry?.bias ?? 'none',
    // PEFT's name for a base weight stored [in, out] (GPT-2's Conv1D); A and B are laid out as for Linear either way.
    fan_in_fan_out: first.fanInFanOut,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: carry?.modules_to_save ?? null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: Object.fromEntries(layers.filter(([, l]) => l.r !== r).map(([p, l]) => [escapeRegExp(p), l.r])),
    alpha_pattern: Object.fromEntries(layers.filter(([, l]) => l.alpha !== alpha).map(([p, l]) => [escapeRegExp(p), l.alpha])),
    use_rslora: first.rslora,
    use_dora: false,
    lora_bias: false,
    revision: null,
  };
  try {
    mkdirSync(dir, { recursive: true });
    torch.io.saveSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  } finally {
    // Every value is a handle made here (a detached view or B·scale): the layers keep their own.
    torch.dispose(tensors.values());
  }
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  return config;
}

/** LoraConfig fields that change what the adapter computes in ways retain does not implement, when set. */
const UNSUPPORTED: [string, string][] = [
  ['use_dora', 'DoRA adapters (use_dora: true)'],
  ['lora_bias', 'adapters with a bias on lora_B (lora_bias: true)'],
  ['target_parameters', 'adapters on bare parameters (target_parameters)'],
  ['trainable_token_indices', 'adapters with trainable token rows (trainable_token_indices)'],
  ['layer_replication', 'adapters with replicated layers (layer_replication)'],
  ['alora_invocation_tokens', 'activated LoRA adapters (alora_invocation_tokens)'],
  ['use_qalora', 'QALoRA adapters (use_qalora: true)'],
];

const isSet = (v: unknown) => v !== undefined && v !== null && v !== false && !(Array.isArray(v) && v.length === 0) && !(typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0);

export function readAdapterConfig(dir: string): AdapterConfig {
  const file = join(dir, 'adapter_config.json');
  if (!existsSync(file)) throw new Error(`${dir}: no adapter_config.json (not a PEFT adapter directory)`);
  let c: AdapterConfig;
  try {
    c = JSON.parse(readFileSync(file, 'utf8')) as AdapterConfig;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const refuse = (why: string) => {
    throw new Error(`${file}: ${why}`);
  };
  if (!c || typeof c !== 'object' || Array.isArray(c)) refuse('must hold a JSON object (a PEFT LoraConfig)');
  if (c.peft_type !== 'LORA') refuse(`peft_type is ${JSON.stringify(c.peft_type)}; only LORA adapters are supported`);
  for (const [key, what] of UNSUPPORTED) if (isSet(c[key])) refuse(`${what} are not supported; retain loads plain LoRA adapters (set ${key} to its default)`);
  if (c.bias !== undefined && !['none', 'lora_only', 'all'].includes(c.bias)) refuse(`bias must be "none", "lora_only" or "all", got ${JSON.stringify(c.bias)}`);
  if (!(Number.isInteger(c.r) && c.r > 0)) refuse(`r must be a positive integer, got ${JSON.stringify(c.r)}`);
  if (!(typeof c.lora_alpha === 'number' && Number.isFinite(c.lora_alpha))) refuse(`lora_alpha must be a number, got ${JSON.stringify(c.lora_alpha)}`);
  return c;
}

/** The adapter file's tensors by model key (prefix and adapter name dropped): LoRA matrices per layer, and the rest. */
function sortKeys(weights: Map<string, Tensor>, file: string): { lora: Map<string, { A?: Tensor; B?: Tensor }>; other: Map<string, Tensor> } {
  const lora = new Map<string, { A?: Tensor; B?: Tensor }>();
  const other = new Map<string, Tensor>();
  for (const [key, t] of weights) {
    const k = key.startsWith(PEFT_PREFIX) ? key.slice(PEFT_PREFIX.length) : key;
    const m = /^(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(k);
    if (m) {
      const e = lora.get(m[1]) ?? {};
      e[m[2] as 'A' | 'B'] = t;
      lora.set(m[1], e);
    } else if (/\.lora_[A-Za-z_]+(\.|$)/.test(k)) {
      throw new Error(`${file}: unexpected key '${key}': retain reads LoRA on Linear and GPT-2 Conv1D layers (<module>.lora_A.weight / lora_B.weight); adapters on embeddings or other layer kinds are not supported`);
    } else {
      // A wrapped layer's own tensors sit under base_layer in PEFT's model; retain's LoRA layer keeps their names.
      other.set(k.replace(/\.base_layer\./, '.').replace(/\.modules_to_save\.default\./, '.'), t);
    }
  }
  return { lora, other };
}

/**
 * Wraps the adapter's target modules of `model` (if they are not LoRA layers already) and loads the adapter weights,
 * with each layer's r and α from rank_pattern / alpha_pattern as PEFT reads them. Biases and modules_to_save tensors
 * in the file replace the model's. Every key must land somewhere and every layer must get both of its matrices.
 */
export function loadAdapter(model: torch.nn.Module, dir: string): LoadedAdapter {
  const c = readAdapterConfig(dir);
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file)) {
    const pickled = join(dir, 'adapter_model.bin');
    if (existsSync(pickled)) refusePickle(pickled);
    throw new Error(`${dir}: no adapter_model.safetensors; a PEFT adapter folder holds it beside adapter_config.json (PeftModel.save_pretrained writes both)`);
  }
  const weights = torch.io.loadSafetensors(file);
  try {
    const { lora, other } = sortKeys(weights, file);
    // The modules the file names are the ones to wrap; target_modules only told PEFT which to create.
    if (loraModules(model).length === 0 && lora.size > 0) {
      const targets: Targets = [...lora.keys()].map((p) => `/^${escapeRegExp(p)}$/`);
      wrapLinears(model, targets, (p) => ({ r: patternValue(c.rank_pattern, p, c.r), alpha: patternValue(c.alpha_pattern, p, c.lora_alpha), dropout: c.lora_dropout ?? 0, rslora: c.use_rslora ?? false }));
    }
    const layers = new Map(loraModules(model));
    const problems: string[] = [];
    // Layers the model lacks mean the adapter was made over another base; say which one it names.
    const base = ` (an adapter made for another base model? its adapter_config.json names base_model_name_or_path ${JSON.stringify(c.base_model_name_or_path ?? null)}; load it over that model)`;
    for (const p of lora.keys()) if (!layers.has(p)) problems.push(`the adapter has weights for '${p}', which is not a LoRA layer of this model${base}`);
    for (const [p, l] of layers) {
      const e = lora.get(p) ?? {};
      for (const [which, t] of [['lora_A', e.A], ['lora_B', e.B]] as const) {
        const dst = l[which].weight;
        if (!t) problems.push(`${p}.${which}.weight is missing from ${file}`);
        else if (t.shape.join() !== dst.shape.join()) problems.push(`${p}.${which}.weight has shape [${t.shape}], the layer needs [${dst.shape}] (r ${l.r})`);
      }
    }
    const replaced = baseReplacements(model, other, file, problems);
    if (problems.length) throw new Error(`cannot load the adapter in ${dir}:\n  ${problems.join('\n  ')}`);
    torch.noGrad(() => {
      for (const [p, l] of layers) {
        l.lora_A.weight.copy_(lora.get(p)!.A!);
        l.lora_B.weight.copy_(lora.get(p)!.B!);
      }
      for (const [, dst, t] of replaced) dst.copy_(t);
    });
    const carried = replaced.length ? { bias: c.bias ?? 'none', modules_to_save: c.modules_to_save ?? null, keys: replaced.map(([k]) => k) } : null;
    return { config: c, carried };
  } finally {
    torch.dispose(weights.values());
  }
}

/**
 * Pairs the file's non-LoRA tensors (trained biases, modules_to_save) with the model tensors they replace. A tensor
 * the model ties to another (a tied output head) is refused: PEFT unties it, and retain's model cannot hold both.
 */
function baseReplacements(model: torch.nn.Module, other: Map<string, Tensor>, file: string, problems: string[]): [string, Tensor, Tensor][] {
  const sd = model.stateDict({ keepVars: true });
  const tied = new Map<string, string>();
  for (const [a, b] of (model as { tiedKeys?(): [string, string][] }).tiedKeys?.() ?? []) {
    tied.set(a, b);
    tied.set(b, a);
  }
  const out: [string, Tensor, Tensor][] = [];
  for (const [k, t] of other) {
    const dst = sd.get(k);
    if (!dst) problems.push(`${file} holds '${k}', which is neither a LoRA matrix nor a tensor of this model`);
    else if (tied.has(k)) problems.push(`${file} replaces '${k}', which this model ties to '${tied.get(k)}' (tie_word_embeddings); retain cannot load an untied copy (modules_to_save of a tied head is not supported)`);
    else if (t.shape.join() !== dst.shape.join()) problems.push(`'${k}' has shape [${t.shape}] in ${file}, the model's is [${dst.shape}]`);
    else out.push([k, dst, t]);
  }
  return out;
}

export { LoraLinear };
