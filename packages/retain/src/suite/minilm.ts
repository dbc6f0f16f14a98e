// Forgetting suite on a real sentence encoder: all-MiniLM-L6-v2 (22.7M parameters, brought into the models folder by
// scripts/models.py) fine-tuned for SICK entailment, once per recipe.
//
//   target  = 3-way SICK entailment (ENTAILMENT / NEUTRAL / CONTRADICTION). The pair goes in as one sequence
//             "a [SEP] b"; a new linear head reads its mean-pooled embedding and the encoder trains with the head
//             (model_type bert_sentence_classifier). Scored as accuracy on a class-balanced slice of SICK test (SICK
//             test is 57% NEUTRAL, so a constant answer scores 1/3 here, and accuracy is the macro-averaged recall).
//   general = what the encoder was built for, scored on the fine-tuned encoder alone (the head plays no part):
//             sick_r     Spearman of the cosine similarity of each pair's two sentence embeddings with its gold
//                        relatedness, as MTEB's SICK-R scores it (shown ×100, as MTEB does), on the first 2,000
//                        SICK test pairs (the bench also gives the base's figure over all 9,927, MTEB's set);
//             retrieval  top-1 accuracy of finding a C4 document (../shared/data/text/c4_demo.jsonl) from its first
//                        sentence among all the documents' remainders, by cosine similarity.
// Training pairs (SICK train) share no pair with SICK test, though SICK reuses sentences across splits.
//
// Every recipe starts from the same model: the encoder with a seeded, untrained head, so the base row's target
// score is chance. Not run (MINILM_NOT_RUN): the methods that need the general skill as a loss over data in the
// target's shape, and HFT, whose halves are named after decoder projections.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import { addTaskResults, newResults } from '../eval/harness.js';
import { classifierEvalModel } from '../eval/model.js';
import type { CompareResults, EvalResults, ResultRow, Role } from '../eval/results.js';
import { relatednessSpearman } from '../eval/similarity.js';
import { loadPretrained, savePretrained } from '../models/hub.js';
import { BertModel } from '../models/bert.js';
import { BertSentenceClassifier, lengthOrder, padBatch, readSentenceSettings, SentenceEncoder, sentenceIds, type SentenceSettings } from '../models/sentence.js';
import type { Tokenizer } from '../tokenizers/types.js';
import { readCsv } from '../data/readers.js';
import { minilmRecipes } from './recipes.js';
import { methodNames, primaryValue, selectRecipes, trainAndScore, trainRecipe, writeJsonl, type SuiteOptions } from './common.js';

const SHARED = resolve(new URL('../../../../../shared', import.meta.url).pathname);
export const SICK_DIR = join(SHARED, 'data', 'sick');
export const C4_DEMO = join(SHARED, 'data', 'text', 'c4_demo.jsonl');
export const SICK_LABELS = ['ENTAILMENT', 'NEUTRAL', 'CONTRADICTION'];

interface SickPair { id: string; a: string; b: string; relatedness: number; label: string }

function readSick(file: string): SickPair[] {
  const path = join(SICK_DIR, file);
  if (!existsSync(path)) throw new Error(`the MiniLM suite needs ${path} (the shared SICK data beside the repository)`);
  return readCsv(path, '\t').map((r) => ({ id: String(r.pair_ID), a: String(r.sentence_A), b: String(r.sentence_B), relatedness: Number(r.relatedness_score), label: String(r.entailment_judgment).trim() }));
}

/** The first `perClass` pairs of each label, interleaved so that any prefix stays near balance. */
function balanced(pairs: SickPair[], perClass: number): SickPair[] {
  const by = SICK_LABELS.map((l) => pairs.filter((p) => p.label === l).slice(0, perClass));
  const n = Math.min(...by.map((b) => b.length));
  return Array.from({ length: n }, (_, i) => by.map((b) => b[i])).flat();
}

/** C4 documents as (first sentence, the rest): the query and the passage it should find. */
export function retrievalPairs(limit: number): { query: string; passage: string }[] {
  if (!existsSync(C4_DEMO)) throw new Error(`the MiniLM suite needs ${C4_DEMO} (the shared text data beside the repository)`);
  const out: { query: string; passage: string }[] = [];
  for (const line of readFileSync(C4_DEMO, 'utf8').split('\n')) {
    if (!line.trim() || out.length >= limit) continue;
    const text = String(JSON.parse(line).text).replace(/\s+/g, ' ').trim();
    const cut = text.search(/[.!?]\s/);
    if (cut < 0) continue;
    const query = text.slice(0, cut + 1);
    const passage = text.slice(cut + 2);
    // A query of a few words, or a passage too short to be about anything, would measure noise.
    if (query.split(' ').length >= 6 && passage.split(' ').length >= 30) out.push({ query, passage });
  }
  return out;
}

