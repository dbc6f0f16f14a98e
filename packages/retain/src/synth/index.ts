// `retain synth`: data-oblivious replay (docs/METHODS.md §3). General-domain examples are rebuilt from the base model
// itself, for mixing (the general source) or EWC (the Fisher data) when the user has no general data:
//
//   bos     — context-free samples from BOS (Bansal & Sanghavi 2025): approximate the pretraining distribution;
//   magpie  — the opening of a user turn in the model's own chat template, so that the model writes an instruction
//             from its own training distribution, then (optionally) answers it (Magpie; Ding & Wang 2025);
//   fewshot — k demonstrations and the start of a new example; the sample is parsed back into the demonstrations'
//             fields (self-synthesised rehearsal, Huang et al. 2024).
//
// Candidates pass text filters, the base model's loss bounds and deduplication; with answer models, consensus picks
// each prompt's best answer and drops weak prompts; with select, k-means over mean-pooled last hidden states keeps a
// diverse subset.
//
// Determinism and resume. Candidates come in rounds of `batchSize` samples of one prompt; round r seeds torch's
// generator with (seed, r) and candidate index i = r·batchSize + j is recorded in its output line. A rerun with the
// same output file reads what is there, rebuilds the deduplication index from it, regenerates the round holding the
// last recorded index and goes on after it, so an interrupted run and an uninterrupted one write the same file.
// Settings that change what is generated are kept beside the output (<out>.meta.json) and a rerun with other
// settings is refused. Each record is one write of a whole line, synced; a torn last line is cut off on resume (with a
// notice), whether or not a newline followed it, since a line cut by hand or by a tool often gains one.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as torch from '@retain/torch';
import { loadPretrained, type Pretrained } from '../models/hub.js';
import { readRecords } from '../data/readers.js';
import { epochOrder } from '../data/loader.js';
import type { ChatTemplate } from '../tokenizers/types.js';
import { synthModel, type Sample, type SampleOptions, type SynthModel } from './lm.js';
import { Deduplicator, type DedupOptions } from './dedup.js';
import { lossFilter, resolveFilters, textFilter, type FilterOptions } from './filters.js';
import { demoFields, fewshotPrompt, jinjaChatTemplate, parseFewshot, stopText, userTurnOpening, type Demo } from './prompts.js';
import { answer, basePromptIds, rankAnswers, specialStops, type AnswerTask, type Candidate } from './consensus.js';
import { selectDiverse } from './kmeans.js';

export type SynthMode = 'bos' | 'magpie' | 'fewshot';

export interface SynthOptions {
  /** Base model: a path (HF directory, llama2.c .bin, ml5 folder) or a loaded model. */
  model: string | Pretrained;
  tokenizer?: string;
  /** Output JSONL; with `select`, the selection (the candidate pool goes to <out>.pool.jsonl). */
  out: string;
  /** Records wanted (with `select`: the size of the pool selected from). */
  count: number;
  mode?: SynthMode;
  /** fewshot: demonstrations (a data file or records). */
  demos?: string | Record<string, unknown>[];
  /** fewshot: demonstrations per prompt. Default 3. */
  shots?: number;
  /** fewshot + consensus: the prompt and answer fields. Default: the first and last string fields. */
  promptField?: string;
  answerField?: string;
  /** magpie: let the base model answer each instruction (chat records). Default true. */
  answer?: boolean;
  /** magpie: a system message placed before the user turn. */
  system?: string;
  /** Jinja chat template source overriding the tokenizer's (magpie with models that have none). */
  chatTemplate?: string;
  /** Models without BOS/EOS (the char-LSTM) start context-free samples after this text. Default '\n'. */
  startText?: string;
  maxNewTokens?: number;
  /** Tokens per answer (magpie, consensus). Default maxNewTokens. */
  answerTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  /** Samples drawn per prompt in one batch. Default 16. */
  batchSize?: number;
  dedup?: DedupOptions | false;
  filters?: FilterOptions;
  /** Models that answer each prompt and score every answer (consensus). */
  answerModels?: (string | Pretrained)[];
  /** Drop a prompt whose best answer scores below this (1-5 scale, see consensus.ts). */
  minScore?: number;
  /** Diverse selection: k-means clusters and how many records to keep nearest each centroid. */
  select?: { k: number; perCluster: number; seed?: number };
  /** Stop after this many candidates in all (resume counts the earlier ones). Default 50 × count. */
  maxAttempts?: number;
  /** Progress lines: true → stderr, a function → each line, false → none. Default true. */
  progress?: boolean | ((line: string) => void);
}

