// npm run bench:frontier — the forgetting frontier: every method at five strengths of its main knob × k seeds on a
// suite's setup, at equal steps and (with --equal-passes) at equal passes over the target data, through `retain
// tune`'s machinery without halving (every candidate trains to the end). Per suite it prints one JSON object: FT's
// forgetting and target with intervals, each method's curve, and the best recipe against the goal (at most G of
// forgetting — 0.5 points, or 0.02 bits/char on char models — while keeping ≥ 99% of FT's target gain).
// Usage: npm run -s bench:frontier -- [--only stories,charlstm] [--steps N] [--seeds 3] [--knobs flow,l2,...]
//        [--equal-passes] [--out runs/frontier] [--write-docs]
import { mkdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { loadTrainConfig } from '../packages/retain/src/config.js';
import { tune } from '../packages/retain/src/tune/search.js';
import { summarize, type Summary, type FrontierPoint } from '../packages/retain/src/tune/outputs.js';
import { METHOD_KNOBS } from '../packages/retain/src/suite/recipes.js';
import { writeDemoTuneConfig } from '../packages/retain/src/suite/tune.js';
import { CHARLSTM_MODEL, prepareCharlstmData } from '../packages/retain/src/suite/charlstm.js';
import { writeResultsBlock } from './results-doc.js';

const args = process.argv.slice(2);
const flag = (n: string) => args.includes(n);
const opt = (n: string) => (args.includes(n) ? args[args.indexOf(n) + 1] : undefined);
const root = new URL('..', import.meta.url).pathname;

interface SuiteSetup {
  config: string;
  replay: Record<string, unknown>;
  /** The goal's forgetting allowance in the monitor's unit. */
  goal: number;
  knobs: string[];
}

const SUITES: Record<string, (out: string, steps: number) => SuiteSetup> = {
  stories: (out, steps) => ({ ...writeDemoTuneConfig(out, steps), goal: 0.5, knobs: Object.keys(METHOD_KNOBS) }),
  charlstm: (out, steps) => {
    const d = prepareCharlstmData(out, { trainWindows: Math.max(256, steps * 16), replayWindows: Math.max(256, steps * 16) });
    const cfg = {
      model: { path: CHARLSTM_MODEL },
      data: { train: { path: d.train, format: { type: 'text' }, max_length: 129, name: 'darwin' } },
      training: { max_steps: steps, batch_size: 16, lr: 0.003, schedule: 'cosine', warmup_ratio: 0.05, weight_decay: 0, clip_grad_norm: 1.0, seed: 0, log_every: 5 },
      monitor: { every: Math.max(1, Math.round(steps / 4)), tasks: [d.monitorFile], target: ['darwin_heldout'], limit: 4 },
      output_dir: join(out, 'run'),
    };
    const config = join(out, 'config.yaml');
    writeFileSync(config, toYaml(cfg));
    // LoRA and HFT find no target layers in the TF-layout LSTM (bench:forgetting's charlstm suite says why).
    return { config, replay: { path: d.replay, format: { type: 'text' }, max_length: 129, name: 'shakespeare' }, goal: 0.02, knobs: ['flow', 'mixing', 'l2', 'wise', 'sam', 'mofo'] };
  },
};

export interface SuiteSummary {
  suite: string;
  protocol: 'equal steps' | 'equal passes';
  goal: { max_forgetting: number; min_target_gain_of_ft: number };
  ft: FrontierPoint;
  best: (FrontierPoint & { target_gain_of_ft: number; cost_steps_of_ft: number; goal_met: boolean }) | null;
  methods: Record<string, { label: string; forgetting: string; target: string }[]>;
  seconds: number;
}

const ci = (x: { mean: number; half: number | null } | undefined, v: number) => (x ? `${x.mean.toFixed(3)}${x.half === null ? '' : ` ± ${x.half.toFixed(3)}`}` : v.toFixed(3));

/** The goal's pick: the most target gain among recipes within the forgetting goal (mean over seeds); else the least forgetting among those keeping 99% of FT's gain; else the Pareto point forgetting least. */
export function bestAgainstGoal(s: Summary, goal: number): SuiteSummary['best'] {
  const ft = s.frontier.find((p) => p.id === 'FT')!;
  const f = (p: FrontierPoint) => p.seeded?.forgetting.mean ?? p.forgetting;
  const t = (p: FrontierPoint) => p.seeded?.target.mean ?? p.target;
  const gain = (p: FrontierPoint) => (t(p) - s.base_target) / (t(ft) - s.base_target);
  const runs = s.frontier.filter((p) => p.status === 'done' && p.id !== 'FT');
  const within = runs.filter((p) => f(p) <= goal).sort((a, b) => t(b) - t(a));
  const keeping = runs.filter((p) => gain(p) >= 0.99).sort((a, b) => f(a) - f(b));
  const pick = within[0] ?? keeping[0] ?? runs.filter((p) => p.pareto).sort((a, b) => f(a) - f(b))[0];
  if (!pick) return null;
  return { ...pick, target_gain_of_ft: gain(pick), cost_steps_of_ft: pick.steps / ft.steps, goal_met: f(pick) <= goal && gain(pick) >= 0.99 };
}

async function runSuite(name: string, steps: number, seeds: number, passes: boolean, outRoot: string): Promise<SuiteSummary> {
  const out = join(outRoot, name, passes ? 'passes' : 'steps');
  mkdirSync(out, { recursive: true });
  const setup = SUITES[name](out, steps);
  const knobs = opt('--knobs')?.split(',') ?? setup.knobs;
  const cfg = loadTrainConfig(setup.config);
  // Without halving the probes between start and end decide nothing: probe once, at the last step.
  if (cfg.monitor) cfg.monitor.every = steps;
  // No budget: every candidate trains to the end and is seeded; the goal is applied afterwards.
  const r = await tune({ config: cfg, outDir: out, maxForgetting: 1e9, knobs, budget: {}, seeds, seedAll: true, rungs: 1, equalPasses: passes, replay: setup.replay });
  const s = summarize(r, 1e9);
  writeFileSync(join(out, 'tune.json'), JSON.stringify(s, null, 2) + '\n');
  const methods: SuiteSummary['methods'] = {};
  for (const p of s.frontier.filter((x) => x.id !== 'FT')) {
    const m = p.label.split(' ')[0];
    (methods[m] ??= []).push({ label: p.label, forgetting: ci(p.seeded?.forgetting, p.forgetting), target: ci(p.seeded?.target, p.target) });
  }
  return {
    suite: name, protocol: passes ? 'equal passes' : 'equal steps', goal: { max_forgetting: setup.goal, min_target_gain_of_ft: 0.99 },
    ft: s.frontier.find((p) => p.id === 'FT')!, best: bestAgainstGoal(s, setup.goal), methods, seconds: s.seconds,
  };
}

function markdown(x: SuiteSummary, cmd: string): string {
  const rows = [`| recipe | forgetting (95% CI) | target (95% CI) |`, '|---|---|---|', `| FT | ${ci(x.ft.seeded?.forgetting, x.ft.forgetting)} | ${ci(x.ft.seeded?.target, x.ft.target)} |`];
  for (const list of Object.values(x.methods)) for (const p of list) rows.push(`| ${p.label} | ${p.forgetting} | ${p.target} |`);
  const b = x.best;
  const verdict = b ? `Best against the goal (forgetting ≤ ${x.goal.max_forgetting}, ≥ 99% of FT's target gain): **${b.label}**, forgetting ${ci(b.seeded?.forgetting, b.forgetting)}, ${(100 * b.target_gain_of_ft).toFixed(1)}% of FT's target gain, ${b.cost_steps_of_ft.toFixed(2)}× FT's steps — goal ${b.goal_met ? 'met' : 'not met'}.` : 'No recipe finished.';
  return `Command: \`${cmd}\` · machine: ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'} · date: ${new Date().toISOString().slice(0, 10)} · ${x.seconds} s · protocol: ${x.protocol}.\n\n${rows.join('\n')}\n\n${verdict}`;
}

function writeDocs(key: string, body: string): void {
  writeResultsBlock(`frontier:${key}`, body, `### Frontier: ${key}`);
}

async function main(): Promise<void> {
  const only = (opt('--only') ?? 'stories').split(',');
  for (const s of only) if (!SUITES[s]) throw new Error(`--only: unknown suite '${s}'; suites: ${Object.keys(SUITES).join(', ')}`);
  const steps = Number(opt('--steps') ?? 150);
  const seeds = Number(opt('--seeds') ?? 3);
  const passes = flag('--equal-passes');
  const outRoot = resolve(opt('--out') ?? 'runs/frontier');
  const out: SuiteSummary[] = [];
  for (const s of only) {
    const x = await runSuite(s, steps, seeds, passes, outRoot);
    out.push(x);
    if (flag('--write-docs')) writeDocs(`${s}:${passes ? 'passes' : 'steps'}`, markdown(x, `npm run -s bench:frontier -- --only ${s} --steps ${steps} --seeds ${seeds}${passes ? ' --equal-passes' : ''} --write-docs`));
  }
  const summary = { format: 'retain.forgetting-summary/1', date: new Date().toISOString(), suites: out.map((x) => ({ suite: x.suite, protocol: x.protocol, goal: x.goal, ft: x.ft, best: x.best })) };
  if (flag('--write-docs')) {
    const file = join(root, 'docs', 'forgetting-summary.json');
    const prev = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as typeof summary) : { suites: [] as typeof summary.suites };
    const keep = prev.suites.filter((p) => !out.some((x) => x.suite === p.suite && x.protocol === p.protocol));
    writeFileSync(file, JSON.stringify({ ...summary, suites: [...keep, ...summary.suites] }, null, 2) + '\n');
  }
  console.log(JSON.stringify(summary, null, 2));
}

await main();
