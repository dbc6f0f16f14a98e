// Loading and saving models in the formats users bring: Hugging Face directories (config.json + single or sharded
// safetensors + tokenizer), llama2.c checkpoints (.bin + tokenizer .bin), ml5 folders (manifest.json + raw float32
// files: the char-LSTM when vocab.json is beside them, else the MNIST MLP). Pickle checkpoints are refused: they can
// run arbitrary code when loaded and need Python to read. The ml5 models save as HF-style directories (model_type
// 'charlstm' / 'mnist_mlp', safetensors under the ml5 variable names with '/' → '.', vocab.json copied), so a
// fine-tuned one reloads through the same path.
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from './llama.js';
import { Phi3ForCausalLM } from './phi3.js';
import { Gemma2ForCausalLM, type Gemma2Config } from './gemma2.js';
import { Gemma3ForCausalLM, type Gemma3TextConfig } from './gemma3.js';
import { GPT2LMHeadModel, gpt2CheckpointKeys, type GPT2Config } from './gpt2.js';
import { T5ForConditionalGeneration, untiedT5Config, type T5Config } from './t5.js';
import { BertModel, bertCheckpointKeys, type BertConfig } from './bert.js';
import { EfficientNetLite, type EfficientNetLiteConfig } from './efficientnet.js';
import { BertSentenceClassifier, type SentenceClassifierConfig } from './sentence.js';
import { readLlama2c } from './llama2c.js';
import { CharLSTM, type CharLSTMConfig } from './charlstm.js';
import { MnistMLP } from './mlp.js';
import { assertFiniteWeights, firstNonFinite, loadWeights, ModelConfigError, refusePickle } from './weights.js';
import { claimedParameters } from './size.js';
import { readUserFile } from '../files.js';
import { hubCacheDir, isHubId, resolveHubModel } from './hfcache.js';
import { Llama2cTokenizer } from '../tokenizers/llama2c.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { loadHfTokenizer } from '../tokenizers/hf.js';
import { CharTokenizer } from '../tokenizers/char.js';
import { loadAdapter, readAdapterConfig } from './lora/peft.js';
import { mergeAndUnload } from './lora/wrap.js';

/** A loaded model with what is needed to save it back. */
export interface Pretrained {
  model: torch.nn.Module & { config: Record<string, unknown>; tiedKeys?(): [string, string][] };
  config: Record<string, unknown>;
  tokenizer: Tokenizer | null;
  /** Where it came from and in which format. */
  source: { path: string; format: 'hf' | 'llama2c' | 'ml5' };
  /** Tokenizer files to copy when saving (HF). */
  tokenizerFiles: string[];
  /** config.json keys whose values were written as floats (see floatKeys). */
  floatKeys?: string[];
}

type Builder = (config: Record<string, unknown>) => Pretrained['model'];

/** model_type → constructor. Architectures register here (one line each). */
export const ARCHITECTURES = new Map<string, Builder>([
  ['llama', (c) => new LlamaForCausalLM(c as LlamaConfig)],
  ['qwen2', (c) => new LlamaForCausalLM(c as LlamaConfig)],
  ['mistral', (c) => new LlamaForCausalLM(c as LlamaConfig)],
  ['phi3', (c) => new Phi3ForCausalLM(c as LlamaConfig)],
  ['gemma2', (c) => new Gemma2ForCausalLM(c as Gemma2Config)],
  ['gemma3_text', (c) => new Gemma3ForCausalLM(c as Gemma3TextConfig)],
  ['gpt2', (c) => new GPT2LMHeadModel(c as GPT2Config)],
  ['t5', (c) => new T5ForConditionalGeneration(c as T5Config)],
  ['bert', (c) => new BertModel(c as BertConfig)],
  ['efficientnet_lite', (c) => new EfficientNetLite(c as EfficientNetLiteConfig)],
  ['bert_sentence_classifier', (c) => new BertSentenceClassifier(c as SentenceClassifierConfig)],
  // Their typed configs lack an index signature; the loop only reads `config` back for saving.
  ['charlstm', (c) => new CharLSTM(c as unknown as CharLSTMConfig) as unknown as Pretrained['model']],
  ['mnist_mlp', (c) => new MnistMLP({ sizes: c.sizes as number[] }) as unknown as Pretrained['model']],
]);

