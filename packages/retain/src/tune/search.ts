// `retain tune`: successive halving over anti-forgetting recipes, driven by the config's forgetting monitor.
//
// Every candidate (space.ts) trains to the first rung (1/η² of its steps), is scored there on the monitor's probes,
// and only the best 1/η by target score among those within the forgetting budget train on to the next rung; the
// last rung is the full run. Training pauses at a rung with a checkpoint and continues from it (train/trainer.ts
// pauseAt), so a promoted candidate's full run is the same run an unpaused one would have been, and a search killed
// at any point continues where it stopped: state.json records every rung reached. A candidate that breaks the
// budget stops at once (the monitor's on_exceed: stop). Standard fine-tuning trains to the end as the reference;
// the best candidate and FT are then rerun with more seeds for intervals.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseTrainConfig, type TrainConfig } from '../config.js';
import { runTraining } from '../train/run.js';
import { probeResults } from '../train/results.js';
import { listCheckpoints, writeJsonAtomic } from '../train/checkpoint.js';
import { forgettingAndTarget, primaryRows, type EvalResults } from '../eval/results.js';
import { candidates, sample, type Candidate } from './space.js';

export interface TuneOptions {
  /** The user's config, parsed, with a monitor (general and target probes) and training.max_steps. */
  config: TrainConfig;
  outDir: string;
  /** Largest allowed forgetting, in the monitor's unit (points for accuracies). */
  maxForgetting: number;
  knobs: string[];
  /** At most this many candidates (FT included), and/or stop starting training after this many seconds. */
  budget: { trials?: number; seconds?: number };
  /** Seeds for the best candidate and FT (1 = no reruns). */
  seeds: number;
  /** Seeds for every full-length candidate, not only the best and FT (a frontier study). */
  seedAll?: boolean;
  /** Equal passes over the target data instead of equal steps (space.ts). */
  equalPasses?: boolean;
  replay?: Record<string, unknown>;
  /** Options of a knob's new method entry per method (SpaceOptions.defaults). */
  defaults?: Record<string, Record<string, unknown>>;
  eta?: number;
  rungs?: number;
  progress?: boolean;
}

export interface Score {
  step: number;
  forgetting: number;
  target: number;
}

export interface CandidateState extends Candidate {
  /** active: still in the search; broken: forgot more than the budget; dropped: not promoted; done: full length. */
  status: 'active' | 'broken' | 'dropped' | 'done' | 'failed' | 'unrun';
  scores: Score[];
  note?: string;
  /** Full-length scores with seeds 1.. (seed 0 is the search run). */
  seeds?: Score[];
}

export interface TuneState {
  format: 'retain.tune-state/1';
  /** What the search depends on; a different key means another search, refused rather than mixed. */
  key: string;
  candidates: CandidateState[];
}

const STATE = 'state.json';

/** Steps of each rung for a run of `steps`: steps/η^(R-1-k), rounded up to a probe step of the monitor. */
export function rungSteps(steps: number, every: number, eta: number, rungs: number): number[] {
  const out: number[] = [];
  for (let k = 0; k < rungs; k++) {
    const s = Math.min(steps, Math.ceil(steps / eta ** (rungs - 1 - k) / every) * every);
    if (!out.includes(s)) out.push(s);
  }
  if (out[out.length - 1] !== steps) out.push(steps);
  return out;
}

function loadState(file: string, key: string, fresh: () => TuneState): TuneState {
  if (!existsSync(file)) return fresh();
  const s = JSON.parse(readFileSync(file, 'utf8')) as TuneState;
  if (s.format !== 'retain.tune-state/1') throw new Error(`${file}: not a retain tune state file`);
  if (s.key !== key) throw new Error(`${file} belongs to a search with other settings (config, knobs, budget, budget or seeds differ); use another --out, or delete that folder to start over`);
  return s;
}

/** The candidate's training config: the user's, with the candidate's methods, lr, steps and seed. */
function candidateConfig(o: TuneOptions, c: Candidate, runDir: string, seed: number): TrainConfig {
  const cfg = o.config;
  return parseTrainConfig({
    ...cfg,
    output_dir: runDir,
    resume: true,
    methods: c.methods,
    training: { ...cfg.training, lr: c.lr, max_steps: c.steps, seed },
    // FT is the reference and trains to the end whatever it forgets; any other candidate stops once over budget.
    // WiSE-FT is judged after its interpolation, at the end, so its monitor does not stop it either.
    monitor: { ...cfg.monitor, max_forgetting: c.id === 'FT' || postHoc(c) ? null : o.maxForgetting, on_exceed: 'stop' },
  }, `tune candidate '${c.label}'`);
}

