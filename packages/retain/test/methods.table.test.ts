// One table for every registered method (methods/registry.ts; the rules are in docs/METHODS.md): a row per method and
// a row per pair the composition rules allow, built from the registry, so a method added there has its rows. Each row
// trains a tiny Llama (vocab 64, hidden 16, 2 layers) for a few steps through the real loop with gradient
// accumulation, writes checkpoints, resumes a second run from the middle one and requires the final weights to be
// bit-identical (save + reload), and checks each of its methods' defining property on the first run. Pairs the rules
// refuse must be refused before training, with a message naming both methods and the reason.
//
// A method without a spec here still trains, composes and resumes bit-identically in its rows; its defining property
// goes unchecked, and the row's report says so.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { causalLmLoss, train, type LossFn } from '../src/train/trainer.js';
import { checkComposition, type Method, type SetupContext, type TrainContext } from '../src/train/hooks.js';
import { buildMethods, METHODS } from '../src/methods/registry.js';
import { collate, disposeBatch, rng, type Batch } from '../src/data/loader.js';
import type { Example } from '../src/data/formats.js';
import type { Sam } from '../src/methods/sam.js';
import { isFiltered, mofoK, type Mofo } from '../src/methods/mofo.js';
import type { Hft } from '../src/methods/hft.js';
import type { Distill } from '../src/methods/distill.js';
import type { Sdft } from '../src/methods/sdft.js';
import { loadAdapter, loraModules, mergeAdapters, mergeAndUnload, saveAdapter, setAdapterScale, unmergeAdapters } from '../src/methods/lora/index.js';

const METHODS_DIR = new URL('../src/methods/', import.meta.url).pathname;
const CONFIG: LlamaConfig = {
  model_type: 'llama', vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
  num_key_value_heads: 2, max_position_embeddings: 32, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};
const SEED = 11;
const LR = 1e-2;
const WD = 0.1;
// 4 steps per epoch (16 examples, 2 per micro-batch, 2 micro-batches): 6 steps cross an epoch. Mixing at 1:1 takes
// half as many training examples per step, so its rows run 10.
const stepsFor = (names: string[]) => (names.includes('mixing') ? 10 : 6);

function makeExamples(n: number, seed: number, source: string): Example[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const len = 8 + (i % 5);
    const ids = Array.from({ length: len }, () => Math.floor(r() * CONFIG.vocab_size));
    // The first token is a prompt token (no loss), the rest are trained.
    return { id: `${source}-${i}`, ids, lossMask: ids.map((_, t) => (t === 0 ? 0 : 1)), source };
  });
}
const TRAIN = makeExamples(16, 1, 'train');
const GENERAL = makeExamples(16, 2, 'general');

// --- tensor helpers --------------------------------------------------------------------------------------------

const held: Tensor[] = [];
function hold(t: Tensor): Tensor {
  held.push(torch.keep(t));
  return t;
}
function releaseHeld(): void {
  torch.dispose(held.splice(0));
}
function snapshot(pairs: Iterable<[string, Tensor]>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  torch.noGrad(() => {
    for (const [n, t] of pairs) out.set(n, hold(t.detach().clone()));
  });
  return out;
}
function gradsOf(ctx: TrainContext): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [n, p] of ctx.params) {
    const g = p.grad;
    if (g) out.set(n, hold(g.clone()));
  }
  return out;
}
function maxAbsDiff(a: Tensor, b: Tensor): number {
  return torch.tidy(() => a.double().sub(b.double()).abs().max().item());
}
function allEqual(a: Map<string, Tensor>, b: Map<string, Tensor>): string[] {
  const bad: string[] = [];
  for (const [k, t] of a) if (!b.has(k) || !t.equal(b.get(k)!)) bad.push(k);
  for (const k of b.keys()) if (!a.has(k)) bad.push(k);
  return bad;
}
function newModel(): LlamaForCausalLM {
  torch.manualSeed(SEED);
  return new LlamaForCausalLM(CONFIG);
}
function probeBatch(): Batch {
  return collate(TRAIN.slice(0, 4));
}

// --- the table -------------------------------------------------------------------------------------------------

/** What a row's instrumentation records for its method's check. */
type Rec = Record<string, any>;

interface RowEnv {
  methods: Method[];
  /** Called with every batch the loss function sees. */
  onLoss: ((b: Batch) => void) | null;
}

interface Run {
  names: string[];
  model: LlamaForCausalLM;
  theta0: Map<string, Tensor>;
  methods: Map<string, Method>;
  recs: Map<string, Rec>;
  dir: string;
  history: Record<string, number | string>[];
}

interface Spec {
  name: string;
  /** Its file or folder in src/methods. */
  file: string;
  options?: Record<string, unknown>;
  instrument?(m: Method, rec: Rec, env: RowEnv): void;
  /** Asserts the defining property; returns the measured numbers for the report. */
  check(run: Run, rec: Rec, solo: boolean): Record<string, number | string> | Promise<Record<string, number | string>>;
}

const SPECS: Spec[] = [];

// FLOW (§1): w_i = exp(−f_i(θ₀)/τ), τ the median of the pretrained per-sample losses, weights fixed.
SPECS.push({
  name: 'flow',
  file: 'flow.ts',
  instrument(m, rec) {
    const inner = m.setup!.bind(m);
    m.setup = async (ctx) => {
      await inner(ctx);
      rec.losses = ownLosses(ctx);
      const all = collate(TRAIN);
      rec.weights = torch.tidy(() => Array.from(m.stepWeights!(ctx, [all])[0]!.double().data() as Float64Array));
      disposeBatch(all);
    };
  },
  check(_run, rec) {
    const { err, tau } = weightError(rec.losses, rec.weights);
    assert.ok(err < 1e-5, `FLOW weights differ from exp(−f/τ) by ${err}`);
    return { flow_weight_max_err: +err.toExponential(2), tau: +tau.toFixed(5) };
  },
});

// FLOW with a new head (§1, vision): a linear probe trains the head on the frozen body first, then τ and the weights
// come from the probe model's losses and everything fine-tunes.
SPECS.push({
  name: 'flow_vision',
  file: 'flow.ts',
  options: { head: '^lm_head\\.', probe_steps: 2 },
  instrument(m, rec) {
    const inner = m.beforeStep!.bind(m);
    m.beforeStep = (ctx) => {
      if (ctx.step === 0 && !rec.start) rec.start = snapshot(ctx.model.stateDict());
      if (ctx.step === 2 && !rec.losses) {
        rec.atSwitch = snapshot(ctx.model.stateDict());
        rec.losses = ownLosses(ctx);
        inner(ctx);
        const all = collate(TRAIN);
        rec.weights = torch.tidy(() => Array.from(m.stepWeights!(ctx, [all])[0]!.double().data() as Float64Array));
        disposeBatch(all);
        return;
      }
      inner(ctx);
    };
  },
  check(run, rec) {
    const during = [...rec.start.keys()].filter((k: string) => !rec.start.get(k).equal(rec.atSwitch.get(k)));
    assert.ok(during.length > 0 && during.every((k: string) => k.startsWith('lm_head')), `only the head trains during the probe (moved: ${during.join(', ')})`);
    const sd = run.model.stateDict();
    const after = [...rec.atSwitch.keys()].filter((k: string) => !k.startsWith('lm_head') && sd.has(k) && !sd.get(k)!.equal(rec.atSwitch.get(k)));
    assert.ok(after.length > 0, 'the body trains after the probe');
    const { err, tau } = weightError(rec.losses, rec.weights);
    assert.ok(err < 1e-5, `flow_vision weights differ from exp(−f/τ) of the probe model by ${err}`);
    return { probe_phase_moved: during.join(','), body_tensors_moved_after: after.length, flow_weight_max_err: +err.toExponential(2), tau: +tau.toFixed(5) };
  },
});

