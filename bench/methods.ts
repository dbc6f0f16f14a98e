// npm run bench:methods — what each anti-forgetting method costs: wall time of one epoch of fine-tuning the d=256
// Llama (hidden 256, 4 layers, 4 heads, vocab 512, sequences of 128 tokens, batch 16) with the method, divided by the
// wall time of an epoch of standard fine-tuning measured in the same run. One JSON object on stdout.
//
// Pairing: this machine is shared, and the load from elsewhere changes by tens of percent within a minute, which
// epochs run one after another would charge to whichever method ran then. So every run of a method carries a pacer
// (a method of its own, listed first): after each of the method's steps it runs and times one standard fine-tuning
// step of a separate model on the next batch of the same data. A method's epoch is its run's wall time less the
// pacer's time (so it includes everything the method does before and around its steps: FLOW's scoring pass, EWC's
// Fisher pass, WiSE-FT's interpolation), and `paired` = that epoch ÷ (mean paired step time × the standard run's steps
// per epoch). Standard fine-tuning itself is measured the same way (the `ft` row: a fresh model's first steps cost
// more than the pacer's warm ones), and `ratio` = a method's paired ratio ÷ ft's: epoch with the method ÷ standard
// epoch, both fresh runs. `step_ratio` = median over steps of (method step ÷ the standard step right after it), ÷ the
// same for ft. FLOW is measured twice: computing its weights, then with the weights cached by the first run.
// SDFT trains on the same rows cut into a prompt and a demonstration (its note says how); generation dominates its
// step, so it also reports the tokens sampled per step and the share of its epoch spent sampling.
// One thread by default: on a busy machine libtorch's second OpenMP thread waits on an occupied core and steps take
// several times longer, which would measure the neighbours rather than the methods.
//
// Data: the first stories of shared/data/text/tinystories_lowercase_sample.txt tokenized with the stories260K
// tokenizer (tok512.bin) and packed into 129-token rows; without the shared folder, synthetic uniform token ids of the
// same shape (the work per step does not depend on the values). `data` in the output says which.
// Environment: BENCH_THREADS (1), BENCH_SEQS (128 training sequences = 8 steps per epoch, plus as many general ones
// for mixing and EWC: about 8 minutes on 2 busy cores, every run paying for its paired standard steps; 256 gives the
// 16-step epoch and twice the time), BENCH_METHODS (comma-separated subset of the keys below).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../packages/retain/src/models/llama.js';
import { Llama2cTokenizer } from '../packages/retain/src/tokenizers/llama2c.js';
import { readText } from '../packages/retain/src/data/readers.js';
import { pack, toExample, type Example } from '../packages/retain/src/data/formats.js';
import { collate, rng, type Batch } from '../packages/retain/src/data/loader.js';
import { causalLmLoss, train } from '../packages/retain/src/train/trainer.js';
import type { Method } from '../packages/retain/src/train/hooks.js';
import { buildMethods, METHODS } from '../packages/retain/src/methods/registry.js';
import { Sdft } from '../packages/retain/src/methods/sdft.js';
import type { Tokenizer } from '../packages/retain/src/tokenizers/types.js';
import { methodEntry, STORIES_KEYS, type Setup } from '../packages/retain/src/suite/recipes.js';

const threads = Number(process.env.BENCH_THREADS ?? 1);
const nSeqs = Number(process.env.BENCH_SEQS ?? 128);
const only = process.env.BENCH_METHODS ? new Set(process.env.BENCH_METHODS.split(',').map((s) => s.trim())) : null;
const shared = new URL('../../shared/', import.meta.url).pathname;
const BATCH = 16;
const SEQ = 128;
const LR = 1e-3;

const CONFIG: LlamaConfig = {
  model_type: 'llama', vocab_size: 512, hidden_size: 256, intermediate_size: 688, num_hidden_layers: 4, num_attention_heads: 4,
  num_key_value_heads: 4, max_position_embeddings: SEQ, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};

