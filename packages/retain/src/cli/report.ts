// `retain report`.
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { forgettingTableText } from '../report/table.js';
import { lockOutputDir, whileLocked } from '../lock.js';

export function registerReportCommand(program: Command): void {
  program
    .command('report')
    .argument('<runs...>', 'results JSON files (from retain eval or retain compare), run directories holding results.json (+ monitor.jsonl), or lm-evaluation-harness results (results_*.json, or its --output_path folder: one run per model)')
    .option('-o, --out <dir>', 'output folder', 'report')
    .option('--base <label>', 'label of the base run (default: the run with no methods, else the first)')
    .option('--target <list>', 'tasks (or lm-eval groups) that measure the new skill; the rest are general (default: the roles in the results)', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .action(async (args: string[], o: { out: string; base?: string; target?: string[] }) => {
      // Loaded here so that other commands do not pay for Vega and resvg at start-up.
      const { loadRuns, ReportInputError, writeReport } = await import('../report/report.js');
      let set;
      try {
        set = loadRuns(args, { base: o.base, target: o.target });
      } catch (e) {
        // Bad input is the user's to fix: one line naming the file, no stack.
        if (!(e instanceof ReportInputError)) throw e;
        console.error(`retain report: ${e.message}`);
        process.exitCode = 1;
        return;
      }
      // Two reports into one folder would mix their charts.
      const r = await whileLocked(lockOutputDir(o.out, `--out ${o.out}`), () => writeReport([set.base, ...set.tuned], o.out, { base: set.base.label }));
      process.stdout.write(forgettingTableText(set.base, set.tuned));
      for (const n of r.notes) console.log(`note: ${n}`);
      console.log(`wrote ${r.files.map((f) => resolve(f)).join('\n      ')}`);
    });
}
