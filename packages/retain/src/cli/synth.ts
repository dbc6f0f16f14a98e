// `retain synth`: the command-line face of synthesize() (src/synth/index.ts).
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { int, nonNegative, nonNegativeInt, num, positiveInt, unitInterval } from './args.js';
import { synthesize, type SynthMode } from '../synth/index.js';
import { lockOutputFile, whileLocked } from '../lock.js';

/** A share in [0, 1] (--max-repeat: 0 allows no repeated 3-gram, 1 turns the filter off). */
function share(v: string): number {
  const n = num(v);
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError(`'${v}' must be in [0, 1]`);
  return n;
}

/** A consensus score on its 1-5 scale (below 1 would keep every answer, above 5 none). */
function scoreScale(v: string): number {
  const n = num(v);
  if (!(n >= 1 && n <= 5)) throw new InvalidArgumentError(`'${v}' must be between 1 and 5 (the consensus score scale)`);
  return n;
}

export function registerSynthCommand(program: Command): void {
  program
    .command('synth')
    .requiredOption('--model <path>', 'base model: HF directory, llama2.c .bin or ml5 folder')
    .requiredOption('--out <file.jsonl>', 'output JSONL; rerunning with the same file resumes it')
    .requiredOption('--count <n>', 'records wanted (with --select-k: the pool size)', positiveInt)
    .option('--mode <mode>', 'bos (context-free) | magpie (open user turn of the chat template) | fewshot (from --demos)', 'bos')
    .option('--demos <file>', 'fewshot demonstrations (JSONL/JSON/CSV records)')
    .option('--shots <k>', 'demonstrations per fewshot prompt', positiveInt, 3)
    .option('--prompt-field <name>', 'fewshot + consensus: the field answered (default: the first field)')
    .option('--answer-field <name>', 'fewshot + consensus: the answer field (default: the last field)')
    .option('--no-answer', 'magpie: keep instructions only ({"text": ...}) instead of answering them')
    .option('--system <text>', 'magpie: system message before the user turn')
    .option('--chat-template <file>', 'Jinja chat template overriding the tokenizer\'s')
    .option('--start-text <text>', 'models without BOS/EOS (char-LSTM): context-free samples start after this text', '\n')
    .option('--tokenizer <path>', 'tokenizer file or directory')
    .option('-n, --max-new-tokens <n>', 'tokens per sample', positiveInt, 128)
    .option('--answer-tokens <n>', 'tokens per answer (default: --max-new-tokens)', positiveInt)
    .option('-t, --temperature <t>', 'sampling temperature (0 decodes greedily)', nonNegative, 1)
    .option('--top-p <p>', 'nucleus sampling mass, in (0, 1]', unitInterval, 1)
    .option('--top-k <k>', 'sample among the k most likely tokens (0: all)', nonNegativeInt, 0)
    .option('--seed <n>', 'seed (each record stores its seed and sample index)', int, 0)
    .option('--batch-size <n>', 'samples drawn per prompt in one batch', positiveInt, 16)
    .option('--min-tokens <n>', 'drop samples with fewer tokens', nonNegativeInt)
    .option('--max-tokens <n>', 'drop samples with more tokens', positiveInt)
    .option('--max-repeat <r>', 'drop samples whose repeated word 3-gram share exceeds r (1 turns it off)', share, 0.5)
    .option('--min-loss <x>', "drop samples whose mean token loss under the base model is below x (loops)", nonNegative)
    .option('--max-loss <x>', 'drop samples whose mean token loss is above x (gibberish)', nonNegative)
    .option('--jaccard <j>', 'near-duplicate threshold on word 3-gram Jaccard similarity (1 keeps all but exact duplicates), in (0, 1]', unitInterval, 0.7)
    .option('--no-dedup', 'keep duplicates')
    .option('--answer-models <paths>', 'comma-separated models that answer every prompt and score every answer (consensus)')
    .option('--min-score <s>', 'drop prompts whose best answer scores below s (1-5)', scoreScale)
    .option('--select-k <k>', 'k-means clusters for diverse selection (the pool goes to <out>.pool.jsonl)', positiveInt)
    .option('--per-cluster <n>', 'records kept nearest each centroid', positiveInt, 1)
    .option('--max-attempts <n>', 'give up after this many candidates (default 50 × count)', positiveInt)
    .option('--threads <n>', 'intra-op threads', positiveInt)
    .option('--quiet', 'no progress lines')
    .action(async (o) => {
      // A second synth on the same file would resume from records the first is writing.
      const lock = lockOutputFile(o.out);
      if (o.threads) (await import('@retain/torch')).setNumThreads(o.threads);
      const r = await whileLocked(lock, () => synthesize({
        model: o.model,
        tokenizer: o.tokenizer,
        out: o.out,
        count: o.count,
        mode: o.mode as SynthMode,
        demos: o.demos,
        shots: o.shots,
        promptField: o.promptField,
        answerField: o.answerField,
        answer: o.answer,
        system: o.system,
        chatTemplate: o.chatTemplate ? readFileSync(o.chatTemplate, 'utf8') : undefined,
        startText: o.startText,
        maxNewTokens: o.maxNewTokens,
        answerTokens: o.answerTokens,
        temperature: o.temperature,
        topP: o.topP < 1 ? o.topP : undefined,
        topK: o.topK > 0 ? o.topK : undefined,
        seed: o.seed,
        batchSize: o.batchSize,
        dedup: o.dedup === false ? false : { jaccard: o.jaccard >= 1 ? null : o.jaccard },
        filters: { minTokens: o.minTokens, maxTokens: o.maxTokens, maxRepeat: o.maxRepeat >= 1 ? null : o.maxRepeat, minLoss: o.minLoss, maxLoss: o.maxLoss },
        answerModels: o.answerModels ? String(o.answerModels).split(',').map((s: string) => s.trim()).filter(Boolean) : undefined,
        minScore: o.minScore,
        select: o.selectK ? { k: o.selectK, perCluster: o.perCluster } : undefined,
        maxAttempts: o.maxAttempts,
        progress: o.quiet ? false : true,
      }));
      console.log(JSON.stringify({ out: r.out, pool: r.pool, records: r.records.length, accepted: r.accepted, added: r.added, attempted: r.attempted, rejected: r.rejected, selected: r.selected, seconds: +r.seconds.toFixed(2) }));
      if (r.accepted < o.count) process.exitCode = 2;
    });
}
