// Runs tasks on a model and assembles the results JSON (results.ts). One function per task kind; every number in
// the output comes from per-example scores so stderr and n are always known.
import * as torch from '@retain/torch';
import { defaultPrimary, noExamples, readTaskRecords, splitText, toDoc, type Doc, type ResolvedTask, type TaskSpec } from './tasks.js';
import { exactMatch, extractAnswer, loglikelihood, meanStderr, textLoglik } from './score.js';
import { modelHash, parameterCount, type EvalModel } from './model.js';
import type { EvalResults, ResultRow } from './results.js';
import { fnv1a, mulberry32 as rng } from '../data/random.js';
import { chatPrompt, runLmevalTask } from './lmeval-run.js';

export interface EvalOptions {
  /** Score at most this many examples per task (the first ones, or a seeded sample with `sample: true`). */
  limit?: number | null;
  batchSize?: number;
  seed?: number;
  label?: string;
  methods?: string[];
  /** Prints progress lines (to stderr). */
  progress?: boolean;
  /**
   * A task that fails (unreadable data, a bad record, a model that cannot run it) is recorded in the results'
   * `failed` and the other tasks are still scored; without it the first failure is thrown.
   */
  keepGoing?: boolean;
  /** Receives every scored item of a task (`--log-samples`), once the task is scored. */
  onSamples?: (task: string, samples: Sample[]) => void;
  /** Prompts go through the model's chat template as one user turn (lm-evaluation-harness's --apply_chat_template). */
  applyChatTemplate?: boolean;
  /**
   * Text scores already computed by this evaluate() call, by text (the whole of it) and limit: two perplexity tasks over the same text
   * (next-token accuracy and loss as two primaries, as retain demo's) score it once. Set by evaluate() only: the
   * weights must not change while it lives.
   */
  textScores?: Map<string, ReturnType<typeof textLoglik>>;
}

import type { Sample } from './results.js';

export type { Sample };

/** Per-request argument lists as lm-evaluation-harness writes them: {gen_args_0: {arg_0, arg_1}, ...}. */
function requestArgs(reqs: unknown[][]): Sample['arguments'] {
  return Object.fromEntries(reqs.map((args, i) => [`gen_args_${i}`, Object.fromEntries(args.map((a, j) => [`arg_${j}`, a]))]));
}

interface Metric {
  name: string;
  value: number;
  stderr: number | null;
  higherIsBetter: boolean;
}

/** A task kind's metrics and, when asked for, its scored items. */
interface Scored {
  metrics: Metric[];
  samples: Sample[];
  /** Examples scored, when not every doc was (perplexity under --limit). */
  n?: number;
  /** Examples whose prompt was cut to the model's context. */
  truncated?: number;
}


/** The k few-shot examples for a doc: other docs with their gold answers, drawn with a per-doc seed. */
function fewshotExamples(spec: TaskSpec, pool: Doc[], doc: Doc, seed: number): { q: string; a: string }[] {
  if (spec.num_fewshot === 0) return [];
  const r = rng(seed ^ fnv1a(doc.id));
  const cand = pool.filter((d) => d.id !== doc.id);
  const shots: Doc[] = [];
  const used = new Set<number>();
  while (shots.length < Math.min(spec.num_fewshot, cand.length)) {
    const i = Math.floor(r() * cand.length);
    if (used.has(i)) continue;
    used.add(i);
    shots.push(cand[i]);
  }
  return shots.map((d) => ({ q: d.contexts ? d.contexts[d.gold!] : d.prompt, a: spec.kind === 'multiple_choice' ? d.choices![d.gold!] : d.answer! }));
}

/**
 * Preamble, few-shot examples and the prompt: as one text (each example's answer after the target delimiter, the
 * examples joined by the few-shot delimiter), or (--apply-chat-template) through the model's chat template with the
 * preamble as the system turn and each example as a user and an assistant turn, as lm-evaluation-harness 0.4.13
 * renders them.
 */
