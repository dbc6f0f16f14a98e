// Architecture parity against the real transformers (reference environment, scripts/refenv.sh). For each case
// transformers builds a small random model and saves it with save_pretrained; retain loads that directory and must
// give the same logits, the same greedy generation, the same gradients of one cross-entropy step, and a saved
// directory (savePretrained) that transformers loads back to the same logits. Tensors travel as safetensors files.
//
// Figures: logit differences are max |Δ| in float32; gradient differences are per tensor max|Δ| / max|ref|, the
// largest over all parameters (keys matched by transformers' parameter names).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { loadPretrained, savePretrained, type Pretrained } from '../../packages/retain/src/models/hub.js';
import { generate, type CausalLM } from '../../packages/retain/src/models/generate.js';
import type { T5ForConditionalGeneration } from '../../packages/retain/src/models/t5.js';
import type { Tokenizer } from '../../packages/retain/src/tokenizers/types.js';
import { causalLmLoss } from '../../packages/retain/src/train/trainer.js';
import type { TrainableModel } from '../../packages/retain/src/train/hooks.js';
import { refPy } from '../refenv.js';
import { GEMMA_CASES } from './gemma-cases.js';

export interface ArchCase {
  name: string;
  hf: { model_type: string; [k: string]: unknown };
  variant?: { dtype?: 'bfloat16'; shards?: boolean; tied?: boolean };
  seq2seq?: boolean;
  /** Loaded by transformers and saved again before retain reads it: how a released model looks after a round there. */
  resaved?: boolean;
}

export interface ArchResult {
  name: string;
  max_logit_diff: number;
  greedy_equal: boolean;
  max_grad_rel_diff: number;
  roundtrip_logit_diff: number;
}

/** The bounds the tests hold every case to. */
export const BOUNDS = { logits: 1e-4, gradRel: 1e-4, roundtrip: 1e-4 };

// initializer_range 0.2 (transformers' default 0.02 leaves attention almost uniform): positions then matter enough
// that a wrong rotary frequency or window changes the greedy tokens, not only the logits' last digits.
const DECODER = { vocab_size: 320, hidden_size: 64, intermediate_size: 112, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128, initializer_range: 0.2 };
const T5_SIZE = { vocab_size: 300, d_model: 64, d_kv: 16, d_ff: 96, num_layers: 2, num_decoder_layers: 2, num_heads: 4, relative_attention_num_buckets: 8, relative_attention_max_distance: 20, decoder_start_token_id: 0 };

