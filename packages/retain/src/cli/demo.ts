import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { positiveInt } from './args.js';
import { runDemo, studyBestLine } from '../suite/demo.js';
import { forgettingTableText } from '../report/table.js';

/** `retain demo`: runs the recipes, prints the forgetting table and writes the report next to the results. */
export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .option('--out <dir>', 'where runs, results and the report go', 'runs/demo')
    .option('--model <path>', 'base model (default: the embedded stories260K)')
    .option('--steps <n>', 'optimizer steps per recipe', positiveInt, 300)
    .option('--only <labels>', 'comma-separated recipe labels to run (FT, "mix 1:1", FLOW, L2, LoRA, WiSE-FT, "L2 + HFT", "best found: …")')
    .action(async (o: { out: string; model?: string; steps: number; only?: string }) => {
      const t0 = performance.now();
      const c = await runDemo({ outDir: o.out, model: o.model, steps: o.steps, only: o.only?.split(',').map((s) => s.trim()) });
      // The report pulls in vega; load it only when the demo runs.
      const { writeReport } = await import('../report/report.js');
      console.log('\n' + forgettingTableText(c.base, c.tuned));
      console.log('\n' + studyBestLine());
      await writeReport(c, o.out);
      console.log(`\nreport: ${join(resolve(o.out), 'report.html')} (${((performance.now() - t0) / 1000).toFixed(0)} s in all)`);
    });
}