// Per-sample mean token loss of every training example with the model as it is, computed here from scratch.
function ownLosses(ctx: TrainContext): number[] {
  const f: number[] = [];
  torch.noGrad(() => {
    for (const e of TRAIN) {
      const b = collate([e]);
      torch.tidy(() => {
        const sl = causalLmLoss(ctx.model, b);
        f.push(sl.sums.item() / sl.counts.item());
      });
      disposeBatch(b);
    }
  });
  return f;
}

// max |exp(−fᵢ/τ) − wᵢ| with τ the median of f (mean of the two middle values for an even count; the lower and upper
// middle values are tried too and the best one reported).
function weightError(f: number[], w: number[]): { err: number; tau: number } {
  const s = [...f].sort((a, b) => a - b);
  const mid = s.length / 2;
  const medians = s.length % 2 ? [s[(s.length - 1) / 2]] : [(s[mid - 1] + s[mid]) / 2, s[mid - 1], s[mid]];
  const errs = medians.map((tau) => Math.max(...f.map((fi, i) => Math.abs(Math.exp(-fi / tau) - w[i]))));
  const err = Math.min(...errs);
  return { err, tau: medians[errs.indexOf(err)] };
}

// Mixed training (§2): every step has the configured number of general examples.
SPECS.push({
  name: 'mixing',
  file: 'mixing.ts',
  options: { ratio: '1:1', general: GENERAL },
  instrument(m, rec) {
    const inner = m.composeBatch!.bind(m);
    rec.sources = [] as string[][];
    m.composeBatch = (ctx, next) => {
      const b = inner(ctx, next);
      rec.sources.push([...b.sources]);
      return b;
    };
  },
  check(_run, rec) {
    const shares = (rec.sources as string[][]).map((s) => s.filter((x) => x === 'general').length / s.length);
    assert.ok(shares.length > 0, 'no batch was composed');
    for (const s of shares) assert.equal(s, 0.5, `a 1:1 batch has general share ${s}`);
    return { mixing_batches: shares.length, general_share: shares[0] };
  },
});

// SAM (§4): g' is the gradient at θ + ρ·g/‖g‖, θ comes back bit-exactly, g' is what the optimizer sees.
SPECS.push({
  name: 'sam',
  file: 'sam.ts',
  options: { rho: 0.05 },
  instrument(m, rec, env) {
    const inner = m.forwardBackward!.bind(m);
    rec.steps = [];
    m.forwardBackward = (ctx, closure) => {
      const s: Rec = {};
      let calls = 0;
      let micro: Batch[] = [];
      const spy = (): number => {
        calls++;
        if (calls === 1) s.theta = snapshot(ctx.params);
        if (calls === 2) {
          s.g = gradsOf(ctx);
          s.point = snapshot(ctx.params);
          s.pointState = snapshot(ctx.model.stateDict());
          micro = [];
          env.onLoss = (b) => micro.push(b);
        }
        const loss = closure();
        env.onLoss = null;
        if (calls === 2) {
          s.gPrime = gradsOf(ctx);
          s.micro = micro.map((b) => ({ ...b, ids: hold(b.ids.clone()), targets: hold(b.targets.clone()) }));
          s.recomputed = recompute(ctx, env.methods, micro);
          // Put g' back exactly as the closure left it.
          for (const [n, p] of ctx.params) p.grad = s.gPrime.get(n) ? s.gPrime.get(n).clone() : null;
        }
        return loss;
      };
      const loss = inner(ctx, spy);
      s.after = snapshot(ctx.params);
      s.gradAfter = gradsOf(ctx);
      s.calls = calls;
      rec.steps.push(s);
      return loss;
    };
  },
  check(run, rec, solo) {
    const rho = (run.methods.get('sam') as Sam).rho;
    let pertErr = 0;
    let gradErr = 0;
    let indepErr = 0;
    let gNorm = 0;
    for (const s of rec.steps as Rec[]) {
      assert.equal(s.calls, 2, 'SAM evaluates the loss twice per step');
      const g = s.g as Map<string, Tensor>;
      const norm = Math.sqrt([...g.values()].reduce((a, t) => a + torch.tidy(() => t.double().square().sum().item()), 0));
      gNorm = norm;
      for (const [n, gt] of g) {
        // (θ+ε) − θ against ρ·g/‖g‖ in float64, in units of float32 rounding: θ+ε is one float32 addition of a
        // float32 product whose scale came from float32 per-tensor norms, so the error is within (|θ+ε| + 4|ε|)·2⁻²³.
        const e = torch.tidy(() => {
          const eps = gt.double().mul(rho / norm);
          const point = s.point.get(n).double();
          const err = point.sub(s.theta.get(n).double()).sub(eps).abs();
          return err.div(point.abs().add(eps.abs().mul(4)).mul(2 ** -23).add(1e-30)).max().item();
        });
        pertErr = Math.max(pertErr, e);
      }
      assert.deepEqual(allEqual(s.after, s.theta), [], 'θ is restored bit-exactly after the second pass');
      assert.deepEqual(allEqual(s.gradAfter, s.gPrime), [], "the optimizer receives g'");
      for (const [n, gp] of s.gPrime as Map<string, Tensor>) gradErr = Math.max(gradErr, maxAbsDiff(gp, s.recomputed.get(n)));
      const moved = [...(s.gPrime as Map<string, Tensor>)].some(([n, gp]) => !gp.equal(g.get(n)!));
      assert.ok(moved, "g' differs from g");
      if (solo) indepErr = Math.max(indepErr, independentGradError(s));
    }
    assert.ok(pertErr <= 1, `θ+ε − θ differs from ρg/‖g‖ by ${pertErr} times the float32 rounding bound`);
    assert.ok(gradErr < 1e-6, `g' differs from the gradient recomputed at θ+ε by ${gradErr}`);
    assert.ok(indepErr < 1e-6, `g' differs from a fresh model's gradient at θ+ε by ${indepErr}`);
    return { sam_steps: rec.steps.length, last_grad_norm: +gNorm.toFixed(6), perturbation_err_in_rounding_bounds: +pertErr.toFixed(3), grad_at_point_max_err: +gradErr.toExponential(2), ...(solo ? { fresh_model_grad_max_err: +indepErr.toExponential(2) } : {}) };
  },
});

// The step's loss as the loop defines it, rebuilt from the methods' hooks, and its gradient at the current weights.
function recompute(ctx: TrainContext, methods: Method[], micro: Batch[]): Map<string, Tensor> {
  const saved = new Map(ctx.params.map(([n, p]) => [n, p.grad] as const));
  for (const [, p] of ctx.params) p.grad = null;
  const total = micro.reduce((a, b) => a + b.tokenCounts.reduce((x, y) => x + y, 0), 0);
  const weights = methods.map((m) => m.stepWeights?.(ctx, micro) ?? []);
  micro.forEach((b, i) => {
    torch.tidy(() => {
      const own = methods.find((m) => m.sampleLoss); // SDFT replaces the data loss
      let sums = (own ? own.sampleLoss!(ctx, b, (x) => causalLmLoss(ctx.model, x)) : causalLmLoss(ctx.model, b)).sums;
      for (const ws of weights) if (ws[i]) sums = sums.mul(ws[i]!);
      let loss = sums.sum().div(total);
      if (i === 0) for (const m of methods) for (const t of m.lossTerms?.(ctx) ?? []) loss = loss.add(t.value);
      loss.backward();
    });
  });
  for (const ws of weights) torch.dispose(ws);
  const out = gradsOf(ctx);
  for (const [n, p] of ctx.params) p.grad = saved.get(n) ?? null;
  return out;
}

