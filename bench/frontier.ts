// npm run bench:frontier — the forgetting frontier: every method at five strengths of its main knob × k seeds on a
// suite's setup, at equal steps and (with --equal-passes) at equal passes over the target data, through `retain
// tune`'s machinery without halving (every candidate trains to the end). Per suite it prints one JSON object: FT's
// forgetting and target with intervals, each method's curve, and the best recipe against the goal (at most G of
// forgetting — 0.5 points, or 0.02 bits/char on char models — while keeping ≥ 99% of FT's target gain).
//   stories   stories260K → arithmetic (the demo's setup)
//   charlstm  char-LSTM Shakespeare → Darwin (general and target in bits/char)
//   mnist     the MNIST MLP → digits rotated 90°, same head (general: original digits, target: rotated; points)
//   mixstudy  the mixed-training study's stage 1: the SICK base → linear_1d (stage 0 is trained once and cached)
// Usage: npm run -s bench:frontier -- [--only stories,charlstm,mnist,mixstudy] [--steps N] [--seeds 3]
//        [--knobs flow,l2,...] [--equal-passes] [--out runs/frontier] [--write-docs]
// With --write-docs each suite's table goes into docs/RESULTS.md and its entry into docs/forgetting-summary.json
// (bench:forgetting -- --summary prints that file).
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { loadTrainConfig } from '../packages/retain/src/config.js';
import { tune } from '../packages/retain/src/tune/search.js';
import { summarize } from '../packages/retain/src/tune/outputs.js';
import { METHOD_KNOBS } from '../packages/retain/src/suite/recipes.js';
import { writeDemoTuneConfig } from '../packages/retain/src/suite/tune.js';
import { CHARLSTM_MODEL, prepareCharlstmData } from '../packages/retain/src/suite/charlstm.js';
import { writeRot90TuneConfig } from '../packages/retain/src/suite/mnist.js';
import { writeMixStudyTuneConfig } from '../packages/retain/src/suite/mixstudy.js';
import { writeResultsBlock } from './results-doc.js';
import { scored, suiteEntry, writeSummary, type Ci, type Protocol, type SuiteEntry } from './forgetting-summary.js';

const args = process.argv.slice(2);
const flag = (n: string) => args.includes(n);
const opt = (n: string) => (args.includes(n) ? args[args.indexOf(n) + 1] : undefined);

interface SuiteSetup {
  config: string;
  replay: Record<string, unknown>;
  /** Options of a knob's new method entry that this setup needs (tune's SpaceOptions.defaults). */
  defaults?: Record<string, Record<string, unknown>>;
  /** The goal's forgetting allowance in the monitor's unit. */
  goal: number;
  knobs: string[];
}

/** Each suite's setup for a protocol folder `out` under the suite's folder `suiteDir`. */
const SUITES: Record<string, (out: string, steps: number, suiteDir: string) => SuiteSetup | Promise<SuiteSetup>> = {
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
  // LoRA and HFT find no target layers in the TF-layout MLP (recipes.ts MNIST_NOT_RUN).
  mnist: (out, steps) => ({ ...writeRot90TuneConfig(out, steps), goal: 0.5, knobs: ['flow', 'mixing', 'l2', 'ewc', 'wise', 'sam', 'mofo'] }),
  // Stage 0 (the SICK base) lives in the suite's folder, shared by both protocols.
  mixstudy: async (out, steps, suiteDir) => ({ ...(await writeMixStudyTuneConfig(suiteDir, out, steps)), goal: 0.5, knobs: Object.keys(METHOD_KNOBS) }),
};

interface SuiteRun {
  entry: SuiteEntry;
  /** Each method's curve: its settings' scores as the metrics' own values. */
  methods: Record<string, { label: string; forgetting: Ci; general: Ci; target: Ci }[]>;
  seconds: number;
}

const ci = (x: Ci) => `${x.mean.toFixed(3)}${x.half === null ? '' : ` ± ${x.half.toFixed(3)}`}`;

