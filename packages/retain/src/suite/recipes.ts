// The recipe catalogue: one entry per anti-forgetting recipe, with the options the suites use. The demo, the
// char-LSTM and MNIST suites, `retain tune`'s sweep and the benchmarks (bench/forgetting.ts, bench/methods.ts) all
// build their runs from here, so a method's suite options are written once. What differs between setups (the general
// data, and strengths such as L2's λ that depend on a model's scale) comes in through a Setup.
//
// The catalogue's order is the stories suite's (bench:forgetting --only stories): its pair labels ('SAM + L2') follow
// it, and docs/RESULTS.md quotes them.
import { buildMethods } from '../methods/registry.js';
import { checkComposition } from '../train/hooks.js';

/** A config `methods:` entry: a registered name, or `{ name, ...options }`. */
export type MethodEntry = string | Record<string, unknown>;

export interface Recipe {
  label: string;
  methods: MethodEntry[];
  /** Overrides of the training section for this recipe. */
  training?: Record<string, unknown>;
}

/** What a suite supplies to the catalogue. */
export interface Setup {
  /** General-capability data spec: mixing's replay set and EWC's Fisher data. */
  general?: unknown;
  /** The parameters a probe trains (a regex or module name), for probe, LP-FT and FLOW's vision variant. */
  head?: string;
  /** Head-only steps before LP-FT and FLOW (vision) go on to full fine-tuning. */
  probeSteps?: number;
  /** Per catalogue key, options laid over the catalogue's (a method's strength depends on the model). */
  options?: Record<string, Record<string, unknown>>;
  /** Per catalogue key, a label other than the catalogue's. */
  labels?: Record<string, string>;
}

interface Entry {
  key: string;
  label: string;
  /** The registered method name. */
  method: string;
  options: (s: Setup) => Record<string, unknown>;
}

const need = <T>(v: T | undefined, what: string, key: string): T => {
  if (v === undefined) throw new Error(`recipe '${key}' needs the setup's ${what}`);
  return v;
};

const ENTRIES: Entry[] = [
  { key: 'mix', label: 'mix 1:1', method: 'mixing', options: (s) => ({ ratio: '1:1', general: need(s.general, 'general data', 'mix') }) },
  { key: 'flow', label: 'FLOW', method: 'flow', options: () => ({}) },
  { key: 'sam', label: 'SAM', method: 'sam', options: () => ({ rho: 0.05 }) },
  { key: 'l2', label: 'L2', method: 'l2', options: () => ({ lambda: 0.05, reduction: 'sum' }) },
  // Per-batch Fisher is the cheap default; setups whose base model sits at a minimum (mini-batch gradients cancel)
  // switch to per_sample through Setup.options.
  { key: 'ewc', label: 'EWC', method: 'ewc', options: (s) => ({ lambda: 50, data: need(s.general, 'general data', 'ewc'), fisher: 'per_batch', fisher_samples: 256 }) },
  { key: 'mofo', label: 'MoFO', method: 'mofo', options: () => ({ alpha: 0.15 }) },
  { key: 'lora', label: 'LoRA', method: 'lora', options: () => ({ r: 16, save_merged: true }) },
  { key: 'wise', label: 'WiSE-FT', method: 'wise', options: () => ({ alpha: 0.5 }) },
  { key: 'hft', label: 'HFT', method: 'hft', options: () => ({}) },
  { key: 'probe', label: 'probe', method: 'probe', options: (s) => ({ head: need(s.head, 'head', 'probe') }) },
  { key: 'lpft', label: 'LP-FT', method: 'probe', options: (s) => ({ head: need(s.head, 'head', 'lpft'), then: 'finetune', probe_steps: need(s.probeSteps, 'probeSteps', 'lpft') }) },
  { key: 'flow_vision', label: 'FLOW (vision)', method: 'flow_vision', options: (s) => ({ head: need(s.head, 'head', 'flow_vision'), probe_steps: need(s.probeSteps, 'probeSteps', 'flow_vision') }) },
];

