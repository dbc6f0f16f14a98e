// SDFT, on-policy self-distillation (Shenfeld et al. 2026, arXiv 2601.19897), docs/METHODS.md §15 — not §13's rewriting
// SDFT. For a training example with prompt x and demonstration c, each step samples ŷ ~ π_θ(·|x) from the student
// and minimises Σ_t KL(π_θ(·|x, ŷ<t) ‖ π_teacher(·|x, c, ŷ<t)) over the sampled tokens, averaged over tokens: the
// demonstration is only ever context for the teacher, never a target. The teacher is the same weights (`teacher:
// same`) or an exponential moving average of them (`teacher: ema`, `ema_decay`), run without autograd, in eval mode.
//
// The demonstration template is spliced in token space, so the teacher sees exactly the student's prompt tokens right
// before ŷ: the default `{prompt}{demonstration}\n\n{prompt}` shows the same problem solved once and asks it again,
// which a base model with no instruction following reads as a one-shot example (and a chat prompt, which ends with the
// assistant header, reads as a solved turn). An instruction template such as `{prompt}{demonstration}\n\nNow answer
// yourself:\n{prompt}` works the same way. Literal text is encoded without BOS and without the llama2.c tokenizer's
// leading dummy space; the trailing EOS of c is left out (it would end the teacher's document early).
//
// x is everything before an example's first trained token and c its first run of trained tokens: the completion of
// prompt_completion data, the first assistant turn of a conversation (later turns are not used).
//
// Mechanics: prepareBatch samples ŷ for each row of the training set (rows of another source — mixing's general
// replay — keep their plain LM loss) and sets the row's trained-token count to |ŷ| (+ EOS when the student stopped),
// so the loop's normaliser is the number of sampled tokens. sampleLoss then computes the rows' KL sums.
// Sampling is one batch-1 KV-cached generation per row (models/generate.ts), which dominates a step's time (bench:
// methods); generate() makes its ids on the CPU, so a model on CUDA is refused for now, as are data-parallel runs.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Batch } from '../data/loader.js';
import type { Example } from '../data/formats.js';
import type { Method, SampleLosses, TrainableModel, TrainContext } from '../train/hooks.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { generate, type CausalLM } from '../models/generate.js';
import { z } from 'zod';
import { codeOnly, num, parseOptions, positiveInt, refuse } from '../options.js';
import { indexById, keepModes, modelDevice, sampleKey, type Options } from './support.js';

export const SDFT_TEMPLATE = '{prompt}{demonstration}\n\n{prompt}';
const TEMPLATE_WHAT = 'a string holding {prompt} and {demonstration}';

export const sdftOptions = z.object({
  temperature: num('a non-negative number (0 samples greedily)', { min: 0 }).default(1).describe("Sampling temperature of the student's on-policy answers (0: greedy)."),
  max_tokens: positiveInt(1e6).default(64).describe('Most tokens sampled per answer.'),
  teacher: z.enum(['same', 'ema']).default('same').describe('The teacher that reads the prompt with the demonstration: the same weights as the student (same), or an exponential moving average of them (ema).'),
  ema_decay: num('a number in [0, 1)', { min: 0, lt: 1 }).optional().describe('Decay of the EMA teacher (default 0.99); only with teacher: ema.'),
  template: z.string({ invalid_type_error: TEMPLATE_WHAT }).refine((t) => t.includes('{prompt}') && t.includes('{demonstration}'), TEMPLATE_WHAT)
    .default(SDFT_TEMPLATE).describe("The teacher's context t(x, c), with {prompt} and {demonstration} in it."),
  tokenizer: codeOnly<Tokenizer>("a Tokenizer object (in code; retain train passes the model's own)", (v) => !!v && typeof v === 'object' && typeof (v as Tokenizer).encode === 'function'),
}).strict().superRefine((o, ctx) => {
  if (o.ema_decay !== undefined && o.teacher !== 'ema') refuse(ctx, "option 'ema_decay' applies only with teacher: ema");
}).transform((o) => ({ ...o, ema_decay: o.ema_decay ?? 0.99 }));

/** One distilled row: the student reads `student` = x ++ ŷ, the teacher `teacher` = t(x, c) ++ ŷ; ŷ is the last `sampled` tokens of both. */
export interface SdftRow {
  student: number[];
  teacher: number[];
  sampled: number;
}

interface Prepared {
  /** Row index in the batch → its distilled row (rows absent here keep the plain loss). */
  rows: Map<number, SdftRow>;
}