// SAM alone: a new model loaded with θ+ε, the plain token-mean loss of the recorded micro-batches, its gradient.
function independentGradError(s: Rec): number {
  const fresh = new LlamaForCausalLM(CONFIG);
  fresh.loadStateDict(s.pointState);
  const micro = s.micro as Batch[];
  const total = micro.reduce((a, b) => a + b.tokenCounts.reduce((x, y) => x + y, 0), 0);
  for (const b of micro) {
    torch.tidy(() => {
      const logits = fresh.forward(b.ids); // [B, T, V]
      const [B, T, V] = logits.shape;
      torch.crossEntropy(logits.reshape(B * T, V), b.targets.reshape(B * T), { reduction: 'sum' }).div(total).backward();
    });
  }
  let err = 0;
  for (const [n, p] of fresh.namedParameters()) {
    const gp = (s.gPrime as Map<string, Tensor>).get(n);
    if (gp) torch.tidy(() => (err = Math.max(err, maxAbsDiff(gp, p.grad!))));
  }
  fresh.dispose();
  return err;
}

// The head the probe rows add from scratch (probe, flow_vision): L2-SP and EWC leave it out of θ₀, WiSE-FT
// interpolates it against the probed head.
const NEW_HEAD = /^lm_head\./;
const hasNewHead = (names: string[]) => names.includes('probe') || names.includes('flow_vision');

// L2-SP (§5): the penalty the loop adds is λ·Σ(θ−θ₀)² (reduction sum) over the tensors that train at that moment,
// a new head excluded.
const L2_LAMBDA = 0.1;
SPECS.push({
  name: 'l2',
  file: 'l2sp.ts',
  options: { lambda: L2_LAMBDA, reduction: 'sum' },
  instrument(m, rec) {
    const inner = m.lossTerms!.bind(m);
    rec.terms = [];
    const setup = m.setup?.bind(m);
    m.setup = async (ctx) => {
      rec.theta0 = snapshot(ctx.params);
      await setup?.(ctx);
    };
    m.lossTerms = (ctx) => {
      const terms = inner(ctx);
      const sqOf = (head: boolean) => torch.tidy(() => ctx.params.reduce((a, [n, p]) => a + (p.requiresGrad && rec.theta0.has(n) && NEW_HEAD.test(n) === head ? p.detach().double().sub(rec.theta0.get(n).double()).square().sum().item() : 0), 0));
      const body = sqOf(false);
      const head = sqOf(true);
      rec.terms.push({ value: terms.reduce((a, t) => a + t.value.item(), 0), body, head });
      return terms;
    };
  },
  check(run, rec) {
    const heads = hasNewHead(run.names);
    const terms = (rec.terms as { value: number; body: number; head: number }[]).map((t) => ({ value: t.value, sq: heads ? t.body : t.body + t.head }));
    assert.ok(terms.length > 0, 'the penalty was never evaluated');
    if (heads) assert.ok((rec.terms as { head: number }[]).some((t) => t.head > 0), 'the new head moved (and is not penalised)');
    // A plain probe trains only its head: nothing is left for the penalty.
    if (!run.names.includes('probe')) assert.ok(terms[terms.length - 1].sq > 0, 'the weights moved');
    let err = 0;
    for (const t of terms) err = Math.max(err, Math.abs(t.value - L2_LAMBDA * t.sq) / Math.max(1e-12, L2_LAMBDA * t.sq, Math.abs(t.value)));
    assert.ok(Math.abs(terms[0].value) < 1e-12, `at θ = θ₀ the penalty is ${terms[0].value}`);
    assert.ok(err < 1e-5, `the penalty differs from λ·Σ(θ−θ₀)² by a relative ${err}`);
    return { l2_lambda: L2_LAMBDA, l2_evaluations: terms.length, l2_last_penalty: +terms[terms.length - 1].value.toPrecision(6), l2_rel_err: +err.toExponential(2) };
  },
});

// EWC (§6): the penalty is Σ (λ/2)·F·(θ−θ₀)² with F the empirical Fisher at θ₀ on the general data (the mean of
// squared per-sample gradients), recomputed here on a fresh copy of the pretrained model.
const EWC_LAMBDA = 10;
SPECS.push({
  name: 'ewc',
  file: 'ewc.ts',
  options: { lambda: EWC_LAMBDA, data: GENERAL, fisher: 'per_sample' },
  instrument(m, rec) {
    const inner = m.lossTerms!.bind(m);
    rec.calls = [];
    m.lossTerms = (ctx) => {
      const terms = inner(ctx);
      rec.calls.push({ value: terms.reduce((a, t) => a + t.value.item(), 0), params: snapshot(ctx.params.filter(([, p]) => p.requiresGrad)) });
      return terms;
    };
  },
  check(run, rec) {
    // F by its definition, in float64: mean over the general samples of (∇ of the sample's mean token loss)².
    const fresh = newModel().to('float64');
    fresh.eval();
    const F = new Map<string, Tensor>(fresh.namedParameters().map(([n, p]) => [n, hold(torch.zerosLike(p))]));
    for (const e of GENERAL) {
      const b = collate([e]);
      fresh.zeroGrad();
      torch.tidy(() => {
        const sl = causalLmLoss(fresh, b);
        sl.sums.sum().div(sl.counts.sum()).backward();
        for (const [n, p] of fresh.namedParameters()) F.get(n)!.addcmul_(p.grad!, p.grad!);
      });
      disposeBatch(b);
    }
    for (const f of F.values()) f.div_(GENERAL.length);
    const ewc = run.methods.get('ewc') as unknown as { entries: { name: string; fisher: Tensor }[] };
    const heads = hasNewHead(run.names);
    if (heads) assert.deepEqual(ewc.entries.filter((e) => NEW_HEAD.test(e.name)).map((e) => e.name), [], 'a new head has no θ₀ to hold it to');
    let fisherErr = 0;
    for (const e of ewc.entries) {
      const mine = F.get(e.name)!;
      fisherErr = Math.max(fisherErr, torch.tidy(() => e.fisher.double().sub(mine).abs().max().item() / Math.max(1e-30, mine.abs().max().item())));
    }
    assert.ok(fisherErr < 1e-4, `the Fisher differs from the per-sample definition by a relative ${fisherErr}`);
    let penErr = 0;
    const calls = rec.calls as { value: number; params: Map<string, Tensor> }[];
    assert.ok(calls.length > 0, 'the penalty was never evaluated');
    for (const c of calls) {
      const expected = torch.tidy(() => [...c.params].reduce((a, [n, p]) => a + (heads && NEW_HEAD.test(n) ? 0 : (EWC_LAMBDA / 2) * F.get(n)!.mul(p.double().sub(run.theta0.get(n)!.double()).square()).sum().item()), 0));
      penErr = Math.max(penErr, Math.abs(c.value - expected) / Math.max(1e-20, Math.abs(expected)));
      if (expected === 0) assert.ok(Math.abs(c.value) < 1e-12);
    }
    // A plain probe trains only its head: nothing is left for the penalty.
    if (!run.names.includes('probe')) assert.ok(calls[calls.length - 1].value > 0, 'the penalty grows as θ leaves θ₀');
    assert.ok(penErr < 1e-3, `the EWC penalty differs from Σ(λ/2)F(θ−θ₀)² by a relative ${penErr}`);
    fresh.dispose();
    return { ewc_lambda: EWC_LAMBDA, fisher_rel_err: +fisherErr.toExponential(2), penalty_rel_err: +penErr.toExponential(2), ewc_last_penalty: +calls[calls.length - 1].value.toPrecision(6) };
  },
});