/** Checkpoint key fix-ups by model_type (the original GPT-2 files store keys without the `transformer.` prefix). */
const CHECKPOINT_KEYS = new Map<string, (w: Map<string, torch.Tensor>) => Map<string, torch.Tensor>>([['gpt2', gpt2CheckpointKeys], ['bert', bertCheckpointKeys]]);

/**
 * The config of an untied head, by model_type where more than tie_word_embeddings depends on it (T5's output scale
 * follows it when scale_decoder_outputs is absent).
 */
const UNTIED_CONFIG = new Map<string, (c: Record<string, unknown>) => Record<string, unknown>>([['t5', (c) => untiedT5Config(c as T5Config)]]);

/**
 * Whether the checkpoint holds a head the model ties with values of its own: Flan-T5 saved again by transformers 5
 * says tie_word_embeddings true and still stores its lm_head.
 */
function storesOwnHead(model: Pretrained['model'], weights: Map<string, torch.Tensor>): boolean {
  return (model.tiedKeys?.() ?? []).some(([alias, source]) => {
    const head = weights.get(alias);
    const emb = weights.get(source);
    return alias === 'lm_head.weight' && head !== undefined && emb !== undefined && !head.equal(emb);
  });
}

export function registerArchitecture(modelType: string, build: Builder): void {
  ARCHITECTURES.set(modelType, build);
}

const PICKLE = /\.(bin|pt|pth|ckpt|pkl)$/i;

const SUPPORTED =
  'retain loads a Hugging Face model directory (config.json + *.safetensors), a llama2.c .bin checkpoint, or an ml5 folder (manifest.json + weight files)';

/**
 * torch.save writes a zip archive (since PyTorch 1.6) or, before that, a bare pickle, whose protocol 2+ opcode
 * stream starts with 0x80. A file with neither start is something else, whatever its extension says.
 */
function isPickle(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const n = readSync(fd, b, 0, 4, 0);
    return (n >= 2 && b[0] === 0x80 && b[1] >= 2 && b[1] <= 5) || (n === 4 && b.equals(Buffer.from('PK\x03\x04', 'latin1')));
  } finally {
    closeSync(fd);
  }
}

export function isLlama2cCheckpoint(path: string): boolean {
  if (!existsSync(path) || statSync(path).isDirectory() || !path.endsWith('.bin')) return false;
  // A llama2.c legacy file starts with seven small positive int32 (dim, hidden, layers, heads, kv heads, vocab, seq).
  // Only the header is read: the whole file may be gigabytes.
  const fd = openSync(path, 'r');
  const b = Buffer.alloc(28);
  let got: number;
  try {
    got = readSync(fd, b, 0, 28, 0);
  } finally {
    closeSync(fd);
  }
  if (got < 28) return false;
  const v = Array.from({ length: 7 }, (_, i) => b.readInt32LE(i * 4));
  // The ranges are readLlama2c's, so that a header claiming more than the file holds is read, and said to, rather
  // than called an unrecognised file.
  return v.every((x, i) => (i === 5 ? x !== 0 && Math.abs(x) < 1 << 24 : x > 0 && x < 1 << 24));
}

function findLlama2cTokenizer(path: string): string | null {
  const dir = dirname(path);
  const cands = readdirSync(dir).filter((f) => /^tok.*\.bin$/.test(f) || f === 'tokenizer.bin');
  return cands.length ? join(dir, cands[0]) : null;
}

/**
 * libtorch has no float16 matrix multiply on CPU, so a float16 model there loads fine and fails at its first forward
 * with `"addmm_impl_cpu_" not implemented for 'Half'`. The cast happens on CPU before the model moves to its device,
 * so only a caller that knows the device can tell; this says so before any weights are read.
 */