/** Every catalogue key, in the catalogue's order. */
export const RECIPE_KEYS: readonly string[] = ENTRIES.map((e) => e.key);

/**
 * Registered methods with no catalogue entry, and why. methods.table.test.ts covers every registered method either
 * way; suite.recipes.test.ts lists a method that is in neither place.
 */
export const NOT_IN_CATALOGUE: Record<string, string> = {
  distill: 'run by the smollm2 suite alone (its own list): a catalogue entry would add a row to every suite table in docs/RESULTS.md',
  merge: 'is applied to finished runs (TIES/DARE over task vectors); the suites compare single runs',
  selfdistill_targets: 'rewrites responses with the base model, which needs an instruction model and prompt/response data',
  sdft: "needs prompt/demonstration pairs and a model whose in-context learning makes the teacher better than the student (docs/METHODS.md §15; bench/sdft_teacher.ts measures that first): of the suites' models only SmolLM2, whose list runs it",
};

function entryOf(key: string): Entry {
  const e = ENTRIES.find((x) => x.key === key);
  if (!e) throw new Error(`unknown recipe '${key}'; the catalogue has ${RECIPE_KEYS.join(', ')}`);
  return e;
}

/** The methods entry of one catalogue key: the bare name when it has no options, as a config would write it. */
export function methodEntry(key: string, s: Setup = {}): MethodEntry {
  const e = entryOf(key);
  const options = { ...e.options(s), ...s.options?.[key] };
  return Object.keys(options).length ? { name: e.method, ...options } : e.method;
}

export function labelOf(key: string, s: Setup = {}): string {
  return s.labels?.[key] ?? entryOf(key).label;
}

/** One recipe per key, in the order given; `prefix` goes before each label ('rot90 '). */
export function recipes(keys: readonly string[], s: Setup = {}, prefix = ''): Recipe[] {
  return keys.map((k) => ({ label: prefix + labelOf(k, s), methods: [methodEntry(k, s)] }));
}

/** Several catalogue methods in one run, labelled 'a + b' unless a label is given. */
export function combined(keys: readonly string[], s: Setup = {}, label?: string): Recipe {
  return { label: label ?? keys.map((k) => labelOf(k, s)).join(' + '), methods: keys.map((k) => methodEntry(k, s)) };
}

export const FT: Recipe = { label: 'FT', methods: [] };

/** Two recipes as one run, labelled 'a + b' (their training changes only where either has some). */
export function pair(a: Recipe, b: Recipe): Recipe {
  const r: Recipe = { label: `${a.label} + ${b.label}`, methods: [...a.methods, ...b.methods] };
  return a.training || b.training ? { ...r, training: { ...a.training, ...b.training } } : r;
}

/**
 * Every pair of the given recipes as one run ('a + b'), in their order; a pair whose methods cannot compose is refused
 * before any training, with the composition rule's reason.
 */
export function pairs(single: Recipe[]): { recipes: Recipe[]; refused: { label: string; reason: string }[] } {
  const out: Recipe[] = [];
  const refused: { label: string; reason: string }[] = [];
  for (let i = 0; i < single.length; i++) {
    for (let j = i + 1; j < single.length; j++) {
      const [a, b] = [single[i], single[j]];
      // Always with a training entry, as the suites' reuse keys have been written.
      const r: Recipe = { ...pair(a, b), training: { ...a.training, ...b.training } };
      try {
        checkComposition(buildMethods(r.methods));
        out.push(r);
      } catch (e) {
        refused.push({ label: r.label, reason: (e as Error).message });
      }
    }
  }
  return { recipes: out, refused };
}

// The suites' lists. Each names the catalogue keys it runs, in its table's order; a suite's NOT_RUN says why it
// leaves out the others (suite.recipes.test.ts holds every suite to one or the other).