export interface MinilmData {
  train: string;
  /** SICK test pairs scored for relatedness (general). */
  sts: { a: string; b: string; score: number }[];
  retrieval: { query: string; passage: string }[];
  /** Class-balanced SICK test pairs for the entailment accuracy (target). */
  nli: SickPair[];
}

export function prepareMinilmData(outDir: string, o: { trainPairs?: number; stsPairs?: number; nliPerClass?: number; retrievalDocs?: number }): MinilmData {
  const dir = join(outDir, 'data');
  mkdirSync(dir, { recursive: true });
  const train = join(dir, 'sick-train.jsonl');
  writeJsonl(train, readSick('SICK_train.txt').slice(0, o.trainPairs ?? Infinity).map((p) => ({ id: `sick${p.id}`, a: p.a, b: p.b, label: p.label })));
  const test = readSick('SICK_test_annotated.txt');
  return {
    train,
    sts: test.slice(0, o.stsPairs ?? 2000).map((p) => ({ a: p.a, b: p.b, score: p.relatedness })),
    retrieval: retrievalPairs(o.retrievalDocs ?? 300),
    nli: balanced(test, o.nliPerClass ?? 200),
  };
}

/** The base encoder under a new 3-class head (seeded init), saved where every recipe starts. */
export async function writeMinilmStart(baseDir: string, dir: string, seed: number): Promise<string> {
  const base = await loadPretrained(baseDir);
  if (!(base.model instanceof BertModel)) throw new Error(`${baseDir}: expected a BERT encoder (model_type bert), got model_type '${base.config.model_type}'`);
  torch.manualSeed(seed);
  const model = new BertSentenceClassifier({ ...base.model.config, model_type: 'bert_sentence_classifier', num_labels: SICK_LABELS.length });
  const sd = model.stateDict({ keepVars: true });
  for (const [k, v] of base.model.stateDict({ keepVars: true })) sd.set(`bert.${k}`, v);
  model.loadStateDict(sd);
  savePretrained({ ...base, model: model as never, config: model.config }, dir);
  base.model.dispose();
  model.dispose();
  return dir;
}

const ratio = (k: number, n: number): ResultRow['stderr'] => (n > 1 ? Math.sqrt(((k / n) * (1 - k / n)) / (n - 1)) : null);

/** Top-1 accuracy of each query finding its own passage among all passages (cosine of normalised embeddings). */
function retrievalAccuracy(enc: SentenceEncoder, pairs: { query: string; passage: string }[]): number {
  return torch.tidy(() => {
    const q = enc.encode(pairs.map((p) => p.query)); // [N, H]
    const d = enc.encode(pairs.map((p) => p.passage)); // [N, H]
    const best = q.matmul(d.transpose(0, 1)).argmax(1).toArray() as number[]; // [N]
    return best.filter((j, i) => j === i).length / pairs.length;
  });
}

/** Entailment accuracy of the classifier on the pairs, in batches of 64 padded pair sequences of similar lengths. */
function nliAccuracy(model: BertSentenceClassifier, tok: Tokenizer, pairs: SickPair[], maxLen: number): number {
  let right = 0;
  const rows = sentenceIds(tok, pairs.map((p) => `${p.a} [SEP] ${p.b}`), maxLen);
  const order = lengthOrder(rows);
  torch.noGrad(() => {
    for (let i = 0; i < rows.length; i += 64) {
      torch.tidy(() => {
        const batch = order.slice(i, i + 64);
        const { ids } = padBatch(batch.map((j) => rows[j]), model.config.pad_token_id ?? 0);
        const pred = model.forward(ids).argmax(1).toArray() as number[]; // [b]
        pred.forEach((c, k) => (right += Number(SICK_LABELS[c] === pairs[batch[k]].label)));
      });
    }
  });
  return right / pairs.length;
}

const TASKS: { name: string; metric: string; role: Role; what: string }[] = [
  { name: 'sick_r', metric: 'spearman', role: 'general', what: 'Spearman of pair cosine similarity with SICK test relatedness (MTEB SICK-R style)' },
  { name: 'c4_retrieval', metric: 'acc', role: 'general', what: 'top-1 accuracy finding a C4 document from its first sentence among all documents' },
  { name: 'sick_nli', metric: 'acc', role: 'target', what: '3-way entailment accuracy of the head on class-balanced SICK test pairs (chance 1/3)' },
];

