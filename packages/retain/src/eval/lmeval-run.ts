// Scores an lm-evaluation-harness task file (lmeval-task.ts) as lm_eval 0.4.13 does with its Hugging Face backend:
// the same prompts (description, few-shot examples drawn by Python's random with seed 1234, delimiters, chat
// template), the same requests per output type, and the same metrics and aggregations.
import * as torch from '@retain/torch';
import { docChoices, docDescription, docTarget, docText, higherIsBetter, readSplit, type LmevalMetric, type LmevalTask } from './lmeval-task.js';
import { PyRandom } from './pyrandom.js';
import { loglikelihood, meanStderr, textLoglik, type Loglik } from './score.js';
import type { EvalModel } from './model.js';
import type { ResultRow, Role } from './results.js';
import type { Sample } from './results.js';

/** lm_eval's default few-shot seed (its --fewshot_seed, part of --seed). */
export const FEWSHOT_SEED = 1234;

export interface LmevalRunOptions {
  limit?: number | null;
  batchSize?: number;
  applyChatTemplate?: boolean;
  role?: Role;
  onSamples?: (task: string, samples: Sample[]) => void;
}

type Doc = Record<string, unknown>;

/** One prompt turn, rendered as text (content then delimiter) or as a chat message. */
interface Turn {
  role: 'system' | 'user' | 'assistant';
  content: string;
  delimiter: string;
}

/** The few-shot examples for `doc`, drawn as lm_eval's ContextSampler draws them (one generator for the whole task). */
function shots(t: LmevalTask, pool: Doc[], poolKeys: string[], doc: Doc, rnd: PyRandom): Doc[] {
  const k = t.config.num_fewshot ?? 0;
  if (k === 0) return [];
  // lm_eval leaves the scored doc out only when the examples come from the scored split by name.
  const exclude = (t.config.fewshot_split ?? null) === (t.config.test_split ?? null);
  const key = JSON.stringify(doc);
  const others = () => pool.filter((_, i) => poolKeys[i] !== key);
  const need = exclude ? k + 1 : k;
  if (t.config.fewshot_config?.sampler === 'first_n') {
    const from = exclude ? others() : pool;
    if (from.length < k) throw new Error(`num_fewshot ${k} needs ${k} examples; the ${t.fewshotSplit} split has ${from.length}`);
    return from.slice(0, k);
  }
  if (pool.length < need) throw new Error(`num_fewshot ${k} needs ${need} examples in the ${t.fewshotSplit} split (it has ${pool.length}); lower num_fewshot (or --num-fewshot) or give a larger fewshot_split`);
  let res = exclude ? rnd.sample(pool, k + 1).filter((d) => JSON.stringify(d) !== key).slice(0, k) : rnd.sample(pool, k);
  if (res.length < k) res = rnd.sample(others(), k);
  return res;
}

/** lm_eval's build_qa_turn: the question, then the answer when there is one (a choice by index, a list's first). */
function qaTurn(q: string, choices: string[] | null, a: unknown, targetDelimiter: string, fewshotDelimiter: string): Turn[] {
  const hasAnswer = a !== null && a !== undefined && a !== '';
  const turns: Turn[] = [{ role: 'user', content: q, delimiter: hasAnswer ? targetDelimiter : '' }];
  if (!hasAnswer) return turns;
  const answer = choices && typeof a === 'number' ? choices[a] : Array.isArray(a) ? a[0] : a;
  if (typeof answer !== 'string') throw new Error(`the few-shot answer ${JSON.stringify(a)} is not text${choices ? ` nor an index into the ${choices.length} choices` : ''}`);
  return [...turns, { role: 'assistant', content: answer, delimiter: fewshotDelimiter }];
}

