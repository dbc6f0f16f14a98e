// What loadPretrained says about inputs it cannot use: files of no known format, damaged weights, config.json values
// no model can be built from, a LoRA adapter whose base model is not on this machine, and float16 on CPU. Each is a plain Error naming the
// file and the fix (the CLI prints a stack only for TypeError/ReferenceError/SyntaxError, which it takes for bugs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { checkDtypeDevice, loadPretrained, savePretrained } from '../src/models/hub.js';
import { needShared, sharedPath } from './helpers.js';

const STORIES = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;

function userError(e: unknown, re: RegExp): true {
  assert.ok(e instanceof Error);
  assert.ok(!(e instanceof TypeError || e instanceof SyntaxError || e instanceof ReferenceError), `${(e as Error).name} reads as a bug: ${(e as Error).message}`);
  assert.match((e as Error).message, re);
  return true;
}

function cliFails(args: string[], re: RegExp): void {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, RETAIN_DEBUG: '' } });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /^ {4}at /m, 'no stack trace for a user error');
}

/** The stories260K model as a Hugging Face directory. */
async function hfDir(dir: string): Promise<string> {
  const p = await loadPretrained(STORIES);
  savePretrained(p, dir);
  p.model.dispose();
  return dir;
}

test('a file that is neither a llama2.c checkpoint nor a pickle is called unrecognised, with its size and the supported formats', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-loaderr-'));
  const rand = join(dir, 'rand.bin');
  // Arbitrary bytes, with a negative first int32 so that no llama2.c header can be read into them.
  writeFileSync(rand, Buffer.from(Array.from({ length: 3000 }, (_, i) => (i === 3 ? 0xff : (i * 131 + 7) % 251))));
  writeFileSync(join(dir, 'zero.bin'), '');
  writeFileSync(join(dir, 'notes.pt'), 'not a checkpoint');
  for (const [f, size] of [['rand.bin', 3000], ['zero.bin', 0], ['notes.pt', 16]] as const) {
    await assert.rejects(loadPretrained(join(dir, f)), (e) =>
      userError(e, new RegExp(`${f}: unrecognised file \\(${size} bytes.*\\): neither a llama2\\.c checkpoint nor a PyTorch pickle\\. retain loads a Hugging Face model directory .*llama2\\.c .*ml5`)));
  }
  cliFails(['inspect', rand], /^retain: .*rand\.bin: unrecognised file \(3000 bytes\)/);
  // What torch.save writes: a zip archive (PyTorch ≥ 1.6) or a bare protocol-2 pickle.
  writeFileSync(join(dir, 'zip.bin'), Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.alloc(60)]));
  writeFileSync(join(dir, 'old.pt'), Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]));
  for (const f of ['zip.bin', 'old.pt']) await assert.rejects(loadPretrained(join(dir, f)), (e) => userError(e, /is a PyTorch pickle checkpoint/));
  // A directory whose only .bin is a llama2.c tokenizer has no weights; its tokenizer is no pickle.
  const noWeights = join(dir, 'noweights');
  await hfDir(noWeights);
  for (const f of readdirSync(noWeights)) if (f.endsWith('.safetensors')) rmSync(join(noWeights, f));
  await assert.rejects(loadPretrained(noWeights), (e) => userError(e, /noweights: no \.safetensors weights found/));
  rmSync(dir, { recursive: true, force: true });
});

