// Gemma 2 and Gemma 3 text against the real transformers (the reference environment, bench/refenv.ts): a small
// random model built and saved by transformers loads in retain and gives the same logits, the same gradients for a
// training step, the same 32 greedily generated tokens (with the key/value cache, past the sliding window), and
// retain's saved copy loads back in transformers with the same logits. Weights are scaled up so that both
// soft-caps and the sliding window change the result (the reference reports how much, and the test requires it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { generate, type CausalLM } from '../src/models/generate.js';
import type { Tokenizer } from '../src/tokenizers/types.js';
import { needRefenv, refPy } from '../../../bench/refenv.js';

const SKIP = needRefenv('transformers');

const SMALL = {
  vocab_size: 96, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2,
  head_dim: 16, max_position_embeddings: 64, sliding_window: 4, rms_norm_eps: 1e-6,
};

interface Case {
  name: string;
  cls: 'Gemma2ForCausalLM' | 'Gemma3ForCausalLM';
  config: Record<string, unknown>;
  /** Keys deleted from the saved config.json, to load it the way files from older transformers read. */
  dropKeys?: string[];
  /**
   * Standard deviations of the norm scales and the embedding. A tied head predicts the current token again and again
   * unless wide norm scales let the layers outweigh its embedding; an untied one needs no such help.
   */
  std: { norm: number; embed: number };
}

const CASES: Case[] = [
  {
    name: 'Gemma 2: tied head, GQA, head_dim ≠ hidden/heads, both soft-caps, window 4',
    cls: 'Gemma2ForCausalLM',
    config: { model_type: 'gemma2', ...SMALL, query_pre_attn_scalar: 12, attn_logit_softcapping: 5.0, final_logit_softcapping: 3.0 },
    std: { norm: 1.5, embed: 0.3 },
  },
  {
    name: 'Gemma 2: untied head, MHA, an older config.json (no layer_types, rope_theta at the top)',
    cls: 'Gemma2ForCausalLM',
    config: { model_type: 'gemma2', ...SMALL, num_key_value_heads: 4, num_hidden_layers: 4, tie_word_embeddings: false, query_pre_attn_scalar: 16, attn_logit_softcapping: 5.0, final_logit_softcapping: 3.0 },
    dropKeys: ['layer_types', 'rope_parameters'],
    std: { norm: 0.3, embed: 0.5 },
  },
  {
    name: 'Gemma 3 text: q/k norms, local base 100, linear ×2 RoPE on global layers, pattern 2, final cap',
    cls: 'Gemma3ForCausalLM',
    config: {
      model_type: 'gemma3_text', ...SMALL, num_hidden_layers: 4, num_key_value_heads: 1, query_pre_attn_scalar: 16, final_logit_softcapping: 3.0,
      rope_theta: 10000, rope_local_base_freq: 100, rope_scaling: { rope_type: 'linear', factor: 2.0 }, sliding_window_pattern: 2,
    },
    std: { norm: 1.5, embed: 0.3 },
  },
];

// Builds, scales and saves the model, then computes the references: logits (also with the window and caps turned
// off, to show they matter), a cross-entropy step's gradients, and greedy generation.
const BUILD = `
import transformers, copy
from transformers import AutoConfig
cls = getattr(transformers, inp['cls'])
# JSON turns 3.0 into 3; transformers' strict configs want floats there.
FLOATS = {'attn_logit_softcapping', 'final_logit_softcapping', 'rms_norm_eps', 'rope_theta', 'rope_local_base_freq', 'factor'}
def floats(d): return {k: floats(v) if isinstance(v, dict) else float(v) if k in FLOATS else v for k, v in d.items()}
cfg = AutoConfig.for_model(**floats(inp['config']))
torch.manual_seed(0)
m = cls(cfg).float().eval()
with torch.no_grad():
    for n, p in m.named_parameters():
        std = inp['std']['norm'] if 'norm' in n else inp['std']['embed'] if 'embed' in n or 'lm_head' in n else 0.6 if ('q_proj' in n or 'k_proj' in n) else 0.15
        p.normal_(0, std)
m.save_pretrained(inp['dir'])
cj = json.load(open(os.path.join(inp['dir'], 'config.json')))
for k in inp['drop']:
    cj.pop(k, None)
if 'rope_parameters' in inp['drop'] and inp['config']['model_type'] == 'gemma2':
    cj['rope_theta'] = 10000.0
json.dump(cj, open(os.path.join(inp['dir'], 'config.json'), 'w'))
ids = torch.tensor(inp['ids'])
logits = m(ids).logits
out['logits'] = logits
def variant(**kw):
    c2 = copy.deepcopy(m.config)
    for k, v in kw.items(): setattr(c2, k, v)
    m2 = cls(c2).float().eval()
    m2.load_state_dict(m.state_dict())
    with torch.no_grad(): return (m2(ids).logits - logits).abs().max().item()
out['effect'] = {
    'window': variant(layer_types=['full_attention'] * cfg.num_hidden_layers),
    'final_cap': variant(final_logit_softcapping=None),
    'attn_cap': variant(attn_logit_softcapping=None),
}
m.train()
lg = m(ids).logits
V = lg.shape[-1]
loss = torch.nn.functional.cross_entropy(lg[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
loss.backward()
out['loss'] = loss.item()
out['grads'] = {n: p.grad for n, p in m.named_parameters()}
m.eval()
m.generation_config.eos_token_id = None
m.generation_config.pad_token_id = 0
prompt = torch.tensor([inp['prompt']])
with torch.no_grad():
    g = m.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False)
out['generated'] = g[0, prompt.shape[1]:].tolist()
with torch.no_grad():
    top2 = m(g).logits[0, prompt.shape[1] - 1:-1].topk(2, -1).values
out['min_greedy_margin'] = (top2[:, 0] - top2[:, 1]).min().item()
`;