export const CASES: ArchCase[] = [
  {
    // Llama 3.x: llama3 rope scaling with its bands at wavelengths 8 and 32 (the fastest frequency kept, the next
    // smoothed, the rest divided by 8), head_dim wider than hidden/heads, biases on attention and MLP; sharded, untied.
    name: 'llama3-rope-sharded',
    hf: {
      model_type: 'llama', ...DECODER, head_dim: 32, attention_bias: true, mlp_bias: true, rms_norm_eps: 1e-5, rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 },
    },
    variant: { shards: true, tied: false },
  },
  {
    // Linear position interpolation, a tied head, stored in bfloat16 (loaded into float32 by both sides).
    name: 'llama-linear-bf16-tied',
    hf: { model_type: 'llama', ...DECODER, vocab_size: 512, rope_scaling: { rope_type: 'linear', factor: 2 } },
    variant: { dtype: 'bfloat16', tied: true },
  },
  // Qwen2: q/k/v biases; a sliding window on the layers from max_window_layers on (here the second), tied.
  { name: 'qwen2-window-tied', hf: { model_type: 'qwen2', ...DECODER, vocab_size: 384, rope_theta: 1000000, use_sliding_window: true, sliding_window: 6, max_window_layers: 1 }, variant: { tied: true } },
  // Mistral: every layer attends within a window shorter than the batch and the generated text.
  { name: 'mistral-window', hf: { model_type: 'mistral', ...DECODER, vocab_size: 1000, sliding_window: 5 }, variant: { tied: false } },
  // Phi-3: fused qkv_proj and gate_up_proj, rotary over half of each head (as Phi-4-mini's 0.75), a sliding window.
  { name: 'phi3-partial-rope-sharded', hf: { model_type: 'phi3', ...DECODER, partial_rotary_factor: 0.5, sliding_window: 7, pad_token_id: 0, eos_token_id: 2 }, variant: { shards: true, tied: false } },
  // Phi-3 128k / Phi-3.5: LongRoPE, short factors within the original context (16: the batch), long ones beyond it
  // (generation runs to 38 positions), cos and sin scaled by √(1 + ln 8 / ln 16).
  {
    name: 'phi3-longrope',
    hf: {
      model_type: 'phi3', ...DECODER, original_max_position_embeddings: 16, pad_token_id: 0, eos_token_id: 2,
      rope_scaling: { rope_type: 'longrope', short_factor: [1, 1.05, 1.1, 1.2, 1.3, 1.5, 1.8, 2], long_factor: [1, 1.5, 2.5, 4, 6, 8, 12, 16] },
    },
    variant: { tied: false },
  },
  { name: 'gpt2-tied', hf: { model_type: 'gpt2', vocab_size: 300, n_embd: 64, n_layer: 2, n_head: 4, n_positions: 128, initializer_range: 0.2, bos_token_id: 1, eos_token_id: 2 }, variant: { tied: true } },
  // GPT-2's less common switches: exact GELU, an MLP width of its own, attention scaled by 1/(layer + 1); untied.
  {
    name: 'gpt2-options-untied',
    hf: { model_type: 'gpt2', vocab_size: 300, n_embd: 64, n_layer: 3, n_head: 4, n_positions: 128, n_inner: 80, activation_function: 'gelu', scale_attn_by_inverse_layer_idx: true, initializer_range: 0.2, layer_norm_epsilon: 1e-6, bos_token_id: 1, eos_token_id: 2 },
    variant: { tied: false },
  },
  // T5 v1.0: relu MLP, head tied to the shared embedding and its input scaled by d_model^-0.5.
  { name: 't5-tied', hf: { model_type: 't5', ...T5_SIZE, feed_forward_proj: 'relu' }, seq2seq: true, variant: { tied: true } },
  // Flan-T5 as released: gated-gelu, its own lm_head, tie_word_embeddings false; sharded.
  { name: 'flan-t5-untied', hf: { model_type: 't5', ...T5_SIZE, feed_forward_proj: 'gated-gelu' }, seq2seq: true, variant: { tied: false, shards: true } },
  // Flan-T5 after a round through transformers 5: config.json now says tie_word_embeddings true (with
  // scale_decoder_outputs false) while the file still holds the model's own lm_head, which transformers keeps.
  { name: 'flan-t5-resaved', hf: { model_type: 't5', ...T5_SIZE, feed_forward_proj: 'gated-gelu' }, seq2seq: true, variant: { tied: false }, resaved: true },
  // What transformers 5 itself makes of tie_word_embeddings: false for T5: a tied head without the d_model^-0.5 scale
  // (config.json says tie_word_embeddings true, scale_decoder_outputs false); stored in bfloat16.
  { name: 't5-tf5-unscaled-bf16', hf: { model_type: 't5', ...T5_SIZE, feed_forward_proj: 'gated-silu', tie_word_embeddings: false }, seq2seq: true, variant: { dtype: 'bfloat16' } },
  ...GEMMA_CASES,
];

/** The fixed batch: two right-padded rows (the second 8 real tokens of 12), a prompt, and seq2seq labels. */
export const BATCH = {
  ids: [
    [1, 17, 250, 33, 4, 98, 121, 7, 260, 45, 12, 77],
    [1, 201, 5, 66, 143, 9, 288, 31, 0, 0, 0, 0],
  ],
  mask: [
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
  ],
  labels: [
    [40, 8, 222, 19, 130, 1],
    [77, 3, 150, 1, -100, -100],
  ],
  prompt: [1, 17, 250, 33, 4, 98],
  seed: 0,
};

const MAX_NEW_TOKENS = 32;

