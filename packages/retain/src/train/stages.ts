// Sequential learning: a config with `stages:` trains several skills in turn, each stage starting from the model the
// one before it wrote. After every stage the model is scored on every stage's skill and on the general probes (the
// monitor's tasks), which gives the continual-learning matrix R[k][j] = skill j after stage k, and from it average
// accuracy, backward transfer (Lopez-Paz & Ranzato 2017) and average forgetting (Chaudhry et al. 2018).
// Each stage is an ordinary run in output_dir/<k>-<name>/ (checkpoints, resume, final/); sequence.json records the
// rows scored so far, so a rerun skips finished stages, resumes the one that was interrupted and goes on.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { configFromRaw, formatIssues, type TrainConfig } from '../config.js';
import { ConfigError } from '../errors.js';
import { runTraining, type RunOptions } from './run.js';
import { probeResults } from './results.js';
import { writeJsonAtomic } from './checkpoint.js';
import { resolveTasks } from '../eval/tasks.js';
import { isFractionMetric, primaryRows, type EvalResults, type ResultRow } from '../eval/results.js';

const stageSchema = z.object({
  name: z.string().regex(/^[\w.-]+$/, 'letters, digits, _ . and - only (it names the stage\'s folder)'),
  /** The stage's data section, as a training config's `data`. */
  data: z.record(z.unknown()),
  /** Changes to the training section for this stage (max_steps, lr, ...). */
  training: z.record(z.unknown()).default({}),
  /** The stage's methods; the config's own `methods` when absent. */
  methods: z.array(z.union([z.string(), z.record(z.unknown())])).optional(),
  /** The monitor task that measures this stage's skill. */
  skill: z.string(),
}).strict();

export type Stage = z.infer<typeof stageSchema>;

/** Whether a config's settings are staged (a `stages:` list). */
export function isStaged(raw: unknown): raw is Record<string, unknown> & { stages: unknown } {
  return !!raw && typeof raw === 'object' && !Array.isArray(raw) && 'stages' in raw;
}

/** The stages and, per stage, its whole training config (validated, paths resolved against `base`). */
export function stageConfigs(raw: Record<string, unknown>, base: string, source: string): { stages: Stage[]; configs: TrainConfig[] } {
  const parsed = z.object({ stages: z.array(stageSchema).min(1) }).passthrough().safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error, source));
  const r = { data: parsed.data.stages };
  const { stages: _, data, ...common } = raw;
  if (data !== undefined) throw new ConfigError(`${source}: a staged config gives each stage its own data (stages[k].data); remove the top-level data`);
  const names = new Set<string>();
  for (const s of r.data) {
    if (names.has(s.name)) throw new ConfigError(`${source}: two stages are named '${s.name}'; each stage needs its own name (it names its folder)`);
    names.add(s.name);
  }
  const first = configFromRaw({ ...common, data: r.data[0].data }, base, `${source} (stage ${r.data[0].name})`);
  if (!first.monitor) throw new ConfigError(`${source}: a staged config needs a monitor whose tasks include every stage's skill (the matrix is scored on them)`);
  const configs = r.data.map((s, k) => {
    const training = { ...(common.training as Record<string, unknown> | undefined), ...s.training };
    const cfg = configFromRaw({ ...common, data: s.data, training, methods: s.methods ?? common.methods ?? [] }, base, `${source} (stage ${s.name})`);
    cfg.output_dir = join(first.output_dir, `${k + 1}-${s.name}`);
    cfg.monitor = { ...cfg.monitor!, target: [s.skill] };
    return cfg;
  });
  const tasks = resolveTasks(first.monitor.tasks, { dataDir: first.monitor.data_dir }).map((t) => t.spec.name);
  for (const s of r.data) if (!tasks.includes(s.skill)) throw new ConfigError(`${source}: stage '${s.name}': skill '${s.skill}' is not one of monitor.tasks (${tasks.join(', ')})`);
  return { stages: r.data, configs };
}

export interface SequenceRow {
  after: string;
  /** Each stage's skill, by stage name, in points for accuracies (higher is better; losses negated). */
  skills: Record<string, number>;
  /** Mean of the general probes' primary scores, as skills are. */
  general: number | null;
}

export interface Sequence {
  format: 'retain.sequence/1';
  stages: string[];
  rows: SequenceRow[];
  /** Over the rows so far (null until two stages are scored). */
  average_accuracy: number | null;
  backward_transfer: number | null;
  average_forgetting: number | null;
}

const points = (r: ResultRow) => (isFractionMetric(r.metric) ? 100 * r.value : r.value) * (r.higher_is_better ? 1 : -1);

/** A row of the matrix from one evaluation: skill tasks by their stage, the rest general. */
export function sequenceRow(after: string, stages: Stage[], ev: EvalResults): SequenceRow {
  const rows = primaryRows(ev);
  const skills: Record<string, number> = {};
  for (const s of stages) {
    const r = rows.find((x) => x.task === s.skill);
    if (r) skills[s.name] = points(r);
  }
  const general = rows.filter((x) => !stages.some((s) => s.skill === x.task));
  return { after, skills, general: general.length ? general.reduce((a, r) => a + points(r), 0) / general.length : null };
}