const RELOAD = `
import transformers
m = getattr(transformers, inp['cls']).from_pretrained(inp['dir']).float().eval()
with torch.no_grad():
    out['logits'] = m(torch.tensor(inp['ids'])).logits
`;

/** max |a − b| over max |b|: the error relative to the tensor's scale. */
function relErr(a: torch.Tensor, b: number[]): number {
  const x = (a.double().toArray() as number[]).flat(Infinity as 1) as number[];
  const y = b.flat(Infinity as 1) as number[];
  assert.equal(x.length, y.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < x.length; i++) {
    diff = Math.max(diff, Math.abs(x[i] - y[i]));
    scale = Math.max(scale, Math.abs(y[i]));
  }
  return diff / scale;
}

function maxAbsDiff(a: torch.Tensor, b: number[]): number {
  const x = (a.double().toArray() as number[]).flat(Infinity as 1) as number[];
  const y = b.flat(Infinity as 1) as number[];
  assert.equal(x.length, y.length);
  return x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0);
}

// Generation needs only the end-of-sequence id (none here, as in the reference) from a tokenizer.
const NO_EOS = { bosId: -1, eosId: -1, vocabSize: 96, encode: () => [], decode: (ids: number[]) => ids.join(' ') } as unknown as Tokenizer;

// Token 0 is the padding id, whose embedding row gets no gradient from the lookup.
const IDS = [[2, 17, 5, 88, 0, 41, 9, 63, 12, 30, 7, 55], [2, 3, 70, 0, 25, 25, 91, 14, 8, 60, 33, 1]];
const PROMPT = [2, 40, 11, 77, 6, 19];

for (const c of CASES) {
  test(`parity with transformers: ${c.name}`, { skip: SKIP, timeout: 600_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'retain-gemma-'));
    try {
      const ref = refPy(BUILD, { cls: c.cls, config: c.config, dir: join(dir, 'hf'), ids: IDS, prompt: PROMPT, drop: c.dropKeys ?? [], std: c.std });
      // The features under test move the logits well beyond the tolerance, so they cannot be skipped unnoticed.
      assert.ok(ref.effect.window > 1e-2, `sliding window changes logits by ${ref.effect.window}`);
      assert.ok(ref.effect.final_cap > 1e-2, `final soft-cap changes logits by ${ref.effect.final_cap}`);
      if (c.cls === 'Gemma2ForCausalLM') assert.ok(ref.effect.attn_cap > 1e-2, `attention soft-cap changes logits by ${ref.effect.attn_cap}`);
      // Each greedy choice wins by 20× or more the logit error seen here (~1e-5), so equality is not luck either way.
      assert.ok(ref.min_greedy_margin > 2e-4, `greedy choices are decided by more than rounding (margin ${ref.min_greedy_margin})`);
      assert.ok(new Set(ref.generated).size >= 5, `the reference generation varies: ${ref.generated}`);

      const p = await loadPretrained(join(dir, 'hf'));
      const model = p.model as unknown as CausalLM & torch.nn.Module;
      const ids = torch.tensor(IDS, { dtype: 'int64' });
      const logits = torch.noGrad(() => model.forward(ids));
      const logitDiff = maxAbsDiff(logits, ref.logits);
      assert.ok(logitDiff <= 1e-4, `logits differ by ${logitDiff}`);

      model.train();
      const lg = model.forward(ids);
      const V = lg.shape[2];
      const T = IDS[0].length;
      const loss = torch.crossEntropy(lg.narrow(1, 0, T - 1).reshape(-1, V), ids.narrow(1, 1, T - 1).reshape(-1));
      assert.ok(Math.abs(loss.item() - ref.loss) <= 1e-5 * ref.loss, `loss ${loss.item()} vs ${ref.loss}`);
      loss.backward();
      let worstGrad = 0;
      const tied = new Set((p.model.tiedKeys?.() ?? []).map(([alias]) => alias));
      for (const [k, w] of model.namedParameters()) {
        if (tied.has(k)) continue;
        assert.ok(ref.grads[k], `transformers has a parameter ${k}`);
        const e = relErr(w.grad!, ref.grads[k]);
        assert.ok(e <= 1e-4, `gradient of ${k} differs by ${e} relative`);
        worstGrad = Math.max(worstGrad, e);
      }
      assert.equal([...model.namedParameters()].filter(([k]) => !tied.has(k)).length, Object.keys(ref.grads).length, 'parameters compared');
      model.eval();

      const g = generate(model, NO_EOS, PROMPT, { maxNewTokens: 32 });
      assert.deepEqual(g.ids, ref.generated);

      savePretrained(p, join(dir, 'saved'));
      const back = refPy(RELOAD, { cls: c.cls, dir: join(dir, 'saved'), ids: IDS });
      const reloadDiff = maxAbsDiff(logits, back.logits);
      assert.ok(reloadDiff <= 1e-4, `transformers' logits from retain's save differ by ${reloadDiff}`);
      console.log(`${c.name}: logits ${logitDiff.toExponential(2)}, grads ${worstGrad.toExponential(2)} rel, 32 tokens equal, reload ${reloadDiff.toExponential(2)}; effects ${JSON.stringify(ref.effect)}, margin ${ref.min_greedy_margin.toFixed(4)}`);
      torch.dispose([logits, lg, loss, ids]);
      p.model.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
