// `retain train`: config → model, data, optimizer settings → the loop → a Hugging Face directory in output_dir/final.
import { existsSync, realpathSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import * as torch from '@retain/torch';
import type { TrainConfig } from '../config.js';
import type { DataSpec } from '../data/spec.js';
import { precisionPlan } from './precision.js';
import { loadPretrained, savePretrained, type Pretrained } from '../models/hub.js';
import { readRecords, recordLine } from '../data/readers.js';
import { DataError, type Record_ } from '../data/records.js';
import { pack, toExample, type Example, type FormatSpec } from '../data/formats.js';
import { collate, disposeBatch } from '../data/loader.js';
import { HfTokenizer } from '../tokenizers/hf.js';
import { CharTokenizer } from '../tokenizers/char.js';
import { UnknownCharError } from '../tokenizers/char.js';
import { causalLmLoss, classificationLoss, train, type LossFn, type TrainResult } from './trainer.js';
import type { Method, TrainableModel } from './hooks.js';
import { buildMethods } from '../methods/registry.js';
import { ForgettingMonitor } from './monitor.js';
import { pretrainedEvalModel } from '../eval/model.js';
import { resolveTasks } from '../eval/tasks.js';
import { activeDist } from './dist.js';
import { writeRunResults } from './results.js';
import { listCheckpoints } from './checkpoint.js';
import { diskFullError, injectFault, isDiskFull, tensorBytes } from './faults.js';
import { lockOutputDir } from '../lock.js';

function formatSpec(f: DataSpec['format']): FormatSpec {
  switch (f.type) {
    case 'prompt_completion': return { type: f.type, promptField: f.prompt_field, completionField: f.completion_field, template: f.template, chatTemplate: f.chat_template };
    case 'chat': return { type: f.type, messagesField: f.messages_field };
    case 'alpaca': case 'sharegpt': case 'messages': return f;
    case 'text': return { type: f.type, textField: f.text_field };
    case 'classification': return { type: f.type, textField: f.text_field, labelField: f.label_field, labels: f.labels, template: f.template };
    case 'image_classification': return { type: f.type, imageField: f.image_field, labelField: f.label_field, shape: f.shape, numClasses: f.num_classes, scale: f.scale };
  }
}

/** The longest sequence the model takes (learned positions, or the length RoPE was trained to), or null (no limit). */
function contextLength(p: Pretrained): number | null {
  const n = Number((p.model as { config?: { max_position_embeddings?: unknown } }).config?.max_position_embeddings);
  return Number.isInteger(n) && n > 0 ? n : null;
}

export async function loadExamples(d: DataSpec, p: Pretrained, source: string): Promise<Example[]> {
  // A max_length past the model's context would index learned positions out of range (GPT-2) or train RoPE at
  // positions it never saw, and at 100,000 tokens asks for a 40 GB attention mask: examples are cut to the context.
  const ctx = contextLength(p);
  if (ctx !== null && d.max_length > ctx && d.format.type !== 'image_classification') {
    process.stderr.write(`retain: ${source}: max_length ${d.max_length} is longer than the model's context (max_position_embeddings ${ctx}); using ${ctx}\n`);
    d = { ...d, max_length: ctx };
  }
  // Images need no tokenizer (the MNIST MLP has none).
  if (d.format.type === 'image_classification') {
    let records = await readRecords(d.path, { format: d.reader });
    if (records.length === 0) throw new Error(`${d.path}: holds no records (${source} data)`);
    if (d.limit) records = records.slice(0, d.limit);
    const spec = formatSpec(d.format);
    return records.map((r) => toExample(r, spec, { tokenizer: null as never, source }));
  }
  if (!p.tokenizer) throw new Error(`the model at ${p.source.path} has no tokenizer; set model.tokenizer in the config`);
  let records = await readRecords(d.path, { format: d.reader });
  if (records.length === 0) throw new Error(`${d.path}: holds no records (${source} data)`);
  if (d.limit) records = records.slice(0, d.limit);
  const chatTemplate = p.tokenizer instanceof HfTokenizer ? p.tokenizer.chatTemplate ?? undefined : undefined;
  const spec = formatSpec(d.format);
  const chars = p.tokenizer instanceof CharTokenizer ? p.tokenizer : null;
  const tokenizer = chars && d.unknown_chars === 'drop' ? new CharTokenizer(chars.vocab, true) : p.tokenizer;
  const examples = records.map((r) => {
    try {
      return toExample(r, spec, { tokenizer, chatTemplate, source, maxLength: d.pack ? undefined : d.max_length });
    } catch (e) {
      throw e instanceof UnknownCharError ? unknownCharError(e, r, d.path, source, chars!.vocabSize) : e;
    }
  });
  if (tokenizer instanceof CharTokenizer && tokenizer.dropped.size) {
    const chars = [...tokenizer.dropped];
    process.stderr.write(`retain: ${source}: left out ${chars.length} character${chars.length === 1 ? '' : 's'} outside the model's vocabulary wherever they occur (unknown_chars: drop): ${chars.slice(0, 20).map((ch) => JSON.stringify(ch)).join(', ')}${chars.length > 20 ? `, and ${chars.length - 20} more` : ''}\n`);
  }
  return d.pack ? pack(examples, d.max_length) : examples.filter((e) => e.ids.length >= 2);
}

/** Names the file, line (when the reader knows it) and record of a character the vocabulary lacks, and the option. */
function unknownCharError(e: UnknownCharError, r: Record_, path: string, source: string, vocabSize: number): Error {
  const field = Object.keys(r).find((k) => k !== 'id' && typeof r[k] === 'string' && (r[k] as string).includes(e.char));
  const line = recordLine(r, field, field ? (r[field] as string).indexOf(e.char) : 0);
  return new DataError(`${path}${line ? `:${line}` : ''}: record ${r.id}${field ? `, field '${field}'` : ''}: character ${JSON.stringify(e.char)} is not in the model's vocabulary of ${vocabSize} characters; set unknown_chars: drop on this data entry (${source}) to leave such characters out, or remove them from the file`);
}

/** Mean next-token loss over examples (no grad), in batches. */
export function evalLoss(model: TrainableModel, examples: Example[], batchSize = 8, lossFn: LossFn = causalLmLoss): number {
  let sum = 0;
  let count = 0;
  torch.inferenceMode(() => {
    for (let i = 0; i < examples.length; i += batchSize) {
      torch.tidy(() => {
        const b = collate(examples.slice(i, i + batchSize));
        const sl = lossFn(model, b);
        sum += sl.sums.sum().item();
        count += sl.counts.sum().item();
        disposeBatch(b);
      });
    }
  });
  return sum / Math.max(1, count);
}

export interface RunResult extends TrainResult {
  finalDir: string;
  monitor: ForgettingMonitor | null;
}

/** Folders no run may write into: a run fills its output_dir, and resume: false moves files out of it. */
const SYSTEM_DIRS = new Set(['/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/media', '/mnt', '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/usr/bin', '/usr/lib', '/usr/local', '/usr/share', '/var', '/var/lib', '/var/log', '/var/tmp']);

/** output_dir must be a folder of the run's own: not a system folder or the home folder, not the model's folder, not a file. */
export function checkOutputDir(outputDir: string, modelPath: string): void {
  const dir = resolve(outputDir);
  const real = existsSync(dir) ? realpathSync(dir) : dir;
  const own = `use a folder of the run's own, e.g. ${join(dir === '/' ? '.' : dir, 'runs', 'my-run')}`;
  if (SYSTEM_DIRS.has(real) || SYSTEM_DIRS.has(dir) || real === homedir()) {
    throw new Error(`output_dir '${outputDir}' is a system folder: a run writes checkpoints, logs and final/ into it (and resume: false moves its files aside); ${own}`);
  }
  if (existsSync(modelPath) && realpathSync(modelPath) === real) {
    throw new Error(`output_dir '${outputDir}' is the model's own folder (model.path): checkpoints and final/ would mix with the weights being read; ${own}`);
  }
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new Error(`output_dir '${outputDir}' is a file; it must be a folder (or not exist yet)`);
}

export interface RunOptions {
  progress?: boolean;
  /** SIGTERM/SIGINT/SIGUSR1 stop the run after a checkpoint (RunResult.preempted); `retain train` sets it. */
  stopOnSignals?: boolean;
  /** The caller holds output_dir's lock already (`retain train` takes it before it writes run_config.yaml). */
  locked?: boolean;
  /** Stop after this step with a checkpoint (TrainOptions.pauseAt); `retain tune`'s rungs. */
  pauseAt?: number;
}

/**
 * A run holds its output_dir for its whole length (lock.ts): a second run on the same folder is refused instead of
 * resuming from checkpoints the first is still writing. Under data parallelism rank 0, the one writer, holds it.
 */
export async function runTraining(cfg: TrainConfig, methods?: Method[], opts: RunOptions = {}): Promise<RunResult> {
  checkOutputDir(cfg.output_dir, cfg.model.path);
  const lock = !opts.locked && (activeDist()?.rank ?? 0) === 0 ? lockOutputDir(cfg.output_dir) : null;
  let built: Method[] = [];
  try {
    // Built inside the try: a method entry that fails to build must still release the lock.
    built = methods ?? buildMethods(cfg.methods);
    return await trainFromConfig(cfg, built, opts);
  } finally {
    // A suite trains many runs in one process: the methods' copies of θ₀ (L2, EWC, WiSE-FT, distill) must go with
    // the run, or a 135M model's leave gigabytes behind per recipe. Methods the caller passed are the caller's.
    if (!methods) for (const m of built) (m as { dispose?: () => void }).dispose?.();
    lock?.release();
  }
}

async function trainFromConfig(cfg: TrainConfig, methods: Method[] = buildMethods(cfg.methods), opts: RunOptions): Promise<RunResult> {
  if (cfg.training.threads) torch.setNumThreads(cfg.training.threads);
  if (cfg.data.train.pack) {
    const m = methods.find((x) => x.wholeExamples);
    if (m) throw new Error(`methods: '${m.name}' cannot run with data.train.pack: true: ${m.wholeExamples}; set pack: false`);
  }
  // Before any loading: a device this build or machine lacks is a config problem, not a libtorch error minutes later.
  const dev = cfg.model.device;
  if (dev.startsWith('cuda')) {
    const n = torch.cudaDeviceCount();
    const idx = dev === 'cuda' ? 0 : Number(dev.slice(5));
    if (n === 0) throw new Error(`model.device is ${dev}, but this build of @retain/torch sees no CUDA device (a CPU libtorch, or no GPU); use device cpu, or build against a CUDA PyTorch (docs/GPU.md)`);
    if (!(idx < n)) throw new Error(`model.device is ${dev}, but there ${n === 1 ? 'is 1 CUDA device (cuda:0)' : `are ${n} CUDA devices (cuda:0..cuda:${n - 1})`}`);
  }
  const precision = precisionPlan(cfg);
  const p = await loadPretrained(cfg.model.path, { dtype: precision.dtype, tokenizer: cfg.model.tokenizer, device: dev });
  const trainSet = await loadExamples(cfg.data.train, p, cfg.data.train.name ?? 'train');
  if (trainSet.length === 0) throw new Error(`${cfg.data.train.path}: no usable examples: each needs at least 2 tokens to train on within max_length ${cfg.data.train.max_length} (raise max_length, or check the records' fields)`);
  const evalSet = cfg.data.eval ? await loadExamples(cfg.data.eval, p, cfg.data.eval.name ?? 'eval') : null;
  const model = p.model as TrainableModel;
  if (cfg.model.device !== 'cpu') model.to(cfg.model.device);
  let monitor: ForgettingMonitor | null = null;
  if (cfg.monitor) {
    const mc = cfg.monitor;
    const role = Object.fromEntries(mc.target.map((t) => [t, 'target' as const]));
    const tasks = resolveTasks(mc.tasks, { dataDir: mc.data_dir, role });
    for (const t of mc.target) if (!tasks.some((x) => x.spec.name === t)) throw new Error(`monitor.target: '${t}' is not one of monitor.tasks (${tasks.map((x) => x.spec.name).join(', ')})`);
    monitor = new ForgettingMonitor(pretrainedEvalModel(p), mc, tasks, opts.progress ?? true);
    // Last, so that it sees each step's weights after every other method has acted.
    methods = [...methods, monitor];
  }
  model.train();
  const t = cfg.training;
  // A sequence classifier (a BERT encoder with a head) takes labelled text; everything else with text is a causal LM.
  const classifies = cfg.data.train.format.type === 'image_classification' || (model as { kind?: string }).kind === 'sequence-classifier';
  const lossFn: LossFn = classifies ? classificationLoss : causalLmLoss;
  const result = await train({
    model,
    optimizer: t.optimizer === 'sgd'
      ? { kind: 'sgd', momentum: t.momentum, weightDecay: t.weight_decay }
      : { kind: 'adamw', betas: t.betas, weightDecay: t.weight_decay, masterWeights: precision.masterWeights },
    examples: trainSet,
    lossFn,
    batchSize: t.batch_size,
    gradAccum: t.grad_accum,
    epochs: t.epochs,
    maxSteps: t.max_steps,
    schedule: { kind: t.schedule, lr: t.lr, warmupSteps: t.warmup_steps, warmupRatio: t.warmup_ratio, minLrRatio: t.min_lr_ratio },
    clipGradNorm: t.clip_grad_norm,
    seed: t.seed,
    methods,
    outputDir: cfg.output_dir,
    saveEvery: t.save_every ?? undefined,
    keepCheckpoints: t.keep_checkpoints,
    resume: cfg.resume,
    evalEvery: evalSet ? t.eval_every : null,
    evaluate: evalSet ? () => { model.eval(); const l = evalLoss(model, evalSet, 8, lossFn); model.train(); return { eval_loss: +l.toFixed(6) }; } : undefined,
    logEvery: t.log_every,
    metricsFiles: cfg.logging,
    progress: opts.progress,
    autocast: precision.autocast,
    lossChunk: t.loss_chunk,
    gradientCheckpointing: t.gradient_checkpointing,
    padId: 0,
    ...(p.tokenizer ? { tokenizer: p.tokenizer } : {}),
    stopOnSignals: opts.stopOnSignals,
    pauseAt: opts.pauseAt,
    // Methods' own data (mixing's general set, EWC's Fisher data, WiSE-FT's held-out set) in the train data's shape.
    // loadTrainConfig made a config file's relative paths absolute; a programmatic config's resolve against the
    // working directory.
    dist: activeDist(),
    // The spec comes checked, with its defaults, from the method's own schema (data/spec.ts).
    loadData: (spec, source) => loadExamples({ ...spec, path: resolve(spec.path) }, p, spec.name ?? source),
  });
  const finalDir = join(cfg.output_dir, 'final');
  model.eval();
  // A method that changes what the result is (LoRA: an adapter over the base) writes it; otherwise the full model.
  const saver = methods.find((m) => m.saveFinal);
  // Under data parallelism the replicas are identical; rank 0 writes the one copy. A run stopped by a signal is not
  // finished: its rerun resumes and writes final/.
  if (!result.preempted && (activeDist()?.rank ?? 0) === 0) {
    await writeFinal(finalDir, model, async () => {
      if (saver) await saver.saveFinal!({ model, dir: finalDir, pretrained: p, basePath: cfg.model.path });
      else savePretrained(p, finalDir);
    });
  }
  if ((activeDist()?.rank ?? 0) === 0) writeRunResults(cfg, p, methods, monitor, evalSet && { loss: () => evalLoss(model, evalSet, 8, lossFn), n: evalSet.length }, result.steps);
  monitor?.dispose();
  // The weights and their gradients: nothing after the run reads them (final/ holds the result).
  model.dispose();
  return { ...result, finalDir, monitor };
}

/** Writes final/ through `write`; a full disk becomes a message with the space needed (the checkpoints stay). */
async function writeFinal(dir: string, model: TrainableModel, write: () => Promise<void>): Promise<void> {
  try {
    injectFault('final');
    await write();
  } catch (e) {
    if (!isDiskFull(e)) throw e;
    // savePretrained removes its own temporary folder; a method's saver may leave one.
    rmSync(`${dir}.tmp-${process.pid}`, { recursive: true, force: true });
    const out = resolve(dir, '..');
    throw diskFullError(`the final model ${dir}`, out, tensorBytes(model.stateDict({ keepVars: true }).values()), listCheckpoints(out));
  }
}
