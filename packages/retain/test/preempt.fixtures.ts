// The tiny stories260K run the preemption and soak tests interrupt (train.preempt, train.soak).
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ASSETS = new URL('../assets/stories260K/', import.meta.url).pathname;

/** A run folder with its config (JSON is YAML); `training` overrides keys of the 6-step default. */
export function makeRun(training: Record<string, unknown> = {}, outputDir = 'out'): { dir: string; cfg: string; out: string } {
  const dir = mkdtempSync(join(tmpdir(), 'retain-preempt-'));
  const rows = Array.from({ length: 24 }, (_, i) => ({ prompt: `Tom had ${i % 7} apples and got ${(i * 3) % 5} more. Now Tom has`, completion: ` ${(i % 7) + ((i * 3) % 5)} apples.` }));
  writeFileSync(join(dir, 'train.jsonl'), rows.map((r) => JSON.stringify(r)).join('\n'));
  const cfg = {
    model: { path: join(ASSETS, 'stories260K.bin'), tokenizer: join(ASSETS, 'tok512.bin') },
    data: { train: { path: 'train.jsonl', format: { type: 'prompt_completion' }, max_length: 64 } },
    training: { max_steps: 6, batch_size: 4, lr: 0.002, schedule: 'cosine', warmup_steps: 1, seed: 1, threads: 1, save_every: 2, ...training },
    output_dir: outputDir,
  };
  writeFileSync(join(dir, 'train.yaml'), JSON.stringify(cfg));
  return { dir, cfg: join(dir, 'train.yaml'), out: join(dir, outputDir) };
}

/** The losses of metrics.jsonl, one per logged step. */
export const lossesOf = (out: string): number[] => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.loss !== undefined).map((r) => r.loss);

/** What a writer leaves only while it writes: temporary files and folders (checkpoint-N.tmp, final.tmp-<pid>, x.tmp-<pid>, final.old-<pid>) and locks. */
const TEMPORARY = /\.tmp$|\.(tmp|old)-\d+$|\.lock$|\.takeover$/;
export const leftovers = (out: string): string[] => readdirSync(out).filter((f) => TEMPORARY.test(f));