// MoFO (§7): per filtered tensor exactly the k = max(1, ⌊α·n⌋) coordinates of largest |m| move beyond the decoupled
// decay; bias and norm tensors update densely as plain AdamW without weight decay (the reference's decay grouping);
// the moments are plain AdamW's.
SPECS.push({
  name: 'mofo',
  file: 'mofo.ts',
  instrument(m, rec) {
    const mofo = m as Mofo;
    rec.checked = 0;
    rec.mismatches = [] as string[];
    rec.momentMismatch = [] as string[];
    rec.unfiltered = [] as number[];
    rec.notTopK = [] as string[];
    rec.decayed = [] as string[];
    // MoFO's optimizer is the run's: each of its steps is checked, in the step's context (seen at beforeStep).
    let ctx: TrainContext;
    m.beforeStep = (c) => void (ctx = c);
    const make = m.makeOptimizer!.bind(m);
    m.makeOptimizer = (setup, hyper) => {
      const made = make(setup, hyper);
      const inner = made.step.bind(made);
      made.step = () => checkStep(inner);
      return made;
    };
    const checkStep = (inner: () => void) => {
      const before = snapshot(ctx.params);
      const grads = gradsOf(ctx);
      inner();
      const opt = mofo.optimizer!;
      const g0 = ctx.optimizer.paramGroups[0] as Record<string, any>;
      if (!rec.shadow) {
        // Moments depend on the gradients only, so a shadow AdamW over copies sees the same m and v.
        rec.shadowParams = new Map([...before].map(([n, t]) => [n, hold(t.clone().requiresGrad_(true))]));
        const sp = [...rec.shadowParams] as [string, Tensor][];
        const paramOf = new Map(ctx.params);
        // Unfiltered tensors get no weight decay: their shadow is the update MoFO must match.
        rec.shadow = new torch.optim.AdamW([
          { params: sp.filter(([n]) => isFiltered(n, paramOf.get(n)!)).map(([, t]) => t) },
          { params: sp.filter(([n]) => !isFiltered(n, paramOf.get(n)!)).map(([, t]) => t), weightDecay: 0 },
        ], { lr: g0.lr, betas: g0.betas, eps: g0.eps, weightDecay: g0.weightDecay });
      }
      for (const [n, sp] of rec.shadowParams as Map<string, Tensor>) sp.grad = grads.get(n) ?? null;
      for (const g of rec.shadow.paramGroups) g.lr = g0.lr;
      // Unfiltered shadows track the parameter: start each step from its value before the step.
      torch.noGrad(() => {
        for (const [n, sp] of rec.shadowParams as Map<string, Tensor>) if (!isFiltered(n, before.get(n)!)) sp.copy_(before.get(n)!);
      });
      rec.shadow.step();
      const decay = 1 - g0.lr * g0.weightDecay;
      for (const [n, p] of ctx.params) {
        if (!grads.has(n)) continue;
        const s = opt.moments(p)!;
        const sh = rec.shadow.moments(rec.shadowParams.get(n))!;
        if (!s.exp_avg.equal(sh.exp_avg) || !s.exp_avg_sq.equal(sh.exp_avg_sq)) rec.momentMismatch.push(`${n}@${ctx.step}`);
        const moved = torch.tidy(() => p.ne(before.get(n)!.mul(decay)).sum().item());
        if (isFiltered(n, p)) {
          rec.checked++;
          // A coordinate whose momentum is exactly 0 has a zero update even when selected (LoRA's A before B moves).
          const live = torch.tidy(() => s.exp_avg.ne(0).sum().item());
          const k = Math.min(mofoK(mofo.alpha, p.numel()), live);
          if (moved !== k) rec.mismatches.push(`${n}@${ctx.step}: moved ${moved}, expected ${k}`);
          // Which ones: the top k of |m| (the shadow's moments, equal to MoFO's as checked above).
          const [same] = torch.tidy(() => {
            const movedIdx = torch.ops.nonzero(p.ne(before.get(n)!.mul(decay)).reshape(-1)).reshape(-1).sort()[0];
            const top = sh.exp_avg.abs().reshape(-1).topk(k)[1].sort()[0];
            return [movedIdx.shape[0] === top.shape[0] && movedIdx.equal(top)];
          });
          if (!same) rec.notTopK.push(`${n}@${ctx.step}`);
        } else {
          rec.unfiltered.push(moved / p.numel());
          const err = torch.tidy(() => maxAbsDiff(p, rec.shadowParams.get(n)) / Math.max(1e-12, p.abs().max().item()));
          if (err > 1e-6) rec.decayed.push(`${n}@${ctx.step}: ${err.toExponential(2)}`);
        }
      }
    };
  },
  check(run, rec) {
    assert.ok(rec.checked > 0, 'no filtered tensor was checked');
    assert.deepEqual(rec.mismatches, [], 'every filtered tensor moves exactly k coordinates');
    assert.deepEqual(rec.notTopK, [], 'the coordinates that move are the top k by |m|');
    assert.deepEqual(rec.decayed, [], 'bias and norm tensors update as AdamW without weight decay');
    assert.deepEqual(rec.momentMismatch, [], "MoFO's moments are plain AdamW's, bit for bit");
    const dense = rec.unfiltered.length ? Math.min(...rec.unfiltered) : 1;
    assert.ok(dense > 0.9, `unfiltered tensors update densely (lowest moved fraction ${dense})`);
    const alpha = (run.methods.get('mofo') as Mofo).alpha;
    return { mofo_alpha: alpha, filtered_tensor_steps_checked: rec.checked, k_for_16x16: mofoK(alpha, 256), unfiltered_min_moved_fraction: +dense.toFixed(3) };
  },
});