// Builds each case's model with transformers, saves it, and records transformers' own figures for the saved directory
// read back in float32: logits and gradients (safetensors files beside it) and greedy generation. Several cases go
// through one interpreter, which saves its start-up (importing transformers) for each further case.
const PY_BUILD = String.raw`
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
from safetensors.torch import save_file

def build(case, b, case_dir, max_new):
    res_out = {}
    variant = case.get('variant') or {}
    seq2seq = bool(case.get('seq2seq'))
    hf = dict(case['hf'])
    model_type = hf.pop('model_type')
    if 'tied' in variant:
        hf['tie_word_embeddings'] = variant['tied']
    Auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    torch.manual_seed(b['seed'])
    model = Auto.from_config(AutoConfig.for_model(model_type, **hf))
    untied_t5 = seq2seq and variant.get('tied') is False
    with torch.no_grad():
        # Norms start at ones and biases at zeros; noise on every tensor makes a misplaced scale or bias show.
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        if untied_t5:
            # transformers 5 ties T5's head whenever it builds one; released Flan-T5 files hold their own lm_head.
            model.lm_head.weight = nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.05)
    if variant.get('dtype') == 'bfloat16':
        model = model.to(torch.bfloat16)
    hf_dir = os.path.join(case_dir, 'hf')
    model.save_pretrained(hf_dir, **({'max_shard_size': '60KB'} if variant.get('shards') else {}))
    if untied_t5:
        with open(os.path.join(hf_dir, 'config.json')) as f: cfg = json.load(f)
        cfg['tie_word_embeddings'] = False  # what the released Flan-T5 config.json files say
        cfg.pop('scale_decoder_outputs', None)
        with open(os.path.join(hf_dir, 'config.json'), 'w') as f: json.dump(cfg, f, indent=2)
    if case.get('resaved'):
        Auto.from_pretrained(hf_dir).save_pretrained(hf_dir)
    res_out['shards'] = len([f for f in os.listdir(hf_dir) if f.endswith('.safetensors')])

    ref = Auto.from_pretrained(hf_dir, dtype=torch.float32).eval()
    ids = torch.tensor(b['ids']); mask = torch.tensor(b['mask'])
    labels = torch.tensor(b['labels']) if seq2seq else ids.masked_fill(mask == 0, -100)
    res = ref(input_ids=ids, attention_mask=mask, labels=labels)
    res.loss.backward()
    res_out['loss'] = res.loss.item()
    save_file({'logits': res.logits.detach().contiguous()}, os.path.join(case_dir, 'ref_logits.safetensors'))
    save_file({k: p.grad.contiguous() for k, p in ref.named_parameters()}, os.path.join(case_dir, 'ref_grads.safetensors'))
    eos = ref.generation_config.eos_token_id
    with torch.no_grad():
        if seq2seq:
            g = ref.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new)
            # Each row after decoder_start_token_id, up to (without) its end-of-sequence token.
            res_out['greedy'] = [row[:row.index(eos)] if eos in row else row for row in g[:, 1:].tolist()]
        else:
            prompt = torch.tensor([b['prompt']])
            g = ref.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=max_new)
            res_out['greedy'] = [g[0, prompt.shape[1]:].tolist()]
    res_out['eos'] = eos[0] if isinstance(eos, list) else eos
    return res_out

out['cases'] = [build(c, inp['batch'], d, inp['max_new']) for c, d in zip(inp['cases'], inp['dirs'])]
`;

// Loads retain's saved directory with transformers' defaults (as a user would) and records its logits on the batch.
const PY_ROUNDTRIP = String.raw`
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from safetensors.torch import save_file
b = inp['batch']
Auto = AutoModelForSeq2SeqLM if inp['seq2seq'] else AutoModelForCausalLM
m = Auto.from_pretrained(inp['path']).eval()
out['dtype'] = str(next(iter(m.parameters())).dtype).replace('torch.', '')
kw = {'labels': torch.tensor(b['labels'])} if inp['seq2seq'] else {}
with torch.no_grad():
    logits = m(input_ids=torch.tensor(b['ids']), attention_mask=torch.tensor(b['mask']), **kw).logits
save_file({'logits': logits.float().contiguous()}, os.path.join(inp['dir'], 'roundtrip_logits.safetensors'))
`;

interface Reference {
  shards: number;
  loss: number;
  greedy: number[][];
  eos: number | null;
}

/** Cases whose reference was built ahead (prepareCases), by name: the folder holding it and its figures. */
const prepared = new Map<string, { dir: string; ref: Reference }>();

/**
 * Builds the references of several cases in one Python run; checkCase then uses them. Each case's folder is removed
 * by its checkCase, or by dropPrepared for cases never checked.
 */