/** The whole context of one doc: description, few-shot turns and the question, as text or through the chat template. */
function context(m: EvalModel, t: LmevalTask, doc: Doc, examples: Doc[], chat: boolean): string {
  const c = t.config;
  const turns: Turn[] = [];
  const description = docDescription(c, doc);
  if (description) turns.push({ role: 'system', content: description, delimiter: '' });
  for (const s of examples) turns.push(...qaTurn(docText(c, s), docChoices(c, s), docTarget(c, s), c.target_delimiter, c.fewshot_delimiter));
  turns.push({ role: 'user', content: docText(c, doc), delimiter: '' });
  if (!chat) return turns.map((x) => x.content + x.delimiter).join('');
  // lm_eval 0.4.13 with --apply_chat_template gives each example its own user and assistant turns (its default
  // fewshot_as_multiturn); the delimiters belong to the plain-text layout only.
  return chatPrompt(m, turns.map((x) => ({ role: x.role, content: x.content })));
}

/** Messages through the model's chat template, ending in the assistant's generation prompt. */
export function chatPrompt(m: EvalModel, messages: { role: string; content: string }[]): string {
  if (!m.chatTemplate) throw new Error(`--apply-chat-template: ${m.name}'s tokenizer has no chat template (no chat_template.jinja, none in tokenizer_config.json)`);
  return m.chatTemplate(messages, true);
}

