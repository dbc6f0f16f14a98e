// generation_config.json in `retain generate` (genconfig.ts) and org/name resolved from the Hugging Face cache
// (hfcache.ts): the settings' precedence, the cache layout huggingface_hub writes (refs/main → snapshots/<commit>/ →
// blobs), and against the reference environment: huggingface_hub finds the same snapshot offline, and transformers'
// generate() on the cached model, with the file's eos_token_id list and max_new_tokens, gives the text retain prints.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { generationSettings, readGenerationConfig } from '../src/models/genconfig.js';
import { hubCacheDir, isHubId, resolveHubModel } from '../src/models/hfcache.js';
import { loadPretrained, savePretrained } from '../src/models/hub.js';
import { generate, type CausalLM } from '../src/models/generate.js';
import { needRefenv, refPy } from '../../../bench/refenv.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-genconfig-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const STORIES = new URL('../assets/stories260K/stories260K.bin', import.meta.url).pathname;
const PROMPT = 'Once upon a time';

test('generation settings: flags first, then generation_config.json, then greedy 64 tokens; a sampling file gets transformers\' defaults', () => {
  assert.deepEqual(generationSettings({}, null), { maxNewTokens: 64, temperature: 0, topP: 1, topK: 0, stopTokens: [] });
  const llama3 = { eosTokenIds: [128001, 128009], doSample: true, temperature: 0.6, topP: 0.9 };
  assert.deepEqual(generationSettings({}, llama3), { maxNewTokens: 64, temperature: 0.6, topP: 0.9, topK: 50, stopTokens: [128001, 128009] });
  assert.deepEqual(generationSettings({ temperature: 0, topK: 5, maxNewTokens: 3 }, llama3), { maxNewTokens: 3, temperature: 0, topP: 0.9, topK: 5, stopTokens: [128001, 128009] });
  // do_sample false decodes greedily whatever the file's temperature, as generate() does.
  assert.equal(generationSettings({}, { eosTokenIds: [2], doSample: false, temperature: 0.7, maxNewTokens: 9 }).temperature, 0);
  assert.equal(generationSettings({}, { eosTokenIds: [2], doSample: false, temperature: 0.7, maxNewTokens: 9 }).maxNewTokens, 9);
});

test('generation_config.json: eos_token_id as one id or a list; bad values named with the file', () => {
  const dir = join(tmp, 'g');
  mkdirSync(dir);
  assert.equal(readGenerationConfig(dir), null);
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 2, max_new_tokens: 7, do_sample: true, top_k: 20 }));
  assert.deepEqual(readGenerationConfig(dir), { eosTokenIds: [2], doSample: true, temperature: undefined, topP: undefined, topK: 20, maxNewTokens: 7 });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: ['</s>'] }));
  assert.throws(() => readGenerationConfig(dir), new RegExp(`^Error: ${join(dir, 'generation_config.json')}: eos_token_id must be a token id or a list of them, got \\["</s>"\\]$`));
  writeFileSync(join(dir, 'generation_config.json'), '{"eos_token_id": 2,');
  assert.throws(() => readGenerationConfig(dir), /generation_config\.json: not valid JSON \(.*\); fix it or remove it/);
});

/** Files laid out as huggingface_hub's cache holds them: blobs by hash, snapshot entries linking to them. */
function cacheModel(cache: string, id: string, files: string, commit: string): string {
  const repo = join(cache, `models--${id.replace('/', '--')}`);
  const snap = join(repo, 'snapshots', commit);
  mkdirSync(join(repo, 'blobs'), { recursive: true });
  mkdirSync(join(repo, 'refs'), { recursive: true });
  mkdirSync(snap, { recursive: true });
  for (const f of readdirSync(files)) {
    const blob = join(repo, 'blobs', createHash('sha256').update(readFileSync(join(files, f))).digest('hex'));
    renameSync(join(files, f), blob);
    symlinkSync(relative(snap, blob), join(snap, f));
  }
  writeFileSync(join(repo, 'refs', 'main'), commit);
  return snap;
}

test('org/name resolves from the cache huggingface_hub\'s settings choose; a missing one lists where it looked', () => {
  assert.ok(isHubId('org/name') && isHubId('gpt2') && !isHubId('./org/name') && !isHubId('/abs/x') && !isHubId('a/b/c') && !isHubId('../x'));
  assert.deepEqual(hubCacheDir({ HF_HOME: '/h', HOME: '/home/u' }), { dir: '/h/hub', from: '$HF_HOME/hub' });
  assert.deepEqual(hubCacheDir({ HF_HUB_CACHE: '/c', HF_HOME: '/h' }), { dir: '/c', from: '$HF_HUB_CACHE' });
  const cache = join(tmp, 'c1');
  const files = join(tmp, 'f1');
  mkdirSync(files);
  writeFileSync(join(files, 'config.json'), '{}');
  const snap = cacheModel(cache, 'org/m', files, 'a'.repeat(40));
  assert.equal(resolveHubModel('org/m', { HF_HUB_CACHE: cache }), snap);
  assert.equal(resolveHubModel('org/m', { HF_HOME: join(tmp, 'elsewhere'), HF_HUB_CACHE: cache }), snap, '$HF_HUB_CACHE wins over $HF_HOME');
  assert.throws(() => resolveHubModel('org/other', { HF_HUB_CACHE: cache }), (e: Error) => e.message === `model not found: 'org/other' is neither a local path nor in the Hugging Face cache. Looked at:\n  ./org/other (no such local file or folder)\n  ${join(cache, 'models--org--other')} (missing)\n`
    + `The cache is $HF_HUB_CACHE (${cache}); $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub choose it, as in transformers. retain never downloads: fetch the model with \`hf download org/other\` (or huggingface-cli download), or pass a local folder`);
  writeFileSync(join(cache, 'models--org--m', 'refs', 'main'), 'b'.repeat(40));
  assert.throws(() => resolveHubModel('org/m', { HF_HUB_CACHE: cache }), new RegExp(`refs/main \\(names commit ${'b'.repeat(40)}, but .*snapshots/${'b'.repeat(40)} is missing\\)`));
});