const commandOf = (suite: string, steps: number, seeds: number, passes: boolean) =>
  `npm run -s bench:frontier -- --only ${suite} --steps ${steps} --seeds ${seeds}${opt('--knobs') ? ` --knobs ${opt('--knobs')}` : ''}${passes ? ' --equal-passes' : ''} --write-docs`;

async function runSuite(name: string, steps: number, seeds: number, passes: boolean, outRoot: string): Promise<SuiteRun> {
  const out = join(outRoot, name, passes ? 'passes' : 'steps');
  mkdirSync(out, { recursive: true });
  const setup = await SUITES[name](out, steps, join(outRoot, name));
  const knobs = opt('--knobs')?.split(',') ?? setup.knobs;
  const cfg = loadTrainConfig(setup.config);
  // Without halving the probes between start and end decide nothing: probe once, at the last step.
  if (cfg.monitor) cfg.monitor.every = steps;
  // No budget: every candidate trains to the end and is seeded; the goal is applied afterwards.
  const r = await tune({ config: cfg, outDir: out, maxForgetting: 1e9, knobs, budget: {}, seeds, seedAll: true, rungs: 1, equalPasses: passes, replay: setup.replay, defaults: setup.defaults });
  const s = summarize(r, 1e9);
  writeFileSync(join(out, 'tune.json'), JSON.stringify(s, null, 2) + '\n');
  const methods: SuiteRun['methods'] = {};
  for (const p of s.frontier.filter((x) => x.id !== 'FT')) {
    const m = p.label.split(' ')[0];
    const sc = scored(p, s.units);
    (methods[m] ??= []).push({ label: p.label, forgetting: sc.forgetting, general: sc.general, target: sc.target });
  }
  const protocol: Protocol = passes ? 'equal passes' : 'equal steps';
  return { entry: suiteEntry(s, { suite: name, protocol, command: commandOf(name, steps, seeds, passes), goal: setup.goal }), methods, seconds: s.seconds };
}

function markdown(x: SuiteRun): string {
  const e = x.entry;
  const u = `general in ${e.units.general.unit} (base ${e.units.general.base.toFixed(3)}), target in ${e.units.target.unit}`;
  const rows = [`| recipe | forgetting (95% CI) | general (95% CI) | target (95% CI) |`, '|---|---|---|---|', `| FT | ${ci(e.ft.forgetting)} | ${ci(e.ft.general)} | ${ci(e.ft.target)} |`];
  for (const list of Object.values(x.methods)) for (const p of list) rows.push(`| ${p.label} | ${ci(p.forgetting)} | ${ci(p.general)} | ${ci(p.target)} |`);
  const b = e.best;
  const verdict = b ? `Best against the goal (forgetting ≤ ${e.goal.max_forgetting}, ≥ 99% of FT's target gain): **${b.label}** (${b.why}), forgetting ${ci(b.forgetting)}, ${b.target_gain_of_ft === null ? "FT gained nothing on the target, so no share of its gain" : `${(100 * b.target_gain_of_ft).toFixed(1)}% of FT's target gain`}, ${b.cost_steps_of_ft.toFixed(2)}× FT's steps — goal ${e.goal_met ? 'met' : 'not met'}.` : 'No recipe finished.';
  return `Command: \`${e.command}\` · machine: ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'} · date: ${new Date().toISOString().slice(0, 10)} · ${x.seconds} s · protocol: ${e.protocol} · ${u}.\n\n${rows.join('\n')}\n\n${verdict}`;
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
  const runs: SuiteRun[] = [];
  for (const s of only) {
    const x = await runSuite(s, steps, seeds, passes, outRoot);
    runs.push(x);
    if (flag('--write-docs')) writeDocs(`${s}:${passes ? 'passes' : 'steps'}`, markdown(x));
  }
  if (flag('--write-docs')) writeSummary(runs.map((x) => x.entry));
  const suites = runs.map((x) => ({ ...x.entry, methods: x.methods, seconds: x.seconds }));
  console.log(JSON.stringify({ format: 'retain.frontier/1', date: new Date().toISOString(), suites }, null, 2));
}

await main();