/** The stories260K setups (the demo, the stories suite, tune): TinyStories as the general data. */
export function storiesSetup(replay: string): Setup {
  // stories260K ties its head to the token embedding, so the probed "head" is that shared matrix.
  return { general: { path: replay, format: { type: 'text' }, max_length: 64, name: 'tinystories' }, head: 'embed_tokens', labels: { probe: 'probe (tied head)' } };
}

/** The stories suite runs every method that fits a causal LM without a new head. */
export const STORIES_KEYS: readonly string[] = RECIPE_KEYS.filter((k) => k !== 'lpft' && k !== 'flow_vision');
export const STORIES_NOT_RUN: Record<string, string> = {
  lpft: 'LP-FT trains a new head first; the stories task (arithmetic) keeps the language-model head',
  flow_vision: "FLOW's vision variant is for a new classification head; plain FLOW runs instead",
};

/** A mean and the half-width of its 95% Student-t interval over seeds. */
export interface Interval {
  mean: number;
  half: number | null;
}

/** The best recipe a frontier study found for a setup, with what stands behind it. */
export interface StudyBest {
  /** The row's label in the demo's table. */
  label: string;
  /** The recipe on a setup's data (mixing replays the setup's general data). */
  recipe: (s: Setup) => Recipe;
  /** The command that measured it (its docs/forgetting-summary.json entry holds the same numbers). */
  source: string;
  /**
   * The study's means and 95% intervals in the monitor's units (forgetting: points of TinyStories next-token accuracy
   * lost; target: points of arithmetic exact match), null until the study has run.
   */
  interval: { forgetting: Interval; target: Interval; seeds: number; steps: number; protocol: string; date: string } | null;
  /** Where the recipe comes from while no interval is measured; beside the interval, what to compare it with. */
  note: string;
}

/**
 * The frontier study's best recipe for the demo's setup (bench:frontier --only stories, copied from its stories entry
 * in docs/forgetting-summary.json): the most target among recipes that forgot at most 0.5 point. Its target interval
 * overlaps FT's (60 problems per probe, 3 seeds), so "60% of FT's gain" is a mean, not a resolved difference.
 */
export const STORIES_BEST: StudyBest = {
  label: 'best found: mix 1:3',
  recipe: (s) => ({ label: STORIES_BEST.label, methods: [{ name: 'mixing', general: need(s.general, 'general data', 'best found'), ratio: '1:3' }] }),
  source: 'npm run -s bench:frontier -- --only stories --steps 300 --seeds 3 --knobs mixing,l2,wise,ewc,hft,mofo --write-docs',
  interval: { forgetting: { mean: 0.341, half: 0.333 }, target: { mean: 6.667, half: 10.955 }, seeds: 3, steps: 300, protocol: 'equal steps', date: '2026-12-03' },
  note: 'FT in the same study: forgetting 45.28 ± 4.70, target 11.11 ± 14.54 points; goal (≤ 0.5 forgetting at ≥ 99% of FT\'s gain) not met',
};

/**
 * The demo: a short showcase, not a suite — the methods a newcomer asks about first, the combination that gave
 * nearly standard fine-tuning's target score for the least forgetting in the stories suite (docs/RESULTS.md), and the
 * best recipe the frontier study found for this setup (STORIES_BEST).
 */
export function demoRecipes(replay: string): Recipe[] {
  const s = storiesSetup(replay);
  return [FT, ...recipes(['mix', 'flow', 'l2', 'lora', 'wise'], s), combined(['l2', 'hft'], s), STORIES_BEST.recipe(s)];
}

/**
 * The stories suite: FT, every method alone, the same mixing and EWC on text the base model wrote itself from BOS
 * (`retain synth`; data-oblivious replay, issue #7), and with `withPairs` every pair of methods.
 */
export function storiesRecipes(replay: string, synth: string, withPairs: boolean): { recipes: Recipe[]; refused: { label: string; reason: string }[] } {
  const single = recipes(STORIES_KEYS, storiesSetup(replay));
  const own: Setup = { general: { path: synth, format: { type: 'text' }, max_length: 64, name: 'synth' }, labels: { mix: 'mix 1:1 (synth)', ewc: 'EWC (synth Fisher)' } };
  const p = withPairs ? pairs(single) : { recipes: [], refused: [] };
  return { recipes: [FT, ...single, ...recipes(['mix', 'ewc'], own), ...p.recipes], refused: p.refused };
}

