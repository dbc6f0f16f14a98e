// `retain inspect <model> --memory`: the predicted peak memory of a training step (train/memory.ts) for a batch and
// sequence length, by part, without building the model when a config.json is there to read.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadPretrained } from '../models/hub.js';
import { predictMemory, type MemoryOptions } from '../train/memory.js';

export interface InspectMemoryOptions {
  batch: number;
  seq: number;
  method: string;
  precision: string;
  checkpointing?: boolean;
  lossChunk?: number;
  json?: boolean;
}

function choice<T extends string>(option: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v)) throw new Error(`${option} '${v}' is not one of ${allowed.join(', ')}`);
  return v as T;
}

async function readConfig(model: string): Promise<Record<string, unknown>> {
  const file = join(model, 'config.json');
  if (existsSync(model) && statSync(model).isDirectory() && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  return (await loadPretrained(model)).config as unknown as Record<string, unknown>;
}

const gib = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : `${(b / 2 ** 20).toFixed(1)} MiB`);

export async function inspectMemory(model: string, o: InspectMemoryOptions): Promise<void> {
  const opts: MemoryOptions = {
    batch: o.batch, seq: o.seq, method: choice('--method', o.method, ['full', 'lora'] as const), precision: choice('--precision', o.precision, ['fp32', 'bf16'] as const),
    checkpointing: o.checkpointing ?? false, lossChunk: o.lossChunk ?? null,
  };
  const p = predictMemory(await readConfig(model), opts);
  if (o.json) {
    console.log(JSON.stringify({ path: model, ...opts, ...p }, null, 2));
    return;
  }
  console.log(`${model}: one ${opts.method} training step, batch ${opts.batch} × ${opts.seq} tokens, ${opts.precision}${opts.checkpointing ? ', every layer checkpointed' : ''}${opts.lossChunk ? `, loss in chunks of ${opts.lossChunk}` : ''} (CPU, AdamW)`);
  console.log(`  parameters   ${p.parameters.toLocaleString('en-US')} (${p.trainable.toLocaleString('en-US')} trained)`);
  for (const k of ['weights', 'gradients', 'optimizer', 'activations'] as const) console.log(`  ${k.padEnd(12)} ${gib(p[k])}`);
  console.log(`  peak         ${gib(p.peak)} (at the ${p.at === 'backward' ? 'start of backward' : 'optimizer step'})`);
}