// LoRA (§8): the base stays frozen; merging equals the unmerged forward (float64); the PEFT files round-trip.
SPECS.push({
  name: 'lora',
  file: 'lora',
  check(run) {
    const model = run.model;
    const layers = loraModules(model);
    assert.equal(layers.length, 14, 'q,k,v,o,gate,up,down in 2 layers are wrapped');
    const sd = model.stateDict();
    const baseMoved = [...run.theta0.keys()].filter((k) => !sd.get(k)!.equal(run.theta0.get(k)!));
    // WiSE-FT scales the adapter; any other partner leaves the pretrained tensors alone too.
    assert.deepEqual(baseMoved, [], 'every pretrained tensor is bit-identical after LoRA training');
    assert.ok(layers.every(([, l]) => torch.tidy(() => l.lora_B.weight.abs().max().item()) > 0), 'B trained away from zero');

    // PEFT layout: file names, keys, shapes, config fields; then a fresh base + loadAdapter reproduces the model.
    const dir = join(run.dir, 'adapter');
    saveAdapter(model, dir, { baseModel: 'tiny-llama' });
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.bias, 'none');
    assert.equal(cfg.base_model_name_or_path, 'tiny-llama');
    assert.deepEqual([cfg.r, cfg.lora_alpha, cfg.lora_dropout], [8, 16, 0]);
    assert.deepEqual(cfg.target_modules, ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    const header = safetensorsHeader(join(dir, 'adapter_model.safetensors'));
    const expected: Record<string, number[]> = {};
    for (const [p, l] of layers) {
      expected[`base_model.model.${p}.lora_A.weight`] = [8, l.inFeatures];
      expected[`base_model.model.${p}.lora_B.weight`] = [l.outFeatures, 8];
    }
    assert.deepEqual(Object.fromEntries(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([k, v]: [string, any]) => [k, v.shape])), expected);
    const fresh = newModel();
    loadAdapter(fresh, dir);
    const b = probeBatch();
    model.eval();
    fresh.eval();
    const same = torch.tidy(() => fresh.forward(b.ids).equal(model.forward(b.ids)));
    assert.ok(same, 'a fresh base with the loaded adapter gives the trained forward bit for bit');
    fresh.dispose();

    // Merge in float64: W₀ + (α/r)·B·A gives the unmerged forward; unmerge gives it back; scale 0 is the base.
    model.to('float64');
    const base64 = newModel().to('float64');
    base64.eval();
    const [e1, e2, e3, e4] = torch.tidy(() => {
      const y1 = model.forward(b.ids);
      mergeAdapters(model);
      const y2 = model.forward(b.ids);
      unmergeAdapters(model);
      const y3 = model.forward(b.ids);
      const scale = layers[0][1].scale;
      setAdapterScale(model, 0);
      const y0 = model.forward(b.ids);
      setAdapterScale(model, scale);
      mergeAndUnload(model);
      const y4 = model.forward(b.ids);
      return [maxAbsDiff(y1, y2), maxAbsDiff(y1, y3), maxAbsDiff(y0, base64.forward(b.ids)), maxAbsDiff(y1, y4)];
    });
    disposeBatch(b);
    base64.dispose();
    assert.ok(e1 < 1e-12, `merged forward differs by ${e1}`);
    assert.ok(e2 < 1e-12, `unmerged-again forward differs by ${e2}`);
    assert.ok(e3 < 1e-12, `scale 0 differs from the base by ${e3}`);
    assert.ok(e4 < 1e-12, `merge-and-unload (plain fused Linear layers) differs by ${e4}`);
    assert.equal(loraModules(model).length, 0);
    assert.ok(model.model.layers.get(0).self_attn.q_proj.constructor === torch.nn.Linear, 'unloaded layers are plain nn.Linear again');
    return { merge_f64_max_diff: e1, unmerge_f64_max_diff: e2, scale0_vs_base: e3, unload_f64_max_diff: e4, peft_keys: Object.keys(expected).length };
  },
});

// WiSE-FT (§9): θ_α = (1−α)·θ₀ + α·θ_ft over the state dict (for an adapter: its scale); α = 0 is θ₀ and α = 1 θ_ft.
SPECS.push({
  name: 'wise',
  file: 'wise.ts',
  options: { alpha: 0.5 },
  instrument(m, rec) {
    const inner = m.finish!.bind(m);
    const before = m.beforeStep?.bind(m);
    const probeSteps = specOf.get('flow_vision')!.options!.probe_steps as number;
    m.beforeStep = (ctx) => {
      if (ctx.step === probeSteps && !rec.atSwitch) rec.atSwitch = snapshot(ctx.model.stateDict());
      before?.(ctx);
    };
    m.finish = async (ctx) => {
      rec.ft = snapshot(ctx.model.stateDict());
      await inner(ctx);
      rec.out = snapshot(ctx.model.stateDict());
      rec.scales = loraModules(ctx.model).map(([, l]) => l.scale);
    };
  },
  async check(run, rec): Promise<Record<string, number | string>> {
    if (rec.scales.length) {
      // LoRA: the adapter is scaled by α; nothing in the state dict changes.
      assert.ok(rec.scales.every((x: number) => x === 0.5), 'every adapter is scaled by α = 0.5');
      assert.deepEqual(allEqual(rec.ft, rec.out), []);
      return { wise_alpha: 0.5, wise_by: 'adapter scale' };
    }
    // A new head's base is the probed head: at flow_vision's switch, or a plain probe's final head.
    const probed = run.names.includes('flow_vision') ? rec.atSwitch : run.names.includes('probe') ? rec.ft : null;
    const base = new Map([...run.theta0].map(([k, t]) => [k, probed && NEW_HEAD.test(k) ? probed.get(k) : t]));
    let err = 0;
    for (const [k, t0] of base) {
      const ft = rec.ft.get(k);
      const out = rec.out.get(k);
      err = Math.max(err, torch.tidy(() => out.double().sub(t0.double().mul(0.5).add(ft.double().mul(0.5))).abs().max().item()));
    }
    assert.ok(err < 1e-6, `θ_0.5 differs from (θ₀+θ_ft)/2 by ${err}`);
    const { wiseInterpolate } = await import('../src/methods/wise.js');
    const at0 = torch.tidy(() => allEqual(wiseInterpolate(base, rec.ft, 0), base));
    const at1 = torch.tidy(() => allEqual(wiseInterpolate(base, rec.ft, 1), rec.ft));
    assert.deepEqual(at0, [], 'α = 0 gives θ₀ bit for bit');
    assert.deepEqual(at1, [], 'α = 1 gives θ_ft bit for bit');
    return { wise_alpha: 0.5, interpolation_max_err: +err.toExponential(2), alpha0_is_base: 'bitwise', alpha1_is_finetuned: 'bitwise' };
  },
});

// HFT (§10): within an epoch the frozen half is bit-identical after every step (weight decay and momentum included).
SPECS.push({
  name: 'hft',
  file: 'hft.ts',
  options: { seed: 5 },
  instrument(m, rec) {
    const h = m as Hft;
    rec.draws = [] as Map<number, Set<string>>[];
    rec.violations = [] as string[];
    rec.trainedChanged = new Set<string>();
    rec.frozenAfterTraining = 0;
    const take = (ctx: SetupContext) => {
      rec.draws.push(new Map([...h.draw].map(([l, s]) => [l, new Set(s)])));
      const prev = rec.current;
      rec.current = new Map([...h.governed].map(([p, g]) => [p, { name: g.name, trains: g.trains, value: hold(p.detach().clone()) }]));
      // A tensor that trained in the previous epoch and is frozen now carries momentum: it must still not move.
      if (prev) for (const [p, g] of rec.current) if (!g.trains && prev.get(p)?.trains) rec.frozenAfterTraining++;
      void ctx;
    };
    const parameterize = h.parameterize.bind(h);
    h.parameterize = (ctx) => {
      parameterize(ctx);
      take(ctx);
    };
    const onEpoch = h.onEpochStart.bind(h);
    h.onEpochStart = (ctx, e) => {
      onEpoch(ctx, e);
      take(ctx);
    };
    (h as Method).afterStep = (ctx: TrainContext) => {
      for (const [p, g] of rec.current as Map<Tensor, { name: string; trains: boolean; value: Tensor }>) {
        if (!g.trains && !p.equal(g.value)) rec.violations.push(`${g.name}@${ctx.step}`);
        if (g.trains && !p.equal(g.value)) rec.trainedChanged.add(g.name);
      }
    };
  },
  check(_run, rec) {
    assert.deepEqual(rec.violations, [], 'frozen tensors stay bit-identical while frozen');
    const draws = rec.draws as Map<number, Set<string>>[];
    assert.ok(draws.length >= 2, 'the run crossed an epoch and drew again');
    for (const d of draws) {
      const mlp2 = [...d.values()].filter((s) => ['gate_proj', 'up_proj', 'down_proj'].filter((c) => s.has(c)).length === 2).length;
      for (const s of d.values()) assert.equal(['q_proj', 'k_proj', 'v_proj', 'o_proj'].filter((c) => s.has(c)).length, 2, 'attention trains 2 of 4');
      assert.equal(mlp2, 1, 'one of the two layers trains 2 of 3 MLP projections, the other 1 of 3');
    }
    const key = (d: Map<number, Set<string>>) => JSON.stringify([...d].map(([l, s]) => [l, [...s].sort()]));
    assert.notEqual(key(draws[0]), key(draws[1]), 'the halves are drawn again at the new epoch');
    assert.ok(rec.frozenAfterTraining > 0, 'some tensor went from trained (with momentum) to frozen');
    return { draws: draws.length, trained_tensors_that_moved: rec.trainedChanged.size, frozen_after_training_with_momentum: rec.frozenAfterTraining };
  },
});

