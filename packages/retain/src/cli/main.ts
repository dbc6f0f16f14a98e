// The `retain` command line.
import { dirname, resolve } from 'node:path';
import { Command } from 'commander';
import { int, num, nonNegative, nonNegativeInt, positiveInt, unitInterval } from './args.js';
import { describeFsError } from '../files.js';
import * as torch from '@retain/torch';
import { loadTrainConfig, configFromRaw, readTrainConfigRaw } from '../config.js';
import { isStaged } from '../train/stages.js';
import { trainStages } from './stages.js';
import { checkOutputDir, runTraining } from '../train/run.js';
import { saveRunConfig } from '../train/saved-config.js';
import { trainConfigJsonSchema } from '../schema.js';
import { loadPretrained, type Pretrained } from '../models/hub.js';
import { generate, type CausalLM, type GenerateOptions } from '../models/generate.js';
import { generationSettings, readGenerationConfig } from '../models/genconfig.js';
import { CharLSTM } from '../models/charlstm.js';
import { MnistMLP } from '../models/mlp.js';
import { CharTokenizer } from '../tokenizers/char.js';
import type { Tokenizer } from '../tokenizers/types.js';
import type { T5ForConditionalGeneration } from '../models/t5.js';
import { checkDistConfig, DistConfigError, distSettings, launchWorkers, rankDevice, startDist, stopDist } from '../train/dist.js';
import { registerEvalCommands } from './eval.js';
import { registerDemoCommand } from './demo.js';
import { registerTuneCommand } from './tune.js';
import { registerReportCommand } from './report.js';
import { registerSynthCommand } from './synth.js';
import { registerMergeCommand } from './merge.js';
import { inspectMemory } from './inspect-memory.js';
import { EXIT_RESUMABLE } from '../train/preempt.js';
import { lockOutputDir } from '../lock.js';

interface GenerateCliOptions {
  prompt: string;
  /** Flags, then generation_config.json, then retain's defaults (genconfig.ts generationSettings). */
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  /** generation_config.json's eos_token_id list (the tokenizer's EOS always stops too). */
  stopTokens?: number[];
  stop?: string[];
  seed?: number;
  tokenizer?: string;
}

/** The prompt and its continuation, for every family that generates; classifiers are refused by name. */
function generateText(path: string, p: Pretrained, o: GenerateCliOptions): string {
  const sampling = { temperature: o.temperature, topP: o.topP, topK: o.topK || undefined, seed: o.seed };
  if (p.model instanceof MnistMLP) throw new Error(`${path} is an image classifier (model_type ${p.config.model_type}) and does not generate text; score it with retain eval and an image_classification task`);
  if (!p.tokenizer) throw new Error(`${path} has no tokenizer; pass --tokenizer`);
  if (p.model instanceof CharLSTM) return o.prompt + generateChars(path, p.model, p.tokenizer, o, sampling);
  if ((p.model as { kind?: string }).kind === 'seq2seq-lm') {
    // Encoder-decoder (T5): the prompt is the encoder's input, the answer is decoded from the start token.
    const t5 = p.model as unknown as T5ForConditionalGeneration;
    const ids = p.tokenizer.encode(o.prompt, { bos: false });
    const eos = p.tokenizer.eosId;
    const input = torch.tensor([eos >= 0 && ids[ids.length - 1] !== eos ? [...ids, eos] : ids], { dtype: 'int64' });
    const out = t5.generate(input, { maxNewTokens: o.maxNewTokens, ...sampling })[0];
    let text = p.tokenizer.decode(out.filter((t) => t !== eos));
    for (const s of o.stop ?? []) if (text.includes(s)) text = text.slice(0, text.indexOf(s));
    return text;
  }
  return o.prompt + generate(p.model as unknown as CausalLM, p.tokenizer, o.prompt, { maxNewTokens: o.maxNewTokens, stop: o.stop, stopTokens: o.stopTokens, ...sampling }).text;
}

/** The char-LSTM carries a recurrent state instead of a cache, and has no start symbol to begin from without a prompt. */
function generateChars(path: string, model: CharLSTM, tok: Tokenizer, o: GenerateCliOptions, sampling: GenerateOptions): string {
  if (!(tok instanceof CharTokenizer)) throw new Error(`${path} is a character LSTM; its vocabulary is its vocab.json, so leave out --tokenizer`);
  if (o.prompt.length === 0) throw new Error(`${path} is a character LSTM without a start-of-text symbol: give -p with at least one character to start from`);
  const unknown = [...o.prompt].findIndex((ch) => !tok.vocab.has(ch));
  if (unknown >= 0) throw new Error(`-p: character ${JSON.stringify([...o.prompt][unknown])} at position ${unknown} is not in the vocabulary of ${path} (${tok.vocabSize} characters); leave it out of the prompt`);
  return model.sample(tok.vocab, o.prompt, { length: o.maxNewTokens, stop: o.stop, ...sampling });
}

const program = new Command();
program.name('retain').description('Fine-tune pretrained models without catastrophic forgetting, on libtorch.').version('0.1.0');