export function checkDtypeDevice(dtype: string | undefined, device: string | undefined): void {
  if (dtype !== 'float16' || (device ?? 'cpu') !== 'cpu') return;
  throw new Error(
    'model.dtype float16 with model.device cpu: float16 matrix multiplies are not implemented on CPU ' +
      "(libtorch fails with \"addmm_impl_cpu_\" not implemented for 'Half'); use dtype bfloat16 or float32 on CPU, or keep float16 with device cuda",
  );
}

/**
 * `device`, when given, is where the caller will run the model (it stays on CPU here); it only serves to refuse a
 * dtype that cannot run there.
 */
export async function loadPretrained(path: string, opts: { dtype?: torch.DType; tokenizer?: string; device?: string; adapterBase?: string } = {}): Promise<Pretrained> {
  if (opts.device !== undefined) checkDtypeDevice(opts.dtype, opts.device);
  if (!existsSync(path)) {
    if (!isHubId(path)) throw new Error(`model not found: ${path}`);
    // An id such as org/name that is no local path: the Hugging Face cache's copy, as transformers finds it offline.
    path = resolveHubModel(path);
  }
  if (!statSync(path).isDirectory()) {
    if (isLlama2cCheckpoint(path)) {
      const { config, weights } = readLlama2c(path);
      const model = new LlamaForCausalLM(config);
      try {
        loadWeights(model, weights, { source: path });
      } finally {
        torch.dispose(weights.values());
      }
      checkLoaded(model, path, opts.dtype);
      const tokPath = opts.tokenizer ?? findLlama2cTokenizer(path);
      const tokenizer = tokPath ? fitsModel(await loadTokenizer(tokPath), tokPath, config.vocab_size) : null;
      return { model, config, tokenizer, source: { path, format: 'llama2c' }, tokenizerFiles: tokPath ? [tokPath] : [] };
    }
    if (isPickle(path)) refusePickle(path);
    if (path.endsWith('.safetensors')) {
      throw new Error(`${path}: a safetensors file holds only the weights; pass the directory that holds it with its config.json (${SUPPORTED})`);
    }
    const size = statSync(path).size;
    throw new Error(
      `${path}: unrecognised file (${size} bytes${size === 0 ? ', empty' : ''}): neither a llama2.c checkpoint nor a PyTorch pickle. ${SUPPORTED}`,
    );
  }
  if (existsSync(join(path, 'manifest.json')) && !existsSync(join(path, 'config.json'))) return loadMl5(path, opts.dtype);
  const cfgPath = join(path, 'config.json');
  if (!existsSync(cfgPath)) {
    if (existsSync(join(path, 'adapter_config.json'))) return loadAdapterModel(path, opts);
    throw new Error(`${path}: no config.json; a Hugging Face model directory needs one`);
  }
  let config: Record<string, unknown>;
  const configText = readUserFile(cfgPath).toString('utf8');
  try {
    config = JSON.parse(configText);
  } catch (e) {
    throw new Error(`${cfgPath}: not valid JSON (${(e as Error).message})`);
  }
  if (!config || typeof config !== 'object' || Array.isArray(config)) {
    throw new Error(`${cfgPath}: must hold a JSON object of model settings ({"model_type": ..., ...}), got ${JSON.stringify(config)?.slice(0, 80)}`);
  }
  const type = String(config.model_type ?? '');
  const build = ARCHITECTURES.get(type);
  if (!build) throw new Error(`${cfgPath}: model_type '${type}' is not supported; supported: ${[...ARCHITECTURES.keys()].join(', ')}`);
  const files = readdirSync(path);
  if (!files.some((f) => f.endsWith('.safetensors'))) {
    const pickles = files.filter((f) => PICKLE.test(f) && statSync(join(path, f)).isFile() && isPickle(join(path, f)));
    if (pickles.length) refusePickle(join(path, pickles[0]));
    throw new Error(`${path}: no .safetensors weights found`);
  }
  let model: Pretrained['model'];
  try {
    checkClaimedSize(config, path);
    model = build(config);
  } catch (e) {
    if (e instanceof ModelConfigError) throw new ModelConfigError(`${cfgPath}: ${e.message}`);
    throw e;
  }
  const weights = torch.io.loadSharded(path);
  try {
    const keyed = CHECKPOINT_KEYS.get(type)?.(weights) ?? weights;
    if (storesOwnHead(model, keyed)) {
      // transformers keeps such a head apart (with a warning), whatever tie_word_embeddings says; so does retain.
      model.dispose();
      config = (UNTIED_CONFIG.get(type) ?? ((c) => ({ ...c, tie_word_embeddings: false })))(config);
      model = build(config);
    }
    loadWeights(model, keyed, { source: path, config: cfgPath });
  } finally {
    torch.dispose(weights.values());
  }
  checkLoaded(model, path, opts.dtype);
  const tokenizerFiles = ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'special_tokens_map.json', 'generation_config.json'].map((f) => join(path, f)).filter(existsSync);
  // A llama2.c tokenizer saved beside HF weights (a converted stories model) is found too.
  const l2c = files.find((f) => /^tok.*\.bin$/.test(f) || f === 'tokenizer.bin');
  if (l2c) tokenizerFiles.push(join(path, l2c));
  // A character vocabulary (a saved char-LSTM) goes with its weights as the tokenizer files do.
  const charVocab = type === 'charlstm' && existsSync(join(path, 'vocab.json')) ? join(path, 'vocab.json') : null;
  if (charVocab) tokenizerFiles.push(charVocab);
  const tokenizer = opts.tokenizer
    ? await loadTokenizer(opts.tokenizer)
    : existsSync(join(path, 'tokenizer.json')) ? await loadHfTokenizer(path) : l2c ? fitsModel(Llama2cTokenizer.fromFile(join(path, l2c)), join(path, l2c), Number(config.vocab_size)) : charVocab ? CharTokenizer.fromFile(charVocab) : null;
  return { model, config, tokenizer, source: { path, format: 'hf' }, tokenizerFiles, floatKeys: floatKeys(configText) };
}