export interface SynthRecordMeta {
  mode: SynthMode;
  seed: number;
  index: number;
  tokens: number;
  /** The base model's mean token loss (nats) of the text on its own. */
  loss: number;
  finish: Sample['finish'];
  answer_model?: string;
  score?: number;
  scores?: number[];
}

export type SynthRecord = Record<string, unknown> & { id: string; synth: SynthRecordMeta };

export interface SynthResult {
  /** The file the records are in (the selection when selecting). */
  out: string;
  pool: string | null;
  records: SynthRecord[];
  /** Records in the (pool) file, and how many of them this call added. */
  accepted: number;
  added: number;
  /** Candidates drawn in all (resume included). */
  attempted: number;
  /** Dropped candidates by reason (this call only). */
  rejected: Record<string, number>;
  selected: number | null;
  seconds: number;
}

/** Seeds of round r and of answer a of candidate i: distinct streams from one user seed. */
function roundSeed(seed: number, r: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(r + 1, 0x85ebca6b)) >>> 0;
}
function answerSeed(seed: number, i: number, a: number): number {
  return (Math.imul(seed + 1, 0x27d4eb2f) ^ Math.imul(i + 1, 0x165667b1) ^ Math.imul(a + 1, 0xc2b2ae35)) >>> 0;
}

/** The text a record's filters and deduplication look at: a document, an instruction, or the example's fields. */
export function recordKey(rec: Record<string, unknown>, fields: string[] | null = null): string {
  if (typeof rec.text === 'string') return rec.text;
  if (Array.isArray(rec.messages)) return String((rec.messages[0] as { content?: unknown })?.content ?? '');
  const keys = fields ?? Object.keys(rec).filter((k) => k !== 'id' && k !== 'synth' && typeof rec[k] === 'string');
  return keys.map((k) => String(rec[k]).trim()).join('\n');
}

/** The whole text of a record (for embeddings): every message or field. */
export function recordText(rec: Record<string, unknown>): string {
  if (typeof rec.text === 'string') return rec.text;
  if (Array.isArray(rec.messages)) return rec.messages.map((m) => String((m as { content?: unknown }).content ?? '')).join('\n');
  return recordKey(rec);
}

/**
 * Reads a synth JSONL for resume: its records, and the byte length of the lines to keep. The last line is the record
 * an interrupted run was writing when it has no final newline or does not parse: it is left out (`torn` describes it)
 * and the rerun writes it again. Any other line that does not parse is damage this code did not cause: an error.
 */
function readExisting(path: string): { records: SynthRecord[]; goodBytes: number; size: number; torn: string | null } {
  if (!existsSync(path)) return { records: [], goodBytes: 0, size: 0, torn: null };
  const buf = readFileSync(path);
  const lines: { text: string; start: number; no: number }[] = [];
  for (let start = 0, no = 1; start < buf.length; no++) {
    const nl = buf.indexOf(0x0a, start);
    const end = nl < 0 ? buf.length : nl + 1;
    const text = buf.subarray(start, end).toString('utf8');
    if (text.trim()) lines.push({ text, start, no });
    start = end;
  }
  const records: SynthRecord[] = [];
  let goodBytes = buf.length;
  let torn: string | null = null;
  for (let i = 0; i < lines.length; i++) {
    const { text, start, no } = lines[i];
    const where = `${path}:${no}`;
    let r: SynthRecord | null = null;
    let bad: string | null = null;
    try {
      r = JSON.parse(text);
    } catch (e) {
      bad = (e as Error).message;
    }
    if (i === lines.length - 1 && (bad !== null || !text.endsWith('\n'))) {
      goodBytes = start;
      torn = `${where} (${Buffer.byteLength(text)} bytes, ${bad !== null ? 'not valid JSON' : 'no final newline'})`;
      break;
    }
    if (bad !== null) throw new Error(`${where}: not valid JSON (${bad}); only the last line can be a record cut off by an interrupted run, so this is damage: fix or delete the line, or remove the file to start over`);
    if (!r || typeof r.synth !== 'object' || !Number.isInteger(r.synth?.index)) throw new Error(`${where}: not a retain synth record (no synth.index); remove the file or choose another --out`);
    records.push(r);
  }
  return { records, goodBytes, size: buf.length, torn };
}

