// retain train's results.json: what `retain report` reads from a run folder, as it reads `retain eval`'s output.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { TrainConfig } from '../config.js';
import type { Pretrained } from '../models/hub.js';
import type { Method } from './hooks.js';
import type { ForgettingMonitor } from './monitor.js';
import { loadEvalModel, pretrainedEvalModel } from '../eval/model.js';
import { addTaskResults, evaluate, newResults } from '../eval/harness.js';
import { resolveTasks } from '../eval/tasks.js';
import type { EvalResults, ResultRow } from '../eval/results.js';
import { writeJsonAtomic } from './checkpoint.js';

/**
 * output_dir/results.json, so that `retain report <output_dir>...` reads a training run as it reads `retain eval`'s
 * output: the final model on the monitor's probes (all their metrics), else its loss on data.eval (ce, a target
 * row), else no rows; the training loss from metrics.jsonl (the whole run, across resumes); monitor.jsonl beside it
 * gives the report the dynamics. Labelled by the output folder's name, with the methods trained.
 */
export function writeRunResults(cfg: TrainConfig, p: Pretrained, methods: Method[], monitor: ForgettingMonitor | null, heldOut: { loss: () => number; n: number } | null, step: number): void {
  const o = { label: basename(resolve(cfg.output_dir)), methods: methods.filter((m) => m !== monitor).map((m) => m.name) };
  const res = monitor ? monitor.results(step, o) : newResults(pretrainedEvalModel(p), [], o);
  if (!monitor && heldOut && cfg.data.eval) {
    const name = cfg.data.eval.name ?? 'eval';
    const rows: ResultRow[] = [{ task: name, metric: 'ce', value: heldOut.loss(), stderr: null, higher_is_better: false, n: heldOut.n, role: 'target', primary: true }];
    addTaskResults(res, { spec: { name, version: 0 }, dataPath: cfg.data.eval.path }, rows, { original: heldOut.n, effective: heldOut.n });
  }
  res.train = trainLoss(join(cfg.output_dir, 'metrics.jsonl'));
  writeJsonAtomic(join(cfg.output_dir, 'results.json'), res);
}

/** The training loss by step from metrics.jsonl; a line torn by a kill mid-write is skipped. */
function trainLoss(file: string): { step: number; loss: number }[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').flatMap((l) => {
    try {
      const x = JSON.parse(l) as Record<string, unknown>;
      return typeof x.loss === 'number' ? [{ step: Number(x.step), loss: x.loss }] : [];
    } catch {
      return [];
    }
  });
}

/**
 * `model` scored on the config's monitor probes (the examples the monitor scores, `target` naming the target tasks),
 * kept in `file`: a file already there is the answer, so a resumed search or sequence does not score twice.
 */
export async function probeResults(file: string, model: string, cfg: TrainConfig, target: string[], label: string): Promise<EvalResults> {
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as EvalResults;
  const mc = cfg.monitor!;
  const role = Object.fromEntries(target.map((t) => [t, 'target' as const]));
  const em = await loadEvalModel(model, { tokenizer: cfg.model.tokenizer });
  const ev = await evaluate(em, resolveTasks(mc.tasks, { dataDir: mc.data_dir, role }), { label, limit: mc.limit, batchSize: mc.batch_size, progress: false });
  em.module.dispose();
  writeJsonAtomic(file, ev);
  return ev;
}
