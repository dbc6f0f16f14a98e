// The forgetting monitor: evaluates chosen probes (general skills to keep, optionally target skills to gain) every N
// optimizer steps during training, logs them, and with `max_forgetting: X` stops the run — or rolls the weights back
// to the best evaluated state that stayed within X — once the general score falls more than X below the base.
//
// Forgetting at a step = mean over the general probes of (base − now) on each probe's primary metric, in points
// (×100) for fraction metrics such as accuracy, with the sign turned so that positive always means worse. Points and
// raw losses do not average: the probes counted are those the report averages (averageGroup: the accuracy-like ones
// when there are any, else all); with loss-only probes (bits per char, ce) the raw differences are averaged. "Best" among the states within budget is the highest mean target score, or the latest state
// when there are no target probes.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Method, TrainContext } from './hooks.js';
import type { EvalModel } from '../eval/model.js';
import { addTaskResults, loadDocs, newResults, scoreDocs } from '../eval/harness.js';
import type { Doc } from '../eval/tasks.js';
import type { ResolvedTask } from '../eval/tasks.js';
import { count, STEPS } from '../options.js';
import { forgettingAndTarget, type EvalResults, type MonitorPoint, type ResultRow } from '../eval/results.js';

/** The `monitor:` section of a training config; its defaults are the monitor's. */
export const monitorSchema = z.object({
  every: count(1, STEPS).describe('Probe every N optimizer steps (and at the last step).'),
  tasks: z.array(z.string()).min(1).describe('Built-in task names or task files (.yaml/.json, relative to the config file).'),
  target: z.array(z.string()).default([]).describe('Which of the tasks measure the new skill; the rest are general skills to keep.'),
  limit: count(1, 1e9).default(200).describe('Examples per probe (keeps each evaluation cheap).'),
  max_forgetting: z.number().min(0).nullable().default(null).describe('Largest drop of the general score, in points, before on_exceed acts; null only logs.'),
  on_exceed: z.enum(['stop', 'rollback']).default('rollback').describe('Past max_forgetting: stop the run, or roll back to the best evaluated state within the budget and stop.'),
  data_dir: z.string().optional().describe('Folder of the built-in tasks\' data (relative to the config file).'),
  batch_size: count(1, 1e6).default(16).describe('Examples scored per forward pass.'),
}).strict().describe('Forgetting monitor: probes evaluated during training (src/eval/monitor.ts).');

export type MonitorSettings = z.output<typeof monitorSchema>;

/** What rank 0 tells every rank after a probe. */
const enum Decision { Continue = 0, Snapshot = 1, Stop = 2, Rollback = 3 }

export class ForgettingMonitor implements Method {
  readonly name = 'monitor';
  readonly points: MonitorPoint[] = [];
  base: ResultRow[] = [];
  /** Forgetting (points) at each evaluated step. */
  readonly forgetting = new Map<number, number>();
  stoppedAt: number | null = null;
  rolledBackTo: number | null = null;
  message: string | null = null;
  private best: { step: number; target: number; weights: Map<string, Tensor> } | null = null;
  private lastStep = -1;
  private ctx: TrainContext | null = null;
  private loaded: { t: ResolvedTask; docs: Doc[]; pool: Doc[]; original: number }[] = [];
  /** Every metric of every probe at the last probed step. */
  private last: { step: number; rows: ResultRow[] } | null = null;

  /** `o` comes checked by monitorSchema; `tasks` are its tasks resolved; `verbose` prints a line per evaluation. */
  constructor(private readonly em: EvalModel, private readonly o: MonitorSettings, private readonly tasks: ResolvedTask[], private readonly verbose = true) {}

  private scoreAll(): ResultRow[] {
    return this.loaded.flatMap(({ t, docs, pool }) => scoreDocs(this.em, t.spec, docs, pool, { batchSize: this.o.batch_size }));
  }

  private probe(step: number): ResultRow[] {
    const all = this.scoreAll();
    this.last = { step, rows: all };
    const rows = all.filter((x) => x.primary);
    for (const p of rows) this.points.push({ step, task: p.task, metric: p.metric, value: p.value, role: p.role, higher_is_better: p.higher_is_better });
    return rows;
  }