test('weights holding NaN or Inf are refused at load, in every format, naming the tensor', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-loaderr-'));
  // llama2.c: the first float after the 7-int header is embed_tokens[0, 0].
  const l2c = join(dir, 'nan.bin');
  copyFileSync(STORIES, l2c);
  const bytes = readFileSync(l2c);
  bytes.writeFloatLE(NaN, 28);
  writeFileSync(l2c, bytes);
  await assert.rejects(loadPretrained(l2c), (e) => userError(e, /nan\.bin: weight 'model\.embed_tokens\.weight' holds NaN or Inf; the checkpoint is damaged/));
  // Hugging Face safetensors.
  const hf = await hfDir(join(dir, 'inf'));
  const w = torch.io.loadSharded(hf);
  torch.noGrad(() => w.get('model.layers.2.mlp.up_proj.weight')!.fill_(Infinity));
  torch.io.saveSafetensors(join(hf, 'model.safetensors'), w);
  torch.dispose(w.values());
  await assert.rejects(loadPretrained(hf), (e) => userError(e, /inf: weight 'model\.layers\.2\.mlp\.up_proj\.weight' holds NaN or Inf; the checkpoint is damaged/));
  cliFails(['generate', hf, '-p', 'Once'], /^retain: .*inf: weight 'model\.layers\.2\.mlp\.up_proj\.weight' holds NaN or Inf/);
  // Finite float32 values beyond float16's range become Inf in the cast; that is the dtype's fault, not the file's.
  const big = await hfDir(join(dir, 'big'));
  const b = torch.io.loadSharded(big);
  torch.noGrad(() => b.get('model.norm.weight')!.fill_(1e6));
  torch.io.saveSafetensors(join(big, 'model.safetensors'), b);
  torch.dispose(b.values());
  (await loadPretrained(big)).model.dispose();
  await assert.rejects(loadPretrained(big, { dtype: 'float16' }), (e) => userError(e, /big: weight 'model\.norm\.weight' holds NaN or Inf; its values overflow float16 .*bfloat16 or float32/));
  (await loadPretrained(big, { dtype: 'bfloat16' })).model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

test('ml5 folder with a NaN weight is refused', { skip: needShared('models', 'mnist-mlp', 'manifest.json') }, async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'retain-loaderr-')), 'mnist');
  cpSync(sharedPath('models', 'mnist-mlp'), dir, { recursive: true });
  const f = join(dir, 'hidden2_biases');
  chmodSync(f, 0o644);
  const bytes = readFileSync(f);
  bytes.writeFloatLE(NaN, 4);
  writeFileSync(f, bytes);
  await assert.rejects(loadPretrained(dir), (e) => userError(e, /mnist: weight 'hidden2\.biases' holds NaN or Inf/));
  rmSync(join(dir, '..'), { recursive: true, force: true });
});

test('config.json values no model can be built from name the file, the key, the value and what is allowed', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-loaderr-'));
  const ok = await hfDir(join(root, 'ok'));
  const base = JSON.parse(readFileSync(join(ok, 'config.json'), 'utf8'));
  const llama: [string, Record<string, unknown>, RegExp][] = [
    ['eps', { rms_norm_eps: -1 }, /rms_norm_eps must be a number > 0 \(Llama uses 1e-5 or 1e-6\), got -1/],
    ['eps0', { rms_norm_eps: 0 }, /rms_norm_eps must be a number > 0.*got 0/],
    ['hidden', { hidden_size: '64' }, /hidden_size must be a positive integer, got "64"/],
    ['layers', { num_hidden_layers: undefined }, /num_hidden_layers is missing; it must be a positive integer/],
    ['vocab', { vocab_size: 0 }, /vocab_size must be a positive integer, got 0/],
    ['kv', { num_key_value_heads: 3 }, /num_attention_heads \(8\) must be a multiple of num_key_value_heads \(3\)/],
    ['kv0', { num_key_value_heads: 0 }, /num_key_value_heads must be a positive integer, got 0/],
    ['heads', { hidden_size: 60 }, /hidden_size \(60\) must divide by num_attention_heads \(8\)/],
    ['theta', { rope_theta: -10000 }, /rope_theta must be a number > 0.*got -10000/],
    ['tie', { tie_word_embeddings: 'false' }, /tie_word_embeddings must be true or false, got "false"/],
    ['scaling', { rope_scaling: { rope_type: 'linear', factor: 0 } }, /rope_scaling\.factor must be a number > 0, got 0/],
  ];
  for (const [name, change, re] of llama) {
    const dir = join(root, name);
    cpSync(ok, dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...base, ...change }));
    await assert.rejects(loadPretrained(dir), (e) => userError(e, new RegExp(`${name}/config\\.json: ${re.source}`)), name);
  }
  cliFails(['inspect', join(root, 'eps')], /^retain: .*eps\/config\.json: rms_norm_eps must be a number > 0/);
  cliFails(['generate', join(root, 'hidden'), '-p', 'Once'], /^retain: .*hidden\/config\.json: hidden_size must be a positive integer, got "64"/);
  const notObject = join(root, 'array');
  cpSync(ok, notObject, { recursive: true });
  writeFileSync(join(notObject, 'config.json'), '[1, 2]');
  await assert.rejects(loadPretrained(notObject), (e) => userError(e, /array\/config\.json: must hold a JSON object/));
  // The other architectures: validation runs before the weights are read, so any safetensors file will do.
  const others: [string, Record<string, unknown>, RegExp][] = [
    ['gpt2eps', { model_type: 'gpt2', vocab_size: 50, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, layer_norm_epsilon: 0 }, /layer_norm_epsilon must be a number > 0.*got 0/],
    ['gpt2drop', { model_type: 'gpt2', vocab_size: 50, n_positions: 32, n_embd: 32, n_layer: 2, n_head: 4, attn_pdrop: 1.5 }, /attn_pdrop must be a number in \[0, 1\), got 1\.5/],
    ['gpt2heads', { model_type: 'gpt2', vocab_size: 50, n_positions: 32, n_embd: 32, n_layer: '2', n_head: 4 }, /n_layer must be a positive integer, got "2"/],
    ['t5pad', { model_type: 't5', vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 24, num_layers: 2, num_heads: 4, pad_token_id: 40 }, /pad_token_id must be a token id in 0\.\.39/],
    ['t5eps', { model_type: 't5', vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 24, num_layers: 2, num_heads: 4, layer_norm_epsilon: -1e-6 }, /layer_norm_epsilon must be a number > 0/],
    ['lstm', { model_type: 'charlstm', vocab_size: 10, embedding_size: 4, hidden_size: 8.5, num_layers: 1 }, /hidden_size must be a positive integer, got 8\.5/],
    ['mlp', { model_type: 'mnist_mlp' }, /sizes must be four positive integers/],
  ];
  for (const [name, config, re] of others) {
    const dir = join(root, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    torch.io.saveSafetensors(join(dir, 'model.safetensors'), new Map([['x', torch.zeros([1])]]));
    await assert.rejects(loadPretrained(dir), (e) => userError(e, new RegExp(`${name}/config\\.json: ${re.source}`)), name);
  }
  rmSync(root, { recursive: true, force: true });
});