/** lm_eval's exact_match with its options, on one prediction and one reference. */
function exactMatch(pred: string, gold: string, o: LmevalMetric): number {
  let [p, g] = [pred, gold];
  for (const r of o.regexes_to_ignore ?? []) [p, g] = [p.replace(new RegExp(r, 'g'), ''), g.replace(new RegExp(r, 'g'), '')];
  if (o.ignore_case) [p, g] = [p.toLowerCase(), g.toLowerCase()];
  const strip = (re: RegExp) => ([p, g] = [p.replace(re, ''), g.replace(re, '')]);
  if (o.ignore_punctuation) strip(/[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g);
  if (o.ignore_numbers) strip(/[0-9]/g);
  return p === g ? 1 : 0;
}

/** Per-doc metric values and the sample record for --log-samples. */
interface Scored {
  values: Record<string, number>[];
  samples: Sample[];
  /** Sum-type metrics (perplexities) aggregated over the docs rather than averaged. */
  aggregate?: Record<string, number>;
}

const argmax = (xs: number[]) => xs.reduce((bi, x, j) => (x > xs[bi] ? j : bi), 0);
const args = (reqs: unknown[][]) => Object.fromEntries(reqs.map((a, i) => [`gen_args_${i}`, Object.fromEntries(a.map((x, j) => [`arg_${j}`, x]))]));

function multipleChoice(m: EvalModel, t: LmevalTask, docs: Doc[], ctxs: string[], o: LmevalRunOptions): Scored {
  // Under a chat template the answer follows the assistant header directly (lm_eval drops the delimiter).
  const delim = o.applyChatTemplate ? '' : t.config.target_delimiter;
  const choices = docs.map((d) => docChoices(t.config, d)!);
  const reqs = docs.flatMap((_, i) => choices[i].map((c) => ({ context: ctxs[i], continuation: delim + c })));
  const ll = loglikelihood(m, reqs, o.batchSize ?? 16);
  let k = 0;
  const values: Record<string, number>[] = [];
  const samples: Sample[] = [];
  docs.forEach((d, i) => {
    const cs = choices[i];
    const res: Loglik[] = ll.slice(k, k + cs.length);
    const lls = res.map((x) => x.logprob);
    const target = docTarget(t.config, d);
    const gold = (Array.isArray(target) ? target : [target]).map((g) => (typeof g === 'number' ? (g < cs.length ? g : -100) : cs.indexOf(String(g))));
    const hit = (p: number) => (gold.includes(p) ? 1 : 0);
    const v: Record<string, number> = {
      acc: hit(argmax(lls)),
      acc_norm: hit(argmax(lls.map((x, j) => x / [...cs[j]].length))),
      acc_bytes: hit(argmax(lls.map((x, j) => x / Buffer.byteLength(cs[j], 'utf8')))),
      exact_match: gold.some((g) => g >= 0 && res[g].greedy) ? 1 : 0,
    };
    values.push(v);
    if (o.onSamples) samples.push(sample(t, i, d, String(target), reqs.slice(k, k + cs.length).map((r) => [r.context, r.continuation]), res.map((x) => [[x.logprob, x.greedy]]), res.map((x) => [x.logprob, x.greedy]), v));
    k += cs.length;
  });
  return { values, samples };
}

function generateUntil(m: EvalModel, t: LmevalTask, docs: Doc[], ctxs: string[], o: LmevalRunOptions): Scored {
  const g = t.config.generation_kwargs ?? { max_gen_toks: 256 };
  const until = typeof g.until === 'string' ? [g.until] : g.until ?? [];
  const values: Record<string, number>[] = [];
  const samples: Sample[] = [];
  docs.forEach((d, i) => {
    const text = torch.inferenceMode(() => m.generate(ctxs[i], { maxNewTokens: g.max_gen_toks, stop: until, decodeAlone: true }));
    let target = docTarget(t.config, d);
    const choices = docChoices(t.config, d);
    if (choices && typeof target === 'number') target = choices[target];
    const golds = (Array.isArray(target) ? target : [target]).map(String);
    const v = Object.fromEntries(t.metrics.map((x) => [x.metric, golds.some((gold) => exactMatch(text, gold, x) === 1) ? 1 : 0]));
    values.push(v);
    if (o.onSamples) samples.push(sample(t, i, d, String(target), [[ctxs[i], t.config.generation_kwargs ?? {}]], [[text]], [text], v));
  });
  return { values, samples };
}

function loglikelihoodTask(m: EvalModel, t: LmevalTask, docs: Doc[], ctxs: string[], o: LmevalRunOptions): Scored {
  const targets = docs.map((d) => String(docTarget(t.config, d)));
  const reqs = docs.map((_, i) => ({ context: ctxs[i], continuation: targets[i] }));
  const ll = loglikelihood(m, reqs, o.batchSize ?? 16);
  const values = ll.map((x) => ({ perplexity: x.logprob, acc: x.greedy ? 1 : 0 }));
  const samples = !o.onSamples ? [] : ll.map((x, i) => sample(t, i, docs[i], targets[i], [[ctxs[i], targets[i]]], [[[x.logprob, x.greedy]]], [[x.logprob, x.greedy]], values[i]));
  // lm_eval's perplexity aggregation: exp of the negative mean log-likelihood.
  return { values, samples, aggregate: { perplexity: Math.exp(-values.reduce((a, v) => a + v.perplexity, 0) / values.length) } };
}

function rolling(m: EvalModel, t: LmevalTask, docs: Doc[], o: LmevalRunOptions): Scored {
  const texts = docs.map((d) => {
    const v = docTarget(t.config, d);
    if (typeof v !== 'string') throw new Error(`loglikelihood_rolling scores doc_to_target's text; it gave ${JSON.stringify(v)}`);
    return v;
  });
  // lm_eval predicts the tokenizer's whole encoding, special tokens included (a Llama's BOS, given BOS), after the
  // prefix token (BOS, else EOS).
  const prefix = m.bosId ?? m.eosId ?? null;
  if (prefix === null) throw new Error(`loglikelihood_rolling needs a BOS or EOS token to condition the first token on; ${m.name}'s tokenizer has neither`);
  const s = textLoglik(m, texts, o.batchSize ?? 8, undefined, Infinity, (text) => [prefix, ...(m.encodeSpecial ?? m.encode)(text)]);
  const ll = s.map((x) => -x.nll);
  const words = texts.map((x) => x.split(/\s+/).length);
  const bytes = texts.map((x) => Buffer.byteLength(x, 'utf8'));
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const values = ll.map((x) => ({ word_perplexity: x, byte_perplexity: x, bits_per_byte: x }));
  // Per sample, lm_eval logs each perplexity as [log-likelihood, words or bytes], the pair its aggregation sums.
  const samples = !o.onSamples ? [] : ll.map((x, i) => sample(t, i, docs[i], texts[i], [[texts[i]]], [[x]], [x], { word_perplexity: [x, words[i]], byte_perplexity: [x, bytes[i]], bits_per_byte: [x, bytes[i]] }));
  return {
    values, samples,
    aggregate: { word_perplexity: Math.exp(-sum(ll) / sum(words)), byte_perplexity: Math.exp(-sum(ll) / sum(bytes)), bits_per_byte: -sum(ll) / sum(bytes) / Math.LN2 },
  };
}

/** A samples_<task>.jsonl record in lm_eval's layout (numbers and booleans as JSON values rather than strings). */
function sample(t: LmevalTask, i: number, doc: Doc, target: string, reqs: unknown[][], resps: unknown[][], filtered: unknown[], v: Record<string, number | number[]>): Sample {
  const metrics = t.metrics.map((x) => x.metric);
  return { doc_id: i, doc, target, arguments: args(reqs), resps, filtered_resps: filtered, filter: 'none', metrics, ...Object.fromEntries(metrics.map((x) => [x, v[x]])) };
}

/** Loads the docs, builds every prompt and scores the task: its result rows, lm_eval's metrics in metric_list order. */
export async function runLmevalTask(m: EvalModel, t: LmevalTask, o: LmevalRunOptions = {}): Promise<{ rows: ResultRow[]; n: number; original: number }> {
  if (m.kind !== 'lm') throw new Error(`task ${t.config.task} needs a language model; ${m.name} is a classifier`);
  const all = await readSplit(t.evalFiles);
  if (!all.length) throw new Error(`${t.config.task}: the ${t.evalSplit} split (${t.evalFiles.join(', ')}) holds no records`);
  const docs = o.limit && o.limit > 0 ? all.slice(0, o.limit) : all;
  const type = t.config.output_type;
  let ctxs: string[] = [];
  if (type !== 'loglikelihood_rolling') {
    const pool = (t.config.num_fewshot ?? 0) > 0 ? await readSplit(t.fewshotFiles) : [];
    const poolKeys = pool.map((d) => JSON.stringify(d));
    const rnd = new PyRandom(FEWSHOT_SEED);
    ctxs = docs.map((d, i) => {
      try {
        return context(m, t, d, shots(t, pool, poolKeys, d, rnd), o.applyChatTemplate ?? false);
      } catch (e) {
        throw new Error(`${t.config.task}: doc ${i}: ${(e as Error).message}`);
      }
    });
  }
  const wasTraining = m.module.training;
  m.module.eval();
  let s: Scored;
  try {
    s = type === 'multiple_choice' ? multipleChoice(m, t, docs, ctxs, o)
      : type === 'generate_until' ? generateUntil(m, t, docs, ctxs, o)
        : type === 'loglikelihood' ? loglikelihoodTask(m, t, docs, ctxs, o)
          : rolling(m, t, docs, o);
  } finally {
    if (wasTraining) m.module.train();
  }
  o.onSamples?.(t.config.task, s.samples);
  const rows = t.metrics.map((x, j): ResultRow => {
    const agg = s.aggregate?.[x.metric];
    // Means carry lm_eval's standard error; the aggregated perplexities have none (lm_eval bootstraps them).
    const ms = agg === undefined ? meanStderr(s.values.map((v) => v[x.metric])) : { mean: agg, stderr: null };
    return { task: t.config.task, metric: x.metric, value: ms.mean, stderr: ms.stderr, higher_is_better: higherIsBetter(x), n: docs.length, role: o.role ?? 'general', primary: j === 0 };
  });
  return { rows, n: docs.length, original: all.length };
}
