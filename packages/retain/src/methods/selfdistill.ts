// Self-distilled targets — SDFT of Yang et al. (ACL 2024, arXiv 2402.13669), docs/METHODS.md §13; not §15's on-policy
// `sdft`. Before training, the base model rewrites each target response in its own words: it is prompted with the
// instruction and the original response (`template`, with {instruction} and {response}) and continues greedily (the
// default; `temperature` > 0 samples, seeded per example). The rewrite replaces the response when it is still correct,
// else the original is kept: `answer: last_number` (the default, for math: the last number of each, compared as
// numbers), `boxed` (the last \boxed{...}), `pattern` (the first group of `answer_pattern`), or `none` (every
// non-empty rewrite is kept). A response whose own answer cannot be extracted keeps the original (nothing to check
// the rewrite against). Then the run fine-tunes on the rewritten set as usual.
//
// Token-level: the instruction is every token before the first trained one, the response the first run of trained
// tokens (a trailing EOS stays the last trained token); the rewrite's tokens are the generated ids themselves, so no
// re-tokenisation shifts them. The rewrites are cached in <cache_dir or output_dir>/selfdistill-<key>.json, keyed by a
// hash of the model's weights, the examples, the template and the generation and answer settings (as FLOW's cache), so
// a rerun or a resumed run trains on the same set without generating again. List this method before FLOW in `methods:`
// if both are used, so that FLOW scores the rewritten set.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Example } from '../data/formats.js';
import type { Method, TrainableModel, TrainContext } from '../train/hooks.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { generate, type CausalLM } from '../models/generate.js';
import { writeTextAtomic } from '../train/checkpoint.js';
import { z } from 'zod';
import { bool, codeOnly, integer, num, parseOptions, positiveInt, refuse, regex } from '../options.js';
import { hashExamples, hashModel, keepModes, sampleKey, type Options } from './support.js';

export const SELFDISTILL_TEMPLATE = '{instruction}\n\nReference answer: {response}\n\nRewrite the reference answer in your own words, keeping its final answer.\nAnswer:';
export const ANSWER_KINDS = ['last_number', 'boxed', 'pattern', 'none'] as const;
type AnswerKind = (typeof ANSWER_KINDS)[number];
const TEMPLATE_WHAT = 'text with {instruction} and {response} in it';

export const selfDistillOptions = z.object({
  template: z.string({ invalid_type_error: TEMPLATE_WHAT }).refine((t) => t.includes('{instruction}') && t.includes('{response}'), TEMPLATE_WHAT)
    .default(SELFDISTILL_TEMPLATE).describe('The prompt that asks the model to rewrite a reference answer, with {instruction} and {response} in it.'),
  answer: z.enum(ANSWER_KINDS).optional().describe('How a rewrite is checked against the original response before it replaces it: the last number of each, the last \\boxed{...}, the first group of answer_pattern, or none (every non-empty rewrite is kept). Default: pattern when answer_pattern is given, else last_number.'),
  answer_pattern: regex().optional().describe('With answer: pattern, a regular expression whose first group is the answer.'),
  max_tokens: positiveInt(1e6).default(256).describe('Most tokens generated per rewrite.'),
  temperature: num('a non-negative number (0: greedy)', { min: 0 }).default(0).describe('Sampling temperature of the rewrites (0: greedy).'),
  seed: integer().default(0).describe('Seed of the sampling.'),
  cache: bool().default(true).describe('Keep the rewrites in <cache_dir or output_dir>, keyed by the model and the examples, so a rerun generates nothing.'),
  cache_dir: z.string({ invalid_type_error: 'a path' }).optional().describe('Folder of the rewrite cache (default: output_dir).'),
  tokenizer: codeOnly<Tokenizer>("a Tokenizer object (in code; retain train passes the model's own)", (v) => !!v && typeof v === 'object' && typeof (v as Tokenizer).encode === 'function'),
}).strict().transform((o, ctx) => {
  const answer = o.answer ?? (o.answer_pattern ? 'pattern' : 'last_number');
  if (answer === 'pattern' && !o.answer_pattern) refuse(ctx, 'answer: pattern needs answer_pattern, a regular expression whose first group is the answer');
  if (answer !== 'pattern' && o.answer_pattern) refuse(ctx, `answer_pattern applies to answer: pattern, not ${answer}`);
  return { ...o, answer };
});