program
  .command('train')
  .argument('<config>', 'YAML training config (see configs/; every key: retain schema)')
  .argument('[overrides...]', 'settings changed for this run: key=value with a dotted key and a YAML value, e.g. training.lr=3e-4 methods=[flow,l2] (a list is indexed by number: methods.0.lambda=0.1); validated as the file is, saved with it in output_dir/run_config.yaml')
  .description('fine-tune a model as the config says; checkpoints and metrics.jsonl go to output_dir')
  .option('--nproc <n>', 'data-parallel worker processes on this machine (training.batch_size is the global batch)', int)
  .option('--rank <r>', 'multi-machine launch: this process\'s rank (or RANK)', int)
  .option('--world-size <n>', 'multi-machine launch: number of processes in all (or WORLD_SIZE)', int)
  .option('--master-addr <host>', 'multi-machine launch: address of rank 0 (or MASTER_ADDR)')
  .option('--master-port <port>', 'multi-machine launch: TCP port of the store on rank 0 (or MASTER_PORT)', int)
  .option('--dist-timeout <s>', 'seconds a rendezvous or collective may wait for the other ranks (or RETAIN_DIST_TIMEOUT; default 300)', num)
  .action(async (config: string, overrides: string[], o: { nproc?: number; rank?: number; worldSize?: number; masterAddr?: string; masterPort?: number; distTimeout?: number }) => {
    const raw = readTrainConfigRaw(config, overrides);
    if (isStaged(raw)) return trainStages(raw, config, overrides, o);
    const cfg = configFromRaw(raw, dirname(resolve(config)), overrides.length ? `${config} with ${overrides.join(' ')}` : config);
    if (o.nproc !== undefined) {
      if (o.nproc < 1) throw new DistConfigError(`--nproc must be at least 1, got ${o.nproc}`);
      if (o.nproc > 1) {
        if (o.rank !== undefined || o.worldSize !== undefined) throw new DistConfigError('--nproc starts every rank itself; --rank/--world-size are for launching one process per machine');
        checkDistConfig(cfg, o.nproc, o.nproc);
        const per = cfg.training.batch_size / o.nproc;
        for (let r = 0; r < o.nproc; r++) console.error(`retain: rank ${r}: rows ${r * per}..${(r + 1) * per - 1} of every global batch of ${cfg.training.batch_size}${r === 0 ? '; writes checkpoints, metrics.jsonl and the final model' : ''}`);
        const args = [...process.execArgv, process.argv[1], 'train', config, ...overrides, ...(o.distTimeout ? ['--dist-timeout', String(o.distTimeout)] : [])];
        process.exitCode = await launchWorkers({ nproc: o.nproc, args, timeoutS: o.distTimeout });
        return;
      }
    }
    const dist = distSettings({ rank: o.rank, worldSize: o.worldSize, masterAddr: o.masterAddr, masterPort: o.masterPort, timeout: o.distTimeout });
    if (dist) {
      dist.backend = checkDistConfig(cfg, dist.worldSize);
      cfg.model.device = rankDevice(cfg.model.device, Number(process.env.LOCAL_RANK ?? 0), dist.backend);
      const per = cfg.training.batch_size / dist.worldSize;
      console.error(`retain: rank ${dist.rank} of ${dist.worldSize} (${dist.backend}, store ${dist.masterAddr}:${dist.masterPort}): joining; trains rows ${dist.rank * per}..${(dist.rank + 1) * per - 1} of every global batch of ${cfg.training.batch_size}${dist.rank === 0 ? ', writes checkpoints, metrics and the final model' : ''}`);
      const ctx = startDist(dist);
      console.error(`retain: rank ${dist.rank}: gradients summed ${ctx.overlap ? 'during backward (c10d Reducer' : 'after backward (reduceGradients'}, ${+(dist.bucketBytes / 2 ** 20).toFixed(2)} MiB buckets)`);
    }
    if (!dist || dist.rank === 0) {
      checkOutputDir(cfg.output_dir, cfg.model.path);
      // Held until the process exits, and taken before anything is written there: a second run on the folder is
      // refused with the first one's run_config.yaml untouched.
      lockOutputDir(cfg.output_dir);
      saveRunConfig(cfg, config, overrides);
    }
    let r;
    try {
      r = await runTraining(cfg, undefined, { progress: !dist || dist.rank === 0, stopOnSignals: true, locked: true });
    } catch (e) {
      // No barrier: the other ranks may be the reason this one failed.
      if (dist) console.error(`retain: rank ${dist.rank} of ${dist.worldSize} failed`);
      throw e;
    }
    stopDist();
    if (r.preempted) {
      if (!dist || dist.rank === 0) console.error(`retain: stopped by ${r.preempted} after step ${r.steps}, checkpoint written; exit status ${EXIT_RESUMABLE}: rerun the same command to resume`);
      process.exitCode = EXIT_RESUMABLE;
    }
    if (!dist || dist.rank === 0) console.log(JSON.stringify({ steps: r.steps, final_loss: r.finalLoss, resumed_from: r.resumedFrom, ...(r.preempted ? { preempted: r.preempted } : { saved: r.finalDir }), ...(dist ? { world_size: dist.worldSize } : {}) }));
  });