export class Sdft implements Method {
  readonly name = 'sdft';
  readonly roles = ['data-loss' as const];
  readonly wholeExamples = 'sdft splits each example into its prompt and its demonstration';
  readonly temperature: number;
  readonly maxTokens: number;
  readonly teacherKind: 'same' | 'ema';
  readonly emaDecay: number;
  readonly template: string;
  private tok: Tokenizer | null;
  private index = new Map<string, number>();
  private examples: Example[] = [];
  private pieces: (number[] | 'prompt' | 'demonstration')[] = [];
  private pending = new WeakMap<Batch, Prepared>();
  private ema: Tensor[] | null = null;
  private emaNames: string[] = [];
  private loadedEma: Map<string, Tensor> | null = null;
  private lm: CausalLM | null = null;
  /** Tokens sampled in each step so far, and the milliseconds spent sampling (bench:methods reports both). */
  readonly sampledPerStep: number[] = [];
  sampleMs = 0;
  private stepSampled = 0;

  constructor(o: Options = {}) {
    const name = this.name;
    const p = parseOptions(name, sdftOptions, o);
    this.temperature = p.temperature;
    this.maxTokens = p.max_tokens;
    this.teacherKind = p.teacher;
    this.emaDecay = p.ema_decay;
    this.template = p.template;
    this.tok = p.tokenizer ?? null;
  }

  setup(ctx: TrainContext): void {
    const name = this.name;
    if (ctx.dist) throw new Error(`${name}: data-parallel runs are not supported yet (each rank would sample every row); run with one process`);
    this.tok ??= ctx.tokenizer ?? null;
    if (!this.tok) throw new Error(`${name}: needs the run's tokenizer (for the template and the EOS that ends a sample); in code, give the option 'tokenizer'`);
    this.lm = causalLm(ctx.model);
    const device = modelDevice(ctx.model);
    if (device !== 'cpu') throw new Error(`${name}: the model is on ${device}, and sampling (models/generate.ts) makes its token ids on the CPU; train sdft with model.device cpu for now`);
    for (const e of ctx.examples) promptAndDemo(e, this.tok.bosId);
    this.examples = ctx.examples;
    this.index = indexById(name, ctx.examples);
    this.pieces = this.template.split(/(\{prompt\}|\{demonstration\})/).filter((s) => s.length > 0).map((s) =>
      s === '{prompt}' ? 'prompt' : s === '{demonstration}' ? 'demonstration' : literalIds(this.tok!, s));
    // A context too long for the model is named before the first step, not when its row is first drawn.
    for (const e of ctx.examples) this.room(e);
    ctx.log({ kind: name, sdft_teacher: this.teacherKind, sdft_temperature: this.temperature, sdft_max_tokens: this.maxTokens, sdft_template: this.template, ...(this.teacherKind === 'ema' ? { sdft_ema_decay: this.emaDecay } : {}) });
  }

  /** The teacher's context for an example: the template with x and c spliced in, BOS first when x has one. */
  teacherContext(e: Example): number[] {
    const { prompt, demo } = promptAndDemo(e, this.tok!.bosId);
    const bos = prompt[0] === this.tok!.bosId ? [prompt[0]] : [];
    const x = prompt.slice(bos.length);
    const c = demo[demo.length - 1] === this.tok!.eosId ? demo.slice(0, -1) : demo;
    return [...bos, ...this.pieces.flatMap((p) => (p === 'prompt' ? x : p === 'demonstration' ? c : p))];
  }

  beforeStep(ctx: TrainContext): void {
    if (this.teacherKind === 'ema') this.ensureEma(ctx);
    this.stepSampled = 0;
  }

  /** Samples ŷ for the batch's training-set rows and sets their trained-token counts to |ŷ|. */
  prepareBatch(ctx: TrainContext, b: Batch): void {
    const rows = new Map<number, SdftRow>();
    b.sampleIds.forEach((id, i) => {
      const at = this.index.get(sampleKey(b.sources[i], id));
      if (at === undefined) return;
      const e = this.examples[at];
      const { prompt } = promptAndDemo(e, this.tok!.bosId);
      const teacher = this.teacherContext(e);
      const room = this.room(e);
      const t0 = performance.now();
      const y = this.sample(ctx.model, prompt, room);
      this.sampleMs += performance.now() - t0;
      rows.set(i, { student: [...prompt, ...y], teacher: [...teacher, ...y], sampled: y.length });
      b.tokenCounts[i] = y.length;
      this.stepSampled += y.length;
    });
    if (rows.size) this.pending.set(b, { rows });
  }

