// `retain synth`: data-oblivious replay (METHODS.md §3). General-domain examples are rebuilt from the base model
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
// settings is refused. Each record is one write of a whole line, synced; a torn last line is cut off on resume.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as torch from '@retain/torch';
import { loadPretrained, type Pretrained } from '../models/hub.js';
import { readRecords } from '../data/readers.js';
import { epochOrder } from '../data/loader.js';
import type { ChatTemplate } from '../data/formats.js';
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

/** Reads a synth JSONL for resume: records, and the byte length of its whole lines (a torn last line is excluded). */
function readExisting(path: string): { records: SynthRecord[]; goodBytes: number; size: number } {
  if (!existsSync(path)) return { records: [], goodBytes: 0, size: 0 };
  const buf = readFileSync(path);
  const end = buf.lastIndexOf(0x0a) + 1;
  const records = buf.subarray(0, end).toString('utf8').split('\n').filter((l) => l.trim()).map((l, i) => {
    let r: SynthRecord;
    try {
      r = JSON.parse(l);
    } catch (e) {
      throw new Error(`${path}:${i + 1}: not valid JSON (${(e as Error).message}); remove the file to start over`);
    }
    if (!r || typeof r.synth !== 'object' || !Number.isInteger(r.synth?.index)) throw new Error(`${path}:${i + 1}: not a retain synth record (no synth.index); remove the file or choose another --out`);
    return r;
  });
  return { records, goodBytes: end, size: buf.length };
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

async function loadModel(m: string | Pretrained, tokenizer?: string): Promise<{ p: Pretrained; owned: boolean }> {
  if (typeof m !== 'string') return { p: m, owned: false };
  const p = await loadPretrained(m, { tokenizer });
  p.model.eval();
  return { p, owned: true };
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

  const base = await loadModel(o.model, o.tokenizer);
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
      const l = await loadModel(a);
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
    const existing = readExisting(file);
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
    if (existing.goodBytes < existing.size) truncateSync(file, existing.goodBytes); // a torn last line from an interrupted write
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