program
  .command('generate')
  .argument('<model>', 'model directory (HF), org/name from the Hugging Face cache (offline), llama2.c .bin or ml5 char-LSTM folder')
  .description('continue a prompt; decoding as the model\'s generation_config.json says (eos ids, do_sample, temperature, top_p, top_k, max_new_tokens) unless a flag says otherwise')
  .option('-p, --prompt <text>', 'prompt text (the char-LSTM needs at least one character)', '')
  .option('-n, --max-new-tokens <n>', 'tokens to generate (default: generation_config.json\'s max_new_tokens, else 64)', positiveInt)
  .option('-t, --temperature <t>', '0 decodes greedily (default: generation_config.json\'s when it samples, else 0)', nonNegative)
  .option('--top-p <p>', 'nucleus sampling mass (default: generation_config.json\'s, else 1)', unitInterval)
  .option('--top-k <k>', 'sample among the k most likely tokens, 0: all (default: generation_config.json\'s, 50 when it samples without one, else 0)', nonNegativeInt)
  .option('--stop <s...>', 'stop strings')
  .option('--seed <n>', 'sampling seed', int)
  .option('--tokenizer <path>', 'tokenizer file or directory')
  .action(async (model: string, o: GenerateCliOptions) => {
    if ((o.stop ?? []).includes('')) throw new Error("--stop: an empty stop string would end generation before the first token; give non-empty strings");
    const p = await loadPretrained(model, { tokenizer: o.tokenizer });
    try {
      p.model.eval();
      const settings = generationSettings(o, readGenerationConfig(p.source.path));
      process.stdout.write(generateText(model, p, { ...o, ...settings }) + '\n');
    } finally {
      p.model.dispose();
    }
  });

program
  .command('schema')
  .description('print the JSON Schema of a training config (every key and method option: type, allowed values, default, description)')
  .action(() => {
    console.log(JSON.stringify(trainConfigJsonSchema(), null, 2));
  });

program
  .command('inspect')
  .argument('<model>', 'model directory (HF) or llama2.c .bin')
  .description('print the architecture, parameter counts and config; with --memory, the predicted peak memory of a training step')
  .option('--json', 'machine-readable output')
  .option('--memory', 'predict the peak memory of one training step (weights, gradients, optimizer state, activations)')
  .option('--batch <n>', 'with --memory: batch size', positiveInt, 1)
  .option('--seq <n>', 'with --memory: tokens per sequence', positiveInt, 512)
  .option('--method <m>', 'with --memory: full or lora', 'full')
  .option('--precision <p>', 'with --memory: fp32 or bf16 (bfloat16 weights, float32 master weights)', 'fp32')
  .option('--checkpointing', 'with --memory: every decoder layer checkpointed')
  .option('--loss-chunk <n>', 'with --memory: cross-entropy positions per chunk', positiveInt)
  .action(async (model: string, o) => {
    if (o.memory) return inspectMemory(model, o);
    const p = await loadPretrained(model);
    const params = p.model.namedParameters();
    const total = params.reduce((s, [, t]) => s + t.numel(), 0);
    const info = { path: model, format: p.source.format, model_type: p.config.model_type, parameters: total, tensors: params.length, dtype: params[0]?.[1].dtype, tokenizer: p.tokenizer ? { vocab_size: p.tokenizer.vocabSize, bos: p.tokenizer.bosId, eos: p.tokenizer.eosId } : null, config: p.config };
    if (o.json) console.log(JSON.stringify(info, null, 2));
    else {
      console.log(`${model}: ${info.model_type} (${info.format}), ${total.toLocaleString('en-US')} parameters in ${params.length} tensors, ${info.dtype}`);
      console.log(p.model.toString());
      if (info.tokenizer) console.log(`tokenizer: vocab ${info.tokenizer.vocab_size}, bos ${info.tokenizer.bos}, eos ${info.tokenizer.eos}`);
    }
  });

registerEvalCommands(program);
registerDemoCommand(program);
registerTuneCommand(program);
registerReportCommand(program);
registerSynthCommand(program);
registerMergeCommand(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  // A failure the user can act on (bad config, data, checkpoint, shapes, NaN loss, a dead rank) is one clear message;
  // a stack only helps when retain itself is at fault (a JS programming error), or when asked for.
  const err = e instanceof Error ? e : new Error(String(e));
  const bug = err instanceof TypeError || err instanceof ReferenceError || err instanceof SyntaxError;
  if (process.env.RETAIN_DEBUG === '1' || bug) {
    console.error(`retain: ${err.stack ?? err.message}`);
    if (bug) console.error('retain: this looks like a bug in retain itself; please report it with the lines above');
  } else {
    console.error(`retain: ${describeFsError(err) ?? err.message}`);
  }
  process.exitCode = 1;
});