/** Average accuracy, backward transfer and average forgetting of R[k][j] (row k = after stage k) over rows so far. */
export function continualMetrics(stages: string[], rows: SequenceRow[]): Pick<Sequence, 'average_accuracy' | 'backward_transfer' | 'average_forgetting'> {
  const T = rows.length;
  if (T < 2) return { average_accuracy: null, backward_transfer: null, average_forgetting: null };
  const R = (k: number, j: number) => rows[k].skills[stages[j]];
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const earlier = Array.from({ length: T - 1 }, (_, j) => j);
  return {
    average_accuracy: mean(Array.from({ length: T }, (_, j) => R(T - 1, j))),
    backward_transfer: mean(earlier.map((j) => R(T - 1, j) - R(j, j))),
    average_forgetting: mean(earlier.map((j) => Math.max(...Array.from({ length: T - 1 }, (_, k) => R(k, j)).filter((_, k) => k >= j)) - R(T - 1, j))),
  };
}

/** The model a finished stage hands on: final/, or final/merged when the stage wrote an adapter. */
function handedOn(cfg: TrainConfig, name: string): string {
  const final = join(cfg.output_dir, 'final');
  if (existsSync(join(final, 'merged'))) return join(final, 'merged');
  if (existsSync(join(final, 'adapter_config.json'))) throw new Error(`stage '${name}' wrote a LoRA adapter without merged weights; give its lora method save_merged: true so the next stage starts from them`);
  return final;
}

/** Trains the stages in turn (skipping finished ones), scoring the matrix after each; returns it. */
export async function runStages(raw: Record<string, unknown>, base: string, source: string, opts: RunOptions & { saveConfig?: (cfg: TrainConfig) => void } = {}): Promise<{ sequence: Sequence; preempted: string | null; root: string }> {
  const { stages, configs } = stageConfigs(raw, base, source);
  const root = join(configs[0].output_dir, '..');
  const file = join(root, 'sequence.json');
  const names = stages.map((s) => s.name);
  const prev = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Sequence) : null;
  if (prev && prev.stages.join('\n') !== names.join('\n')) throw new ConfigError(`${file} belongs to stages ${prev.stages.join(', ')}; this config's are ${names.join(', ')}: use another output_dir`);
  const seq: Sequence = { format: 'retain.sequence/1', stages: names, rows: prev?.rows ?? [], average_accuracy: null, backward_transfer: null, average_forgetting: null };
  let model = configs[0].model.path;
  mkdirSync(root, { recursive: true });
  const skills = stages.map((s) => s.skill);
  // The starting model on the same probes: the report's base, the row before any stage.
  await probeResults(join(root, 'base-eval.json'), model, configs[0], skills, 'base');
  for (let k = 0; k < stages.length; k++) {
    const cfg = { ...configs[k], model: { ...configs[k].model, path: model } };
    if (!existsSync(join(cfg.output_dir, 'final'))) {
      opts.saveConfig?.(cfg);
      const r = await runTraining(cfg, undefined, opts);
      if (r.preempted) return { sequence: seq, preempted: r.preempted, root };
    }
    model = handedOn(cfg, stages[k].name);
    if (!seq.rows[k]) seq.rows[k] = sequenceRow(stages[k].name, stages, await probeResults(join(cfg.output_dir, 'sequence-eval.json'), model, cfg, skills, `after ${stages[k].name}`));
    Object.assign(seq, continualMetrics(names, seq.rows));
    writeJsonAtomic(file, seq);
  }
  return { sequence: seq, preempted: null, root };
}

/** The evaluations a finished sequence leaves (base first, then after each stage), for the report. */
export function sequenceEvals(root: string, stages: string[]): EvalResults[] {
  const files = [join(root, 'base-eval.json'), ...stages.map((n, k) => join(root, `${k + 1}-${n}`, 'sequence-eval.json'))];
  return files.filter((f) => existsSync(f)).map((f) => JSON.parse(readFileSync(f, 'utf8')) as EvalResults);
}

/** The matrix as a report section: rows after each stage, a column per skill and the general mean. */
export function sequenceSection(s: Sequence): { title: string; note: string; head: string[]; rows: string[][] } {
  const f = (x: number | null | undefined) => (x === null || x === undefined ? '—' : x.toFixed(2));
  return {
    title: 'Skills learned in sequence',
    note: `Each stage's skill and the general probes after every stage (points for accuracies). Average accuracy ${f(s.average_accuracy)}, backward transfer ${f(s.backward_transfer)}, average forgetting ${f(s.average_forgetting)}.`,
    head: ['after stage', ...s.stages, 'general'],
    rows: s.rows.map((r) => [r.after, ...s.stages.map((n) => f(r.skills[n])), f(r.general)]),
  };
}

/** The matrix as text: rows after each stage, columns each stage's skill and the general mean. */
export function sequenceTable(s: Sequence): string {
  const w = Math.max(12, ...s.stages.map((n) => n.length + 2));
  const head = ['after stage'.padEnd(w), ...s.stages.map((n) => n.padStart(w)), 'general'.padStart(w)].join(' ');
  const lines = [head, ...s.rows.map((r) => [r.after.padEnd(w), ...s.stages.map((n) => (r.skills[n] ?? NaN).toFixed(2).padStart(w)), (r.general ?? NaN).toFixed(2).padStart(w)].join(' '))];
  const f = (x: number | null) => (x === null ? '—' : x.toFixed(2));
  lines.push('', `average accuracy ${f(s.average_accuracy)} · backward transfer ${f(s.backward_transfer)} · average forgetting ${f(s.average_forgetting)}`);
  return lines.join('\n');
}