  /**
   * The trained model on the probes, as a results document (retain train's results.json): the last probe's scores
   * when they are of the final weights (probed at `step`, no rollback since), else scored now. Rank 0 only: the
   * other ranks load no probes.
   */
  results(step: number, o: { label: string; methods: string[] }): EvalResults {
    const rows = this.last?.step === step && this.rolledBackTo === null ? this.last.rows : this.scoreAll();
    const res = newResults(this.em, this.tasks, { ...o, limit: this.o.limit, batchSize: this.o.batch_size });
    for (const l of this.loaded) addTaskResults(res, l.t, rows.filter((r) => r.task === l.t.spec.name), { original: l.original, effective: l.docs.length });
    return res;
  }

  /**
   * Runs after every other method's finish: one that acts after training (WiSE-FT's interpolation) has changed the
   * weights the last probe scored, so results() scores the final weights again instead of reusing that probe.
   */
  finish(): void {
    this.last = null;
  }

  private score(rows: ResultRow[]): { forgetting: number; target: number | null } {
    return forgettingAndTarget(this.base, rows);
  }

  private record(ctx: TrainContext, step: number, rows: ResultRow[], forgetting: number): void {
    const fields: Record<string, number | string> = { kind: 'monitor', forgetting: +forgetting.toFixed(4) };
    for (const r of rows) fields[`${r.task}/${r.metric}`] = +r.value.toFixed(6);
    ctx.log(fields);
    if (ctx.outputDir) {
      mkdirSync(ctx.outputDir, { recursive: true });
      appendFileSync(join(ctx.outputDir, 'monitor.jsonl'), this.points.filter((p) => p.step === step).map((p) => JSON.stringify(p)).join('\n') + '\n');
    }
    if (this.verbose) process.stderr.write(`monitor @${step}: ${rows.map((r) => `${r.task} ${r.metric} ${r.value.toFixed(4)}`).join(', ')}; forgetting ${forgetting.toFixed(2)}\n`);
  }

  /** Whether a state within budget with this target score replaces the kept one (no target probes: the latest does). */
  private improves(target: number | null, step: number): boolean {
    return !this.best || (target ?? step) >= this.best.target;
  }

  /** Keeps a copy of the current weights as the best state within budget (rank 0 decided it is; see share). */
  private snapshot(ctx: TrainContext, target: number | null): void {
    if (this.best) torch.dispose(this.best.weights.values());
    const weights = new Map<string, Tensor>();
    for (const [k, v] of ctx.model.stateDict({ keepVars: true })) weights.set(k, torch.noGrad(() => v.detachedClone()));
    this.best = { step: ctx.step, target: target ?? ctx.step, weights };
    this.keepState(ctx);
  }

  /**
   * What a checkpoint must hold for a resumed run to decide as an uninterrupted one would: the forgetting figures so
   * far and the best state within budget (its weights go in through stateTensors). Without them a resumed run would
   * roll back to the pretrained weights, its only snapshot.
   */
  private keepState(ctx: TrainContext): void {
    ctx.state.set(this.name, { best: this.best ? { step: this.best.step, target: this.best.target } : null, forgetting: [...this.forgetting] });
  }

  stateTensors(): Map<string, Tensor> {
    return new Map([...(this.best?.weights ?? [])].map(([k, v]) => [`best.${k}`, v]));
  }

  loadStateTensors(t: Map<string, Tensor>): void {
    const saved = this.ctx?.state.get(this.name) as { best: { step: number; target: number } | null; forgetting: [number, number][] } | undefined;
    if (!saved) return;
    for (const [step, f] of saved.forgetting) this.forgetting.set(step, f);
    if (!saved.best) return;
    const weights = new Map<string, Tensor>();
    for (const [k, v] of t) if (k.startsWith('best.')) weights.set(k.slice(5), torch.keep(torch.noGrad(() => v.detachedClone())));
    if (this.best) torch.dispose(this.best.weights.values());
    this.best = { ...saved.best, weights };
  }