/** Scores one model (a saved bert_sentence_classifier folder) on the three tasks. */
export async function scoreMinilm(dir: string, settings: SentenceSettings, data: MinilmData, o: { label: string; methods?: string[] }): Promise<EvalResults> {
  const t0 = performance.now();
  const p = await loadPretrained(dir);
  const model = p.model as unknown as BertSentenceClassifier;
  if (!(model instanceof BertSentenceClassifier) || !p.tokenizer) throw new Error(`${dir}: expected a bert_sentence_classifier with its tokenizer`);
  model.eval();
  try {
    const enc = new SentenceEncoder(model.bert, p.tokenizer, settings);
    // Passages are cut at 128 tokens: the start of a document is what its first sentence introduces.
    const short = new SentenceEncoder(model.bert, p.tokenizer, { ...settings, maxSeqLength: Math.min(128, settings.maxSeqLength) });
    const values: Record<string, [number, number]> = {
      sick_r: [relatednessSpearman(enc, data.sts).spearman, data.sts.length],
      c4_retrieval: [retrievalAccuracy(short, data.retrieval), data.retrieval.length],
      sick_nli: [nliAccuracy(model, p.tokenizer, data.nli, 128), data.nli.length],
    };
    const res = newResults(classifierEvalModel(model, dir.split('/').filter(Boolean).pop() ?? dir, dir), [], { label: o.label, methods: o.methods });
    for (const t of TASKS) {
      const [value, n] = values[t.name];
      const row: ResultRow = { task: t.name, metric: t.metric, value, stderr: t.metric === 'acc' ? ratio(value * n, n) : null, higher_is_better: true, n, role: t.role, primary: true };
      addTaskResults(res, { spec: { name: t.name, version: 1 }, dataPath: t.name === 'c4_retrieval' ? C4_DEMO : SICK_DIR }, [row], { original: n, effective: n });
      res.configs[t.name] = { ...(res.configs[t.name] as object), description: t.what };
    }
    res.config.tasks = TASKS.map((t) => t.name);
    res.eval_seconds = +((performance.now() - t0) / 1000).toFixed(2);
    return res;
  } finally {
    model.dispose();
  }
}

export interface MinilmSuiteOptions extends SuiteOptions {
  /** The all-MiniLM-L6-v2 folder (sentence-transformers layout). */
  model: string;
  /** Limits (default: all 4,500 train pairs, 2,000 test pairs for relatedness, 200 per class, 300 documents). */
  trainPairs?: number;
  stsPairs?: number;
  nliPerClass?: number;
  retrievalDocs?: number;
}

function summary(r: EvalResults): string {
  const v = (t: string) => (primaryValue(r, t) * 100).toFixed(2);
  return `SICK-R ${v('sick_r')}, retrieval ${v('c4_retrieval')}%, NLI ${v('sick_nli')}%`;
}

/** The train config sections every recipe of the suite shares (the recipe adds its methods and training overrides). */
export function minilmTrainConfig(data: MinilmData, steps: number, seed: number): { data: unknown; training: Record<string, unknown> } {
  return {
    data: { train: { path: data.train, format: { type: 'classification', labels: SICK_LABELS, template: '{a} [SEP] {b}' }, max_length: 128, name: 'sick' } },
    // 1e-4, twice BERT's usual top rate: a few hundred steps must move the encoder for forgetting to show.
    training: { max_steps: steps, batch_size: 16, lr: 1e-4, schedule: 'cosine', warmup_ratio: 0.1, weight_decay: 0.01, clip_grad_norm: 1.0, seed, log_every: 10 },
  };
}

/** Runs the suite: the base (encoder + untrained head), then every chosen recipe from that start. */
export async function runMinilmSuite(o: MinilmSuiteOptions): Promise<CompareResults> {
  const seed = o.seed ?? 0;
  const steps = o.steps ?? 150;
  const outDir = resolve(o.outDir);
  const progress = o.progress !== false;
  const say = (m: string) => progress && process.stderr.write(m + '\n');
  const data = prepareMinilmData(outDir, o);
  const recipes = selectRecipes(minilmRecipes(steps), o.only);
  const settings = readSentenceSettings(o.model, 512);
  const start = await writeMinilmStart(o.model, join(outDir, 'models', 'minilm-sick-init'), seed);
  say(`MiniLM suite: ${o.model}; ${steps} steps × 16 pairs per recipe; ${data.sts.length} STS pairs, ${data.retrieval.length} documents, ${data.nli.length} NLI pairs`);
  const base = await scoreMinilm(start, settings, data, { label: 'base' });
  say(`  base: ${summary(base)}`);
  const { training, data: dataSection } = minilmTrainConfig(data, steps, seed);
  const tuned = await trainAndScore({
    outDir,
    recipes,
    reuse: o.reuse,
    key: (r) => JSON.stringify({ recipe: r, training, model: o.model, trainPairs: o.trainPairs, stsPairs: o.stsPairs, nliPerClass: o.nliPerClass, retrievalDocs: o.retrievalDocs }),
    say,
    train: (r, runDir) => trainRecipe({
      model: start,
      runDir,
      data: dataSection,
      training,
      progress,
    }, r),
    score: (dir, r) => scoreMinilm(dir, settings, data, { label: r.label, methods: methodNames(r) }),
    summary,
  });
  const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
  return out;
}