export const CHARLSTM_KEYS: readonly string[] = ['mix', 'flow', 'l2', 'ewc', 'sam', 'mofo', 'wise'];
export const CHARLSTM_NOT_RUN: Record<string, string> = {
  lora: 'the char-LSTM has no nn.Linear layer (LSTM kernels and the softmax are raw weight tensors in TensorFlow layout), so LoRA has no target layer',
  hft: "HFT's halves are defined over attention and MLP projections, which an LSTM does not have",
  probe: 'the suite has no new-head task, and probing the softmax alone is fine-tuning of the output layer',
  lpft: 'the suite has no new-head task',
  flow_vision: 'the suite has no new-head task',
};

/** The char-LSTM suite; `window` is the training length in characters, `synth` the model's own text when made. */
export function charlstmRecipes(replay: string, window: number, synth?: string): Recipe[] {
  const s: Setup = {
    general: { path: replay, format: { type: 'text' }, max_length: window + 1, name: 'shakespeare' },
    // The empirical (per-sample) Fisher: at the converged base model the mini-batch gradients nearly cancel, and the
    // per-batch estimate came out ~5·10⁻⁷ on average, too small for any λ near the L2 scale to act.
    options: { ewc: { lambda: 10000, fisher: 'per_sample', fisher_samples: 256 } },
  };
  const own: Setup = { general: { path: synth, format: { type: 'text' }, max_length: window + 1, name: 'synth' }, labels: { mix: 'mix 1:1 (synth)' } };
  return [
    FT,
    ...recipes(CHARLSTM_KEYS, s),
    combined(['mix', 'flow', 'l2'], s, 'mix+FLOW+L2'),
    ...(synth ? recipes(['mix'], own) : []),
  ];
}

export const MNIST_ROT90_KEYS: readonly string[] = ['mix', 'flow', 'l2', 'ewc', 'sam', 'mofo', 'wise'];
export const MNIST_PARITY_KEYS: readonly string[] = ['probe', 'lpft', 'flow_vision'];
export const MNIST_NOT_RUN: Record<string, string> = {
  lora: 'the MLP is built from TensorFlow-layout Dense layers (weights [in, out]), not nn.Linear, so LoRA finds no target layer',
  hft: "HFT's halves are defined over attention and MLP projections (q,k,v,o,gate,up,down), which this MLP does not have",
};

/** The MLP's strengths: L2 at the MLP's scale; EWC with the per-sample Fisher (the base sits at a minimum). */
export const MNIST_OPTIONS: Record<string, Record<string, unknown>> = { l2: { lambda: 0.5 }, ewc: { lambda: 1000, fisher: 'per_sample', fisher_samples: 500 } };

/** The original digits as general data (mixing's replay, EWC's Fisher). */
export function mnistGeneral(original: string): Record<string, unknown> {
  return { path: original, format: { type: 'image_classification', num_classes: 10 }, name: 'mnist' };
}

/** The MNIST setups (the suite, the sequential protocol): the original training digits as the general data. */
export function mnistSetup(original: string): Setup {
  return { general: mnistGeneral(original), options: MNIST_OPTIONS };
}

/**
 * The MNIST suite: rot90 keeps the digit head (every method that fits it), parity trains a new head (probe, LP-FT,
 * FLOW's vision variant). `head` names the new head's parameters; LP-FT and FLOW (vision) probe for half the steps.
 */