  /** How many tokens a sample of this example may have: max_tokens, less what the model's context cannot hold. */
  private room(e: Example): number {
    const limit = this.lm!.config.max_position_embeddings;
    const teacher = this.teacherContext(e).length;
    const room = Math.min(this.maxTokens, limit - teacher, limit - promptAndDemo(e, this.tok!.bosId).prompt.length);
    if (room < 1) throw new Error(`${this.name}: sample '${e.id}' (${e.source}): the teacher's context (${teacher} tokens: prompt, demonstration and template) leaves no room for a response in the model's context of ${limit}; lower data.train.max_length or shorten the template`);
    return room;
  }

  /** ŷ from the student in eval mode; the EOS it stops on is kept (the teacher's view of stopping is distilled too). */
  private sample(model: TrainableModel, prompt: number[], room: number): number[] {
    const g = keepModes(model, () => {
      model.eval();
      return generate(this.lm!, this.tok!, prompt, { maxNewTokens: room, temperature: this.temperature });
    });
    return g.finishReason === 'stop_token' && g.ids.length < room ? [...g.ids, this.tok!.eosId] : g.ids.length ? g.ids : [this.tok!.eosId];
  }

  /** The distilled rows of a prepared batch by row index (none: every row keeps the plain loss). */
  distilled(b: Batch): Map<number, SdftRow> | undefined {
    return this.pending.get(b)?.rows;
  }

  sampleLoss(ctx: TrainContext, b: Batch, plain: (b: Batch) => SampleLosses): SampleLosses {
    const p = this.pending.get(b);
    if (!p) return plain(b);
    const B = b.sampleIds.length;
    const mine = [...p.rows.keys()];
    const others = [...Array(B).keys()].filter((i) => !p.rows.has(i));
    const rows = mine.map((i) => p.rows.get(i)!);
    const lt = this.withTeacher(ctx, () => teacherLogProbs(ctx.model, rows));
    const kl = reverseKlSums(ctx.model, rows, lt); // [R]
    const device = modelDevice(ctx.model);
    if (others.length === 0) return { sums: kl, counts: torch.tensor(rows.map((r) => r.sampled), { dtype: 'float32' }).to({ device }) };
    const idx = torch.tensor(others, { dtype: 'int64' }).to({ device });
    const sub: Batch = { ids: b.ids.indexSelect(0, idx), targets: b.targets.indexSelect(0, idx), sampleIds: others.map((i) => b.sampleIds[i]), sources: others.map((i) => b.sources[i]), tokenCounts: others.map((i) => b.tokenCounts[i]) };
    const rest = plain(sub);
    // Back to batch order: [kl rows, plain rows] permuted by the inverse of (mine, others).
    const order = [...mine, ...others];
    const inverse = torch.tensor(order.map((_, k) => order.indexOf(k)), { dtype: 'int64' }).to({ device });
    const counts = torch.cat([torch.tensor(rows.map((r) => r.sampled), { dtype: 'float32' }).to({ device }), rest.counts.float()]).indexSelect(0, inverse);
    return { sums: torch.cat([kl, rest.sums.float()]).indexSelect(0, inverse), counts, completeBackward: rest.completeBackward };
  }

  /** Runs fn with the teacher's weights in place (EMA: swapped in and back), without autograd and in eval mode. */
  private withTeacher<T>(ctx: TrainContext, fn: () => T): T {
    return keepModes(ctx.model, () => {
      ctx.model.eval();
      return torch.noGrad(() => {
        if (this.teacherKind === 'same') return fn();
        const params = ctx.params.map(([, q]) => q);
        const saved = params.map((q) => torch.keep(q.detachedClone()));
        try {
          params.forEach((q, i) => q.copy_(this.ema![i]));
          return fn();
        } finally {
          params.forEach((q, i) => q.copy_(saved[i]));
          torch.dispose(saved);
        }
      });
    });
  }

  private ensureEma(ctx: TrainContext): void {
    if (this.ema) return;
    this.emaNames = ctx.params.map(([n]) => n);
    this.ema = torch.noGrad(() => ctx.params.map(([n, q]) => torch.keep((this.loadedEma?.get(n) ?? q).detachedClone())));
    if (this.loadedEma) torch.dispose([...this.loadedEma.values()]);
    this.loadedEma = null;
  }

  afterStep(ctx: TrainContext): void {
    this.sampledPerStep.push(this.stepSampled);
    ctx.log({ kind: this.name, sdft_sampled_tokens: this.stepSampled });
    if (!this.ema) return;
    const d = this.emaDecay;
    torch.noGrad(() => torch.tidy(() => ctx.params.forEach(([, q], i) => this.ema![i].mul_(d).add_(q.detach(), 1 - d))));
  }

  stateTensors(): Map<string, Tensor> {
    return new Map((this.ema ?? []).map((t, i) => [`ema.${this.emaNames[i]}`, t]));
  }

