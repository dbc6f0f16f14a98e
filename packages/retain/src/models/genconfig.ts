// A model's generation_config.json, as transformers' generate() uses it: the end-of-sequence ids (one or a list) and
// the default decoding (do_sample, temperature, top_p, top_k, max_new_tokens). `retain generate`'s flags override it.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { decodeUtf8, readUserFile } from '../files.js';

export interface GenerationDefaults {
  eosTokenIds: number[];
  doSample?: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  maxNewTokens?: number;
}

/** The flags a user gave (undefined: not given). */
export interface GenerationFlags {
  maxNewTokens?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
}

export interface GenerationSettings {
  maxNewTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  stopTokens: number[];
}

/** transformers' GenerationConfig defaults for what a file leaves out when it samples. */
const HF_SAMPLING = { temperature: 1, topP: 1, topK: 50 };

function numberOr(v: unknown, key: string, file: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`${file}: ${key} must be a number ≥ 0, got ${JSON.stringify(v)}`);
  return v;
}

/** generation_config.json beside the weights, or null when the folder has none. */
export function readGenerationConfig(dir: string): GenerationDefaults | null {
  const file = join(dir, 'generation_config.json');
  if (!existsSync(dir) || !statSync(dir).isDirectory() || !existsSync(file)) return null;
  let g: Record<string, unknown>;
  try {
    g = JSON.parse(decodeUtf8(readUserFile(file), file));
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message}); fix it or remove it`);
  }
  const eos = g.eos_token_id;
  const eosTokenIds = eos === undefined || eos === null ? [] : Array.isArray(eos) ? eos : [eos];
  if (!eosTokenIds.every((t) => Number.isInteger(t) && t >= 0)) throw new Error(`${file}: eos_token_id must be a token id or a list of them, got ${JSON.stringify(eos)}`);
  if (g.do_sample !== undefined && typeof g.do_sample !== 'boolean') throw new Error(`${file}: do_sample must be true or false, got ${JSON.stringify(g.do_sample)}`);
  const maxNew = numberOr(g.max_new_tokens, 'max_new_tokens', file);
  return {
    eosTokenIds: eosTokenIds as number[],
    doSample: g.do_sample as boolean | undefined,
    temperature: numberOr(g.temperature, 'temperature', file),
    topP: numberOr(g.top_p, 'top_p', file),
    topK: numberOr(g.top_k, 'top_k', file),
    maxNewTokens: maxNew === undefined ? undefined : Math.floor(maxNew),
  };
}

/**
 * Flags first, then the file, then retain's defaults (64 tokens, greedy). A file that samples (do_sample: true) gets
 * transformers' defaults for what it leaves out (temperature 1, top_p 1, top_k 50); one that does not decodes
 * greedily whatever its temperature says, as generate() does, unless -t asks for sampling.
 */
export function generationSettings(flags: GenerationFlags, gen: GenerationDefaults | null): GenerationSettings {
  const sampling = gen?.doSample === true;
  return {
    maxNewTokens: flags.maxNewTokens ?? gen?.maxNewTokens ?? 64,
    temperature: flags.temperature ?? (sampling ? gen!.temperature ?? HF_SAMPLING.temperature : 0),
    topP: flags.topP ?? (gen?.topP !== undefined ? gen.topP : 1),
    topK: flags.topK ?? (gen?.topK !== undefined ? gen.topK : sampling ? HF_SAMPLING.topK : 0),
    stopTokens: gen?.eosTokenIds ?? [],
  };
}
