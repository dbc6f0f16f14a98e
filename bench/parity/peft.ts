// LoRA adapters both ways against the real PEFT (0.21) in the reference environment, on small random bases that
// transformers builds and saves (Llama, Qwen2 with q/k/v biases, GPT-2 with its Conv1D layers):
// - PEFT → retain: get_peft_model + randomised trainable tensors + save_pretrained; retain applies the adapter over
//   the base (loadAdapter: unmerged layers) and loads the adapter directory as a model (loadPretrained: merged at
//   load); logits against PeftModel's, merged weights against merge_and_unload()'s;
// - retain → PEFT: the lora method trains a few steps (a fresh adapter, or continuing one PEFT wrote) and writes its
//   final adapter (saveFinal), or an adapter PEFT wrote is read by retain and written again;
//   PeftModel.from_pretrained reads it; the same comparisons.
// Figures: max |Δ| over logits (float32) and over merged tensors, per case.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { refPy } from '../refenv.js';
import { loadPretrained, type Pretrained } from '../../packages/retain/src/models/hub.js';
import { Lora, loadAdapter, loraModules, mergeAndUnload, saveAdapter } from '../../packages/retain/src/methods/lora/index.js';
import type { SetupContext } from '../../packages/retain/src/train/hooks.js';

const REF_PY = readFileSync(new URL('../py/peft_ref.py', import.meta.url), 'utf8');
const ATTN = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];
const SEVEN = [...ATTN, 'gate_proj', 'up_proj', 'down_proj'];
const IDS = [[1, 5, 9, 33, 2, 17, 60, 4, 11, 40], [7, 3, 3, 80, 21, 0, 12, 95, 6, 50]];

const SMALL = { vocab_size: 96, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64 };
const BASES: Record<string, { seed: number; config: Record<string, unknown> }> = {
  llama: { seed: 1, config: { model_type: 'llama', ...SMALL, tie_word_embeddings: false } },
  qwen2: { seed: 2, config: { model_type: 'qwen2', ...SMALL, tie_word_embeddings: false } },
  gpt2: { seed: 3, config: { model_type: 'gpt2', vocab_size: 96, n_embd: 32, n_layer: 2, n_head: 4, n_positions: 64, bos_token_id: 0, eos_token_id: 0 } },
};

/** An adapter PEFT makes (its LoraConfig arguments) and retain reads. */
interface FromPeft { name: string; base: string; lora: Record<string, unknown> }
/**
 * An adapter retain makes: the lora method's options, trained `steps` steps (`continues`: starting from an adapter PEFT
 * made, the method's adapter option); or `from` an adapter PEFT made, read and written again.
 */
interface FromRetain { name: string; base: string; options?: Record<string, unknown>; steps?: number; continues?: string; from?: string }

export const FROM_PEFT: FromPeft[] = [
  { name: 'llama all seven, bias none', base: 'llama', lora: { r: 4, lora_alpha: 8, target_modules: SEVEN, bias: 'none' } },
  {
    name: 'llama rank_pattern, alpha_pattern, rslora', base: 'llama',
    lora: { r: 4, lora_alpha: 8, target_modules: SEVEN, use_rslora: true, rank_pattern: { q_proj: 2, 'layers.1.mlp.down_proj': 6 }, alpha_pattern: { v_proj: 3 } },
  },
  { name: 'qwen2 all seven, bias lora_only', base: 'qwen2', lora: { r: 4, lora_alpha: 16, target_modules: SEVEN, bias: 'lora_only' } },
  { name: 'qwen2 bias all, modules_to_save lm_head', base: 'qwen2', lora: { r: 2, lora_alpha: 4, target_modules: ATTN, bias: 'all', modules_to_save: ['lm_head'] } },
  { name: 'gpt2 Conv1D, fan_in_fan_out, bias all', base: 'gpt2', lora: { r: 4, lora_alpha: 8, target_modules: ['c_attn', 'c_proj', 'c_fc'], fan_in_fan_out: true, bias: 'all' } },
];

