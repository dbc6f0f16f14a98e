// Forgetting suite, part 2: the ml5 char-LSTM trained on Tiny Shakespeare (../shared/models/charrnn-shakespeare)
// fine-tuned on Darwin's prose, once per recipe. General = Shakespeare bits/char, target = Darwin bits/char, both on
// fixed held-out slices (lower is better). Darwin's text has characters the model's 65-symbol vocabulary lacks: they
// are dropped (the harness's `unknown_chars: drop`), and CRLF becomes LF, before anything is trained or scored.
//
// The Shakespeare "held-out" slice is the corpus's last 20,000 characters. The ml5 model was trained on the whole of
// shakespeare.txt (docs/DATA.md), so no truly unseen Shakespeare exists here: the general score measures retention of
// what the model fit, which is what forgetting is about; the replay and Fisher windows come from the first 90% of
// the file, so they never overlap the scored slice.
//
// Not run: LoRA. The model has no nn.Linear layers (the LSTM cells and the softmax are raw TensorFlow-layout weight
// tensors), so LoRA finds no target layer and refuses; see CHARLSTM_NOT_RUN in recipes.ts.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { evaluate } from '../eval/harness.js';
import { loadEvalModel } from '../eval/model.js';
import { resolveTasks, type ResolvedTask } from '../eval/tasks.js';
import type { CompareResults, EvalResults } from '../eval/results.js';
import { CharVocab } from '../tokenizers/char.js';
import { charlstmRecipes } from './recipes.js';
import { synthesize } from '../synth/index.js';
import { finishResults, methodNames, primaryValue, runDirOf, selectRecipes, trainRecipe, writeJsonl, type SuiteOptions } from './common.js';

const SHARED = resolve(new URL('../../../../../shared', import.meta.url).pathname);
export const CHARLSTM_MODEL = join(SHARED, 'models', 'charrnn-shakespeare');
const SHAKESPEARE = join(SHARED, 'data', 'text', 'shakespeare.txt');
const DARWIN = join(SHARED, 'data', 'text', 'darwin.txt');

const WINDOW = 128;
const EVAL_CHARS = 20_000;

/** The text as the model can read it: LF line ends, characters outside the vocabulary dropped. */
function readable(text: string, vocab: CharVocab): string {
  return [...text.replace(/\r\n/g, '\n')].filter((ch) => vocab.has(ch)).join('');
}

/** Non-overlapping windows of `WINDOW` characters from text[from, to), at most `count`, as {id, text} records. */
function windows(text: string, from: number, to: number, count: number, prefix: string): { id: string; text: string }[] {
  const out: { id: string; text: string }[] = [];
  for (let s = from; s + WINDOW <= to && out.length < count; s += WINDOW) out.push({ id: `${prefix}-${s}`, text: text.slice(s, s + WINDOW) });
  return out;
}

/** Writes the suite's data and task files under outDir/data; returns the paths and the resolved tasks (general first). */
export function prepareCharlstmData(outDir: string, o: { trainWindows: number; replayWindows: number }): { train: string; replay: string; tasksFile: string; monitorFile: string; tasks: ResolvedTask[] } {
  const dir = join(outDir, 'data');
  mkdirSync(dir, { recursive: true });
  const vocab = CharVocab.fromFile(join(CHARLSTM_MODEL, 'vocab.json'));
  const shakespeare = readable(readFileSync(SHAKESPEARE, 'utf8'), vocab);
  const darwin = readable(readFileSync(DARWIN, 'utf8'), vocab);
  writeFileSync(join(dir, 'shakespeare-eval.txt'), shakespeare.slice(-EVAL_CHARS));
  // Darwin: training windows from the start (after the title pages); the scored slice from 60% of the way in, in
  // running prose (the file ends with an index, which would score lists of names rather than Darwin).
  const evalStart = Math.floor(darwin.length * 0.6);
  writeFileSync(join(dir, 'darwin-eval.txt'), darwin.slice(evalStart, evalStart + EVAL_CHARS));
  const train = join(dir, 'darwin-train.jsonl');
  writeJsonl(train, windows(darwin, 20_000, evalStart, o.trainWindows, 'darwin'));
  const replay = join(dir, 'shakespeare-replay.jsonl');
  writeJsonl(replay, windows(shakespeare, 0, Math.floor(shakespeare.length * 0.9), o.replayWindows, 'shakespeare'));
  const task = (name: string, file: string, role: string, what: string, maxChars?: number) => [
    `- name: ${name}`,
    '  kind: perplexity',
    `  data: ${file}`,
    '  split: whole',
    '  unknown_chars: drop',
    '  primary: bits_per_char',
    `  role: ${role}`,
    ...(maxChars ? [`  max_chars: ${maxChars}`] : []),
    `  description: ${JSON.stringify(what)}`,
  ];
  const both = (maxChars?: number) => [
    ...task('shakespeare_heldout', 'shakespeare-eval.txt', 'general', `bits/char on the last ${EVAL_CHARS} characters of shakespeare.txt (the base model saw all of shakespeare.txt in pretraining)`, maxChars),
    ...task('darwin_heldout', 'darwin-eval.txt', 'target', `bits/char on ${EVAL_CHARS} characters of darwin.txt from 60% of the way in (CRLF → LF, characters outside the vocabulary dropped); never trained on`, maxChars),
    '',
  ].join('\n');
  const tasksFile = join(dir, 'tasks.yaml');
  writeFileSync(tasksFile, '# Written by the char-LSTM forgetting suite. General: Shakespeare bits/char; target: Darwin bits/char.\n' + both());
  // The monitor probes a shorter prefix of the same slices, so that probing every few steps stays cheap.
  const monitorFile = join(dir, 'monitor.yaml');
  writeFileSync(monitorFile, '# The monitor probes: the first 4,000 characters of each scored slice.\n' + both(4000));
  return { train, replay, tasksFile, monitorFile, tasks: resolveTasks([tasksFile]) };
}

