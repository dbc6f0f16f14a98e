// `retain generate`: a prompt continued by any model family that generates text.
import type { Command } from 'commander';
import { int, nonNegative, nonNegativeInt, positiveInt, unitInterval } from './args.js';
import * as torch from '@retain/torch';
import { loadPretrained, type Pretrained } from '../models/hub.js';
import { generate, type CausalLM, type GenerateOptions } from '../models/generate.js';
import { generationSettings, readGenerationConfig } from '../models/genconfig.js';
import { CharLSTM } from '../models/charlstm.js';
import { MnistMLP } from '../models/mlp.js';
import { CharTokenizer } from '../tokenizers/char.js';
import type { Tokenizer } from '../tokenizers/types.js';
import type { T5ForConditionalGeneration } from '../models/t5.js';

interface GenerateCliOptions {
  /** The base model of a LoRA adapter given as <model>. */
  base?: string;
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

export function registerGenerateCommand(program: Command): void {
  program
    .command('generate')
    .argument('<model>', 'model directory (HF), org/name from the Hugging Face cache (offline), llama2.c .bin or ml5 char-LSTM folder')
    .option('-p, --prompt <text>', 'prompt text (the char-LSTM needs at least one character)', '')
    .option('-n, --max-new-tokens <n>', 'tokens to generate (default: generation_config.json\'s max_new_tokens, else 64)', positiveInt)
    .option('-t, --temperature <t>', '0 decodes greedily (default: generation_config.json\'s when it samples, else 0)', nonNegative)
    .option('--top-p <p>', 'nucleus sampling mass (default: generation_config.json\'s, else 1)', unitInterval)
    .option('--top-k <k>', 'sample among the k most likely tokens, 0: all (default: generation_config.json\'s, 50 when it samples without one, else 0)', nonNegativeInt)
    .option('--stop <s...>', 'stop strings')
    .option('--seed <n>', 'sampling seed', int)
    .option('--tokenizer <path>', 'tokenizer file or directory')
    .option('--base <path>', 'with a LoRA adapter folder as <model>: the base model to merge it into (default: the adapter\'s base_model_name_or_path)')
    .action(async (model: string, o: GenerateCliOptions) => {
      if ((o.stop ?? []).includes('')) throw new Error("--stop: an empty stop string would end generation before the first token; give non-empty strings");
      const p = await loadPretrained(model, { tokenizer: o.tokenizer, adapterBase: o.base });
      try {
        p.model.eval();
        const settings = generationSettings(o, readGenerationConfig(p.source.path));
        process.stdout.write(generateText(model, p, { ...o, ...settings }) + '\n');
      } finally {
        p.model.dispose();
      }
    });
}