/** Trains `c` up to `step` (the whole run when step is its length) and scores it there against the base. */
async function trainTo(o: TuneOptions, c: Candidate, step: number, seed: number, runDir: string, base: EvalResults): Promise<{ score: Score; stopped: string | null }> {
  // A run killed before its first checkpoint left logs but nothing to resume from: start it again cleanly.
  if (existsSync(runDir) && listCheckpoints(runDir).length === 0) rmSync(runDir, { recursive: true });
  const cfg = candidateConfig(o, c, runDir, seed);
  const res = await runTraining(cfg, undefined, { progress: o.progress, pauseAt: step < c.steps ? step : undefined });
  const ev = JSON.parse(readFileSync(join(runDir, 'results.json'), 'utf8')) as EvalResults;
  const s = forgettingAndTarget(primaryRows(base), primaryRows(ev));
  return { score: { step: res.steps, forgetting: s.forgetting, target: s.target ?? NaN }, stopped: res.stopped ?? null };
}

export interface TuneResult {
  state: TuneState;
  base: EvalResults;
  /** The best full-length candidate within the budget (not FT), or null. */
  best: CandidateState | null;
  ft: CandidateState;
  elapsedSeconds: number;
}

/** Runs (or continues) the search; every finished rung is in outDir/state.json before the next starts. */
export async function tune(o: TuneOptions): Promise<TuneResult> {
  const t0 = performance.now();
  const cfg = o.config;
  if (!cfg.monitor) throw new Error('tune: the config needs a monitor (general probes to keep and target probes to gain) to score candidates');
  if (!cfg.monitor.target.length) throw new Error('tune: monitor.target names no task; tune ranks candidates by the target probes\' score');
  if (!(o.seeds >= 1)) throw new Error(`tune: seeds must be ≥ 1, got ${o.seeds}`);
  const eta = o.eta ?? 3;
  const nRungs = o.rungs ?? 3;
  const out = resolve(o.outDir);
  mkdirSync(out, { recursive: true });
  const all = candidates(cfg, { knobs: o.knobs, replay: o.replay, equalPasses: o.equalPasses, defaults: o.defaults });
  const chosen = o.budget.trials ? sample(all, o.budget.trials, cfg.training.seed) : all;
  const key = JSON.stringify({ cfg: { ...cfg, output_dir: null }, knobs: o.knobs, ...(o.defaults ? { defaults: o.defaults } : {}), trials: o.budget.trials ?? null, max: o.maxForgetting, seeds: o.seeds, eta, nRungs, all: !!o.seedAll, passes: !!o.equalPasses });
  const stateFile = join(out, STATE);
  const state = loadState(stateFile, key, () => ({ format: 'retain.tune-state/1', key, candidates: chosen.map((c) => ({ ...c, status: 'active', scores: [] })) }));
  const save = () => writeJsonAtomic(stateFile, state);
  const say = (m: string) => o.progress !== false && process.stderr.write(`tune: ${m}\n`);
  const overTime = () => o.budget.seconds !== undefined && (performance.now() - t0) / 1000 > o.budget.seconds;
  const base = await probeResults(join(out, 'base.json'), cfg.model.path, cfg, cfg.monitor.target, 'base');
  say(`${state.candidates.length} candidates, ${nRungs} rungs (η=${eta}), budget ${o.maxForgetting} points of forgetting`);

  for (let k = 0; k < nRungs; k++) {
    for (const c of state.candidates.filter((x) => x.status === 'active')) {
      const rung = rungSteps(c.steps, cfg.monitor.every, eta, nRungs);
      const step = rung[Math.min(k, rung.length - 1)];
      if ((c.scores.at(-1)?.step ?? 0) >= step) continue;
      if (overTime()) {
        c.status = 'unrun';
        c.note = `the time budget ran out before rung ${k + 1}`;
        continue;
      }
      await trainRung(o, c, step, base, out, say);
      save();
    }
    if (k < nRungs - 1) promote(state.candidates, eta, k);
    save();
  }
  for (const c of state.candidates) if (c.status === 'active') c.status = 'done';
  save();
  const ft = state.candidates[0];
  const best = pickBest(state.candidates, o.maxForgetting);
  const seeded = o.seedAll ? state.candidates.filter((c) => c.status === 'done') : [ft, best].filter((c) => c !== null);
  for (const c of new Set(seeded)) await reseed(o, c, base, out, overTime, say, save);
  return { state, base, best, ft, elapsedSeconds: (performance.now() - t0) / 1000 };
}