/** The answer a text states, or null when it states none; `none` accepts every text. */
export function extractAnswer(text: string, kind: AnswerKind, pattern: RegExp | null = null): string | null {
  if (kind === 'none') return '';
  if (kind === 'last_number') {
    const nums = text.replace(/(\d),(?=\d{3}\b)/g, '$1').match(/-?\d+(?:\.\d+)?/g);
    return nums ? String(Number(nums[nums.length - 1])) : null;
  }
  if (kind === 'boxed') {
    const all = [...text.matchAll(/\\boxed\{([^{}]*)\}/g)];
    return all.length ? all[all.length - 1][1].trim() : null;
  }
  const m = pattern!.exec(text);
  return m ? (m[1] ?? m[0]).trim() : null;
}

export interface Rewrite {
  /** The example's ids with the rewrite in place, or null when the original is kept. */
  ids: number[] | null;
  lossMask: number[] | null;
  text: string;
  reason: 'rewritten' | 'wrong answer' | 'no reference answer' | 'empty' | 'too long';
}

interface CacheFile {
  key: string;
  rewrites: Record<string, Rewrite>;
}

/** The instruction (tokens before the first trained one) and the first run of trained tokens, by index. */
function split(e: Example): { first: number; end: number } | null {
  const first = e.lossMask.indexOf(1);
  if (first < 1) return null;
  let end = first;
  while (end < e.lossMask.length && e.lossMask[end]) end++;
  return { first, end };
}

export class SelfDistillTargets implements Method {
  readonly name = 'selfdistill_targets';
  readonly wholeExamples = 'selfdistill_targets rewrites the response of each example';
  readonly template: string;
  readonly answer: AnswerKind;
  readonly pattern: RegExp | null;
  readonly maxTokens: number;
  readonly temperature: number;
  readonly seed: number;
  readonly useCache: boolean;
  readonly cacheDir: string | null;
  private readonly tok: Tokenizer | null;
  /** Rewrites generated in this process (a cached run generates none). */
  generated = 0;
  cacheFile: string | null = null;
  counts = { rewritten: 0, kept: 0 };
  /** The caller's training list and its entries before the rewrite, put back by finish(). */
  private originals: { list: Example[]; items: Example[] } | null = null;
  /** Each example's outcome by sampleKey(source, id): its new ids, or why the original stays. */
  rewrites: Record<string, Rewrite> = {};

  constructor(o: Options = {}) {
    const name = this.name;
    const p = parseOptions(name, selfDistillOptions, o);
    this.template = p.template;
    this.answer = p.answer;
    this.pattern = p.answer_pattern ?? null;
    this.maxTokens = p.max_tokens;
    this.temperature = p.temperature;
    this.seed = p.seed;
    this.useCache = p.cache;
    this.cacheDir = p.cache_dir ?? null;
    this.tok = p.tokenizer ?? null;
  }

  async setup(ctx: TrainContext): Promise<void> {
    const tok = this.tok ?? (ctx as { tokenizer?: Tokenizer }).tokenizer ?? null;
    if (!tok) throw new Error(`${this.name}: the run has no tokenizer to write the rewrites with; it needs a language model with its tokenizer`);
    const lm = causalLm(ctx.model);
    const key = this.cacheKey(ctx);
    const dir = this.useCache ? this.cacheDir ?? ctx.outputDir : null;
    this.cacheFile = dir ? join(dir, `selfdistill-${key.slice(0, 16)}.json`) : null;
    const cached = this.readCache(key);
    const rewrites: Record<string, Rewrite> = (this.rewrites = {});
    keepModes(ctx.model, () => {
      ctx.model.eval();
      ctx.examples.forEach((e, i) => {
        const k = sampleKey(e.source, e.id);
        rewrites[k] = cached?.[k] ?? this.rewrite(lm, tok, e, i);
      });
    });
    this.counts = { rewritten: 0, kept: 0 };
    this.originals = { list: ctx.examples, items: [...ctx.examples] };
    ctx.examples.forEach((e, i) => {
      const r = rewrites[sampleKey(e.source, e.id)];
      if (r.ids) {
        ctx.examples[i] = { ...e, ids: r.ids, lossMask: r.lossMask! };
        this.counts.rewritten++;
      } else this.counts.kept++;
    });
    if (this.cacheFile && this.generated > 0 && (!ctx.dist || ctx.dist.rank === 0)) {
      mkdirSync(dir!, { recursive: true });
      writeTextAtomic(this.cacheFile, JSON.stringify({ key, rewrites } satisfies CacheFile));
    }
    const why: Record<string, number> = {};
    for (const r of Object.values(rewrites)) if (!r.ids) why[`selfdistill_kept_${r.reason.replaceAll(' ', '_')}`] = (why[`selfdistill_kept_${r.reason.replaceAll(' ', '_')}`] ?? 0) + 1;
    ctx.log({ kind: this.name, selfdistill_rewritten: this.counts.rewritten, selfdistill_kept_original: this.counts.kept, ...why, selfdistill_generated: this.generated, selfdistill_answer: this.answer, ...(this.cacheFile ? { selfdistill_cache: this.cacheFile } : {}) });
  }

