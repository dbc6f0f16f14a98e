// `retain tune [config] --max-forgetting X`: which recipe keeps the most while learning the target (tune/search.ts).
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { nonNegative, positiveInt } from './args.js';
import { loadTrainConfig } from '../config.js';
import { KNOBS } from '../tune/space.js';

/** `--budget 12` (candidates) or `--budget 30m` / `90s` / `2h` (time after which no training starts). */
export function parseBudget(v: string): { trials?: number; seconds?: number } {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h)$/.exec(v.trim());
  if (m) return { seconds: Number(m[1]) * { s: 1, m: 60, h: 3600 }[m[2] as 's' | 'm' | 'h'] };
  if (/^\d+$/.test(v.trim()) && Number(v) >= 1) return { trials: Number(v) };
  throw new InvalidArgumentError(`'${v}' is neither a number of candidates (e.g. 12) nor a time (e.g. 30m, 90s, 2h)`);
}

interface TuneCli { seedAll?: boolean; equalPasses?: boolean; rungs: number; maxForgetting: number; knobs: string[]; budget?: { trials?: number; seconds?: number }; seeds: number; replay?: string; steps: number; out: string }

export function registerTuneCommand(program: Command): void {
  program
    .command('tune')
    .argument('[config]', 'training config with a monitor (general and target probes) and training.max_steps; without one, the demo\'s setup (stories260K → arithmetic)')
    .argument('[overrides...]', 'key=value settings changed in the config, as retain train takes them')
    .requiredOption('--max-forgetting <points>', 'largest allowed drop of the general probes, in the monitor\'s unit (points for accuracies)', nonNegative)
    .option('--knobs <list>', `what to search (${KNOBS.join(', ')})`, (v) => v.split(',').map((s) => s.trim()), ['flow', 'mixing', 'l2', 'wise', 'lora', 'mofo'])
    .option('--budget <n|time>', 'at most n candidates (FT included, a seeded sample), or a time such as 30m after which no training starts', parseBudget)
    .option('--seeds <k>', 'seeds for the best candidate and FT, for intervals', positiveInt, 1)
    .option('--seed-all', 'rerun every full-length candidate with --seeds seeds, not only the best and FT (a frontier study)')
    .option('--equal-passes', 'equal passes over the target data instead of equal steps: mixing m:n trains (m+n)/m times the steps')
    .option('--rungs <n>', 'successive-halving rungs (1: every candidate trains to the end)', positiveInt, 3)
    .option('--replay <file>', 'general text to replay for knobs that need it (mixing, ewc) when the config gives none')
    .option('--steps <n>', 'without a config: optimizer steps of the demo\'s runs', positiveInt, 300)
    .option('--out <dir>', 'where runs, state.json, tune.json, best.yaml and the report go (rerun the same command to resume)', 'runs/tune')
    .action(async (config: string | undefined, overrides: string[], o: TuneCli) => {
      const { tune } = await import('../tune/search.js');
      const { summarize, writeOutputs, comparison, printSummary } = await import('../tune/outputs.js');
      let replay = o.replay ? { path: resolve(o.replay), format: { type: 'text' }, max_length: 64, name: 'replay' } as Record<string, unknown> : undefined;
      if (!config) {
        const { writeDemoTuneConfig } = await import('../suite/tune.js');
        const d = writeDemoTuneConfig(o.out, o.steps);
        config = d.config;
        replay ??= d.replay;
      }
      const cfg = loadTrainConfig(config, overrides);
      const r = await tune({ config: cfg, outDir: o.out, maxForgetting: o.maxForgetting, knobs: o.knobs, budget: o.budget ?? {}, seeds: o.seeds, seedAll: o.seedAll, equalPasses: o.equalPasses, rungs: o.rungs, replay });
      const s = summarize(r, o.maxForgetting);
      writeOutputs(cfg, s, resolve(o.out));
      const { writeReport } = await import('../report/report.js');
      await writeReport(comparison(r, o.out), o.out);
      console.log('\n' + printSummary(s));
      console.log(`\n${s.best ? `config: ${join(resolve(o.out), 'best.yaml')}\n` : ''}report: ${join(resolve(o.out), 'report.html')} (${s.seconds} s)`);
    });
}