// Linear probe (§11): only the head trains.
SPECS.push({
  name: 'probe',
  file: 'probe.ts',
  options: { head: '^lm_head\\.' },
  check(run) {
    const sd = run.model.stateDict();
    const moved = [...run.theta0.keys()].filter((k) => !sd.get(k)!.equal(run.theta0.get(k)!));
    assert.ok(moved.length > 0 && moved.every((k) => k.startsWith('lm_head')), `only the head trains (moved: ${moved.join(', ')})`);
    return { probe_moved: moved.join(',') };
  },
});

// Distillation replay (§12): the term the loop adds is λ·T²·mean over the general batch's trained tokens of
// KL(softmax(z₀/T) ‖ softmax(z/T)), z₀ from a fresh float64 copy of the pretrained model (so the swap of θ₀ in and
// out is checked too), z the model's logits at the moment of the call; at θ = θ₀ (the first call) it is 0.
const DISTILL = { weight: 0.5, temperature: 2 };
SPECS.push({
  name: 'distill',
  file: 'distill.ts',
  options: { data: GENERAL, batch_size: 3, ...DISTILL },
  instrument(m, rec) {
    const inner = m.lossTerms!.bind(m);
    rec.calls = [];
    m.lossTerms = (ctx) => {
      const terms = inner(ctx);
      const cur = (m as Distill).current!;
      const logits = torch.noGrad(() => torch.tidy(() => hold((ctx.model.forward(cur.batch.ids) as Tensor).double())));
      rec.calls.push({ value: terms[0].value.item(), examples: cur.examples, logits });
      return terms;
    };
  },
  check(_run, rec) {
    const calls = rec.calls as { value: number; examples: Example[]; logits: Tensor }[];
    assert.ok(calls.length > 0, 'the distillation term was never evaluated');
    assert.ok(Math.abs(calls[0].value) < 1e-6, `at θ = θ₀ the KL term is ${calls[0].value}`);
    const base = newModel().to('float64');
    base.eval();
    const { weight: w, temperature: T } = DISTILL;
    let err = 0;
    for (const c of calls.slice(1)) {
      const b = collate(c.examples);
      const want = torch.tidy(() => {
        const mask = b.targets.ne(-100); // [B, T]
        const lp0 = (base.forward(b.ids) as Tensor).div(T).logSoftmax(-1);
        const lp = c.logits.div(T).logSoftmax(-1);
        const kl = lp0.exp().mul(lp0.sub(lp)).sum(-1); // [B, T]
        return kl.mul(mask.double()).sum().div(mask.sum().double()).mul(w * T * T).item();
      });
      disposeBatch(b);
      // Relative, with a floor: SAM's perturbed pass at step 0 sits ~1e-6 from θ₀, where float32 rounding dominates.
      err = Math.max(err, Math.abs(c.value - want) / Math.max(1e-3, Math.abs(want)));
    }
    base.dispose();
    const last = calls[calls.length - 1].value;
    if (calls.length > 1) assert.ok(last > 0, 'the model moved away from the base distribution');
    assert.ok(err < 1e-4, `the term differs from λT²·KL by a relative ${err}`);
    return { distill_evaluations: calls.length, distill_last: +last.toPrecision(6), distill_rel_err: +err.toExponential(2) };
  },
});

// SDFT (§15): the training-set rows of every micro-batch train on the student's own samples — their trained-token
// counts are the sampled lengths, mixing's general rows keep theirs — and the loss of a row is the full-vocabulary
// reverse KL to the teacher over its sampled tokens, here recomputed in float64 by its definition at θ₀ (first call;
// the EMA teacher equals θ₀ then). The teacher is an EMA, so the resumed run also restores the EMA. A tokenizer stand-in:
// token 63 is EOS, there is no BOS, literal template text maps to character codes mod 64.
const SDFT_TOKENIZER = {
  vocabSize: 64, bosId: -1, eosId: 63,
  encode: (text: string) => [...text].map((c) => c.charCodeAt(0) % 64),
  decode: (ids: number[]) => ids.map((i) => String.fromCharCode(i + 64)).join(''),
  piece: (id: number) => String.fromCharCode(id + 64),
};
SPECS.push({
  name: 'sdft',
  file: 'sdft.ts',
  options: { teacher: 'ema', ema_decay: 0.5, max_tokens: 5, temperature: 1, tokenizer: SDFT_TOKENIZER },
  instrument(m, rec, env) {
    const sd = m as Sdft;
    const prepare = sd.prepareBatch.bind(sd);
    const inner = sd.sampleLoss.bind(sd);
    rec.batches = [] as { sources: string[]; counts: number[]; sampled: (number | null)[] }[];
    rec.first = null;
    sd.prepareBatch = (ctx, b) => {
      const before = [...b.tokenCounts];
      prepare(ctx, b);
      const rows = sd.distilled(b);
      rec.batches.push({ sources: [...b.sources], counts: [...b.tokenCounts], before, sampled: b.sources.map((_, i) => rows?.get(i)?.sampled ?? null) });
    };
    sd.sampleLoss = (ctx, b, plain) => {
      env.onLoss?.(b); // the loop's loss of this batch is this one (SAM's row records its batches here)
      const sl = inner(ctx, b, plain);
      if (!rec.first && sd.distilled(b)) rec.first = { rows: [...sd.distilled(b)!], sums: Array.from(sl.sums.detach().double().cpu().data() as Float64Array) };
      return sl;
    };
  },
  check(run, rec) {
    let distilled = 0;
    let tokens = 0;
    for (const b of rec.batches) {
      b.sources.forEach((src: string, i: number) => {
        if (src === 'train') {
          assert.ok(b.sampled[i] !== null && b.sampled[i] >= 1 && b.sampled[i] <= 5, `a training row was sampled (1..max_tokens tokens), got ${b.sampled[i]}`);
          assert.equal(b.counts[i], b.sampled[i], 'its trained tokens are the sampled ones');
          distilled++;
          tokens += b.sampled[i];
        } else {
          assert.equal(b.sampled[i], null, 'a general (replay) row is not distilled');
          assert.equal(b.counts[i], b.before[i], 'and keeps its trained tokens');
        }
      });
    }
    assert.ok(distilled > 0, 'rows were distilled');
    // The first distilled micro-batch at θ₀: Σ_t Σ_v p_s (log p_s − log p_t), float64, from a fresh model.
    const fresh = newModel().to('float64');
    fresh.eval();
    let err = 0;
    const exact = !run.names.includes('probe') && !run.names.includes('flow_vision'); // a probe's head starts from new values
    for (const [i, r] of rec.first.rows as [number, { student: number[]; teacher: number[]; sampled: number }][]) {
      const want = torch.tidy(() => {
        const at = (ids: number[]) => fresh.forward(torch.tensor([ids], { dtype: 'int64' })).select(0, 0).narrow(0, ids.length - r.sampled - 1, r.sampled).logSoftmax(-1);
        const ls = at(r.student);
        const lt = at(r.teacher);
        assert.deepEqual(r.student.slice(-r.sampled), r.teacher.slice(-r.sampled), 'both sides score the same sampled tokens');
        return ls.exp().mul(ls.sub(lt)).sum().item();
      });
      const got = rec.first.sums[i]; // sums come back in batch order
      assert.ok(got >= -1e-6, `reverse KL is non-negative, got ${got}`);
      if (exact) err = Math.max(err, Math.abs(got - want) / Math.max(1e-6, Math.abs(want)));
    }
    fresh.dispose();
    assert.ok(err < 1e-4, `row KL differs from the float64 definition by a relative ${err}`);
    return { sdft_rows: distilled, sdft_sampled_tokens: tokens, sdft_kl_rel_err: exact ? +err.toExponential(2) : 'n/a (new head)' };
  },
});

