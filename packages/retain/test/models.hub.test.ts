import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, existsSync, readdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { WeightsMismatchError } from '../src/models/weights.js';
import { generate, sampleNext } from '../src/models/generate.js';
import type { LlamaForCausalLM } from '../src/models/llama.js';
import { assertClose } from '../../torch/test/helpers.js';
import { needShared, sharedPath } from './helpers.js';

const skip = needShared('models', 'stories260K', 'stories260K.bin');

test('llama2.c → Hugging Face directory → load back: same logits, tied head stored once, shards with an index', { skip }, async () => {
  const a = await loadPretrained(sharedPath('models', 'stories260K', 'stories260K.bin'));
  const dir = mkdtempSync(join(tmpdir(), 'retain-hf-'));
  savePretrained(a, join(dir, 'one'));
  const cfg = JSON.parse(readFileSync(join(dir, 'one', 'config.json'), 'utf8'));
  assert.equal(cfg.model_type, 'llama');
  assert.equal(cfg.tie_word_embeddings, true);
  const st = torch.io.openSafetensors(join(dir, 'one', 'model.safetensors'));
  assert.ok(!st.names.includes('lm_head.weight'), 'a tied head is saved once, as HF does');
  assert.ok(st.names.includes('model.layers.4.mlp.down_proj.weight'));
  st.close();
  // Small shards force the sharded layout with an index.
  savePretrained(a, join(dir, 'sharded'), { maxShardBytes: 200_000 });
  assert.ok(existsSync(join(dir, 'sharded', 'model.safetensors.index.json')));
  assert.ok(readdirSync(join(dir, 'sharded')).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)).length > 1);
  for (const sub of ['one', 'sharded']) {
    const b = await loadPretrained(join(dir, sub));
    assert.ok(b.tokenizer, 'the llama2.c tokenizer travels with the directory');
    torch.tidy(() => {
      const ids = torch.tensor([[1, 403, 407, 261, 378]]);
      const la = (a.model as LlamaForCausalLM).forward(ids);
      const lb = (b.model as LlamaForCausalLM).forward(ids);
      assert.ok(la.equal(lb), `${sub}: logits differ after the round trip`);
    });
    b.model.dispose();
  }
  a.model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test('sampling: temperature, top-k and top-p keep only the allowed tokens; seeds repeat', () => {
  torch.tidy(() => {
    const logits = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0]);
    assert.equal(sampleNext(logits, {}), 0);
    const drawn = new Set<number>();
    torch.manualSeed(0);
    for (let i = 0; i < 200; i++) drawn.add(sampleNext(logits, { temperature: 1, topK: 2 }));
    assert.deepEqual([...drawn].sort(), [0, 1]);
    // p = softmax: [0.607, 0.223, 0.135, 0.030, 0.004]; top-p 0.8 keeps the two tokens whose mass reaches 0.8 (0.607 + 0.223).
    const kept = new Set<number>();
    for (let i = 0; i < 300; i++) kept.add(sampleNext(logits, { temperature: 1, topP: 0.8 }));
    assert.deepEqual([...kept].sort(), [0, 1]);
    torch.manualSeed(5);
    const s1 = Array.from({ length: 20 }, () => sampleNext(logits, { temperature: 2 }));
    torch.manualSeed(5);
    const s2 = Array.from({ length: 20 }, () => sampleNext(logits, { temperature: 2 }));
    assert.deepEqual(s1, s2);
    assertClose(logits.softmax(0).i(0), [0.60697], { atol: 1e-4 });
  });
});

