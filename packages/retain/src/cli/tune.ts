// `retain tune --max-forgetting X`: runs the sweep of suite/recipes.ts (tuneRecipes) on the demo's setup and
// prints the best configuration within the forgetting budget (suite/tune.ts), with the report.
import { join, resolve } from 'node:path';
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { nonNegative, positiveInt } from './args.js';
import { DEMO_REPLAY, runDemo } from '../suite/demo.js';
import { pickWithinBudget } from '../suite/tune.js';
import { TUNE_KNOBS, tuneRecipes, type TuneKnob } from '../suite/recipes.js';

export function registerTuneCommand(program: Command): void {
  program
    .command('tune')
    .description('sweep anti-forgetting knobs on stories260K → arithmetic; return the best target score within a forgetting budget, with the Pareto chart')
    .requiredOption('--max-forgetting <points>', 'largest allowed drop of the general score (TinyStories next-token accuracy), in points', nonNegative)
    .option('--knobs <list>', `knobs to sweep (${TUNE_KNOBS.join(', ')})`, (v) => v.split(',').map((s) => s.trim()), [...TUNE_KNOBS])
    .option('--steps <n>', 'optimizer steps per run', positiveInt, 300)
    .option('--out <dir>', 'where runs, results and the report go', 'runs/tune')
    .action(async (o: { maxForgetting: number; knobs: string[]; steps: number; out: string }) => {
      const bad = o.knobs.filter((k) => !(TUNE_KNOBS as readonly string[]).includes(k));
      if (bad.length) throw new Error(`--knobs: unknown ${bad.map((b) => `'${b}'`).join(', ')}; use ${TUNE_KNOBS.join(', ')}`);
      const recipes = tuneRecipes(o.knobs as TuneKnob[], DEMO_REPLAY);
      const c = await runDemo({ outDir: o.out, steps: o.steps, recipes });
      const { points, best } = pickWithinBudget(c, recipes, o.maxForgetting);
      const { writeReport } = await import('../report/report.js');
      await writeReport(c, o.out);
      console.log('\nrun                 target EM   general acc   forgetting');
      for (const p of [...points].sort((a, b) => b.target - a.target)) {
        console.log(`${p.label.padEnd(18)} ${p.target.toFixed(1).padStart(8)}%  ${p.general.toFixed(2).padStart(10)}%  ${p.forgetting.toFixed(2).padStart(10)}${p === best ? '   ← best within budget' : ''}`);
      }
      const summary = { max_forgetting: o.maxForgetting, best: best ? { label: best.label, methods: best.methods, target: best.target, forgetting: best.forgetting } : null, points };
      writeFileSync(join(resolve(o.out), 'tune.json'), JSON.stringify(summary, null, 2) + '\n');
      if (best) console.log(`\nbest within ${o.maxForgetting} points: ${best.label} (target ${best.target.toFixed(1)}%, forgetting ${best.forgetting.toFixed(2)})\nmethods:\n${toYaml(best.methods).trimEnd().replace(/^/gm, '  ')}`);
      else console.log(`\nno configuration stayed within ${o.maxForgetting} points of forgetting; the least forgetful was ${[...points].sort((a, b) => a.forgetting - b.forgetting)[0]?.label}`);
      console.log(`report: ${join(resolve(o.out), 'report.html')}`);
    });
}