test('a LoRA adapter folder whose base is not on this machine names the base, where it looked, and merged/', async () => {
  const root = mkdtempSync(join(tmpdir(), 'retain-loaderr-'));
  // The layout a LoRA run writes to output_dir/final (models/lora/peft.ts).
  const final = join(root, 'final');
  mkdirSync(final);
  writeFileSync(join(final, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj'], base_model_name_or_path: '/models/stories260K.bin' }));
  torch.io.saveSafetensors(join(final, 'adapter_model.safetensors'), new Map([['base_model.model.x.lora_A.weight', torch.zeros([4, 8])]]));
  await assert.rejects(loadPretrained(final), (e) =>
    userError(e, /final is a LoRA adapter for base model \/models\/stories260K\.bin, which is not on this machine \(looked at \/models\/stories260K\.bin\); retain does not download models: put the base model there or set base_model_name_or_path in .*final\/adapter_config\.json to its directory$/));
  cliFails(['inspect', final], /^retain: .*final is a LoRA adapter for base model \/models\/stories260K\.bin, which is not on this machine/);
  // A hub name is looked for beside the adapter, in the working directory and in the Hugging Face cache.
  writeFileSync(join(final, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, base_model_name_or_path: 'org/no-such-model' }));
  await assert.rejects(loadPretrained(final), (e) => userError(e, /for base model org\/no-such-model, which is not on this machine \(looked at .*final\/org\/no-such-model, .*\/org\/no-such-model, the Hugging Face cache \(.*\/models--org--no-such-model\)\)/));
  writeFileSync(join(final, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 4, lora_alpha: 8, base_model_name_or_path: null }));
  await assert.rejects(loadPretrained(final), (e) => userError(e, /final is a LoRA adapter, and .*final\/adapter_config\.json names no base model \(base_model_name_or_path\); set it to the base model's directory$/));
  await hfDir(join(final, 'merged'));
  await assert.rejects(loadPretrained(final), (e) => userError(e, /names no base model .*, or load its merged model instead: .*final\/merged$/));
  rmSync(root, { recursive: true, force: true });
});

test('float16 on CPU is refused up front with the fix; float16 for CUDA and bfloat16 on CPU pass', async () => {
  assert.throws(() => checkDtypeDevice('float16', 'cpu'), (e) => userError(e, /model\.dtype float16 with model\.device cpu: float16 matrix multiplies are not implemented on CPU .*use dtype bfloat16 or float32 on CPU, or keep float16 with device cuda/));
  checkDtypeDevice('float16', 'cuda');
  checkDtypeDevice('float16', 'cuda:1');
  checkDtypeDevice('bfloat16', 'cpu');
  checkDtypeDevice(undefined, 'cpu');
  await assert.rejects(loadPretrained(STORIES, { dtype: 'float16', device: 'cpu' }), (e) => userError(e, /float16 matrix multiplies are not implemented on CPU/));
  // Without a device the model may yet move to CUDA, where float16 runs.
  const p = await loadPretrained(STORIES, { dtype: 'float16' });
  assert.equal(p.model.parameters()[0].dtype, 'float16');
  p.model.dispose();
});
