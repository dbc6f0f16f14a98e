// `retain train`: one process, --nproc workers on this machine, or one rank of a multi-machine launch.
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { int, num } from './args.js';
import { configFromRaw, readTrainConfigRaw } from '../config.js';
import { isStaged } from '../train/stages.js';
import { trainStages } from './stages.js';
import { checkOutputDir, runTraining } from '../train/run.js';
import { saveRunConfig } from '../train/saved-config.js';
import { checkDistConfig, DistConfigError, distSettings, launchWorkers, rankDevice, startDist, stopDist } from '../train/dist.js';
import { EXIT_RESUMABLE } from '../train/preempt.js';
import { lockOutputDir } from '../lock.js';

export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .argument('<config>', 'YAML training config (see configs/; every key: retain schema)')
    .argument('[overrides...]', 'settings changed for this run: key=value with a dotted key and a YAML value, e.g. training.lr=3e-4 methods=[flow,l2] (a list is indexed by number: methods.0.lambda=0.1); validated as the file is, saved with it in output_dir/run_config.yaml')
    .option('--nproc <n>', 'data-parallel worker processes on this machine (training.batch_size is the global batch)', int)
    .option('--rank <r>', 'multi-machine launch: this process\'s rank (or RANK)', int)
    .option('--world-size <n>', 'multi-machine launch: number of processes in all (or WORLD_SIZE)', int)
    .option('--master-addr <host>', 'multi-machine launch: address of rank 0 (or MASTER_ADDR)')
    .option('--master-port <port>', 'multi-machine launch: TCP port of the store on rank 0 (or MASTER_PORT)', int)
    .option('--dist-timeout <s>', 'seconds a rendezvous or collective may wait for the other ranks (or RETAIN_DIST_TIMEOUT; default 300)', num)
    .action(async (config: string, overrides: string[], o: { nproc?: number; rank?: number; worldSize?: number; masterAddr?: string; masterPort?: number; distTimeout?: number }) => {
      const raw = readTrainConfigRaw(config, overrides);
      if (isStaged(raw)) return trainStages(raw, config, overrides, o);
      const cfg = configFromRaw(raw, dirname(resolve(config)), overrides.length ? `${config} with ${overrides.join(' ')}` : config);
      if (o.nproc !== undefined) {
        if (o.nproc < 1) throw new DistConfigError(`--nproc must be at least 1, got ${o.nproc}`);
        if (o.nproc > 1) {
          if (o.rank !== undefined || o.worldSize !== undefined) throw new DistConfigError('--nproc starts every rank itself; --rank/--world-size are for launching one process per machine');
          checkDistConfig(cfg, o.nproc, o.nproc);
          const per = cfg.training.batch_size / o.nproc;
          for (let r = 0; r < o.nproc; r++) console.error(`retain: rank ${r}: rows ${r * per}..${(r + 1) * per - 1} of every global batch of ${cfg.training.batch_size}${r === 0 ? '; writes checkpoints, metrics.jsonl and the final model' : ''}`);
          const args = [...process.execArgv, process.argv[1], 'train', config, ...overrides, ...(o.distTimeout ? ['--dist-timeout', String(o.distTimeout)] : [])];
          process.exitCode = await launchWorkers({ nproc: o.nproc, args, timeoutS: o.distTimeout });
          return;
        }
      }
      const dist = distSettings({ rank: o.rank, worldSize: o.worldSize, masterAddr: o.masterAddr, masterPort: o.masterPort, timeout: o.distTimeout });
      if (dist) {
        dist.backend = checkDistConfig(cfg, dist.worldSize);
        cfg.model.device = rankDevice(cfg.model.device, Number(process.env.LOCAL_RANK ?? 0), dist.backend);
        const per = cfg.training.batch_size / dist.worldSize;
        console.error(`retain: rank ${dist.rank} of ${dist.worldSize} (${dist.backend}, store ${dist.masterAddr}:${dist.masterPort}): joining; trains rows ${dist.rank * per}..${(dist.rank + 1) * per - 1} of every global batch of ${cfg.training.batch_size}${dist.rank === 0 ? ', writes checkpoints, metrics and the final model' : ''}`);
        const ctx = startDist(dist);
        console.error(`retain: rank ${dist.rank}: gradients summed ${ctx.overlap ? 'during backward (c10d Reducer' : 'after backward (reduceGradients'}, ${+(dist.bucketBytes / 2 ** 20).toFixed(2)} MiB buckets)`);
      }
      if (!dist || dist.rank === 0) {
        checkOutputDir(cfg.output_dir, cfg.model.path);
        // Held until the process exits, and taken before anything is written there: a second run on the folder is
        // refused with the first one's run_config.yaml untouched.
        lockOutputDir(cfg.output_dir);
        saveRunConfig(cfg, config, overrides);
      }
      let r;
      try {
        r = await runTraining(cfg, undefined, { progress: !dist || dist.rank === 0, stopOnSignals: true, locked: true });
      } catch (e) {
        // No barrier: the other ranks may be the reason this one failed.
        if (dist) console.error(`retain: rank ${dist.rank} of ${dist.worldSize} failed`);
        throw e;
      }
      stopDist();
      if (r.preempted) {
        if (!dist || dist.rank === 0) console.error(`retain: stopped by ${r.preempted} after step ${r.steps}, checkpoint written; exit status ${EXIT_RESUMABLE}: rerun the same command to resume`);
        process.exitCode = EXIT_RESUMABLE;
      }
      if (!dist || dist.rank === 0) console.log(JSON.stringify({ steps: r.steps, final_loss: r.finalLoss, resumed_from: r.resumedFrom, ...(r.preempted ? { preempted: r.preempted } : { saved: r.finalDir }), ...(dist ? { world_size: dist.worldSize } : {}) }));
    });
}