/**
 * A llama2.c tokenizer file has no count of its own: it is read until the file ends, so one cut at an entry boundary
 * reads as a smaller, valid vocabulary (7 tokens). The model's vocabulary size tells what it must hold.
 */
function fitsModel(tok: Tokenizer, path: string, vocabSize: number): Tokenizer {
  if (tok instanceof Llama2cTokenizer && tok.vocabSize !== vocabSize) {
    throw new Error(`${path} holds ${tok.vocabSize} tokens, but the model's vocabulary has ${vocabSize}: the file is truncated or belongs to another model; use the tokenizer the model was trained with`);
  }
  return tok;
}

/**
 * Refuses a config.json that describes more parameters than the weights hold, before the model is built: building
 * first would allocate (and initialise) whatever the config claims — 8 GB for num_hidden_layers 1000000 over a 1 MB
 * checkpoint — before the shape check could say that it does not fit. Reads only the safetensors headers.
 */
function checkClaimedSize(config: Record<string, unknown>, dir: string): void {
  const claimed = claimedParameters(config);
  if (!Number.isFinite(claimed)) return;
  const infos = [...torch.io.readShardedHeaders(dir).values()];
  const held = infos.reduce((a, info) => a + info.shape.reduce((x, y) => x * y, 1), 0);
  if (claimed <= held) return;
  const en = (x: number) => x.toLocaleString('en-US');
  // The first tensors' shapes show the sizes the weights were made with (an embedding gives vocab × hidden).
  const some = infos.slice(0, 3).map((i) => `${i.name} [${i.shape.join(', ')}]`).join(', ');
  throw new ModelConfigError(
    `describes a model of ${en(claimed)} parameters or more, but the weights in ${dir} hold ${en(held)} values in ${infos.length} tensors (${some}${infos.length > 3 ? ', …' : ''}): ` +
      'check that config.json belongs to these weights (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size and the like)',
  );
}