// Merging (§14), TIES with one task vector (trimmed task arithmetic): in every floating tensor exactly the entries
// of τ = θ_ft − θ₀ with the round(k·n) largest magnitudes are added back (scaled by λ), the rest is θ₀; a new head
// keeps its trained value.
const MERGE = { mode: 'ties', k: 0.2, lambda: 0.8 };
SPECS.push({
  name: 'merge',
  file: 'merge.ts',
  options: MERGE,
  instrument(m, rec) {
    const inner = m.finish!.bind(m);
    m.finish = async (ctx) => {
      rec.ft = snapshot(ctx.model.stateDict());
      await inner(ctx);
      rec.out = snapshot(ctx.model.stateDict());
    };
  },
  check(run, rec) {
    let err = 0;
    let kept = 0;
    let orderViolations = 0;
    for (const [key, t0] of run.theta0) {
      const ft = rec.ft.get(key) as Tensor;
      const out = rec.out.get(key) as Tensor;
      if (hasNewHead(run.names) && NEW_HEAD.test(key)) {
        assert.ok(out.equal(ft), `the new head ${key} keeps its trained value`);
        continue;
      }
      const [e, n, viol] = torch.tidy(() => {
        const tau = ft.double().sub(t0.double()).reshape(-1);
        const moved = out.double().sub(t0.double()).reshape(-1);
        const on = moved.ne(0);
        const want = Math.max(1, Math.round(MERGE.k * tau.numel()));
        const nOn = on.sum().item();
        // Where τ has fewer non-zero entries than k·n (a tensor that barely trained), all of them are kept.
        assert.equal(nOn, Math.min(want, tau.ne(0).sum().item()), `${key}: ${nOn} entries moved, expected round(k·n) = ${want}`);
        const a = tau.abs();
        const minKept = nOn ? torch.ops.masked_select(a, on).min().item() : Infinity;
        const maxDropped = nOn < tau.numel() ? torch.ops.masked_select(a, on.logicalNot()).max().item() : -Infinity;
        return [nOn ? torch.ops.masked_select(moved.sub(tau.mul(MERGE.lambda)), on).abs().max().item() : 0, nOn, minKept < maxDropped ? 1 : 0];
      });
      err = Math.max(err, e);
      kept += n;
      orderViolations += viol;
    }
    assert.equal(orderViolations, 0, 'the kept entries are the largest |τ|');
    assert.ok(err < 1e-6, `kept entries differ from θ₀ + λ·τ by ${err}`);
    // A plain probe trains only its head, which keeps its value: nothing else is left to merge.
    if (!run.names.includes('probe')) assert.ok(kept > 0, 'something was merged');
    return { merge_mode: MERGE.mode, merge_entries_kept: kept, merge_max_err: +err.toExponential(2) };
  },
});

// Self-distilled targets (§13): before training, each training example's response is replaced by the model's greedy
// continuation of the template (instruction + response), here with every non-empty rewrite kept (answer: none); the
// loop trains on the rewritten examples. Checked without the generation code: each rewrite token is the argmax of a
// fresh copy of the model as setup saw it, fed the template and the rewrite so far (teacher forcing, no cache).
const SELFDISTILL = { template: '{instruction}{response}|', answer: 'none', max_tokens: 4, tokenizer: SDFT_TOKENIZER };
SPECS.push({
  name: 'selfdistill_targets',
  file: 'selfdistill.ts',
  options: SELFDISTILL,
  instrument(m, rec) {
    const inner = m.setup!.bind(m);
    m.setup = async (ctx) => {
      rec.atSetup = snapshot(ctx.model.stateDict());
      await inner(ctx);
      rec.examples = ctx.examples.map((e) => ({ ...e }));
    };
  },
  check(_run, rec) {
    const fresh = newModel();
    fresh.loadStateDict(rec.atSetup, { strict: false });
    fresh.eval();
    const tok = SDFT_TOKENIZER;
    let rewritten = 0;
    let tokens = 0;
    TRAIN.forEach((orig, i) => {
      const e = rec.examples[i] as Example;
      assert.equal(e.id, orig.id);
      assert.deepEqual(e.ids.slice(0, 1), orig.ids.slice(0, 1), 'the instruction stays');
      if (e.ids.length === orig.ids.length && e.ids.every((v, t) => v === orig.ids[t])) return;
      rewritten++;
      const rewrite = e.ids.slice(1);
      assert.ok(rewrite.length >= 1 && rewrite.length <= SELFDISTILL.max_tokens, `a rewrite has 1..max_tokens tokens, got ${rewrite.length}`);
      assert.deepEqual(e.lossMask, [0, ...rewrite.map(() => 1)], 'the rewrite is what trains');
      const prompt = tok.encode(`${tok.decode(orig.ids.slice(0, 1))}${tok.decode(orig.ids.slice(1))}|`);
      const ids = [...prompt, ...rewrite];
      const argmax = torch.tidy(() => Array.from((fresh.forward(torch.tensor([ids], { dtype: 'int64' })) as Tensor).select(0, 0).argmax(-1).data() as BigInt64Array).map(Number));
      rewrite.forEach((v, t) => assert.equal(v, argmax[prompt.length - 1 + t], `rewrite ${orig.id} token ${t} is the greedy choice`));
      tokens += rewrite.length;
    });
    fresh.dispose();
    assert.ok(rewritten > 0, 'responses were rewritten');
    return { selfdistill_rewritten: rewritten, selfdistill_tokens: tokens };
  },
});