export function prepareCases(cases: ArchCase[]): void {
  const dirs = cases.map((c) => mkdtempSync(join(tmpdir(), `retain-arch-${c.name}-`)));
  try {
    const { cases: refs } = refPy(PY_BUILD, { cases, dirs, batch: BATCH, max_new: MAX_NEW_TOKENS }) as { cases: Reference[] };
    cases.forEach((c, i) => prepared.set(c.name, { dir: dirs[i], ref: refs[i] }));
  } catch (e) {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    throw e;
  }
}

/** Removes the folders of prepared cases that were never checked. */
export function dropPrepared(): void {
  for (const { dir } of prepared.values()) rmSync(dir, { recursive: true, force: true });
  prepared.clear();
}

type Seq2Seq = T5ForConditionalGeneration;

function maxAbsDiff(a: Tensor, b: Tensor): number {
  if (a.shape.join() !== b.shape.join()) throw new Error(`shapes differ: [${a.shape}] vs [${b.shape}]`);
  return torch.tidy(() => a.float().sub(b.float()).abs().max().item());
}

function loadOne(file: string, key: string): Tensor {
  const m = torch.io.loadSafetensors(file);
  const t = m.get(key)!;
  m.delete(key);
  torch.dispose(m.values());
  return t;
}

/** Causal attention over right-padded rows: bool [B, 1, T, T], true where the query may see the key. */
function causalPaddingMask(mask: Tensor): Tensor {
  return torch.tidy(() => {
    const [B, T] = mask.shape;
    const causal = torch.ones([T, T], { dtype: 'bool' }).tril(); // [T, T]
    return causal.logicalAnd(mask.ne(0).view(B, 1, 1, T)); // [B, 1, T, T]
  });
}

/** Logits [B, T, V] of the fixed batch (seq2seq: decoder logits over the labels shifted right). */
function batchLogits(p: Pretrained, seq2seq: boolean): Tensor {
  return torch.tidy(() => {
    const ids = torch.tensor(BATCH.ids, { dtype: 'int64' });
    const mask = torch.tensor(BATCH.mask, { dtype: 'int64' });
    if (seq2seq) return (p.model as unknown as Seq2Seq).forward(ids, { attentionMask: mask, labels: torch.tensor(BATCH.labels, { dtype: 'int64' }) });
    return (p.model as unknown as CausalLM & { forward(ids: Tensor, o: { mask: Tensor }): Tensor }).forward(ids, { mask: causalPaddingMask(mask) });
  });
}

/** The training loss of the batch as retain's trainer computes it: token mean of the next-token cross-entropy. */
function batchLoss(p: Pretrained, seq2seq: boolean): Tensor {
  return torch.tidy(() => {
    const ids = torch.tensor(BATCH.ids, { dtype: 'int64' });
    const mask = torch.tensor(BATCH.mask, { dtype: 'int64' });
    if (seq2seq) return (p.model as unknown as Seq2Seq).loss(ids, torch.tensor(BATCH.labels, { dtype: 'int64' }), { attentionMask: mask });
    // Position t predicts token t+1; padding and the last position carry no loss (the trainer's collate does this).
    const T = ids.shape[1];
    const next = torch.cat([ids.narrow(1, 1, T - 1), torch.zeros([ids.shape[0], 1], { dtype: 'int64' })], 1);
    const nextMask = torch.cat([mask.narrow(1, 1, T - 1), torch.zeros([ids.shape[0], 1], { dtype: 'int64' })], 1);
    const targets = next.maskedFill(nextMask.eq(0), -100);
    const { sums, counts } = causalLmLoss(p.model as unknown as TrainableModel, { ids, targets, sampleIds: [], sources: [], tokenCounts: [] });
    return sums.sum().div(counts.sum());
  });
}

/** Per-tensor max|Δ|/max|ref| over transformers' parameters; retain must have a gradient under every one of its names. */
function gradRelDiff(p: Pretrained, refFile: string): number {
  const ref = torch.io.loadSafetensors(refFile);
  const ours = new Map(p.model.namedParameters({ removeDuplicate: false }));
  try {
    let worst = 0;
    for (const [name, g] of ref) {
      const param = ours.get(name);
      if (!param) throw new Error(`transformers has a parameter '${name}' that retain's model lacks`);
      if (!param.grad) throw new Error(`retain's parameter '${name}' got no gradient`);
      const scale = torch.tidy(() => g.abs().max().item());
      worst = Math.max(worst, maxAbsDiff(param.grad, g) / (scale || 1));
    }
    const tied = new Set((p.model.tiedKeys?.() ?? []).map(([alias]) => alias));
    const extra = [...ours.keys()].filter((k) => !ref.has(k) && !tied.has(k));
    if (extra.length) throw new Error(`retain has parameters transformers lacks: ${extra.join(', ')}`);
    return worst;
  } finally {
    torch.dispose(ref.values());
  }
}