function fullPrompt(m: EvalModel, spec: TaskSpec, d: Doc, shots: { q: string; a: string }[], prompt: string, o: EvalOptions): string {
  if (!o.applyChatTemplate) return (d.preamble ?? '') + shots.map((s) => s.q + spec.target_delimiter + s.a + spec.fewshot_delimiter).join('') + prompt;
  return chatPrompt(m, [
    ...(d.preamble ? [{ role: 'system', content: d.preamble }] : []),
    ...shots.flatMap((s) => [{ role: 'user', content: s.q }, { role: 'assistant', content: s.a }]),
    { role: 'user', content: prompt },
  ]);
}

function say(o: EvalOptions, msg: string): void {
  if (o.progress) process.stderr.write(msg + '\n');
}

function runMultipleChoice(m: EvalModel, spec: TaskSpec, docs: Doc[], pool: Doc[], o: EvalOptions): Scored {
  // Under a chat template the choice follows the assistant header directly, as lm-evaluation-harness scores it.
  const delim = o.applyChatTemplate ? '' : spec.target_delimiter;
  const reqs = docs.flatMap((d) => {
    const shots = fewshotExamples(spec, pool, d, o.seed ?? 0);
    return d.choices!.map((c, j) => ({ context: fullPrompt(m, spec, d, shots, d.contexts ? d.contexts[j] : d.prompt, o), continuation: delim + c }));
  });
  let last = 0;
  const ll = loglikelihood(m, reqs, o.batchSize ?? 16, (done) => {
    if (o.progress && done - last >= 256) {
      last = done;
      say(o, `  ${spec.name}: ${done}/${reqs.length} continuations`);
    }
  });
  const acc: number[] = [];
  const accNorm: number[] = [];
  const samples: Sample[] = [];
  let k = 0;
  docs.forEach((d, i) => {
    const n = d.choices!.length;
    const lls = ll.slice(k, k + n).map((x) => x.logprob);
    // lm-evaluation-harness's acc_norm: divided by the choice's length in characters (code points), without the
    // target delimiter; under partial scoring (WinoGrande) the choices are the per-option contexts.
    const norm = lls.map((x, j) => x / [...(d.contexts ? d.contexts[j] : d.choices![j])].length);
    const argmax = (xs: number[]) => xs.reduce((bi, x, j) => (x > xs[bi] ? j : bi), 0);
    const [pred, predNorm] = [argmax(lls), argmax(norm)];
    acc.push(pred === d.gold ? 1 : 0);
    accNorm.push(predNorm === d.gold ? 1 : 0);
    if (o.onSamples) {
      const mine = reqs.slice(k, k + n);
      const resps = ll.slice(k, k + n).map((x) => [x.logprob, x.greedy]);
      samples.push({
        doc_id: i, doc: { id: d.id, prompt: d.prompt, ...(d.contexts ? { contexts: d.contexts } : {}), choices: d.choices, gold: d.gold },
        target: String(d.gold), arguments: requestArgs(mine.map((r) => [r.context, r.continuation])),
        resps: resps.map((r) => [r]), filtered_resps: resps, acc: acc[i], acc_norm: accNorm[i], pred, pred_norm: predNorm,
        ...(ll.slice(k, k + n).some((x) => x.truncated) ? { truncated: true } : {}),
      });
    }
    k += n;
  });
  const a = meanStderr(acc);
  const an = meanStderr(accNorm);
  // Counted per example: a question with any choice cut is one cut prompt.
  let truncated = 0;
  for (let d = 0, j = 0; d < docs.length; j += docs[d].choices!.length, d++) if (ll.slice(j, j + docs[d].choices!.length).some((x) => x.truncated)) truncated++;
  if (truncated) say(o, `warning: ${spec.name}: ${truncated} of ${docs.length} prompts are longer than the model's context of ${m.maxLength} tokens and lost their start (as lm-evaluation-harness cuts them)${spec.num_fewshot ? '; fewer shots (num_fewshot) would fit' : ''}`);
  return {
    truncated,
    metrics: [
      { name: 'acc', value: a.mean, stderr: a.stderr, higherIsBetter: true },
      { name: 'acc_norm', value: an.mean, stderr: an.stderr, higherIsBetter: true },
    ],
    samples,
  };
}