export function mnistRecipes(original: string, steps: number, head: string): { rot90: Recipe[]; parity: Recipe[] } {
  const s: Setup = { ...mnistSetup(original), head, probeSteps: Math.max(1, Math.round(steps / 2)) };
  return {
    rot90: [{ ...FT, label: 'rot90 FT' }, ...recipes(MNIST_ROT90_KEYS, s, 'rot90 '), combined(['mix', 'flow', 'l2'], s, 'rot90 mix+FLOW+L2')],
    parity: [{ ...FT, label: 'parity FT' }, ...recipes(MNIST_PARITY_KEYS, s, 'parity ')],
  };
}

/**
 * The sequential protocol's recipes (bench:sequential): FT, replay of the general data (mix 1:1), L2 toward each
 * stage's starting weights, replay + L2, then the `extra` catalogue keys alone (EWC where its Fisher is cheap).
 */
export function sequentialRecipes(s: Setup, extra: readonly string[] = []): Recipe[] {
  const named: Setup = { ...s, labels: { ...s.labels, mix: 'replay' } };
  return [FT, ...recipes(['mix', 'l2'], named), combined(['mix', 'l2'], named), ...recipes(extra, named)];
}

// ---- The real-model suites (suite/minilm.ts, suite/effnet.ts): their own lists, a new head each ----

/** The new head of the minilm suite's model (checkpoint names). */
export const MINILM_HEAD = '^classifier\\.';

/** Methods of METHODS.md this suite leaves out, and why. */
export const MINILM_NOT_RUN: Record<string, string> = {
  'mix (replay)': "mixing trains general batches with the run's own loss, so general data must be labelled 3-way pairs for the new head; the encoder's general skill came from a contrastive objective over sentence pairs that retain's trainer does not have, and no such labelled general set exists here",
  EWC: "EWC's Fisher is the gradient of a general-data loss at θ₀; the only loss here is the new head's, whose θ₀ is a random initialisation, so the Fisher would measure the random head, not the general skill",
  distill: 'distillation replays the base model\'s predictions; the head is new (no base predictions) and the method reads token logits [B, T, V] of a language model',
  HFT: "HFT's halves are drawn over layers.N.{q,k,v,o,gate,up,down}_proj; a BERT encoder's modules are encoder.layer.N.attention.self.{query,key,value} and *.dense, which HFT does not map",
};

/**
 * One entry per method that applies, in the stories suite's style (FT is the run with none). The head is new, so
 * L2 leaves it out, FLOW runs its new-head variant (probe first, then weighted fine-tuning), and LoRA adapts every
 * linear layer of the encoder under the frozen, untrained head.
 */
export function minilmMethods(steps: number): Record<string, Recipe> {
  const probeSteps = Math.max(1, Math.round(steps / 2));
  return {
    flow: { label: 'FLOW (probe, then weighted FT)', methods: [{ name: 'flow_vision', head: MINILM_HEAD, probe_steps: probeSteps }] },
    sam: { label: 'SAM', methods: [{ name: 'sam', rho: 0.05 }] },
    l2: { label: 'L2', methods: [{ name: 'l2', lambda: 0.01, reduction: 'sum', exclude: MINILM_HEAD }] },
    mofo: { label: 'MoFO', methods: [{ name: 'mofo', alpha: 0.15 }] },
    lora: { label: 'LoRA', methods: [{ name: 'lora', r: 8, targets: ['query', 'key', 'value', 'dense'], save_merged: true }] },
    wise: { label: 'WiSE-FT', methods: [{ name: 'wise', alpha: 0.5 }] },
    probe: { label: 'probe', methods: [{ name: 'probe', head: MINILM_HEAD }] },
    lpft: { label: 'LP-FT', methods: [{ name: 'probe', head: MINILM_HEAD, then: 'finetune', probe_steps: probeSteps }] },
  };
}

/** FT, every method, and the pairs worth a run: the probe-first start with each weight-space guard. */
export function minilmRecipes(steps: number): Recipe[] {
  const m = minilmMethods(steps);
  return [{ label: 'FT', methods: [] }, ...Object.values(m), pair(m.lpft, m.l2), pair(m.lpft, m.wise)];
}

/** The new head of the effnet suite's model (checkpoint names). */
export const EFFNET_HEAD = '^_fc\\.';

