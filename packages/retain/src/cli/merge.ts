// `retain merge <adapter> --out dir`: a LoRA adapter (PEFT's save_pretrained or a retain LoRA run's final/) merged into
// its base model and written as a plain Hugging Face model directory, as PEFT's merge_and_unload() + save_pretrained.
import type { Command } from 'commander';
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { loadPretrained, savePretrained } from '../models/hub.js';
import { readAdapterConfig } from '../models/lora/peft.js';
import { isHubId, resolveHubModel } from '../models/hfcache.js';

/**
 * The output folder may be new, or a model folder that the merge replaces whole (savePretrained swaps it in); never the
 * adapter's or the base model's own folder, or a folder holding other files, which the swap would delete.
 */
export function checkMergeOut(adapter: string, base: string, out: string): void {
  const dir = resolve(out);
  if (!existsSync(dir)) return;
  if (!statSync(dir).isDirectory()) throw new Error(`--out ${out} is a file; give a folder for the merged model (a new one, or a model folder to replace)`);
  if (realpathSync(dir) === realpathSync(adapter)) throw new Error(`--out ${out} is the adapter's own folder; the merged model replaces its folder whole, so give another one`);
  // Where loadPretrained looks for the base (relative to the adapter, then the working directory, then for a hub id
  // the Hugging Face cache's snapshot).
  const bases = isAbsolute(base) ? [base] : [join(adapter, base), resolve(base)];
  if (isHubId(base)) {
    try {
      bases.push(resolveHubModel(base));
    } catch {
      // Not in the cache: there is no cached base to overwrite.
    }
  }
  if (bases.some((b) => existsSync(b) && realpathSync(b) === realpathSync(dir))) throw new Error(`--out ${out} is the base model's folder; the merged model would replace the base, so give another one`);
  const files = readdirSync(dir);
  if (files.length > 0 && !files.includes('config.json')) throw new Error(`--out ${out} holds files and no config.json: it is not a model folder, and the merged model replaces its folder whole; give a new folder`);
}

export function registerMergeCommand(program: Command): void {
  program
    .command('merge')
    .argument('<adapter>', "LoRA adapter folder: PEFT's save_pretrained, or a retain LoRA run's final/ (its base from base_model_name_or_path)")
    .requiredOption('-o, --out <dir>', 'folder for the merged model (config.json, safetensors, tokenizer files)')
    .option('--base <path>', 'the base model to merge into (default: the adapter\'s base_model_name_or_path)')
    .action(async (adapter: string, o: { out: string; base?: string }) => {
      if (!existsSync(join(adapter, 'adapter_config.json'))) {
        throw new Error(`${adapter}: not a LoRA adapter folder (no adapter_config.json); retain merge takes PEFT's save_pretrained folder or a retain LoRA run's final/`);
      }
      const base = o.base ?? String(readAdapterConfig(adapter).base_model_name_or_path ?? '');
      checkMergeOut(adapter, base, o.out);
      // An adapter folder loads as its base with the adapter merged (hub.ts loadAdapterModel).
      const p = await loadPretrained(adapter, { adapterBase: o.base });
      try {
        savePretrained(p, o.out);
        const parameters = p.model.namedParameters().reduce((s, [, t]) => s + t.numel(), 0);
        console.log(JSON.stringify({ merged: resolve(o.out), adapter: resolve(adapter), base, parameters }));
      } finally {
        p.model.dispose();
      }
    });
}