function runGenerate(m: EvalModel, spec: TaskSpec, docs: Doc[], pool: Doc[], o: EvalOptions): Scored {
  const em: number[] = [];
  const samples: Sample[] = [];
  const t0 = performance.now();
  const gen = { until: spec.generation.stop, max_gen_toks: spec.generation.max_new_tokens };
  docs.forEach((d, i) => {
    const prompt = fullPrompt(m, spec, d, fewshotExamples(spec, pool, d, o.seed ?? 0), d.prompt, o);
    const text = torch.inferenceMode(() => m.generate(prompt, { maxNewTokens: spec.generation.max_new_tokens, stop: spec.generation.stop }));
    const answer = extractAnswer(text, spec.generation.extract);
    em.push(exactMatch(answer, d.answer!) ? 1 : 0);
    if (o.onSamples) {
      samples.push({ doc_id: i, doc: { id: d.id, prompt: d.prompt, answer: d.answer }, target: d.answer!, arguments: requestArgs([[prompt, gen]]), resps: [[text]], filtered_resps: [answer], exact_match: em[i] });
    }
    if (o.progress && (i + 1) % 50 === 0) say(o, `  ${spec.name}: ${i + 1}/${docs.length} generated (${((i + 1) / ((performance.now() - t0) / 1000)).toFixed(1)}/s)`);
  });
  const e = meanStderr(em);
  return { metrics: [{ name: 'exact_match', value: e.mean, stderr: e.stderr, higherIsBetter: true }], samples };
}

function runPerplexity(m: EvalModel, spec: TaskSpec, docs: Doc[], o: EvalOptions): Scored {
  const texts = docs.map((d) => (spec.unknown_chars === 'drop' ? m.dropUnknown(d.text!) : d.text!));
  // --limit bounds the text as well as the documents: one long text (split: whole) is one document of many windows.
  const key = `${o.limit || Infinity}:${o.batchSize ?? 8}:${texts.join('\u0000')}`;
  const all = o.textScores?.get(key) ?? textLoglik(m, texts, o.batchSize ?? 8, undefined, o.limit || Infinity);
  o.textScores?.set(key, all);
  // Texts past the cap are not scored at all (they come last); the rest, the last one perhaps in part, are.
  const s = all.filter((x) => !(x.cut && x.tokens === 0));
  if (all.some((x) => x.cut)) say(o, `  ${spec.name}: --limit ${o.limit} scores the first ${o.limit} windows of ${m.maxLength} tokens: ${s.reduce((n, x) => n + x.chars, 0)} characters of ${s.length} of ${texts.length} texts`);
  // lm-evaluation-harness's rolling log-likelihood items: the text is the doc, the target and the one argument.
  const samples: Sample[] = !o.onSamples ? [] : s.map((x, i) => ({
    doc_id: i, doc: { id: docs[i].id, text: texts[i] }, target: texts[i], arguments: requestArgs([[texts[i]]]), resps: [[-x.nll]], filtered_resps: [-x.nll],
    tokens: x.tokens, correct: x.correct, chars: x.chars, bytes: x.bytes, ...(x.cut ? { cut: true } : {}),
  }));
  const tot = s.reduce((a, x) => ({ nll: a.nll + x.nll, tokens: a.tokens + x.tokens, correct: a.correct + x.correct, chars: a.chars + x.chars, bytes: a.bytes + x.bytes }), { nll: 0, tokens: 0, correct: 0, chars: 0, bytes: 0 });
  if (tot.tokens === 0) throw new Error(`task ${spec.name}: the text has no tokens to score`);
  const acc = tot.correct / tot.tokens;
  const metrics: Metric[] = [
    { name: 'next_token_acc', value: acc, stderr: Math.sqrt((acc * (1 - acc)) / Math.max(1, tot.tokens - 1)), higherIsBetter: true },
    { name: 'ce', value: tot.nll / tot.tokens, stderr: null, higherIsBetter: false },
    { name: 'perplexity', value: Math.exp(tot.nll / tot.tokens), stderr: null, higherIsBetter: false },
    { name: 'bits_per_char', value: tot.nll / Math.LN2 / tot.chars, stderr: null, higherIsBetter: false },
    { name: 'bits_per_byte', value: tot.nll / Math.LN2 / tot.bytes, stderr: null, higherIsBetter: false },
    { name: 'nats_per_char', value: tot.nll / tot.chars, stderr: null, higherIsBetter: false },
  ];
  return { metrics, samples, n: s.length };
}