export const FROM_RETAIN: FromRetain[] = [
  { name: 'llama lora method, trained', base: 'llama', options: { r: 8, alpha: 16 }, steps: 3 },
  { name: 'qwen2 lora method, attention only, trained', base: 'qwen2', options: { r: 4, alpha: 4, targets: ['q', 'k', 'v', 'o'] }, steps: 3 },
  { name: 'gpt2 lora method, trained', base: 'gpt2', options: { r: 4, alpha: 8, targets: ['c_attn', 'c_proj', 'c_fc'] }, steps: 3 },
  { name: 'llama re-saved: rank_pattern, alpha_pattern, rslora', base: 'llama', from: 'llama rank_pattern, alpha_pattern, rslora' },
  { name: 'qwen2 lora method continuing a PEFT adapter (bias all, modules_to_save), trained', base: 'qwen2', continues: 'qwen2 bias all, modules_to_save lm_head', steps: 3 },
];

export interface PeftCaseResult {
  name: string;
  direction: 'peft->retain' | 'retain->peft';
  max_logit_diff: number;
  /** max |logits with the adapter − the base's|: how much the adapter changes the output (must not be ~0). */
  adapter_effect: number;
  max_merge_diff: number;
  merged_tensors: number;
  lora_layers: number;
}

const slug = (s: string) => s.replace(/[^a-z0-9]+/gi, '-');

function maxDiff(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shapes differ: [${a.shape}] vs [${b.shape}]`);
  return torch.tidy(() => a.to('float64').sub(b.to('float64')).abs().max().item() as number);
}

// In eval mode, as PeftModel's are: GPT-2's dropout would otherwise draw.
function logitsOf(model: Pretrained['model'], ids: Tensor): Tensor {
  model.eval();
  return torch.noGrad(() => (model as unknown as { forward(x: Tensor): Tensor }).forward(ids));
}

/** max |Δ| between the model's state dict and the reference's merged.<key> tensors; every model tensor must be there. */
function mergeDiff(model: Pretrained['model'], ref: Map<string, Tensor>, name: string): { diff: number; count: number } {
  let diff = 0;
  let count = 0;
  for (const [k, v] of model.stateDict()) {
    const r = ref.get(`merged.${k}`);
    if (!r) throw new Error(`${name}: PEFT's merged model has no tensor ${k}`);
    diff = Math.max(diff, maxDiff(v, r));
    count++;
  }
  return { diff, count };
}

/** retain's side of an adapter PEFT wrote: applied over the base (unmerged), then merged; and loaded as a model. */
async function checkFromPeft(c: FromPeft, dir: string, baseDir: string, ids: Tensor): Promise<PeftCaseResult> {
  const ref = torch.io.loadSafetensors(join(dir, 'ref.safetensors'));
  try {
    const base = await loadPretrained(baseDir);
    const plain = logitsOf(base.model, ids);
    loadAdapter(base.model, dir);
    const adapterTensors = loraModules(base.model).length;
    const adapted = logitsOf(base.model, ids);
    const effect = maxDiff(adapted, plain);
    let logit = maxDiff(adapted, ref.get('logits')!);
    torch.dispose([plain, adapted]);
    mergeAndUnload(base.model);
    const merged = mergeDiff(base.model, ref, c.name);
    base.model.dispose();
    const asModel = await loadPretrained(dir);
    logit = Math.max(logit, maxDiff(logitsOf(asModel.model, ids), ref.get('logits')!));
    const merged2 = mergeDiff(asModel.model, ref, c.name);
    asModel.model.dispose();
    return { name: c.name, direction: 'peft->retain', max_logit_diff: logit, adapter_effect: effect, max_merge_diff: Math.max(merged.diff, merged2.diff), merged_tensors: merged.count, lora_layers: adapterTensors };
  } finally {
    torch.dispose(ref.values());
  }
}

/** The lora method as `retain train` runs it: parameterize the loaded base, a few AdamW steps over the adapters, saveFinal. */
function trainWithMethod(p: Pretrained, options: Record<string, unknown>, steps: number, dir: string, baseDir: string, ids: Tensor): void {
  const model = p.model;
  const ctx = { model, params: model.namedParameters(), log: () => {} } as unknown as SetupContext;
  const lora = new Lora(options);
  const opt = new torch.optim.AdamW(lora.parameterize(ctx).map(([, p]) => p), { lr: 0.02, weightDecay: 0 });
  const [B, T] = ids.shape;
  for (let i = 0; i < steps; i++) {
    torch.tidy(() => {
      const logits = (model as unknown as { forward(x: Tensor): Tensor }).forward(ids.i(':', ':-1'));
      const loss = torch.crossEntropy(logits.reshape(B * (T - 1), -1), ids.i(':', '1:').reshape(-1));
      opt.zeroGrad();
      loss.backward();
      opt.step();
    });
  }
  model.eval();
  lora.saveFinal({ model, dir, pretrained: p, basePath: baseDir });
}