/** Methods of METHODS.md this suite leaves out, and why. */
export const EFFNET_NOT_RUN: Record<string, string> = {
  'mix (replay)': 'no labelled natural-image data exists here to replay (the general skill is ImageNet classification, and no ImageNet images ship)',
  EWC: "EWC's Fisher needs a general-data loss at θ₀: without ImageNet labels the only loss is the new head's, whose θ₀ is a random initialisation",
  distill: "the head is new (no base predictions over the digit classes), and the method reads a language model's token logits",
  LoRA: "the only nn.Linear is the new head; retain's LoRA adapts Linear layers, not the convolutions that make up the body",
  HFT: "HFT's halves are drawn over attention and MLP projections, which a convolutional network does not have",
  'WiSE-FT (alone)': "interpolating toward θ₀ would pull the new head halfway back to its random initialisation; it runs after LP-FT instead, where the head's base is the probed head",
};

/** One entry per method that applies, in the stories suite's style (FT is the run with none). */
export function effnetMethods(steps: number): Record<string, Recipe> {
  const probeSteps = Math.max(1, Math.round(steps / 2));
  return {
    flow: { label: 'FLOW (vision)', methods: [{ name: 'flow_vision', head: EFFNET_HEAD, probe_steps: probeSteps }] },
    sam: { label: 'SAM', methods: [{ name: 'sam', rho: 0.05 }] },
    l2: { label: 'L2', methods: [{ name: 'l2', lambda: 0.05, reduction: 'sum', exclude: EFFNET_HEAD }] },
    mofo: { label: 'MoFO', methods: [{ name: 'mofo', alpha: 0.15 }] },
    probe: { label: 'probe', methods: [{ name: 'probe', head: EFFNET_HEAD }] },
    lpft: { label: 'LP-FT', methods: [{ name: 'probe', head: EFFNET_HEAD, then: 'finetune', probe_steps: probeSteps }] },
  };
}

export function effnetRecipes(steps: number): Recipe[] {
  const m = effnetMethods(steps);
  return [{ label: 'FT', methods: [] }, ...Object.values(m), pair(m.lpft, { label: 'WiSE-FT', methods: [{ name: 'wise', alpha: 0.5 }] }), pair(m.lpft, m.l2)];
}

// ---- The SmolLM2 suite (suite/smollm2.ts): a real causal LM, so every catalogue method that keeps the LM head ----

/**
 * The smollm2 suite's general data (replay, EWC's Fisher, distillation): TinyStories cut to 32 tokens, since a step
 * of a 135M model costs in proportion to its tokens on a CPU.
 */
export function smollm2Setup(replay: string): Setup {
  return {
    general: { path: replay, format: { type: 'text' }, max_length: 32, name: 'tinystories' },
    // 32 Fisher samples (4 batches): the default 256 would cost as much as the run's own training.
    options: { ewc: { fisher_samples: 32 } },
  };
}

export const SMOLLM2_KEYS: readonly string[] = ['mix', 'flow', 'sam', 'l2', 'ewc', 'mofo', 'lora', 'wise', 'hft'];
export const SMOLLM2_NOT_RUN: Record<string, string> = {
  probe: "SmolLM2 ties its LM head to the token embedding, and the target (arithmetic) keeps that head: probing it is fine-tuning the embedding, not a linear probe",
  lpft: 'LP-FT trains a new head first; the target keeps the language-model head',
  flow_vision: "FLOW's vision variant is for a new classification head; plain FLOW runs instead",
};

/**
 * The smollm2 suite: FT, every catalogue method that applies, distillation replay and SDFT (the model's teacher beats
 * its student, docs/RESULTS.md), SDFT with replay, and the pairs the stories suite and the demo found useful.
 */