  /** A resumed run's EMA, put in place at the first step (once the trainable parameters are final). */
  loadStateTensors(t: Map<string, Tensor>): void {
    this.loadedEma = new Map([...t].map(([k, v]) => [k.replace(/^ema\./, ''), torch.keep(v)]));
  }

  /** Releases the EMA teacher (a model-sized copy): a process training many runs would otherwise keep one per run. */
  dispose(): void {
    torch.dispose([...(this.ema ?? []), ...(this.loadedEma?.values() ?? [])]);
    this.ema = null;
    this.loadedEma = null;
  }
}

/** x (everything before the first trained token) and c (the first run of trained tokens); refuses data without both. */
function promptAndDemo(e: Example, bos: number): { prompt: number[]; demo: number[] } {
  if (e.features || e.label !== undefined) throw new Error(`sdft: sample '${e.id}' (${e.source}) is a classification example; sdft needs prompts with demonstrations (prompt_completion or chat data)`);
  const first = e.lossMask.indexOf(1);
  // A prompt of BOS alone (or nothing) is text data: nothing to condition the student on.
  if (first < 1 || (first === 1 && e.ids[0] === bos)) throw new Error(`sdft: sample '${e.id}' (${e.source}) has no prompt before its trained tokens (text data?); sdft needs a prompt and a demonstration: use prompt_completion or chat data`);
  let end = first;
  while (end < e.lossMask.length && e.lossMask[end]) end++;
  return { prompt: e.ids.slice(0, first), demo: e.ids.slice(first, end) };
}

function literalIds(tok: Tokenizer, text: string): number[] {
  const ids = tok.encode(text, { bos: false });
  // llama2.c's SentencePiece encoder puts a dummy space before any text; inside the template it would be a stray one.
  return !text.startsWith(' ') && ids.length > 1 && tok.decode([ids[0]]).trim() === '' && tok.piece(ids[0]) === ' ' ? ids.slice(1) : ids;
}

/** The model as a KV-cached causal LM, or a refusal naming why (classifiers, the char-LSTM, T5's encoder-decoder). */
function causalLm(model: TrainableModel): CausalLM {
  const m = model as unknown as Partial<CausalLM> & { encoder?: unknown };
  const kind = model.constructor?.name ?? 'this model';
  if (typeof m.newCache !== 'function' || typeof m.config?.max_position_embeddings !== 'number' || m.encoder !== undefined) {
    throw new Error(`sdft: ${kind} cannot sample a response with a key/value cache from a token prompt; sdft needs a decoder-only language model (Llama family, GPT-2, Phi-3, Gemma), not a classifier, the char-LSTM or T5`);
  }
  return m as CausalLM;
}

/** Right-padded ids [R, T] of token lists on the model's device. */
function padded(lists: number[][], device: string): Tensor {
  const T = Math.max(...lists.map((l) => l.length));
  const data = new BigInt64Array(lists.length * T);
  lists.forEach((l, r) => l.forEach((v, t) => (data[r * T + t] = BigInt(v))));
  const ids = torch.tensor(data, { shape: [lists.length, T] });
  return device === 'cpu' ? ids : ids.to({ device });
}

/** Log-probabilities [N, V] (float32) at the positions that predict each row's sampled tokens, rows in order; N = Σ sampled. */
function sampledLogProbs(model: TrainableModel, lists: number[][], rows: SdftRow[]): Tensor {
  const logits = model.forward(padded(lists, modelDevice(model))) as Tensor; // [R, T, V]
  const parts = rows.map((r, i) => logits.select(0, i).narrow(0, lists[i].length - r.sampled - 1, r.sampled)); // [n_i, V]
  return torch.cat(parts).float().logSoftmax(-1);
}

/** The teacher's log-probabilities [N, V] over the sampled positions (call without autograd, teacher weights in place). */
export function teacherLogProbs(model: TrainableModel, rows: SdftRow[]): Tensor {
  return sampledLogProbs(model, rows.map((r) => r.teacher), rows);
}

/** Σ_t KL(π_student ‖ π_teacher) per row [R], full vocabulary, gradients through the student's forward only. */
export function reverseKlSums(model: TrainableModel, rows: SdftRow[], teacher: Tensor): Tensor {
  const ls = sampledLogProbs(model, rows.map((r) => r.student), rows); // [N, V]
  const kl = ls.exp().mul(ls.sub(teacher.detach())).sum(-1); // [N]
  let at = 0;
  return torch.stack(rows.map((r) => {
    const s = kl.narrow(0, at, r.sampled).sum();
    at += r.sampled;
    return s;
  }));
}