test('generation stops at stop strings and reports why', { skip }, async () => {
  const p = await loadPretrained(sharedPath('models', 'stories260K', 'stories260K.bin'));
  const m = p.model as unknown as LlamaForCausalLM;
  const g = generate(m, p.tokenizer!, '', { maxNewTokens: 60, stop: ['Lily'] });
  assert.equal(g.finishReason, 'stop_string');
  assert.equal(g.text, 'Once upon a time, there was a little girl named ');
  const h = generate(m, p.tokenizer!, 'Once upon a time', { maxNewTokens: 5 });
  assert.equal(h.finishReason, 'length');
  assert.equal(h.ids.length, 5);
  const s = generate(m, p.tokenizer!, 'Once upon a time', { maxNewTokens: 20, temperature: 0.8, topP: 0.9, seed: 3 });
  const s2 = generate(m, p.tokenizer!, 'Once upon a time', { maxNewTokens: 20, temperature: 0.8, topP: 0.9, seed: 3 });
  assert.equal(s.text, s2.text);
  p.model.dispose();
});

test('GPT-2 Hugging Face directory (original key names without transformer.) loads, saves and reloads to the same logits', async () => {
  const { GPT2LMHeadModel } = await import('../src/models/gpt2.js');
  const { writeFileSync } = await import('node:fs');
  const config = { model_type: 'gpt2', vocab_size: 50, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4 };
  torch.manualSeed(3);
  const m = new GPT2LMHeadModel(config).eval(); // GPT-2's dropout defaults to 0.1
  const dir = mkdtempSync(join(tmpdir(), 'retain-gpt2-'));
  // The layout of the released gpt2 files: h.0.attn.c_attn.weight, wte.weight, ... and no lm_head (tied).
  const sd = new Map([...m.stateDict()].filter(([k]) => k !== 'lm_head.weight').map(([k, t]) => [k.replace(/^transformer\./, ''), t] as [string, torch.Tensor]));
  torch.io.saveSafetensors(join(dir, 'model.safetensors'), sd);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const p = await loadPretrained(dir);
  p.model.eval();
  const ids = torch.tensor([[1, 7, 3, 9]]);
  assert.ok(torch.tidy(() => (p.model as InstanceType<typeof GPT2LMHeadModel>).forward(ids).equal(m.forward(ids))));
  savePretrained(p, join(dir, 'back'));
  const q = await loadPretrained(join(dir, 'back'));
  q.model.eval();
  assert.ok(torch.tidy(() => (q.model as InstanceType<typeof GPT2LMHeadModel>).forward(ids).equal(m.forward(ids))));
  rmSync(dir, { recursive: true, force: true });
});

test('T5 Hugging Face directory loads through the hub (tied copies filled), saves and reloads to the same generation', async () => {
  const { T5ForConditionalGeneration } = await import('../src/models/t5.js');
  const { writeFileSync } = await import('node:fs');
  const config = { model_type: 't5', vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 24, num_layers: 2, num_heads: 4, relative_attention_num_buckets: 8, relative_attention_max_distance: 20, dropout_rate: 0, layer_norm_epsilon: 1e-6, feed_forward_proj: 'relu', tie_word_embeddings: true, decoder_start_token_id: 0, pad_token_id: 0, eos_token_id: 1 };
  torch.manualSeed(5);
  const m = new T5ForConditionalGeneration(config).eval();
  const dir = mkdtempSync(join(tmpdir(), 'retain-t5-'));
  // As transformers writes it: the shared embedding once, no encoder/decoder embed_tokens or tied lm_head copies.
  const drop = new Set(['encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight']);
  torch.io.saveSafetensors(join(dir, 'model.safetensors'), new Map([...m.stateDict()].filter(([k]) => !drop.has(k))));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const p = await loadPretrained(dir);
  p.model.eval();
  const ids = torch.tensor([[5, 9, 3, 1]]);
  const want = m.generate(ids, { maxNewTokens: 6 });
  assert.deepEqual((p.model as InstanceType<typeof T5ForConditionalGeneration>).generate(ids, { maxNewTokens: 6 }), want);
  savePretrained(p, join(dir, 'back'));
  const q = await loadPretrained(join(dir, 'back'));
  q.model.eval();
  assert.deepEqual((q.model as InstanceType<typeof T5ForConditionalGeneration>).generate(ids, { maxNewTokens: 6 }), want);
  rmSync(dir, { recursive: true, force: true });
});