function hashOf(v: unknown): string {
  return createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);
}

function leadingSpace(values: string[]): string {
  const lead = /^\s*/.exec(values[0])![0];
  return values.every((v) => v.startsWith(lead)) ? lead.replace(/\n/g, '') : '';
}

interface Progress {
  line(force: boolean, accepted: number, target: number, attempted: number, rejected: Record<string, number>): void;
}

function progressReporter(p: SynthOptions['progress'], startAccepted: number): Progress {
  const emit = p === false ? null : typeof p === 'function' ? p : (l: string) => process.stderr.write(l + '\n');
  const t0 = performance.now();
  let last = 0;
  return {
    line(force, accepted, target, attempted, rejected) {
      if (!emit) return;
      const now = performance.now();
      if (!force && now - last < 2000) return;
      last = now;
      const secs = (now - t0) / 1000;
      const rate = (accepted - startAccepted) / Math.max(secs, 1e-9);
      const eta = rate > 0 ? (target - accepted) / rate : Infinity;
      const drops = Object.entries(rejected).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${n} ${k}`).join(', ');
      emit(`synth: ${accepted}/${target} kept, ${attempted} tried${drops ? ` (dropped: ${drops})` : ''} | ${rate.toFixed(2)} kept/s | ETA ${Number.isFinite(eta) ? `${Math.max(0, eta).toFixed(0)}s` : '?'}`);
    },
  };
}

/** Lines the user must see even with progress off (data dropped on resume): the progress function, else stderr. */
function notice(p: SynthOptions['progress'], line: string): void {
  if (typeof p === 'function') p(line);
  else process.stderr.write(line + '\n');
}

const NO_TOKENIZER = "none was given and its directory holds no tokenizer.json or llama2.c tok*.bin";

async function loadModel(m: string | Pretrained, role: 'base' | 'answer', tokenizer?: string): Promise<{ p: Pretrained; owned: boolean }> {
  if (typeof m !== 'string') return { p: m, owned: false };
  const p = await loadPretrained(m, { tokenizer });
  // Only the base model has a tokenizer option; an answer model's must sit with its weights.
  if (!p.tokenizer) {
    p.model.dispose();
    throw new Error(role === 'base'
      ? `synth: ${m} has no tokenizer (${NO_TOKENIZER}); pass --tokenizer <file or directory>, or put one there`
      : `synth: answer model ${m} has no tokenizer (${NO_TOKENIZER}); put its tokenizer there (--tokenizer is the base model's only)`);
  }
  p.model.eval();
  return { p, owned: true };
}

/**
 * The numeric options, for API callers (the CLI's option parsers already hold each to its range): a value outside its
 * range would not fail but quietly do something else (a negative temperature decodes greedily, top-p 1.5 is no top-p).
 */
function checkNumbers(o: SynthOptions, sampling: SampleOptions, answerOpts: SampleOptions, f: FilterOptions, maxAttempts: number): void {
  const need = (ok: boolean, what: string, v: unknown) => {
    if (!ok) throw new Error(`synth: ${what}, got ${v}`);
  };
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  need(posInt(sampling.maxNewTokens), 'maxNewTokens (-n) must be a positive integer', sampling.maxNewTokens);
  need(posInt(answerOpts.maxNewTokens), 'answerTokens must be a positive integer', answerOpts.maxNewTokens);
  need(Number.isFinite(sampling.temperature) && sampling.temperature! >= 0, 'temperature must be a number ≥ 0 (0 decodes greedily)', sampling.temperature);
  need(sampling.topP === undefined || (sampling.topP > 0 && sampling.topP <= 1), 'topP must be in (0, 1]', sampling.topP);
  need(sampling.topK === undefined || (Number.isInteger(sampling.topK) && sampling.topK >= 0), 'topK must be an integer ≥ 0 (0: all tokens)', sampling.topK);
  need(o.shots === undefined || posInt(o.shots), 'shots must be a positive integer', o.shots);
  need(posInt(maxAttempts), 'maxAttempts must be a positive integer', maxAttempts);
  if (f.minTokens !== undefined && f.maxTokens !== undefined && f.minTokens > f.maxTokens) {
    throw new Error(`synth: min tokens ${f.minTokens} is above max tokens ${f.maxTokens} (--min-tokens, --max-tokens), so no sample could pass; lower --min-tokens or raise --max-tokens`);
  }
  if (f.minLoss !== undefined && f.maxLoss !== undefined && f.minLoss > f.maxLoss) {
    throw new Error(`synth: min loss ${f.minLoss} is above max loss ${f.maxLoss} (--min-loss, --max-loss), so no sample could pass; lower --min-loss or raise --max-loss`);
  }
}

function poolPath(out: string): string {
  return out.replace(/\.jsonl?$/i, '') + '.pool.jsonl';
}

export async function synthesize(o: SynthOptions): Promise<SynthResult> {
  const t0 = performance.now();
  const mode: SynthMode = o.mode ?? 'bos';
  if (!['bos', 'magpie', 'fewshot'].includes(mode)) throw new Error(`synth: mode must be bos, magpie or fewshot, got '${mode}'`);
  if (!(Number.isInteger(o.count) && o.count > 0)) throw new Error(`synth: count must be a positive integer, got ${o.count}`);
  const batchSize = o.batchSize ?? 16;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) throw new Error(`synth: batchSize must be a positive integer, got ${batchSize}`);
  const seed = o.seed ?? 0;
  const sampling: SampleOptions = { maxNewTokens: o.maxNewTokens ?? 128, temperature: o.temperature ?? 1, topP: o.topP, topK: o.topK };
  const answerOpts: SampleOptions = { ...sampling, maxNewTokens: o.answerTokens ?? sampling.maxNewTokens };
  const filters = resolveFilters(o.filters ?? {});
  const answerModelsGiven = o.answerModels ?? [];
  if (mode === 'bos' && (answerModelsGiven.length || o.minScore !== undefined)) throw new Error('synth: bos samples have no prompt to answer; answer models and min score need mode magpie or fewshot');
  if (o.select && !(Number.isInteger(o.select.k) && o.select.k > 0 && Number.isInteger(o.select.perCluster) && o.select.perCluster > 0)) {
    throw new Error('synth: select needs positive integers k (clusters) and perCluster');
  }
  const maxAttempts = o.maxAttempts ?? 50 * o.count;
  checkNumbers(o, sampling, answerOpts, filters, maxAttempts);
  // Every path before the first load, so a typo in the last answer model does not cost loading the others.
  for (const [what, p] of [['model', o.model], ...answerModelsGiven.map((a) => ['answer model', a] as const)] as const) {
    if (typeof p === 'string' && !existsSync(p)) throw new Error(`synth: ${what} not found: ${p}`);
  }

  const base = await loadModel(o.model, 'base', o.tokenizer);
  const owned: SynthModel[] = [];
  const tokForTpl = base.p.tokenizer;
  const override: ChatTemplate | undefined = o.chatTemplate
    ? jinjaChatTemplate(o.chatTemplate, { bos: tokForTpl && tokForTpl.bosId >= 0 ? tokForTpl.piece(tokForTpl.bosId) : '', eos: tokForTpl && tokForTpl.eosId >= 0 ? tokForTpl.piece(tokForTpl.eosId) : '' })
    : undefined;
  const m = synthModel(base.p, { name: typeof o.model === 'string' ? o.model : base.p.source.path, chatTemplate: override });
  if (base.owned) owned.push(m);
  const answerers: SynthModel[] = [];
  try {
    for (const a of answerModelsGiven) {
      const l = await loadModel(a, 'answer');
      const sm = synthModel(l.p, { name: typeof a === 'string' ? a : l.p.source.path });
      if (l.owned) owned.push(sm);
      answerers.push(sm);
    }
    const startIds = m.startIds(o.startText);

    // ---- the mode's prompt for round r, how to read a sample, and what the record looks like --------------------
    let roundPrompt: (r: number) => { ids: number[]; stop: string[]; stopTokens: number[] };
    let fields: string[] | null = null;
    let demos: Demo[] = [];
    let leads: Record<string, string> = {};
    let promptField = '';
    let answerField = '';
    if (mode === 'bos') {
      // llama2.c's models mark document boundaries with BOS, so a sample ends at either.
      const stopTokens = m.tokenizer.bosId >= 0 ? [m.tokenizer.bosId] : [];
      roundPrompt = () => ({ ids: startIds, stop: [], stopTokens });
    } else if (mode === 'magpie') {
      if (!m.chatTemplate) throw new Error(`synth: magpie needs a chat template; ${m.name} has none (pass chatTemplate / --chat-template, or use mode fewshot or bos)`);
      const open = userTurnOpening(m.chatTemplate, o.system);
      let ids = m.tokenizer.encode(open.prefix, { bos: false });
      if (m.tokenizer.bosId >= 0 && ids[0] !== m.tokenizer.bosId) ids = [m.tokenizer.bosId, ...ids];
      const end = stopText(open.suffix);
      const stopTokens = specialStops(m, end);
      const stop = stopTokens.length || !end ? [] : [end];
      roundPrompt = () => ({ ids, stop, stopTokens });
    } else {
      if (!o.demos) throw new Error('synth: fewshot needs demonstrations (demos: a JSONL file or records)');
      const raw = typeof o.demos === 'string' ? await readRecords(o.demos) : o.demos;
      fields = demoFields(raw);
      demos = raw.map((d) => Object.fromEntries(fields!.map((f) => [f, String(d[f])])));
      leads = Object.fromEntries(fields.map((f) => [f, leadingSpace(demos.map((d) => d[f]))]));
      promptField = o.promptField ?? fields[0];
      answerField = o.answerField ?? fields[fields.length - 1];
      for (const f of [promptField, answerField]) if (!fields.includes(f)) throw new Error(`synth: field '${f}' is not one of the demonstrations' fields (${fields.join(', ')})`);
      if ((answerers.length || o.minScore !== undefined) && promptField === answerField) throw new Error('synth: consensus needs a prompt field and a different answer field; the demonstrations have one field');
      const shots = Math.max(1, Math.min(o.shots ?? 3, demos.length));
      roundPrompt = (r) => {
        const order = epochOrder(demos.length, seed, r);
        // Fewer demonstrations when k of them and the new example would not fit the model's context.
        for (let k = shots; k >= 1; k--) {
          const ids = basePromptIds(m, fewshotPrompt(order.slice(0, k).map((i) => demos[i]), fields!));
          if (ids.length + sampling.maxNewTokens <= m.contextLength || k === 1) return { ids, stop: ['\n\n'], stopTokens: [] };
        }
        throw new Error('unreachable');
      };
    }
    const consensus = mode !== 'bos' && (answerers.length > 0 || o.minScore !== undefined);
    const answerMagpie = mode === 'magpie' && (o.answer ?? true);
    const scorers = answerers.length ? answerers : [m];

    // ---- output, settings and resume --------------------------------------------------------------------------
    const dedup = o.dedup === false ? null : new Deduplicator(o.dedup);
    const file = o.select ? poolPath(o.out) : o.out;
    const metaPath = `${file}.meta.json`;
    const settings = {
      version: 1, model: typeof o.model === 'string' ? o.model : base.p.source.path, mode, seed, batchSize, sampling, answerOpts,
      startIds, system: o.system ?? null, chatTemplate: o.chatTemplate ? hashOf(o.chatTemplate) : null,
      demos: mode === 'fewshot' ? hashOf(demos) : null, shots: o.shots ?? 3, promptField, answerField, answer: answerMagpie,
      dedup: dedup?.settings ?? false, filters, answerModels: answerers.map((a) => a.name), minScore: o.minScore ?? null,
    };
    if (existsSync(file) && statSync(file).size > 0) {
      if (!existsSync(metaPath)) throw new Error(`${file} exists but was not written by retain synth (no ${metaPath}); remove it or choose another output`);
      const prev = JSON.parse(readFileSync(metaPath, 'utf8'));
      const a = JSON.stringify(prev.settings);
      const b = JSON.stringify(settings);
      if (a !== b) {
        const diff = Object.keys(settings).filter((k) => JSON.stringify(prev.settings?.[k]) !== JSON.stringify((settings as Record<string, unknown>)[k]));
        throw new Error(`refusing to resume ${file}: it was written with other settings (${diff.join(', ')} differ); rerun with the same settings, or remove it to start over`);
      }
    }
    const existing = readExisting(file);
    if (existing.torn) {
      const n = existing.records.length;
      notice(o.progress, `synth: ${existing.torn} is a record cut off by an interrupted run; dropping it and ${n ? `resuming after the ${n} whole record${n === 1 ? '' : 's'} before it` : 'starting from the first record (none before it is whole)'}`);
      truncateSync(file, existing.goodBytes);
    }
    writeFileSync(metaPath, JSON.stringify({ settings }, null, 2) + '\n');

    const records = existing.records.slice();
    for (const r of records) dedup?.add(recordKey(r, fields));
    let lastIndex = records.length ? Math.max(...records.map((r) => r.synth.index)) : -1;
    const rejected: Record<string, number> = {};
    const drop = (why: string) => (rejected[why] = (rejected[why] ?? 0) + 1);
    const progress = progressReporter(o.progress, records.length);
    const startCount = records.length;

    const fd = openSync(file, 'a');
    try {
      let round = Math.floor((lastIndex + 1) / batchSize);
      while (records.length < o.count && round * batchSize < maxAttempts) {
        const p = roundPrompt(round);
        torch.manualSeed(roundSeed(seed, round));
        const samples = m.sample(p.ids, batchSize, { ...sampling, stop: p.stop, stopTokens: p.stopTokens });
        // Parse and run the cheap filters on the whole round, then score the survivors' loss in one batch.
        // The whole round is scored even when resuming inside it, so that every loss comes from the same batch as in
        // an uninterrupted run (batch composition can move the last bits of a float).
        const cands = samples.map((s, j) => {
          const index = round * batchSize + j;
          let rec: Record<string, unknown>;
          if (mode === 'bos') rec = { text: s.text.trim() };
          else if (mode === 'magpie') rec = { text: s.text.trim() };
          else {
            const parsed = parseFewshot(s.text, fields!);
            if (!parsed) return { index, s, rec: null, key: '', why: 'parse' as string | null, tokens: 0 };
            rec = Object.fromEntries(fields!.map((f) => [f, leads[f] + parsed[f]]));
          }
          const key = recordKey(rec, fields);
          const tokens = basePromptIds(m, key).length - (m.tokenizer.bosId >= 0 ? 1 : startIds.length);
          return { index, s, rec, key, why: textFilter(key, tokens, filters) as string | null, tokens };
        });
        const scored = cands.filter((c) => c.why === null);
        const live = cands.filter((c) => c.index > lastIndex && c.index < maxAttempts);
        const losses = m.meanLogProbs(scored.map((c) => ({ ids: basePromptIds(m, c.key), from: m.tokenizer.bosId >= 0 ? 1 : startIds.length })));
        const lossOf = new Map(scored.map((c, k) => [c.index, -losses[k]]));
        for (const c of live) {
          if (records.length >= o.count) break;
          lastIndex = c.index;
          const loss = lossOf.get(c.index) ?? NaN;
          const why = c.why ?? lossFilter(loss, filters);
          if (why) {
            drop(why);
            continue;
          }
          const verdict = dedup?.check(c.key) ?? { keep: true as const };
          if (!verdict.keep) {
            drop(verdict.reason);
            continue;
          }
          const meta: SynthRecordMeta = { mode, seed, index: c.index, tokens: c.tokens, loss: +loss.toFixed(5), finish: c.s.finish };
          let out: Record<string, unknown> = c.rec!;
          if (mode === 'magpie' && (answerMagpie || consensus)) {
            const task: AnswerTask = { prompt: c.key, base: c.key, lead: '\n' };
            const cands: Candidate[] = [];
            if (answerers.length === 0) cands.push({ model: m.name, answer: answer(m, task, answerOpts, answerSeed(seed, c.index, 0)) });
            answerers.forEach((a, k) => cands.push({ model: a.name, answer: answer(a, task, answerOpts, answerSeed(seed, c.index, k + 1)) }));
            const best = pickBest(task, cands, consensus ? scorers : [], o.minScore, meta);
            if (!best) {
              drop('low_score');
              continue;
            }
            out = { messages: [{ role: 'user', content: c.key }, { role: 'assistant', content: best }] };
          } else if (mode === 'fewshot' && consensus) {
            const rec = c.rec as Record<string, string>;
            const task: AnswerTask = { prompt: rec[promptField].trim(), base: rec[promptField], lead: leads[answerField] };
            const cands: Candidate[] = [{ model: 'self', answer: rec[answerField].trim() }];
            answerers.forEach((a, k) => cands.push({ model: a.name, answer: answer(a, task, answerOpts, answerSeed(seed, c.index, k + 1)) }));
            const best = pickBest(task, cands, scorers, o.minScore, meta);
            if (!best) {
              drop('low_score');
              continue;
            }
            out = { ...rec, [answerField]: leads[answerField] + best };
          }
          dedup?.add(c.key);
          const record = { id: `synth-${c.index}`, ...out, synth: meta } as SynthRecord;
          // One write of a whole line, synced: an interruption loses at most the line being written.
          writeSync(fd, JSON.stringify(record) + '\n');
          fsyncSync(fd);
          records.push(record);
          progress.line(false, records.length, o.count, c.index + 1, rejected);
        }
        round++;
      }
    } finally {
      closeSync(fd);
    }
    const attempted = lastIndex + 1;
    progress.line(true, records.length, o.count, attempted, rejected);
    if (records.length < o.count) {
      const msg = `synth: only ${records.length} of ${o.count} records after ${attempted} candidates (maxAttempts ${maxAttempts}); loosen the filters or raise maxAttempts`;
      if (o.progress !== false) (typeof o.progress === 'function' ? o.progress : (l: string) => process.stderr.write(l + '\n'))(msg);
    }

    // ---- diverse selection ------------------------------------------------------------------------------------
    let selected: SynthRecord[] | null = null;
    if (o.select && records.length > 0) {
      const emb = m.embed(records.map((r) => basePromptIds(m, recordText(r)))).map(unit);
      const { indices } = selectDiverse(emb, o.select.k, o.select.perCluster, { seed: o.select.seed ?? seed });
      selected = indices.map((i) => records[i]);
      const tmp = `${o.out}.tmp-${process.pid}`;
      writeFileSync(tmp, selected.map((r) => JSON.stringify(r) + '\n').join(''));
      renameSync(tmp, o.out);
    }
    return {
      out: o.out, pool: o.select ? file : null, records: selected ?? records, accepted: records.length, added: records.length - startCount,
      attempted, rejected, selected: selected ? selected.length : null, seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    for (const s of owned) s.dispose();
  }
}

/** Rows scaled to unit length: clusters of direction, not of hidden-state magnitude (which grows with text length). */
function unit(v: Float64Array): Float64Array {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n) || 1;
  return v.map((x) => x / n);
}

/** The best-scoring answer (or the only one, unscored), with its scores in `meta`; null when it scores below minScore. */
function pickBest(task: AnswerTask, cands: Candidate[], scorers: SynthModel[], minScore: number | undefined, meta: SynthRecordMeta): string | null {
  const usable = cands.filter((c) => c.answer.length > 0);
  if (usable.length === 0) return null;
  if (scorers.length === 0) {
    meta.answer_model = usable[0].model;
    return usable[0].answer;
  }
  const [best] = rankAnswers(task, usable, scorers);
  meta.answer_model = best.model;
  meta.score = +best.score.toFixed(4);
  meta.scores = best.scores.map((s) => +s.toFixed(4));
  if (!Number.isFinite(best.score) || (minScore !== undefined && best.score < minScore)) return null;
  return best.answer;
}