async function trainRung(o: TuneOptions, c: CandidateState, step: number, base: EvalResults, out: string, say: (m: string) => void): Promise<void> {
  say(`${c.label}: training to step ${step} of ${c.steps}`);
  try {
    const r = await trainTo(o, c, step, o.config.training.seed, join(out, 'runs', c.id), base);
    c.scores.push(r.score);
    const judged = c.id !== 'FT' && (!postHoc(c) || step === c.steps);
    if (judged && (r.stopped || r.score.forgetting > o.maxForgetting)) {
      c.status = 'broken';
      c.note = r.stopped ?? `forgot ${r.score.forgetting.toFixed(2)} > ${o.maxForgetting} at step ${r.score.step}`;
    }
    say(`${c.label}: step ${r.score.step}: forgetting ${r.score.forgetting.toFixed(2)}, target ${r.score.target.toFixed(2)}${c.status === 'broken' ? ' (over budget)' : ''}`);
  } catch (e) {
    // One candidate that cannot run (a method that does not compose with the config) must not end the search.
    c.status = 'failed';
    c.note = (e as Error).message;
    say(`${c.label}: FAILED — ${c.note}`);
  }
}

/**
 * After rung k: the best ⌈n/η⌉ active candidates within budget (by target score; ties to the one that forgot less)
 * go on; FT always does. Methods that act after training (WiSE-FT's interpolation) are scored before they act at a
 * paused rung, so they are never dropped on a rung's score.
 */
export function promote(cs: CandidateState[], eta: number, k: number): void {
  const racing = cs.filter((c) => c.status === 'active' && c.id !== 'FT' && !postHoc(c));
  const keep = Math.ceil(racing.length / eta);
  racing.sort((a, b) => b.scores.at(-1)!.target - a.scores.at(-1)!.target || a.scores.at(-1)!.forgetting - b.scores.at(-1)!.forgetting);
  for (const c of racing.slice(keep)) {
    c.status = 'dropped';
    c.note = `not among the best ${keep} of ${racing.length} at rung ${k + 1}`;
  }
}

function postHoc(c: Candidate): boolean {
  return c.methods.some((m) => (typeof m === 'string' ? m : m.name) === 'wise');
}

/** The full-length candidate within budget with the best target score (not FT); null when none is. */
export function pickBest(cs: CandidateState[], maxForgetting: number): CandidateState | null {
  const ok = cs.filter((c) => c.status === 'done' && c.id !== 'FT' && c.scores.at(-1)!.forgetting <= maxForgetting);
  ok.sort((a, b) => b.scores.at(-1)!.target - a.scores.at(-1)!.target || a.scores.at(-1)!.forgetting - b.scores.at(-1)!.forgetting);
  return ok[0] ?? null;
}

/** Full runs of `c` with seeds 1..seeds-1 (the search run is seed 0's), for the intervals. */
async function reseed(o: TuneOptions, c: CandidateState, base: EvalResults, out: string, overTime: () => boolean, say: (m: string) => void, save: () => void): Promise<void> {
  c.seeds ??= [];
  for (let s = c.seeds.length + 1; s < o.seeds; s++) {
    if (overTime()) return;
    say(`${c.label}: seed ${s}`);
    const r = await trainTo(o, c, c.steps, o.config.training.seed + s, join(out, 'runs', `${c.id}-seed${s}`), base);
    c.seeds.push(r.score);
    save();
  }
}

/** Mean and the half-width of its 95% Student-t interval (null with one value). */
export function interval(xs: number[]): { mean: number; half: number | null } {
  const n = xs.length;
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  if (n < 2) return { mean, half: null };
  const sd = Math.sqrt(xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1));
  return { mean, half: T975[Math.min(n - 2, T975.length - 1)] * sd / Math.sqrt(n) };
}

/** Student-t 97.5% quantiles for 1..30 degrees of freedom (the last serves beyond). */
const T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101, 2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042];