  /**
   * Under data parallelism only rank 0 probes (the replicas hold identical weights, so every rank would measure the
   * same); it publishes [decision, forgetting] through the rendezvous store and every rank acts on it — keeps its own copy of the state within
   * budget, rolls back to it, or stops — in the same step. Single process: the decision is applied directly.
   */
  private share(ctx: TrainContext, key: string, decision: Decision, forgetting: number): { decision: Decision; forgetting: number } {
    const d = ctx.dist;
    if (!d) return { decision, forgetting };
    // JSON numbers round-trip float64 exactly, so every rank logs rank 0's figure.
    const mine = d.rank === 0 ? JSON.stringify([decision, forgetting]) : null;
    const [code, f] = JSON.parse(d.fromRank0(`monitor/${key}`, mine)) as [Decision, number];
    return { decision: code, forgetting: f };
  }

  private get budgeted(): boolean {
    return this.o.max_forgetting !== null;
  }

  private probes(ctx: TrainContext): boolean {
    return (ctx.dist?.rank ?? 0) === 0;
  }

  async setup(ctx: TrainContext): Promise<void> {
    this.ctx = ctx;
    if (this.probes(ctx)) {
      for (const t of this.tasks) this.loaded.push({ t, ...(await loadDocs(t, this.o.limit)) });
      this.base = this.probe(ctx.step);
      if (!ctx.resuming) this.record(ctx, ctx.step, this.base, 0);
    }
    // The other ranks wait here rather than in the first collective, whose timeout the base probe could outlast.
    this.share(ctx, 'base', Decision.Continue, 0);
    this.forgetting.set(ctx.step, 0);
    if (this.budgeted) {
      const target = this.probes(ctx) ? this.score(this.base).target : null;
      this.snapshot(ctx, target);
    }
  }

  afterStep(ctx: TrainContext): void {
    if (ctx.step % this.o.every !== 0 && ctx.step !== ctx.totalSteps) return;
    if (ctx.step === this.lastStep) return;
    this.lastStep = ctx.step;
    const max = this.o.max_forgetting;
    let decision = Decision.Continue;
    let forgetting = 0;
    let target: number | null = null;
    if (this.probes(ctx)) {
      const rows = this.probe(ctx.step);
      ({ forgetting, target } = this.score(rows));
      this.record(ctx, ctx.step, rows, forgetting);
      if (this.budgeted) {
        if (forgetting <= max!) decision = this.improves(target, ctx.step) ? Decision.Snapshot : Decision.Continue;
        else decision = this.o.on_exceed === 'rollback' && this.best ? Decision.Rollback : Decision.Stop;
      }
    }
    ({ decision, forgetting } = this.share(ctx, `step-${ctx.step}`, decision, forgetting));
    this.forgetting.set(ctx.step, forgetting);
    this.keepState(ctx);
    if (decision === Decision.Continue) return;
    if (decision === Decision.Snapshot) {
      this.snapshot(ctx, target);
      return;
    }
    this.stoppedAt = ctx.step;
    if (decision === Decision.Rollback) {
      torch.noGrad(() => ctx.model.loadStateDict(this.best!.weights, { strict: true }));
      this.rolledBackTo = this.best!.step;
      this.message = `forgetting ${forgetting.toFixed(2)} exceeded max_forgetting ${max} at step ${ctx.step}; rolled the weights back to step ${this.best!.step} (forgetting ${this.forgetting.get(this.best!.step)!.toFixed(2)}) and stopped`;
    } else {
      this.message = `forgetting ${forgetting.toFixed(2)} exceeded max_forgetting ${max} at step ${ctx.step}; stopped training`;
    }
    ctx.log({ kind: 'monitor_stop', message: this.message });
    if (this.probes(ctx)) process.stderr.write(`retain: ${this.message}\n`);
    ctx.stop = this.message;
  }

  dispose(): void {
    if (this.best) torch.dispose(this.best.weights.values());
    this.best = null;
  }
}
