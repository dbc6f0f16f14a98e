// `retain train` on a config with `stages:` (train/stages.ts): the stages in turn, then the matrix.
import { dirname, join, resolve } from 'node:path';
import { runStages, sequenceEvals, sequenceSection, sequenceTable } from '../train/stages.js';
import { saveRunConfig } from '../train/saved-config.js';
import { lockOutputDir } from '../lock.js';
import { EXIT_RESUMABLE } from '../train/preempt.js';
import { DistConfigError } from '../train/dist.js';

export async function trainStages(raw: Record<string, unknown>, config: string, overrides: string[], o: { nproc?: number; rank?: number; worldSize?: number }): Promise<void> {
  if ((o.nproc ?? 1) > 1 || o.rank !== undefined || o.worldSize !== undefined || process.env.WORLD_SIZE) {
    throw new DistConfigError('a staged config (stages:) trains on one process; run it without --nproc/--rank/--world-size');
  }
  const out = typeof raw.output_dir === 'string' ? resolve(dirname(resolve(config)), raw.output_dir) : null;
  if (out) lockOutputDir(out);
  const source = overrides.length ? `${config} with ${overrides.join(' ')}` : config;
  const r = await runStages(raw, dirname(resolve(config)), source, { progress: true, stopOnSignals: true, saveConfig: (cfg) => saveRunConfig(cfg, config, overrides) });
  if (r.preempted) {
    console.error(`retain: stopped by ${r.preempted} during stage ${r.sequence.rows.length + 1}, checkpoint written; exit status ${EXIT_RESUMABLE}: rerun the same command to resume`);
    process.exitCode = EXIT_RESUMABLE;
    return;
  }
  console.log(sequenceTable(r.sequence));
  const root = resolve(r.root);
  const { writeReport } = await import('../report/report.js');
  await writeReport(sequenceEvals(root, r.sequence.stages), root, { base: 'base', sections: [sequenceSection(r.sequence)] });
  console.log(`report: ${join(root, 'report.html')}`);
}