function loadMl5(path: string, dtype?: torch.DType): Pretrained {
  const vocabPath = join(path, 'vocab.json');
  let p: Pretrained;
  if (existsSync(vocabPath)) {
    const { model, vocab } = CharLSTM.fromMl5(path);
    const config = { model_type: 'charlstm', ...model.config };
    p = { model: model as unknown as Pretrained['model'], config, tokenizer: new CharTokenizer(vocab), source: { path, format: 'ml5' }, tokenizerFiles: [vocabPath] };
  } else {
    const model = MnistMLP.fromMl5(path);
    const config = { model_type: 'mnist_mlp', ...model.config };
    p = { model: model as unknown as Pretrained['model'], config, tokenizer: null, source: { path, format: 'ml5' }, tokenizerFiles: [] };
  }
  try {
    checkLoaded(p.model, path, dtype);
  } catch (e) {
    p.model.dispose();
    throw e;
  }
  return p;
}

/** Refuses NaN/Inf weights, then casts; a float16 cast can itself overflow (beyond ±65504) and is checked again. */
function checkLoaded(model: Pretrained['model'], path: string, dtype?: torch.DType): void {
  const tied = new Set((model.tiedKeys?.() ?? []).map(([alias]) => alias));
  const params = () => [...model.stateDict({ keepVars: true })].filter(([k]) => !tied.has(k));
  assertFiniteWeights(params(), path);
  if (!dtype) return;
  model.to(dtype);
  if (dtype === 'float16') assertFiniteWeights(params(), path, 'its values overflow float16 (beyond ±65504); load it as bfloat16 or float32');
}

/**
 * A LoRA adapter directory (adapter_config.json + adapter_model.safetensors: what PEFT's save_pretrained and a retain
 * LoRA run write) loads as its base model with the adapter merged in, so it evaluates, generates and trains like any
 * model. base_model_name_or_path names the base: an absolute path, one relative to the adapter directory or to the
 * working directory, or a hub id in the Hugging Face cache. retain never downloads, so anything else is refused with
 * the fix.
 */
async function loadAdapterModel(path: string, opts: { dtype?: torch.DType; tokenizer?: string; adapterBase?: string }): Promise<Pretrained> {
  // An explicit base (`--base`) wins over the one the adapter names, as PEFT's from_pretrained(base, adapter) does.
  if (opts.adapterBase !== undefined && !existsSync(opts.adapterBase) && !isHubId(opts.adapterBase)) throw new Error(`--base ${opts.adapterBase}: no such model folder (the base model of the LoRA adapter ${path})`);
  const base = opts.adapterBase ?? readAdapterConfig(path).base_model_name_or_path;
  const cfgFile = join(path, 'adapter_config.json');
  const merged = join(path, 'merged');
  const orMerged = existsSync(join(merged, 'config.json')) ? `, or load its merged model instead: ${merged}` : '';
  if (typeof base !== 'string' || base === '') {
    throw new Error(`${path} is a LoRA adapter, and ${cfgFile} names no base model (base_model_name_or_path); set it to the base model's directory${orMerged}`);
  }
  const looked = isAbsolute(base) ? [base] : [...new Set([join(path, base), resolve(base)])];
  let found = looked.find((p) => existsSync(p));
  // PEFT writes the hub id the base was downloaded by; that resolves from the cache as a model argument does.
  if (!found && isHubId(base)) {
    try {
      found = resolveHubModel(base);
    } catch {
      looked.push(`the Hugging Face cache (${join(hubCacheDir().dir, `models--${base.split('/').join('--')}`)})`);
    }
  }
  if (!found) {
    throw new Error(
      `${path} is a LoRA adapter for base model ${base}, which is not on this machine (looked at ${looked.join(', ')}); retain does not download models: ` +
        `put the base model there or set base_model_name_or_path in ${cfgFile} to its directory${orMerged}`,
    );
  }
  if (resolve(found) === resolve(path)) throw new Error(`${cfgFile}: base_model_name_or_path names the adapter directory itself; set it to the base model's directory`);
  const p = await loadPretrained(found, { tokenizer: opts.tokenizer });
  try {
    loadAdapter(p.model, path);
    mergeAndUnload(p.model);
    checkLoaded(p.model, path, opts.dtype);
  } catch (e) {
    p.model.dispose();
    throw e;
  }
  return { ...p, source: { path, format: 'hf' } };
}