function data(): { examples: Example[]; general: Example[]; source: string } {
  const text = join(shared, 'data/text/tinystories_lowercase_sample.txt');
  const tokFile = join(shared, 'models/stories260K/tok512.bin');
  if (existsSync(text) && existsSync(tokFile)) {
    const tok = Llama2cTokenizer.fromFile(tokFile);
    benchTokenizer = tok;
    const docs = readText(text).map((r) => toExample(r, { type: 'text' }, { tokenizer: tok, source: 'tinystories' }));
    const rows = pack(docs, SEQ + 1);
    if (rows.length >= 2 * nSeqs) {
      return { examples: rows.slice(0, nSeqs), general: rows.slice(nSeqs, 2 * nSeqs).map((e) => ({ ...e, source: 'general' })), source: 'tinystories_lowercase_sample.txt, stories260K tokenizer (tok512), packed to 129 tokens' };
    }
  }
  // SDFT's template needs some tokenizer; the synthetic ids have none, so a stand-in (BOS 1, EOS 2, characters mod vocab).
  benchTokenizer = { vocabSize: CONFIG.vocab_size, bosId: 1, eosId: 2, encode: (s) => [...s].map((ch) => 3 + (ch.charCodeAt(0) % (CONFIG.vocab_size - 3))), decode: (ids) => ids.join(' '), piece: (i) => String(i) };
  const r = rng(7);
  const synth = (n: number, source: string): Example[] => Array.from({ length: n }, (_, i) => {
    const ids = Array.from({ length: SEQ + 1 }, () => Math.floor(r() * CONFIG.vocab_size));
    return { id: `${source}-${i}`, ids, lossMask: ids.map(() => 1), source };
  });
  return { examples: synth(nSeqs, 'synthetic'), general: synth(nSeqs, 'general'), source: 'synthetic uniform token ids (shared data not found)' };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

interface Config {
  key: string;
  /** Registry entries ([] = standard fine-tuning). */
  methods: (string | Record<string, unknown>)[];
  target?: number;
  note?: string;
  /** Trains on prompt/demonstration rows instead of the packed text (SDFT needs a prompt). */
  prompted?: boolean;
  /** Runs sharing a cache key share an output directory (FLOW's cached weights); `after` runs second. */
  cacheKey?: string;
  after?: string;
}

/** Measurement notes per catalogue key: the expected ratio (target) and what the row measures. */
const NOTES: Record<string, Pick<Config, 'target' | 'note' | 'cacheKey'>> = {
  flow: { target: 1.35, cacheKey: 'flow', note: 'weights computed: one no-grad pass over the training set' },
  mix: { note: '1:1 at a fixed batch: an epoch over the target set has twice the steps, (m+n)/m = 2 expected' },
  sam: { target: 2.1 },
  l2: { target: 1.1 },
  ewc: { note: 'per-sample Fisher on 32 general sequences before the first step' },
  mofo: { target: 1.15, note: 'α = 0.15 (the published comparison), exact top-k per tensor' },
  lora: { target: 1.0, note: 'r = 8, α = 16 on q,k,v,o,gate,up,down' },
};

/**
 * The stories suite's methods from the recipe catalogue, on this bench's model: the general sequences in memory,
 * LoRA at its defaults without the merged save, and the probe on the untied lm_head. Keys are the registered names.
 */
function configs(general: Example[]): Config[] {
  const setup: Setup = {
    general,
    head: '^lm_head\\.',
    options: { l2: { lambda: 0.01 }, ewc: { lambda: 1, fisher: 'per_sample', fisher_samples: 32 }, lora: { r: 8, save_merged: false } },
  };
  const fromCatalogue = STORIES_KEYS.flatMap((k): Config[] => {
    const entry = methodEntry(k, setup);
    const row: Config = { key: nameOf(entry), methods: [entry], ...NOTES[k] };
    if (k !== 'flow') return [row];
    return [row, { key: 'flow_cached', methods: [entry], target: 1.02, cacheKey: 'flow', after: 'flow', note: 'weights read from the cache the flow run wrote' }];
  });
  const list: Config[] = [
    { key: 'ft', methods: [], note: 'standard fine-tuning, a fresh model, against the pacer: the reference every ratio divides by' },
    ...fromCatalogue,
    {
      key: 'sdft', methods: [{ name: 'sdft', max_tokens: SDFT_TOKENS, temperature: 1, tokenizer: benchTokenizer }], prompted: true,
      note: `each training row: its first ${SDFT_PROMPT} tokens the prompt, the next ${SDFT_DEMO} the demonstration; the student samples up to ${SDFT_TOKENS} tokens per row (one KV-cached generation per row), then one teacher and one student forward over the sampled positions; the ratio divides by standard steps on the full ${SEQ}-token rows`,
    },
  ];
  // ft is the reference; a run that reads another's cache needs that run first.
  const wanted = (c: Config) => c.key === 'ft' || !only || only.has(c.key);
  return list.filter((c) => wanted(c) || list.some((d) => d.after === c.key && wanted(d)));
}

// SDFT's rows: the teacher reads prompt + demonstration + '\n\n' + prompt + the sample, within the 128 positions.
const SDFT_PROMPT = 24;
const SDFT_DEMO = 32;
const SDFT_TOKENS = 32;
let benchTokenizer: Tokenizer | null = null;

/** The packed rows cut into prompt (no loss) + demonstration (trained). */
function prompted(examples: Example[]): Example[] {
  return examples.map((e) => {
    const ids = e.ids.slice(0, SDFT_PROMPT + SDFT_DEMO);
    return { ...e, ids, lossMask: ids.map((_, t) => (t >= SDFT_PROMPT ? 1 : 0)) };
  });
}

const nameOf = (e: string | Record<string, unknown>) => (typeof e === 'string' ? e : String(e.name));

/** After each step of the run it rides in, one timed standard fine-tuning step of its own model. */
class Pacer implements Method {
  readonly name = 'bench-pacer';
  methodMs: number[] = [];
  ftMs: number[] = [];
  private t0 = 0;
  private k = 0;
  constructor(private readonly ft: { model: LlamaForCausalLM; optimizer: torch.optim.AdamW; batches: Batch[] }) {}

  beforeStep(): void {
    this.t0 = performance.now();
  }

  afterStep(): void {
    const t1 = performance.now();
    this.methodMs.push(t1 - this.t0);
    const { model, optimizer, batches } = this.ft;
    const b = batches[this.k++ % batches.length];
    // The loop's standard step: grads cleared, token-mean loss, backward, clipping, AdamW.
    for (const p of model.parameters()) p.grad = null;
    torch.tidy(() => {
      const sl = causalLmLoss(model, b);
      const loss = sl.sums.sum().div(b.tokenCounts.reduce((x, y) => x + y, 0));
      loss.item();
      loss.backward();
    });
    torch.optim.clipGradNorm_(model.parameters(), 1.0);
    torch.tidy(() => optimizer.step());
    this.ftMs.push(performance.now() - t1);
  }
}

interface Measured {
  wallMs: number;
  epochMs: number;
  ftEpochMs: number;
  stepRatio: number;
  methodStepMs: number;
  ftStepMs: number;
  steps: number;
  loss: number;
  /** SDFT: mean tokens sampled per step, and the share of the method's time spent sampling. */
  sampledPerStep?: number;
  sampleShare?: number;
}

async function measure(c: Config, examples: Example[], dir: string | null, ft: ConstructorParameters<typeof Pacer>[0], ftStepsPerEpoch: number): Promise<Measured> {
  torch.manualSeed(0);
  const model = new LlamaForCausalLM(CONFIG);
  const pacer = new Pacer(ft);
  const methods = [pacer, ...buildMethods(c.methods)];
  const t0 = performance.now();
  const r = await train({
    model, optimizer: { kind: 'adamw', weightDecay: 0.01 }, examples: c.prompted ? prompted(examples) : examples, batchSize: BATCH, epochs: 1, schedule: { kind: 'cosine', lr: LR, warmupSteps: 2 }, clipGradNorm: 1.0,
    seed: 0, methods, outputDir: dir, progress: false,
  });
  const wallMs = performance.now() - t0;
  model.dispose();
  for (const m of methods) (m as { dispose?: () => void }).dispose?.();
  const ftTotal = pacer.ftMs.reduce((a, b) => a + b, 0);
  const sdft = methods.find((m) => m instanceof Sdft) as Sdft | undefined;
  // The first step of a run allocates what later steps reuse; the medians leave it out.
  const ratios = pacer.methodMs.map((m, i) => m / pacer.ftMs[i]).slice(1);
  return {
    wallMs,
    epochMs: wallMs - ftTotal,
    ftEpochMs: (ftTotal / pacer.ftMs.length) * ftStepsPerEpoch,
    stepRatio: median(ratios),
    methodStepMs: median(pacer.methodMs.slice(1)),
    ftStepMs: median(pacer.ftMs.slice(1)),
    steps: r.steps,
    loss: r.finalLoss,
    ...(sdft ? { sampledPerStep: sdft.sampledPerStep.reduce((a, b) => a + b, 0) / sdft.sampledPerStep.length, sampleShare: sdft.sampleMs / (wallMs - ftTotal) } : {}),
  };
}

async function main() {
  torch.setNumThreads(threads);
  const { examples, general, source } = data();
  const all = configs(general);
  const missing = all.filter((c) => c.methods.some((e) => !METHODS.has(nameOf(e))));
  const runnable = all.filter((c) => !missing.includes(c));
  // FLOW's cached run goes right after the run that writes the cache.
  for (const c of runnable.filter((x) => x.after)) {
    runnable.splice(runnable.indexOf(c), 1);
    runnable.splice(runnable.findIndex((x) => x.key === c.after) + 1, 0, c);
  }
  torch.manualSeed(1);
  const ftModel = new LlamaForCausalLM(CONFIG);
  const ft = { model: ftModel, optimizer: new torch.optim.AdamW(ftModel.parameters(), { lr: LR, weightDecay: 0.01 }), batches: [] as Batch[] };
  for (let i = 0; i < examples.length; i += BATCH) ft.batches.push(collate(examples.slice(i, i + BATCH)));
  const ftStepsPerEpoch = ft.batches.length;
  const dirs = new Map<string, string>();
  const measured = new Map<string, Measured>();
  const t0 = performance.now();
  for (const c of runnable) {
    let dir: string | null = null;
    if (c.cacheKey) {
      if (!dirs.has(c.cacheKey)) dirs.set(c.cacheKey, mkdtempSync(join(tmpdir(), `retain-bench-${c.cacheKey}-`)));
      dir = dirs.get(c.cacheKey)!;
    }
    const r = await measure(c, examples, dir, ft, ftStepsPerEpoch);
    measured.set(c.key, r);
    process.stderr.write(`${c.key}: epoch ${(r.epochMs / 1000).toFixed(2)} s vs paired standard ${(r.ftEpochMs / 1000).toFixed(2)} s = ${(r.epochMs / r.ftEpochMs).toFixed(3)} (${r.steps} steps, step ratio ${r.stepRatio.toFixed(3)})\n`);
  }
  const base = measured.get('ft')!;
  const basePaired = base.epochMs / base.ftEpochMs;
  const results: Record<string, unknown> = {};
  for (const c of runnable) {
    const r = measured.get(c.key)!;
    const paired = r.epochMs / r.ftEpochMs;
    const ratio = paired / basePaired;
    results[c.key] = {
      ...(c.key === 'ft' ? {} : { ratio: +ratio.toFixed(3), step_ratio: +(r.stepRatio / base.stepRatio).toFixed(3) }),
      ...(c.target !== undefined ? { target: c.target, meets_target: ratio <= c.target } : {}),
      paired: +paired.toFixed(3),
      paired_step_ratio: +r.stepRatio.toFixed(3),
      epoch_s: +(r.epochMs / 1000).toFixed(2),
      paired_standard_epoch_s: +(r.ftEpochMs / 1000).toFixed(2),
      steps: r.steps,
      median_step_ms: +r.methodStepMs.toFixed(1),
      paired_standard_step_ms: +r.ftStepMs.toFixed(1),
      final_loss: +r.loss.toFixed(4),
      ...(r.sampledPerStep !== undefined ? { tokens_sampled_per_step: +r.sampledPerStep.toFixed(1), sampling_share_of_epoch: +r.sampleShare!.toFixed(3) } : {}),
      ...(c.note ? { note: c.note } : {}),
    };
  }
  for (const d of dirs.values()) rmSync(d, { recursive: true, force: true });
  for (const c of missing) results[c.key] = { status: `not measured: method ${c.methods.map(nameOf).filter((n) => !METHODS.has(n)).join(', ')} is not registered` };
  console.log(JSON.stringify({
    benchmark: 'methods',
    machine: { cpus: cpus().length, model: cpus()[0]?.model, threads },
    torch: torch.torchVersion(),
    model: { hidden: 256, layers: 4, heads: 4, vocab: 512, seq: SEQ, batch: BATCH },
    data: source,
    sequences: examples.length,
    standard_steps_per_epoch: ftStepsPerEpoch,
    ratio: 'epoch wall time with the method ÷ standard fine-tuning epoch; both measured against standard steps interleaved one by one with theirs (header of bench/methods.ts)',
    total_s: +((performance.now() - t0) / 1000).toFixed(1),
    ...results,
  }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
