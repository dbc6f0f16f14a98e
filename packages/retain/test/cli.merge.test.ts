// `retain merge <adapter> --out dir` against PEFT's merge_and_unload() (reference environment): a LoRA adapter PEFT
// saved over a transformers Llama is merged by retain, and every tensor of the written model equals PEFT's merged
// state dict; transformers loads the folder. Also the folders merge refuses, and a description for every command in
// `retain --help`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needRefenv, refPy } from '../../../bench/refenv.js';

const tmp = mkdtempSync(join(tmpdir(), 'retain-merge-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const CLI = new URL('../bin/retain.mjs', import.meta.url).pathname;
const retain = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: tmp, timeout: 120_000 });

test('retain merge refuses what is not an adapter, and an --out it would wipe', () => {
  const notAdapter = join(tmp, 'plain');
  mkdirSync(notAdapter);
  let r = retain('merge', notAdapter, '--out', join(tmp, 'm'));
  assert.equal(r.status, 1);
  assert.equal(r.stderr, `retain: ${notAdapter}: not a LoRA adapter folder (no adapter_config.json); retain merge takes PEFT's save_pretrained folder or a retain LoRA run's final/\n`);
  const adapter = join(tmp, 'adapter');
  mkdirSync(adapter);
  writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', base_model_name_or_path: '../plain', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }));
  const busy = join(tmp, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'notes.txt'), 'mine');
  for (const [out, why] of [[adapter, "is the adapter's own folder"], [busy, 'holds files and no config.json'], [notAdapter + '/', '']] as const) {
    r = retain('merge', adapter, '--out', out);
    assert.equal(r.status, 1, out);
    if (why) assert.match(r.stderr, new RegExp(`--out ${out} ${why.replace(/[()]/g, '\\$&')}`));
  }
  writeFileSync(join(notAdapter, 'config.json'), '{}');
  r = retain('merge', adapter, '--out', notAdapter);
  assert.match(r.stderr, /is the base model's folder; the merged model would replace the base, so give another one/);
  // A hub id's base found in the Hugging Face cache is protected too: its snapshot folder is the base's folder.
  const cache = join(tmp, 'cache');
  const snap = join(cache, 'models--org--cached', 'snapshots', 'e'.repeat(40));
  mkdirSync(snap, { recursive: true });
  mkdirSync(join(cache, 'models--org--cached', 'refs'));
  writeFileSync(join(cache, 'models--org--cached', 'refs', 'main'), 'e'.repeat(40));
  writeFileSync(join(snap, 'config.json'), '{}');
  writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', base_model_name_or_path: 'org/cached', r: 2, lora_alpha: 4, target_modules: ['q_proj'] }));
  r = spawnSync(process.execPath, [CLI, 'merge', adapter, '--out', snap], { encoding: 'utf8', cwd: tmp, timeout: 120_000, env: { ...process.env, HF_HUB_CACHE: cache } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /is the base model's folder; the merged model would replace the base, so give another one/);
});

test('every command has a description in retain --help', () => {
  const r = retain('--help');
  assert.equal(r.status, 0);
  const lines = r.stdout.split('Commands:\n')[1].trimEnd().split('\n').filter((l) => /^ {2}\S/.test(l));
  assert.ok(lines.length >= 12, lines.join('\n'));
  for (const l of lines) assert.match(l, /^ {2}\S.*?\s{2,}\S/, `no description: ${l}`);
  assert.ok(lines.some((l) => l.startsWith('  merge ')) && lines.some((l) => l.startsWith('  generate ')));
});

const refMissing = needRefenv('transformers', 'peft', 'safetensors');

test('parity: retain merge writes the weights of PEFT\'s merge_and_unload(), and transformers loads them', { skip: refMissing, timeout: 300_000 }, (t) => {
  const base = join(tmp, 'base');
  const adapter = join(tmp, 'peft-adapter');
  const out = join(tmp, 'merged');
  refPy(`
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
torch.manual_seed(0)
m = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False))
m.save_pretrained(inp['base'])
# Loaded back so that the adapter names its base (PEFT writes the model's name_or_path).
m = LlamaForCausalLM.from_pretrained(inp['base'])
p = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj', 'down_proj'], init_lora_weights=False))
p.save_pretrained(inp['adapter'])
`, { base, adapter });
  // PEFT writes the base's path as given; retain reads it relative to the adapter or the working directory.
  const r = retain('merge', adapter, '--out', out);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.equal(summary.merged, out);
  const ref = refPy(`
from transformers import AutoModelForCausalLM
from peft import PeftModel
from safetensors.torch import load_file
merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(inp['base']), inp['adapter']).merge_and_unload().state_dict()
ours = load_file(os.path.join(inp['out'], 'model.safetensors'))
out['missing'] = sorted(set(merged) - set(ours))
out['extra'] = sorted(set(ours) - set(merged))
out['max_diff'] = max(float((merged[k] - ours[k]).abs().max()) for k in ours if k in merged)
out['moved'] = float((merged['model.layers.0.self_attn.q_proj.weight'] - AutoModelForCausalLM.from_pretrained(inp['base']).state_dict()['model.layers.0.self_attn.q_proj.weight']).abs().max())
out['loads'] = type(AutoModelForCausalLM.from_pretrained(inp['out'])).__name__
`, { base, adapter, out });
  t.diagnostic(`merged tensors: max |Δ| ${ref.max_diff} against PEFT; the adapter moves q_proj by up to ${ref.moved}`);
  assert.deepEqual(ref.missing, []);
  assert.deepEqual(ref.extra, []);
  assert.ok(ref.moved > 1e-3, `the adapter changes the weights (${ref.moved})`);
  assert.ok(ref.max_diff < 1e-6, `max |Δ| ${ref.max_diff}`);
  assert.equal(ref.loads, 'LlamaForCausalLM');
  // The base moved away from where the adapter says: refused naming it, then found through --base, to the same weights.
  const moved = join(tmp, 'moved-base');
  renameSync(base, moved);
  let m = retain('merge', adapter, '--out', join(tmp, 'merged2'));
  assert.equal(m.status, 1);
  assert.match(m.stderr, /is a LoRA adapter for base model .*base, which is not on this machine/);
  m = retain('merge', adapter, '--base', moved, '--out', join(tmp, 'merged2'));
  assert.equal(m.status, 0, m.stderr);
  assert.ok(readFileSync(join(tmp, 'merged2', 'model.safetensors')).equals(readFileSync(join(out, 'model.safetensors'))), 'the same merged weights');
  m = retain('generate', adapter, '--base', moved, '-p', 'a', '-n', '2', '--tokenizer', moved);
  assert.doesNotMatch(m.stderr, /not on this machine/);
  m = retain('merge', adapter, '--base', join(tmp, 'nowhere'), '--out', join(tmp, 'merged3'));
  assert.match(m.stderr, /--base .*nowhere: no such model folder \(the base model of the LoRA adapter/);
});
