// What evaluation needs from a model, whatever its architecture: token log-likelihoods for language models, class
// logits for classifiers, and greedy generation. Adapters wrap the loaded models (Llama family and llama2.c, the
// char-LSTM, the MNIST MLP) so tasks never look at architectures.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { loadPretrained, type Pretrained } from '../models/hub.js';
import { generate, type CausalLM } from '../models/generate.js';
import { KVCache } from '../models/llama.js';
import type { CharLSTM } from '../models/charlstm.js';
import type { CharVocab } from '../tokenizers/char.js';
import type { MnistMLP } from '../models/mlp.js';
import { CharTokenizer } from '../tokenizers/char.js';
import { HfTokenizer } from '../tokenizers/hf.js';
import type { ChatTemplate } from '../tokenizers/types.js';

export interface EvalModel {
  /** Display name (the folder's name). */
  name: string;
  path: string;
  kind: 'lm' | 'classifier';
  module: torch.nn.Module;
  /** Longest input the model takes in one forward (tokens); windows and truncation use it. */
  maxLength: number;
  /** Token id prepended to every sequence, or null when the model has none (the first token is then context only). */
  bosId: number | null;
  encode(text: string): number[];
  /** The tokenizer's own encoding with its special tokens (what Hugging Face's tokenizer(text) gives), when known. */
  encodeSpecial?(text: string): number[];
  decode(ids: number[]): string;
  /** The text without characters the vocabulary cannot encode (character models); other models return it whole. */
  dropUnknown(text: string): string;
  /** ids [B, T] int64 → logits [B, T, V]. */
  logits(ids: Tensor): Tensor;
  /**
   * Logits of rows [k, R] that each continue one context, prefix [1, P], which runs once through a key/value cache:
   * [k, R, V] (null when this model's cache cannot be copied across rows). Absent for models without a cache.
   */
  logitsAfter?(prefix: Tensor, rows: Tensor): Tensor | null;
  /** Greedy continuation of `prompt`, cut before the first stop string; `decodeAlone` decodes the new tokens without the prompt. */
  generate(prompt: string, o: { maxNewTokens: number; stop: string[]; decodeAlone?: boolean }): string;
  /** features [B, ...] → class logits [B, C] (classifiers). */
  classify(x: Tensor): Tensor;
  /** The tokenizer's chat template (--apply-chat-template), when it has one. */
  chatTemplate?: ChatTemplate | null;
  /** End-of-sequence token id, when known (lm-eval conditions a text on it when there is no BOS). */
  eosId?: number | null;
  /** BOS as text, which a rendered chat template may start with (encode adds the BOS id itself). */
  bosText?: string | null;
}

function cutAtStop(text: string, stop: string[]): string {
  let end = text.length;
  for (const s of stop) {
    const i = text.indexOf(s);
    if (i >= 0 && i < end) end = i;
  }
  return text.slice(0, end);
}

const notLm = (name: string) => () => {
  throw new Error(`${name} is a classifier; this task needs a language model`);
};
const notClassifier = (name: string) => (): never => {
  throw new Error(`${name} is a language model; image classification tasks need a classifier`);
};

/**
 * A decoder LM with a KV cache (Llama family, llama2.c) and its tokenizer. `tokenizerOption` names the caller's way to
 * supply one (eval's '--tokenizer'); callers without one (retain demo, the suites) get only the advice that always holds.
 */
export function causalLmEvalModel(p: Pretrained, name = p.source.path.split('/').filter(Boolean).pop() ?? 'model', tokenizerOption?: string): EvalModel {
  const tok = p.tokenizer;
  if (!tok) {
    throw new Error(`${p.source.path}: no tokenizer found (its directory holds no tokenizer.json or llama2.c tok*.bin); evaluation needs one: ${tokenizerOption ? `pass ${tokenizerOption} <file or directory>, or ` : ''}put the model's tokenizer there`);
  }
  const lm = p.model as unknown as CausalLM;
  const maxLength = Number(p.config.max_position_embeddings ?? p.config.n_positions ?? 2048);
  const bosText = tok.bosId >= 0 ? tok.piece(tok.bosId) || null : null;
  return {
    name,
    path: p.source.path,
    kind: 'lm',
    module: p.model,
    maxLength,
    bosId: tok.bosId >= 0 ? tok.bosId : null,
    encode: (t) => tok.encode(t, { bos: false }),
    encodeSpecial: (t) => tok.encode(t, { bos: true }),
    decode: (ids) => tok.decode(ids),
    dropUnknown: (t) => t,
    logits: (ids) => lm.forward(ids) as Tensor,
    logitsAfter: sharedContextLogits(lm),
    generate: (prompt, o) => {
      // A prompt that starts with BOS as text (a rendered chat template) gets no second one.
      const ids = tok.encode(prompt, { bos: !(bosText && prompt.startsWith(bosText)) });
      const g = generate(lm, tok, ids, { maxNewTokens: o.maxNewTokens, temperature: 0, stop: o.stop });
      // decodeAlone: the new tokens decoded on their own, as lm-evaluation-harness's Hugging Face backend does (a
      // SentencePiece tokenizer then drops the first piece's leading space).
      return cutAtStop(o.decodeAlone ? tok.decode(g.ids) : g.text, o.stop);
    },
    classify: notClassifier(name),
    chatTemplate: tok instanceof HfTokenizer ? tok.chatTemplate : null,
    bosText,
    eosId: tok.eosId >= 0 ? tok.eosId : null,
  };
}