function summary(r: EvalResults): string {
  return `Shakespeare ${primaryValue(r, 'shakespeare_heldout').toFixed(4)} bits/char, Darwin ${primaryValue(r, 'darwin_heldout').toFixed(4)} bits/char`;
}

/** Runs the char-LSTM suite: base and one fine-tuned model per recipe, all scored on the same held-out slices. */
export async function runCharlstmSuite(o: SuiteOptions): Promise<CompareResults> {
  const seed = o.seed ?? 0;
  const steps = o.steps ?? 300;
  const outDir = resolve(o.outDir);
  const progress = o.progress !== false;
  const say = (m: string) => progress && process.stderr.write(m + '\n');
  const batch = 16;
  const data = prepareCharlstmData(outDir, { trainWindows: Math.max(256, steps * batch), replayWindows: Math.max(256, steps * batch) });
  // 256 samples of 128 characters from the base model (resumable: a rerun reuses the file).
  const synth = await synthesize({ model: CHARLSTM_MODEL, out: join(outDir, 'data', 'charlstm-synth.jsonl'), count: 256, maxNewTokens: WINDOW, seed, progress: false });
  const recipes = selectRecipes(charlstmRecipes(data.replay, WINDOW, synth.out), o.only);

  say(`char-LSTM suite: ${CHARLSTM_MODEL} → Darwin (${steps} steps × ${batch} windows of ${WINDOW} chars); general: Shakespeare bits/char`);
  const baseModel = await loadEvalModel(CHARLSTM_MODEL);
  const base = await evaluate(baseModel, data.tasks, { label: 'base', progress: false });
  baseModel.module.dispose();
  say(`  base: ${summary(base)}`);

  const tuned: EvalResults[] = [];
  for (const r of recipes) {
    const t0 = performance.now();
    const runDir = runDirOf(outDir, r.label);
    say(`  training ${r.label}${r.methods.length ? ` (${methodNames(r).join(' + ')})` : ''} …`);
    const res = await trainRecipe({
      model: CHARLSTM_MODEL,
      runDir,
      data: { train: { path: data.train, format: { type: 'text' }, max_length: WINDOW + 1, name: 'darwin' } },
      training: { max_steps: steps, batch_size: batch, lr: 0.003, schedule: 'cosine', warmup_ratio: 0.05, weight_decay: 0, clip_grad_norm: 1.0, seed, log_every: 5 },
      monitor: { every: Math.max(1, Math.round(steps / 8)), tasks: [data.monitorFile], target: ['darwin_heldout'], limit: 1 },
      progress,
    }, r);
    const em = await loadEvalModel(res.finalDir);
    const ev = await evaluate(em, data.tasks, { label: r.label, methods: methodNames(r), progress: false });
    em.module.dispose();
    tuned.push(finishResults(ev, res, runDir));
    say(`  ${r.label}: ${summary(ev)} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  const out: CompareResults = { format: 'retain.compare/1', date: new Date().toISOString(), base, tuned };
  writeFileSync(join(outDir, 'compare.json'), JSON.stringify(out, null, 2) + '\n');
  return out;
}