function runImageClassification(m: EvalModel, spec: TaskSpec, docs: Doc[], o: EvalOptions): Scored {
  const bs = (o.batchSize ?? 16) * 16;
  const acc: number[] = [];
  const samples: Sample[] = [];
  const device = m.module.parameters()[0]?.device ?? 'cpu';
  torch.inferenceMode(() => {
    for (let s = 0; s < docs.length; s += bs) {
      const chunk = docs.slice(s, s + bs);
      const n = chunk[0].image!.length;
      const flat = new Float32Array(chunk.length * n);
      chunk.forEach((d, i) => flat.set(d.image!, i * n));
      const pred = torch.tidy(() => m.classify(torch.tensor(flat, { shape: [chunk.length, ...spec.image_shape] }).to({ device })).argmax(-1).to({ device: 'cpu' }).data() as BigInt64Array);
      chunk.forEach((d, i) => {
        acc.push(Number(pred[i]) === d.label ? 1 : 0);
        if (o.onSamples) samples.push({ doc_id: s + i, doc: { id: d.id, label: d.label }, target: String(d.label), arguments: {}, resps: [[Number(pred[i])]], filtered_resps: [Number(pred[i])], acc: acc[s + i] });
      });
    }
  });
  const a = meanStderr(acc);
  return { metrics: [{ name: 'acc', value: a.mean, stderr: a.stderr, higherIsBetter: true }], samples };
}

/** Loads a task's docs (and few-shot pool), applying the limit. */
export async function loadDocs(t: ResolvedTask, limit?: number | null): Promise<{ docs: Doc[]; pool: Doc[]; original: number }> {
  if (t.lmeval) throw new Error(`${t.spec.name}: an lm-evaluation-harness task file runs under retain eval and retain compare, not as a training monitor's probe; write the probe as a retain task file (README, "Evaluation tasks")`);
  const records = await readTaskRecords(t.spec, t.dataPath);
  let docs = records.map((r) => toDoc(t.spec, r));
  if (t.spec.kind === 'perplexity') docs = splitText(t.spec, docs);
  // Scoring nothing would write a result of n=0 and value null that reads like a measurement.
  if (docs.length === 0 || (t.spec.kind === 'perplexity' && docs.every((d) => !d.text!.trim()))) throw new Error(noExamples(t.spec.name, t.dataPath));
  const original = docs.length;
  const pool = t.fewshotPath ? (await readTaskRecords(t.spec, t.fewshotPath)).map((r) => toDoc(t.spec, r)) : docs;
  if (pool.length === 0) throw new Error(`${t.spec.name}: ${t.fewshotPath} (fewshot_data) holds no examples to draw ${t.spec.num_fewshot}-shot prompts from; point fewshot_data at a file with records, or set num_fewshot: 0`);
  if (limit && limit > 0) docs = docs.slice(0, limit);
  return { docs, pool, original };
}

/** Scores loaded docs (synchronous, so the training loop can call it between steps). */
export function scoreDocs(m: EvalModel, spec: TaskSpec, docs: Doc[], pool: Doc[], o: EvalOptions = {}): ResultRow[] {
  const wanted = spec.kind === 'image_classification' ? 'classifier' : 'lm';
  if (m.kind !== wanted) throw new Error(`task ${spec.name} (${spec.kind}) needs a ${wanted === 'lm' ? 'language model' : 'classifier'}; ${m.name} is a ${m.kind === 'lm' ? 'language model' : 'classifier'}`);
  const wasTraining = m.module.training;
  m.module.eval();
  let scored: Scored;
  try {
    switch (spec.kind) {
      case 'multiple_choice': scored = runMultipleChoice(m, spec, docs, pool, o); break;
      case 'generate': scored = runGenerate(m, spec, docs, pool, o); break;
      case 'perplexity': scored = runPerplexity(m, spec, docs, o); break;
      case 'image_classification': scored = runImageClassification(m, spec, docs, o); break;
    }
  } finally {
    if (wasTraining) m.module.train();
  }
  const { metrics } = scored;
  const primary = defaultPrimary(spec);
  if (!metrics.some((x) => x.name === primary)) throw new Error(`task ${spec.name}: primary metric '${primary}' is not one of ${metrics.map((x) => x.name).join(', ')}`);
  o.onSamples?.(spec.name, scored.samples);
  const truncated = scored.truncated ? { truncated: scored.truncated } : {};
  return metrics.map((x) => ({ task: spec.name, metric: x.name, value: x.value, stderr: x.stderr, higher_is_better: x.higherIsBetter, n: scored.n ?? docs.length, role: spec.role, primary: x.name === primary, ...truncated }));
}