/** Retain's greedy continuation(s) of the batch, in the layout of the reference's. */
function greedy(p: Pretrained, seq2seq: boolean, eos: number | null): number[][] {
  if (seq2seq) {
    const ids = torch.tensor(BATCH.ids, { dtype: 'int64' });
    const mask = torch.tensor(BATCH.mask, { dtype: 'int64' });
    try {
      return (p.model as unknown as Seq2Seq).generate(ids, { attentionMask: mask, maxNewTokens: MAX_NEW_TOKENS });
    } finally {
      torch.dispose([ids, mask]);
    }
  }
  // Token ids in, token ids out: only the end-of-sequence id matters, as it does to transformers' generate.
  const tok: Tokenizer = { vocabSize: 0, bosId: -1, eosId: eos ?? -1, encode: () => [], decode: () => '', piece: () => '' };
  return [generate(p.model as unknown as CausalLM, tok, BATCH.prompt, { maxNewTokens: MAX_NEW_TOKENS }).ids];
}

/** Builds the case in transformers and runs the four checks on retain's loading of it. */
export async function checkCase(c: ArchCase): Promise<ArchResult> {
  if (!prepared.has(c.name)) prepareCases([c]);
  const { dir, ref } = prepared.get(c.name)!;
  prepared.delete(c.name);
  const seq2seq = c.seq2seq ?? false;
  let p: Pretrained | null = null;
  try {
    if (c.variant?.shards && ref.shards < 2) throw new Error(`${c.name}: the sharded variant was saved as ${ref.shards} file(s)`);
    p = await loadPretrained(join(dir, 'hf'));
    p.model.eval();
    const refLogits = loadOne(join(dir, 'ref_logits.safetensors'), 'logits');
    const logits = torch.noGrad(() => batchLogits(p!, seq2seq));
    const max_logit_diff = maxAbsDiff(logits, refLogits);
    refLogits.dispose();

    const greedy_equal = JSON.stringify(greedy(p, seq2seq, ref.eos)) === JSON.stringify(ref.greedy);

    p.model.zeroGrad();
    const loss = batchLoss(p, seq2seq);
    loss.backward();
    loss.dispose();
    const max_grad_rel_diff = gradRelDiff(p, join(dir, 'ref_grads.safetensors'));
    p.model.zeroGrad();

    savePretrained(p, join(dir, 'retain'));
    refPy(PY_ROUNDTRIP, { path: join(dir, 'retain'), dir, batch: BATCH, seq2seq });
    const back = loadOne(join(dir, 'roundtrip_logits.safetensors'), 'logits');
    const roundtrip_logit_diff = maxAbsDiff(logits, back);
    torch.dispose([back, logits]);
    return { name: c.name, max_logit_diff, greedy_equal, max_grad_rel_diff, roundtrip_logit_diff };
  } finally {
    p?.model.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `npm run -s parity -- arch`: every case, with the worst figures over all of them. */
export async function run(): Promise<Record<string, unknown>> {
  const arch_cases: ArchResult[] = [];
  prepareCases(CASES);
  try {
    for (const c of CASES) arch_cases.push(await checkCase(c));
  } finally {
    dropPrepared();
  }
  const worst = (k: 'max_logit_diff' | 'max_grad_rel_diff' | 'roundtrip_logit_diff') => Math.max(...arch_cases.map((r) => r[k]));
  return {
    architectures: new Set(CASES.map((c) => c.hf.model_type)).size,
    max_logit_diff: worst('max_logit_diff'),
    max_grad_rel_diff: worst('max_grad_rel_diff'),
    generation_mismatches: arch_cases.filter((r) => !r.greedy_equal).map((r) => r.name),
    roundtrip_max_logit_diff: worst('roundtrip_logit_diff'),
    arch_cases,
  };
}
