// `retain inspect`: what a model folder holds, or (--memory) what one training step on it would take.
import type { Command } from 'commander';
import { positiveInt } from './args.js';
import { loadPretrained } from '../models/hub.js';
import { inspectMemory } from './inspect-memory.js';

export function registerInspectCommand(program: Command): void {
  program
    .command('inspect')
    .argument('<model>', 'model directory (HF) or llama2.c .bin')
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
}
