// The demo's setup as a config for `retain tune` without one: stories260K → arithmetic, with the demo's probes
// (held-out TinyStories to keep, held-out problems to gain) as the monitor and TinyStories as the replay data.
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { ASSETS, DEFAULT_MODEL, prepareDemoData } from './demo.js';

/** Writes outDir/demo-config.yaml (and the demo's data beside it); returns its path and the replay data spec. */
export function writeDemoTuneConfig(outDir: string, steps = 300, seed = 0): { config: string; replay: Record<string, unknown> } {
  const out = resolve(outDir);
  const data = prepareDemoData(out, { trainSize: 1500, testSize: 200, seed });
  const cfg = {
    model: { path: DEFAULT_MODEL },
    data: { train: { path: data.train, format: { type: 'prompt_completion' }, max_length: 64 } },
    training: { max_steps: steps, batch_size: 16, lr: 0.002, schedule: 'cosine', warmup_ratio: 0.06, weight_decay: 0.01, clip_grad_norm: 1.0, seed, log_every: 10 },
    monitor: { every: 25, tasks: [join(out, 'data', 'tasks.yaml')], target: ['arithmetic'], limit: 60 },
    output_dir: join(out, 'demo-run'),
  };
  const config = join(out, 'demo-config.yaml');
  writeFileSync(config, `# Written by retain tune: the demo's setup (stories260K → arithmetic).\n${toYaml(cfg)}`);
  return { config, replay: { path: join(ASSETS, 'data', 'tinystories-replay.txt'), format: { type: 'text' }, max_length: 64, name: 'tinystories' } };
}