  /**
   * The loop trains on the list it was given, so setup replaces that list's entries; they are put back at the end, so
   * the caller's examples are as they were.
   */
  finish(): void {
    if (!this.originals) return;
    const { list, items } = this.originals;
    items.forEach((e, i) => (list[i] = e));
    this.originals = null;
  }

  private cacheKey(ctx: TrainContext): string {
    const h = createHash('sha256');
    h.update(JSON.stringify({ template: this.template, answer: this.answer, pattern: this.pattern?.source ?? null, maxTokens: this.maxTokens, temperature: this.temperature, seed: this.seed }));
    h.update(hashModel(ctx.model));
    h.update(hashExamples(ctx.examples));
    return h.digest('hex');
  }

  private readCache(key: string): Record<string, Rewrite> | null {
    if (!this.cacheFile || !existsSync(this.cacheFile)) return null;
    try {
      const c = JSON.parse(readFileSync(this.cacheFile, 'utf8')) as CacheFile;
      return c.key === key ? c.rewrites : null;
    } catch {
      return null; // a damaged cache is regenerated (and rewritten)
    }
  }

  /** One example's rewrite, or why the original stays. */
  rewrite(lm: CausalLM, tok: Tokenizer, e: Example, index: number): Rewrite {
    const parts = split(e);
    if (!parts) throw new Error(`${this.name}: sample '${e.id}' (${e.source}) has no instruction before its trained tokens (text data?); it needs prompt_completion or chat data`);
    const { first, end } = parts;
    let response = e.ids.slice(first, end);
    const endsWithEos = response[response.length - 1] === tok.eosId;
    if (endsWithEos) response = response.slice(0, -1);
    const instruction = tok.decode(e.ids.slice(0, first).filter((id) => id !== tok.bosId));
    const original = tok.decode(response);
    const want = extractAnswer(original, this.answer, this.pattern);
    if (want === null) return { ids: null, lossMask: null, text: '', reason: 'no reference answer' };
    const prompt = this.template.replaceAll('{instruction}', instruction).replaceAll('{response}', original);
    const limit = lm.config.max_position_embeddings;
    const promptIds = tok.encode(prompt, { bos: true });
    if (promptIds.length >= limit) return { ids: null, lossMask: null, text: '', reason: 'too long' };
    this.generated++;
    const g = generate(lm, tok, promptIds, { maxNewTokens: this.maxTokens, temperature: this.temperature, ...(this.temperature > 0 ? { seed: this.seed * 1000003 + index } : {}) });
    if (g.text.trim() === '' || g.ids.length === 0) return { ids: null, lossMask: null, text: g.text, reason: 'empty' };
    const got = extractAnswer(g.text, this.answer, this.pattern);
    if (got === null || got !== want) return { ids: null, lossMask: null, text: g.text, reason: 'wrong answer' };
    const tail = e.ids.slice(end);
    const ids = [...e.ids.slice(0, first), ...g.ids, ...(endsWithEos ? [tok.eosId] : []), ...tail];
    if (ids.length > limit) return { ids: null, lossMask: null, text: g.text, reason: 'too long' };
    const lossMask = [...e.lossMask.slice(0, first), ...g.ids.map(() => 1), ...(endsWithEos ? [1] : []), ...e.lossMask.slice(end)];
    return { ids, lossMask, text: g.text, reason: 'rewritten' };
  }
}

/** The model as a KV-cached causal LM, or a refusal naming why. */
function causalLm(model: TrainableModel): CausalLM {
  const m = model as unknown as Partial<CausalLM> & { encoder?: unknown };
  if (typeof m.newCache !== 'function' || typeof m.config?.max_position_embeddings !== 'number' || m.encoder !== undefined) {
    throw new Error(`selfdistill_targets: ${model.constructor?.name ?? 'this model'} cannot generate rewrites with a key/value cache; it needs a decoder-only language model (Llama family, GPT-2, Phi-3, Gemma), not a classifier, the char-LSTM or T5`);
  }
  return m as CausalLM;
}
