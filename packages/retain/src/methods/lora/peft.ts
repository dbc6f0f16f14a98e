// LoRA adapters on disk in PEFT's layout, so that `PeftModel.from_pretrained(base, dir)` reads what retain writes and
// retain reads adapters trained with PEFT:
//   adapter_config.json        peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, base_model_name_or_path,
//                              task_type "CAUSAL_LM", bias "none", ...
//   adapter_model.safetensors  base_model.model.<module path>.lora_A.weight [r, in]
//                              base_model.model.<module path>.lora_B.weight [out, r]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LoraLinear } from './layer.js';
import { loraModules, wrapLinears, type Targets } from './wrap.js';

export const PEFT_PREFIX = 'base_model.model.';

export interface AdapterConfig {
  peft_type: 'LORA';
  task_type: string;
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  target_modules: string[] | string;
  base_model_name_or_path: string | null;
  bias: 'none' | string;
  fan_in_fan_out?: boolean;
  use_rslora?: boolean;
  use_dora?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  modules_to_save?: string[] | null;
  [k: string]: unknown;
}

/** Writes adapter_config.json and adapter_model.safetensors for every LoRA layer of `model` into dir. */
export function saveAdapter(model: torch.nn.Module, dir: string, opts: { baseModel?: string | null } = {}): AdapterConfig {
  const layers = loraModules(model);
  if (layers.length === 0) throw new Error('saveAdapter: the model has no LoRA layers');
  const first = layers[0][1];
  const odd = layers.find(([, l]) => l.r !== first.r || l.alpha !== first.alpha || l.dropoutP !== first.dropoutP || l.rslora !== first.rslora);
  if (odd) throw new Error(`saveAdapter: layer ${odd[0]} has r/alpha/dropout different from ${layers[0][0]}; one adapter file holds one setting`);
  const tensors = new Map<string, Tensor>();
  for (const [path, l] of layers) {
    tensors.set(`${PEFT_PREFIX}${path}.lora_A.weight`, l.lora_A.weight.detach());
    // PEFT has no per-layer scale: a scaled adapter (WiSE-FT's α) is saved with the scale folded into B, so the
    // file describes the model as it is.
    tensors.set(`${PEFT_PREFIX}${path}.lora_B.weight`, l.scale === 1 ? l.lora_B.weight.detach() : torch.noGrad(() => l.lora_B.weight.mul(l.scale)));
  }
  const config: AdapterConfig = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    r: first.r,
    lora_alpha: first.alpha,
    lora_dropout: first.dropoutP,
    target_modules: [...new Set(layers.map(([p]) => p.split('.').pop()!))].sort(),
    base_model_name_or_path: opts.baseModel ?? null,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: null,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
    use_rslora: first.rslora,
    use_dora: false,
    revision: null,
  };
  mkdirSync(dir, { recursive: true });
  torch.io.saveSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
  return config;
}

export function readAdapterConfig(dir: string): AdapterConfig {
  const file = join(dir, 'adapter_config.json');
  if (!existsSync(file)) throw new Error(`${dir}: no adapter_config.json (not a PEFT adapter directory)`);
  const c = JSON.parse(readFileSync(file, 'utf8')) as AdapterConfig;
  const refuse = (why: string) => {
    throw new Error(`${file}: ${why}`);
  };
  if (c.peft_type !== 'LORA') refuse(`peft_type is ${JSON.stringify(c.peft_type)}; only LORA adapters are supported`);
  if (c.use_dora) refuse('DoRA adapters (use_dora: true) are not supported');
  if (c.fan_in_fan_out) refuse('fan_in_fan_out adapters (GPT-2 Conv1D layers) are not supported');
  if (c.bias && c.bias !== 'none') refuse(`bias "${c.bias}" is not supported (only "none")`);
  if (Object.keys(c.rank_pattern ?? {}).length || Object.keys(c.alpha_pattern ?? {}).length) refuse('per-module rank_pattern / alpha_pattern are not supported');
  if (c.modules_to_save && c.modules_to_save.length) refuse(`modules_to_save (${c.modules_to_save.join(', ')}) is not supported`);
  return c;
}

/**
 * Wraps the adapter's target modules of `model` (if they are not LoRA layers already) and loads the adapter weights.
 * Every key must land on a layer and every layer must get both of its matrices.
 */
export function loadAdapter(model: torch.nn.Module, dir: string): AdapterConfig {
  const c = readAdapterConfig(dir);
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file)) throw new Error(`${dir}: no adapter_model.safetensors`);
  const weights = torch.io.loadSafetensors(file);
  try {
    // The modules the file names are the ones to wrap; target_modules is checked against them.
    const paths = new Set<string>();
    for (const k of weights.keys()) {
      const m = /^(?:base_model\.model\.)?(.+)\.lora_[AB](?:\.default)?\.weight$/.exec(k);
      if (!m) throw new Error(`${file}: unexpected key '${k}' (expected <module>.lora_A.weight / lora_B.weight)`);
      paths.add(m[1]);
    }
    const targets: Targets = [...paths].map((p) => `/^${p.replace(/\./g, '\\.')}$/`);
    const existing = new Map(loraModules(model));
    if (existing.size === 0) wrapLinears(model, targets, { r: c.r, alpha: c.lora_alpha, dropout: c.lora_dropout, rslora: c.use_rslora ?? false });
    const layers = new Map(loraModules(model));
    const problems: string[] = [];
    for (const p of paths) if (!layers.has(p)) problems.push(`the adapter has weights for '${p}', which is not a LoRA layer of this model`);
    for (const [p, l] of layers) {
      if (l.r !== c.r) problems.push(`${p}: r ${l.r} but the adapter has r ${c.r}`);
      for (const which of ['lora_A', 'lora_B'] as const) {
        const t = weights.get(`${PEFT_PREFIX}${p}.${which}.weight`) ?? weights.get(`${PEFT_PREFIX}${p}.${which}.default.weight`) ?? weights.get(`${p}.${which}.weight`);
        const dst = l[which].weight;
        if (!t) {
          problems.push(`${p}.${which}.weight is missing from ${file}`);
          continue;
        }
        if (t.shape.join() !== dst.shape.join()) problems.push(`${p}.${which}.weight has shape [${t.shape}], the layer needs [${dst.shape}]`);
      }
    }
    if (problems.length) throw new Error(`cannot load the adapter in ${dir}:\n  ${problems.join('\n  ')}`);
    torch.noGrad(() => {
      for (const [p, l] of layers) {
        for (const which of ['lora_A', 'lora_B'] as const) {
          const t = weights.get(`${PEFT_PREFIX}${p}.${which}.weight`) ?? weights.get(`${PEFT_PREFIX}${p}.${which}.default.weight`) ?? weights.get(`${p}.${which}.weight`)!;
          l[which].weight.copy_(t);
        }
      }
    });
    return c;
  } finally {
    torch.dispose(weights.values());
  }
}

export { LoraLinear };