/**
 * Rows continuing one shared context, the context run once (the choices of a multiple-choice question share theirs):
 * only a Llama-family cache copies across rows, and a model that reruns its past (Phi-3 under LongRoPE) is left out.
 */
export function sharedContextLogits(lm: CausalLM & { rerunPast?(): number | null }): EvalModel['logitsAfter'] {
  if (lm.rerunPast?.() != null) return undefined;
  return (prefix, rows) => {
    const [P, [k, R]] = [prefix.shape[1], rows.shape];
    const one = lm.newCache(1, P);
    if (!(one instanceof KVCache)) {
      one.dispose();
      return null;
    }
    let many: KVCache | null = null;
    try {
      lm.forward(prefix, { cache: one, lastOnly: true }).dispose();
      many = one.repeat(k, P + R);
      return lm.forward(rows, { cache: many }); // [k, R, V]
    } finally {
      one.dispose();
      many?.dispose();
    }
  };
}

/** The character-level LSTM: no BOS, unlimited context (windows bound it for comparability). */
export function charLstmEvalModel(model: CharLSTM, vocab: CharVocab, name: string, path = name, maxLength = 512): EvalModel {
  return {
    name,
    path,
    kind: 'lm',
    module: model,
    maxLength,
    bosId: null,
    encode: (t) => vocab.encode(t),
    decode: (ids) => vocab.decode(ids),
    dropUnknown: (t) => [...t].filter((ch) => vocab.has(ch)).join(''),
    logits: (ids) => model.forward(ids),
    generate: (prompt, o) => cutAtStop(model.sample(vocab, prompt, { length: o.maxNewTokens, temperature: 0 }), o.stop),
    classify: notClassifier(name),
  };
}

export function classifierEvalModel(model: torch.nn.Module & { forward(x: Tensor): Tensor }, name: string, path = name): EvalModel {
  return {
    name,
    path,
    kind: 'classifier',
    module: model,
    maxLength: 0,
    bosId: null,
    encode: notLm(name),
    decode: notLm(name),
    dropUnknown: notLm(name),
    logits: notLm(name),
    generate: notLm(name),
    classify: (x) => model.forward(x),
  };
}

const CLASSIFIERS = new Set(['mnist_mlp', 'efficientnet_lite', 'bert_sentence_classifier']);

/** The adapter for whatever loadPretrained returned: the char-LSTM and the MNIST MLP by model_type, else a causal LM. */
export function pretrainedEvalModel(p: Pretrained, name = p.source.path.split('/').filter(Boolean).pop() ?? 'model', maxLength = 512, tokenizerOption?: string): EvalModel {
  if (p.config.model_type === 'charlstm' && p.tokenizer instanceof CharTokenizer) return charLstmEvalModel(p.model as unknown as CharLSTM, p.tokenizer.vocab, name, p.source.path, maxLength);
  // Models whose forward maps inputs (images, or a sentence classifier's token ids) to class logits.
  if (CLASSIFIERS.has(String(p.config.model_type))) return classifierEvalModel(p.model as unknown as MnistMLP, name, p.source.path);
  return causalLmEvalModel(p, name, tokenizerOption);
}

/**
 * The smallest context cap evaluation accepts: with a 1-token window the model would see each scored token's
 * predecessor alone, every prompt cut to its last token, and the scores would not measure the task.
 */
export const MIN_MAX_LENGTH = 2;

/** Loads any model retain reads: HF directory, llama2.c .bin, ml5 char-LSTM or ml5 MLP folder. */
export async function loadEvalModel(path: string, opts: { tokenizer?: string; maxLength?: number; tokenizerOption?: string ; adapterBase?: string} = {}): Promise<EvalModel> {
  if (!existsSync(path)) throw new Error(`model not found: ${path}`);
  if (opts.maxLength !== undefined && !(Number.isInteger(opts.maxLength) && opts.maxLength >= MIN_MAX_LENGTH)) {
    throw new Error(`maxLength must be an integer ≥ ${MIN_MAX_LENGTH}, got ${opts.maxLength}`);
  }
  const name = path.split('/').filter(Boolean).pop() ?? path;
  // The hub reads every format, ml5 folders included; pretrainedEvalModel picks the adapter.
  const p = await loadPretrained(path, { tokenizer: opts.tokenizer, adapterBase: opts.adapterBase });
  p.model.eval();
  let em: EvalModel;
  try {
    em = pretrainedEvalModel(p, name, opts.maxLength ?? 512, opts.tokenizerOption);
  } catch (e) {
    p.model.dispose();
    throw e;
  }
  if (opts.maxLength) em.maxLength = Math.min(em.maxLength, opts.maxLength);
  return em;
}

/** sha256 over the state dict (names, shapes, dtypes, bytes): the same weights give the same hash in any format. */
export function modelHash(m: torch.nn.Module): string {
  const h = createHash('sha256');
  for (const [k, t] of [...m.stateDict({ keepVars: true })].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    h.update(`${k}:${t.dtype}:${t.shape.join('x')};`);
    torch.tidy(() => {
      const c = t.device === 'cpu' ? t.contiguous() : t.to({ device: 'cpu' }).contiguous();
      const d = c.data() as ArrayBufferView;
      h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    });
  }
  return h.digest('hex').slice(0, 16);
}

export function parameterCount(m: torch.nn.Module): number {
  return m.namedParameters().reduce((s, [, t]) => s + t.numel(), 0);
}