const refMissing = needRefenv('transformers', 'huggingface_hub');

test('parity: retain generate org/name equals transformers\' generate on the cached model with its generation_config.json', { skip: refMissing, timeout: 300_000 }, async () => {
  const p = await loadPretrained(STORIES);
  const files = join(tmp, 'f2');
  savePretrained(p, files);
  // Greedy continuation without the file, to pick a second end token the model reaches after a few steps.
  const prompt = p.tokenizer!.encode(PROMPT, { bos: true });
  const free = generate(p.model as unknown as CausalLM, p.tokenizer!, prompt, { maxNewTokens: 20 }).ids;
  const k = free.findIndex((t, i) => i >= 4 && !free.slice(0, i).includes(t));
  assert.ok(k > 0, `no fresh token in ${free.join(', ')}`);
  writeFileSync(join(files, 'generation_config.json'), JSON.stringify({ bos_token_id: 1, eos_token_id: [p.tokenizer!.eosId, free[k]], max_new_tokens: 12, do_sample: false }));
  p.model.dispose();
  const cache = join(tmp, 'home', 'hub');
  const snap = cacheModel(cache, 'retain-test/stories', files, 'c'.repeat(40));
  // Both set (to agree), so that a cache setting of the machine running the test cannot point elsewhere.
  const env = { HF_HOME: join(tmp, 'home'), HF_HUB_CACHE: cache };
  const ref = refPy(`
from huggingface_hub import snapshot_download
from transformers import AutoModelForCausalLM
out['snapshot'] = snapshot_download('retain-test/stories', local_files_only=True)
m = AutoModelForCausalLM.from_pretrained('retain-test/stories')
ids = m.generate(torch.tensor([inp['ids']]), attention_mask=torch.ones(1, len(inp['ids']), dtype=torch.long))[0].tolist()
out['new'] = ids[len(inp['ids']):]
`, { ids: prompt }, { env });
  assert.equal(ref.snapshot, snap);
  // transformers stops at the file's second end token (kept in its output), before max_new_tokens.
  assert.equal(ref.new.length, k + 1);
  assert.equal(ref.new[k], free[k]);
  const r = spawnSync(process.execPath, [CLI, 'generate', 'retain-test/stories', '-p', PROMPT], { encoding: 'utf8', cwd: tmp, env: { ...process.env, ...env } });
  assert.equal(r.status, 0, r.stderr);
  const want = PROMPT + (await loadPretrained(snap)).tokenizer!.decode(ref.new.slice(0, k));
  assert.equal(r.stdout, `${want}\n`);
  // A flag overrides the file: -n 2 stops before the end token.
  const r2 = spawnSync(process.execPath, [CLI, 'generate', 'retain-test/stories', '-p', PROMPT, '-n', '2'], { encoding: 'utf8', cwd: tmp, env: { ...process.env, ...env } });
  assert.equal(r2.stdout, `${PROMPT + (await loadPretrained(snap)).tokenizer!.decode(ref.new.slice(0, 2))}\n`);
});

test('a LoRA adapter whose base_model_name_or_path is a hub id (as PEFT writes it) finds its base in the Hugging Face cache', async () => {
  const { saveAdapter, wrapLinears, loraModules } = await import('../src/methods/lora/index.js');
  const torch = await import('@retain/torch');
  const p = await loadPretrained(STORIES);
  const files = join(tmp, 'f3');
  savePretrained(p, files);
  const snap = cacheModel(join(tmp, 'adapter-cache'), 'org/tiny-base', files, 'd'.repeat(40));
  torch.manualSeed(4);
  wrapLinears(p.model, ['q_proj', 'v_proj'], { r: 2, alpha: 4 });
  for (const [, l] of loraModules(p.model)) torch.noGrad(() => l.lora_B.weight.normal_(0, 0.5));
  const byId = join(tmp, 'adapter-id');
  const byPath = join(tmp, 'adapter-path');
  saveAdapter(p.model, byId, { baseModel: 'org/tiny-base' });
  saveAdapter(p.model, byPath, { baseModel: snap });
  p.model.dispose();
  const was = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = join(tmp, 'adapter-cache');
  try {
    const ids = torch.tensor([[1, 300, 42, 7, 99]], { dtype: 'int64' });
    const logits = async (dir: string) => {
      const m = await loadPretrained(dir);
      try {
        return torch.noGrad(() => (m.model as unknown as CausalLM).forward(ids)).toArray();
      } finally {
        m.model.dispose();
      }
    };
    assert.deepEqual(await logits(byId), await logits(byPath));
    // One the cache lacks is named with the cache's folder among the places looked at.
    writeFileSync(join(byId, 'adapter_config.json'), readFileSync(join(byId, 'adapter_config.json'), 'utf8').replace('org/tiny-base', 'org/absent'));
    await assert.rejects(loadPretrained(byId), (e: Error) => e.message.includes(`the Hugging Face cache (${join(tmp, 'adapter-cache', 'models--org--absent')})`));
  } finally {
    if (was === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = was;
  }
});