export async function evaluateTask(m: EvalModel, t: ResolvedTask, o: EvalOptions = {}): Promise<{ rows: ResultRow[]; n: number; original: number }> {
  if (t.lmeval) return runLmevalTask(m, t.lmeval, { limit: o.limit, batchSize: o.batchSize, applyChatTemplate: o.applyChatTemplate, role: t.spec.role, onSamples: o.onSamples });
  const { docs, pool, original } = await loadDocs(t, o.limit);
  const rows = scoreDocs(m, t.spec, docs, pool, o);
  return { rows, n: rows[0]?.n ?? docs.length, original };
}

/** A results document for `m` with no task scored yet. */
export function newResults(m: EvalModel, tasks: ResolvedTask[], o: EvalOptions = {}): EvalResults {
  return {
    format: 'retain.eval/1',
    label: o.label ?? m.name,
    model: { path: m.path, name: m.name, hash: modelHash(m.module), parameters: parameterCount(m.module) },
    methods: o.methods ?? [],
    date: new Date().toISOString(),
    config: { tasks: tasks.map((t) => t.spec.name), limit: o.limit ?? null, batch_size: o.batchSize ?? 16, seed: o.seed ?? 0, device: m.module.parameters()[0]?.device ?? 'cpu' },
    rows: [],
    results: {},
    higher_is_better: {},
    'n-samples': {},
    versions: {},
    configs: {},
  };
}

/** Adds one scored task: its rows, and its blocks in lm-evaluation-harness's layout. */
export function addTaskResults(res: EvalResults, t: { spec: { name: string; version: number }; dataPath: string; lmeval?: ResolvedTask['lmeval'] }, rows: ResultRow[], n: { original: number; effective: number }): void {
  const name = t.spec.name;
  res.rows.push(...rows);
  res.results[name] = { alias: name };
  res.higher_is_better[name] = {};
  for (const row of rows) {
    res.results[name][`${row.metric},none`] = row.value;
    res.results[name][`${row.metric}_stderr,none`] = row.stderr ?? 'N/A';
    res.higher_is_better[name][row.metric] = row.higher_is_better;
  }
  res['n-samples'][name] = n;
  res.versions[name] = t.spec.version;
  res.configs[name] = t.lmeval ? { ...t.lmeval.config, config_source: t.lmeval.file } : { ...t.spec, data: t.dataPath };
}

/** Evaluates every task and returns the results document. */
export async function evaluate(m: EvalModel, tasks: ResolvedTask[], o: EvalOptions = {}): Promise<EvalResults> {
  const t0 = performance.now();
  const res = newResults(m, tasks, o);
  o = { ...o, textScores: new Map() };
  for (const t of tasks) {
    const ts = performance.now();
    say(o, `${t.spec.name}: evaluating ${m.name}`);
    const name = t.spec.name;
    let r: Awaited<ReturnType<typeof evaluateTask>>;
    try {
      r = await evaluateTask(m, t, o);
    } catch (e) {
      if (!o.keepGoing) throw e;
      const msg = (e as Error).message ?? String(e);
      (res.failed ??= {})[name] = msg;
      say(o, `${name}: failed: ${msg}`);
      continue;
    }
    addTaskResults(res, t, r.rows, { original: r.original, effective: r.n });
    const p = r.rows.find((x) => x.primary)!;
    say(o, `${name}: ${p.metric} = ${p.value.toFixed(4)} (n=${r.n}, ${((performance.now() - ts) / 1000).toFixed(1)} s)`);
  }
  res.eval_seconds = +((performance.now() - t0) / 1000).toFixed(2);
  return res;
}