// Pairs that must be refused, with what the message must say.
const MUST_REFUSE: Record<string, RegExp> = {
  'lora+hft': /HFT chooses which pretrained weights train/,
  'hft+probe': /linear probe trains only the new head|both decide which parameters train/,
  'l2+lora': /LoRA freezes them/,
  'ewc+lora': /LoRA freezes them/,
  'lora+probe': /disagree on what trains/,
  'flow_vision+lora': /disagree on what trains/,
  'flow_vision+hft': /both decide which parameters train/,
  'flow_vision+probe': /runs its own linear probe/,
  'flow+flow_vision': /both weight every training sample/,
  'flow_vision+distill': /new head has no base predictions/,
  'probe+distill': /new head has no base predictions/,
  'lora+merge': /LoRA trains an adapter beside it/,
  'wise+merge': /both rewrite the final weights from θ₀/,
};

// --- the runs --------------------------------------------------------------------------------------------------

const specOf = new Map(SPECS.map((s) => [s.name, s]));
/** The rows: every registered method, in the registry's order. */
const NAMES = [...METHODS.keys()];
function specFor(name: string): Spec {
  return specOf.get(name) ?? { name, file: '', check: () => ({ defining_property: 'not checked: no spec in methods.table.test.ts' }) };
}

/** The row's methods with their table options. */
function build(names: string[]): Method[] {
  return buildMethods(names.map((n) => ({ name: n, ...(specFor(n).options ?? {}) })));
}

async function runOnce(names: string[], dir: string, resume: boolean, instrument: boolean): Promise<Run> {
  const steps = stepsFor(names);
  const model = newModel();
  const theta0 = snapshot(model.stateDict());
  const methods = build(names);
  const env: RowEnv = { methods, onLoss: null };
  const recs = new Map<string, Rec>();
  if (instrument) {
    methods.forEach((m, i) => {
      const rec: Rec = {};
      recs.set(names[i], rec);
      specFor(names[i]).instrument?.(m, rec, env);
    });
  }
  const lossFn: LossFn = (mdl, b) => {
    env.onLoss?.(b);
    return causalLmLoss(mdl, b);
  };
  const r = await train({
    model, optimizer: { kind: 'adamw', weightDecay: WD }, examples: TRAIN, batchSize: 2, gradAccum: 2, maxSteps: steps, schedule: { kind: 'constant', lr: LR },
    clipGradNorm: 1.0, seed: SEED, methods, outputDir: dir, saveEvery: steps / 2, keepCheckpoints: 3, resume, progress: false, lossFn,
  });
  assert.equal(r.steps, steps);
  return { names, model, theta0, methods: new Map(methods.map((m, i) => [names[i], m])), recs, dir, history: r.history };
}

async function runRow(names: string[], t: { diagnostic(s: string): void }): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), `retain-methods-${names.join('-')}-`));
  const half = stepsFor(names) / 2;
  try {
    const a = await runOnce(names, join(root, 'a'), false, true);
    assert.ok(existsSync(join(root, 'a', `checkpoint-${half}`)) && existsSync(join(root, 'a', `checkpoint-${2 * half}`)), 'checkpoints written');
    // Reload: a second run resumes from the middle checkpoint and must end exactly where the first did.
    cpSync(join(root, 'a', `checkpoint-${half}`), join(root, 'b', `checkpoint-${half}`), { recursive: true });
    const b = await runOnce(names, join(root, 'b'), true, false);
    const diff = allEqual(snapshot(a.model.stateDict()), snapshot(b.model.stateDict()));
    assert.deepEqual(diff, [], 'a run resumed from its checkpoint ends bit-identical to the uninterrupted run');
    b.model.dispose();
    const solo = names.length === 1;
    const report: Record<string, number | string> = { resumed_bit_identical: 'yes', final_loss: a.history.filter((h) => h.loss !== undefined).pop()!.loss };
    for (const n of names) Object.assign(report, await specFor(n).check(a, a.recs.get(n)!, solo));
    t.diagnostic(`${names.join('+')}: ${JSON.stringify(report)}`);
    a.model.dispose();
  } finally {
    releaseHeld();
    rmSync(root, { recursive: true, force: true });
  }
}

// Rows: every method alone, then every pair the composition rules allow.
for (const name of NAMES) {
  test(`method ${name}: trains, resumes bit-identically, has its defining property`, async (t) => {
    await runRow([name], t);
  });
}

for (let i = 0; i < NAMES.length; i++) {
  for (let j = i + 1; j < NAMES.length; j++) {
    const names = [NAMES[i], NAMES[j]];
    const key = names.join('+');
    const why = MUST_REFUSE[key] ?? MUST_REFUSE[[...names].reverse().join('+')];
    if (why) {
      test(`pair ${key}: refused before training`, async () => {
        const model = newModel();
        const before = snapshot(model.stateDict());
        await assert.rejects(
          train({ model, optimizer: { kind: 'adamw' }, examples: TRAIN, batchSize: 2, maxSteps: 2, schedule: { kind: 'constant', lr: LR }, methods: build(names), progress: false }),
          (e: Error) => e.message.includes(`'${names[0]}'`) && e.message.includes(`'${names[1]}'`) && why.test(e.message),
        );
        assert.deepEqual(allEqual(before, snapshot(model.stateDict())), [], 'nothing was trained');
        releaseHeld();
        model.dispose();
      });
      continue;
    }
    test(`pair ${key}: both properties hold together`, async (t) => {
      let refused: Error | null = null;
      try {
        checkComposition(build(names));
      } catch (e) {
        refused = e as Error;
      }
      // A refusal this table does not expect must still name both and say why; the row then reports it.
      if (refused) {
        assert.ok(refused.message.includes(`'${names[0]}'`) && refused.message.includes(`'${names[1]}'`) && /:\s*\S/.test(refused.message), `refusal message: ${refused.message}`);
        t.diagnostic(`refused: ${refused.message}`);
        return;
      }
      await runRow(names, t);
    });
  }
}

// The exclusive roles, with stand-ins for a second claimant, and a method listed twice.
test('two methods with one exclusive role are refused with both names and the role', () => {
  const stand = (name: string, role: 'optimizer-step' | 'forward-backward' | 'parameterization' | 'batch-composition'): Method => ({ name, roles: [role] });
  const cases: [string, Method][] = [['mofo', stand('other-optimizer', 'optimizer-step')], ['sam', stand('other-fb', 'forward-backward')], ['lora', stand('other-adapter', 'parameterization')]];
  for (const [real, other] of cases) {
    if (!METHODS.has(real)) continue;
    const [m] = buildMethods([real]);
    assert.throws(() => checkComposition([m, other]), new RegExp(`methods '${real}' and '${other.name}' cannot run together: both take the ${other.roles![0]} role`));
  }
  assert.throws(() => checkComposition(buildMethods(['sam', 'sam'])), /method 'sam' is listed twice/);
});

test('every spec of this table is a registered method in its file; every refusal names registered methods', (t) => {
  for (const s of SPECS) {
    assert.ok(METHODS.has(s.name), `spec '${s.name}' names no registered method (renamed or removed from methods/registry.ts?)`);
    assert.ok(existsSync(join(METHODS_DIR, s.file)), `spec '${s.name}': src/methods/${s.file} is missing`);
  }
  for (const pair of Object.keys(MUST_REFUSE)) for (const n of pair.split('+')) assert.ok(METHODS.has(n), `MUST_REFUSE '${pair}': '${n}' is not registered`);
  const unchecked = NAMES.filter((n) => !specOf.has(n));
  if (unchecked.length) t.diagnostic(`registered methods whose defining property this table does not check: ${unchecked.join(', ')}`);
});

// safetensors' header read with nothing but its definition: 8-byte little-endian length, then JSON.
function safetensorsHeader(file: string): Record<string, any> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
}