/** A directory (searched for tokenizer.json), a tokenizer.json under any name, or a llama2.c tokenizer .bin. */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  if (!existsSync(path)) throw new Error(`tokenizer not found: ${path}`);
  if (statSync(path).isDirectory() || path.endsWith('.json')) return loadHfTokenizer(path);
  return Llama2cTokenizer.fromFile(path);
}

/**
 * The keys (at any depth) whose number in a config.json is written with a point or an exponent. JSON.parse reads
 * 30.0 as 30, and transformers 5's strict configs refuse an integer for a float field (final_logit_softcapping: 30
 * fails to load), so configJson writes these back as floats.
 */
export function floatKeys(configText: string): string[] {
  return [...new Set([...configText.matchAll(/"((?:[^"\\]|\\.)*)"\s*:\s*-?\d+(?:\.\d*[eE]?|[eE])/g)].map((m) => m[1]))];
}

/** config.json text: two-space JSON with whole numbers under `floats` keys written as 30.0. */
export function configJson(config: Record<string, unknown>, floats: string[]): string {
  const keys = new Set(floats);
  const mark = '\u0001float:';
  const text = JSON.stringify(config, (k, v) => (typeof v === 'number' && Number.isInteger(v) && keys.has(k) && Math.abs(v) < 1e21 ? `${mark}${v}` : v), 2);
  return text.replace(/"\\u0001float:(-?\d+)"/g, '$1.0') + '\n';
}

/**
 * Writes a Hugging Face directory: config.json, model.safetensors (or shards + index above maxShardBytes), and the
 * tokenizer files it came with. A tied head is stored once, under the embedding's name, as transformers does.
 */
export function savePretrained(p: Pretrained, dir: string, opts: { maxShardBytes?: number } = {}): void {
  const sd = p.model.stateDict({ keepVars: true });
  for (const [alias] of p.model.tiedKeys?.() ?? []) sd.delete(alias);
  const bad = firstNonFinite(sd);
  if (bad !== null) throw new Error(`refusing to save ${dir}: weight '${bad}' holds NaN or Inf`);
  // Written beside `dir` and renamed into place, so that a kill mid-write leaves the previous directory (or none),
  // never a directory with a torn weights file.
  const tmp = `${dir}.tmp-${process.pid}`;
  const old = `${dir}.old-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    mkdirSync(tmp, { recursive: true });
    torch.io.saveSharded(tmp, sd, { maxShardBytes: opts.maxShardBytes ?? 5e9 });
    // The ml5 models' own configs have no model_type; the loader put it in p.config.
    // What the weights are now, under both names: transformers 5 reads `dtype` (and loads in it by default), earlier
    // versions `torch_dtype`; a bfloat16 model trained in float32 must not be read back as bfloat16.
    const dtype = [...sd.values()][0]?.dtype ?? 'float32';
    const config = { model_type: p.config.model_type, ...p.model.config, torch_dtype: dtype, dtype };
    writeFileSync(join(tmp, 'config.json'), configJson(config, p.floatKeys ?? []));
    for (const f of p.tokenizerFiles) copyFileSync(f, join(tmp, basename(f)));
    for (const f of readdirSync(tmp)) {
      const fd = openSync(join(tmp, f), 'r');
      fsyncSync(fd);
      closeSync(fd);
    }
    if (existsSync(dir)) {
      rmSync(old, { recursive: true, force: true });
      renameSync(dir, old);
      renameSync(tmp, dir);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, dir);
    }
  } catch (e) {
    // A failed save (disk full, permissions) leaves the previous directory and no half-written copy beside it.
    if (!existsSync(dir) && existsSync(old)) renameSync(old, dir);
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