export function smollm2Recipes(replay: string): Recipe[] {
  const s = smollm2Setup(replay);
  const sdft: Recipe = { label: 'SDFT', methods: [{ name: 'sdft', max_tokens: 6 }] };
  const mix = recipes(['mix'], s)[0];
  return [
    FT,
    ...recipes(SMOLLM2_KEYS, s),
    { label: 'distill', methods: [{ name: 'distill', data: s.general }] },
    sdft,
    pair(sdft, mix),
    combined(['mix', 'l2'], s),
    combined(['l2', 'hft'], s),
  ];
}

/**
 * The sequential protocol on SmolLM2 (bench:sequential --suite smollm2): issue #20's comparison, stage after stage:
 * FT, replay, distillation replay, SDFT and LoRA (the single-stage suite's frontier), as in the smollm2 suite.
 */
export function smollm2SequentialRecipes(replay: string): Recipe[] {
  // SDFT right after FT: the comparison the protocol is for comes first in a run cut short.
  const keep = new Map([['FT', 'FT'], ['SDFT', 'SDFT'], ['mix 1:1', 'replay'], ['distill', 'distill'], ['LoRA', 'LoRA']]);
  const all = smollm2Recipes(replay);
  return [...keep].map(([label, as]) => ({ ...all.find((r) => r.label === label)!, label: as }));
}

// ---- `retain tune`'s knobs (tune/space.ts turns them into candidates on the user's config) ----

/** One of `retain tune`'s knobs: a method's main setting at the strengths tried. */
export interface MethodKnob {
  method: string;
  /** Each setting is merged into the method's entry (so the user's other options for it stay). */
  settings: Record<string, unknown>[];
  label: (s: Record<string, unknown>) => string;
  /** Options the method needs from somewhere (the config's own entry, or --replay). */
  needsData?: string;
  /** Options of a new entry (one the config does not have), kept unless the config's entry says otherwise. */
  defaults?: Record<string, unknown>;
}

const each = (option: string, values: unknown[]) => values.map((v) => ({ [option]: v }));

/** Five settings of each method's main knob, spanning weak to strong (docs/METHODS.md gives each default). */
export const METHOD_KNOBS: Record<string, MethodKnob> = {
  flow: { method: 'flow', settings: each('tau_scale', [0.25, 0.5, 1, 2, 4]), label: (s) => `FLOW τ×${s.tau_scale}` },
  mixing: { method: 'mixing', settings: each('ratio', ['1:3', '1:1', '3:1', '7:1', '15:1']), label: (s) => `mix ${s.ratio}`, needsData: 'general' },
  // Summed over parameters, as the suites run it: a mean over millions of weights needs λ in the thousands.
  l2: { method: 'l2', settings: each('lambda', [0.01, 0.03, 0.1, 0.3, 1]), label: (s) => `L2 λ=${s.lambda}`, defaults: { reduction: 'sum' } },
  ewc: { method: 'ewc', settings: each('lambda', [1, 10, 50, 200, 1000]), label: (s) => `EWC λ=${s.lambda}`, needsData: 'data' },
  wise: { method: 'wise', settings: each('alpha', [0.2, 0.35, 0.5, 0.65, 0.8]), label: (s) => `WiSE α=${s.alpha}` },
  sam: { method: 'sam', settings: each('rho', [0.01, 0.02, 0.05, 0.1, 0.2]), label: (s) => `SAM ρ=${s.rho}` },
  lora: { method: 'lora', settings: each('r', [4, 8, 16, 32, 64]).map((s) => ({ ...s, save_merged: true })), label: (s) => `LoRA r=${s.r}` },
  mofo: { method: 'mofo', settings: each('alpha', [0.03, 0.05, 0.1, 0.15, 0.3]), label: (s) => `MoFO α=${s.alpha}` },
  // HFT has no strength knob (the paper freezes half of each layer's matrices); its learning rate and steps still vary.
  hft: { method: 'hft', settings: [{}], label: () => 'HFT' },
};

/** Multipliers of the config's learning rate and step count when `lr` / `steps` are among the knobs. */
export const LR_SCALES = [0.3, 1, 3];
export const STEP_SCALES = [0.5, 1];