/** retain writes an adapter; returns its logits and merged state (kept for the comparison after PEFT has run). */
async function makeFromRetain(c: FromRetain, dir: string, baseDir: string, peftDirs: Map<string, string>, ids: Tensor): Promise<{ logits: Tensor; effect: number; merged: Pretrained['model']; adapters: number }> {
  const p = await loadPretrained(baseDir);
  const plain = logitsOf(p.model, ids);
  if (c.from) {
    loadAdapter(p.model, peftDirs.get(c.from)!);
    saveAdapter(p.model, dir, { baseModel: baseDir });
  } else {
    const options = c.continues ? { ...c.options, adapter: peftDirs.get(c.continues)! } : c.options ?? {};
    trainWithMethod(p, options, c.steps ?? 0, dir, baseDir, ids);
  }
  const logits = logitsOf(p.model, ids);
  const effect = maxDiff(logits, plain);
  plain.dispose();
  const adapters = loraModules(p.model).length;
  mergeAndUnload(p.model);
  return { logits, effect, merged: p.model, adapters };
}

export async function runCases(): Promise<PeftCaseResult[]> {
  const work = mkdtempSync(join(tmpdir(), 'retain-peft-'));
  const ids = torch.tensor(IDS, { dtype: 'int64' });
  try {
    const bases = Object.fromEntries(Object.entries(BASES).map(([k, v]) => [k, { ...v, dir: join(work, `base-${k}`) }]));
    refPy(REF_PY, { step: 'bases', bases });
    const peftDirs = new Map(FROM_PEFT.map((c) => [c.name, join(work, `peft-${slug(c.name)}`)]));
    refPy(REF_PY, {
      step: 'peft', ids: IDS,
      cases: FROM_PEFT.map((c, i) => ({ name: c.name, base: bases[c.base].dir, dir: peftDirs.get(c.name), lora: c.lora, seed: 100 + i, scale: 0.05 })),
    });
    const results: PeftCaseResult[] = [];
    for (const c of FROM_PEFT) results.push(await checkFromPeft(c, peftDirs.get(c.name)!, bases[c.base].dir, ids));
    const made = new Map<string, Awaited<ReturnType<typeof makeFromRetain>>>();
    torch.manualSeed(5);
    for (const c of FROM_RETAIN) made.set(c.name, await makeFromRetain(c, join(work, `retain-${slug(c.name)}`), bases[c.base].dir, peftDirs, ids));
    refPy(REF_PY, { step: 'load', ids: IDS, cases: FROM_RETAIN.map((c) => ({ name: c.name, base: bases[c.base].dir, dir: join(work, `retain-${slug(c.name)}`) })) });
    for (const c of FROM_RETAIN) {
      const m = made.get(c.name)!;
      const ref = torch.io.loadSafetensors(join(work, `retain-${slug(c.name)}`, 'ref.safetensors'));
      try {
        const merged = mergeDiff(m.merged, ref, c.name);
        results.push({ name: c.name, direction: 'retain->peft', max_logit_diff: maxDiff(m.logits, ref.get('logits')!), adapter_effect: m.effect, max_merge_diff: merged.diff, merged_tensors: merged.count, lora_layers: m.adapters });
      } finally {
        torch.dispose(ref.values());
        m.logits.dispose();
        m.merged.dispose();
      }
    }
    return results;
  } finally {
    ids.dispose();
    rmSync(work, { recursive: true, force: true });
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const cases = await runCases();
  return {
    peft_roundtrips: cases.length,
    peft_max_logit_diff: Math.max(...cases.map((c) => c.max_logit_diff)),
    peft_max_merge_diff: Math.max(...cases.map((c) => c.max_merge_diff)),
    peft_cases: cases,
  };
}