test('a config.json that does not fit its weights, or a truncated weights file: one short message saying what to check, through the CLI without a stack', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-hub-bad-'));
  const a = await loadPretrained(new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname);
  savePretrained(a, join(dir, 'ok'));
  cpSync(join(dir, 'ok'), join(dir, 'shape'), { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'shape', 'config.json'), 'utf8'));
  // A smaller model than the weights is built and refused tensor by tensor (a bigger one is refused before it is
  // built, from the safetensors headers: the last assertion here).
  writeFileSync(join(dir, 'shape', 'config.json'), JSON.stringify({ ...cfg, hidden_size: cfg.hidden_size / 2 }));
  await assert.rejects(loadPretrained(join(dir, 'shape')), (e: Error) => {
    assert.ok(e instanceof WeightsMismatchError);
    const lines = e.message.split('\n');
    assert.match(lines[0], /shape: the weights do not fit the model that .*shape\/config\.json describes:$/);
    assert.match(lines[1], /size mismatch for model\.embed_tokens\.weight: copying a param with shape \[512, 64\] from checkpoint, the shape in current model is \[512, 32\]/);
    assert.match(lines[5], /^ {2}… and \d+ more$/);
    assert.match(lines[6], /^check that .*config\.json belongs to these weights \(hidden_size/);
    return true;
  });
  cpSync(join(dir, 'ok'), join(dir, 'cut'), { recursive: true });
  const st = join(dir, 'cut', 'model.safetensors');
  const bytes = readFileSync(st);
  writeFileSync(st, bytes.subarray(0, bytes.length >> 1));
  for (const [name, why] of [['shape', /the weights do not fit the model/], ['cut', /the file is truncated/]] as const) {
    const r = spawnSync(process.execPath, [new URL('../bin/retain.mjs', import.meta.url).pathname, 'inspect', join(dir, name)], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, why);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace for a user error');
  }
  cpSync(join(dir, 'ok'), join(dir, 'big'), { recursive: true });
  writeFileSync(join(dir, 'big', 'config.json'), JSON.stringify({ ...cfg, hidden_size: 2 * cfg.hidden_size }));
  await assert.rejects(loadPretrained(join(dir, 'big')), /big\/config\.json: describes a model of 641,536 parameters or more, but the weights in .*big hold 260,032 values in 47 tensors \(model\.embed_tokens\.weight \[512, 64\], /);
  a.model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test('savePretrained replaces a model directory whole: stale files go, nothing is left beside it, and refused weights leave the old one intact', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-hub-save-'));
  const a = await loadPretrained(new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname);
  const out = join(dir, 'final');
  savePretrained(a, out);
  writeFileSync(join(out, 'model-00002-of-00002.safetensors'), 'stale shard of an earlier, larger save');
  savePretrained(a, out);
  assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.safetensors', 'tok512.bin']);
  assert.deepEqual(readdirSync(dir), ['final'], 'no temporary or old directory left beside it');
  const before = readFileSync(join(out, 'model.safetensors'));
  const w = a.model.stateDict().get('model.norm.weight')!;
  torch.noGrad(() => w.fill_(NaN));
  assert.throws(() => savePretrained(a, out), /refusing to save .*final: weight 'model\.norm\.weight' holds NaN or Inf/);
  assert.ok(readFileSync(join(out, 'model.safetensors')).equals(before), 'the previous save is untouched');
  // A save that fails half-way (here: a tokenizer file gone missing) leaves the previous directory and nothing beside it.
  torch.noGrad(() => w.fill_(1));
  assert.throws(() => savePretrained({ ...a, tokenizerFiles: [...a.tokenizerFiles, join(dir, 'gone.json')] }, out), /ENOENT/);
  assert.ok(readFileSync(join(out, 'model.safetensors')).equals(before));
  assert.deepEqual(readdirSync(dir), ['final']);
  a.model.dispose();
  rmSync(dir, { recursive: true, force: true });
});
