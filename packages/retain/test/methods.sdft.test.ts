// SDFT (methods/sdft.ts, docs/METHODS.md §15): the reverse-KL loss and its gradient against a direct PyTorch computation on
// a tiny random Llama that transformers builds and saves (the sampled ŷ fixed by feeding the same token ids to both
// sides), the teacher's context on the real stories260K tokenizer, the EMA teacher, and the refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import { loadPretrained } from '../src/models/hub.js';
import { LlamaForCausalLM, type LlamaConfig } from '../src/models/llama.js';
import { MnistMLP } from '../src/models/mlp.js';
import { T5ForConditionalGeneration } from '../src/models/t5.js';
import { reverseKlSums, Sdft, teacherLogProbs, type SdftRow } from '../src/methods/sdft.js';
import { train } from '../src/train/trainer.js';
import type { Example } from '../src/data/formats.js';
import type { Tokenizer } from '../src/tokenizers/types.js';
import { needRefenv, refPy } from '../../../bench/refenv.js';
import { needShared, sharedPath } from './helpers.js';

const SKIP = needRefenv('transformers');
const ASSETS = new URL('../assets/stories260K/', import.meta.url).pathname;

// Two rows of different lengths (right padding in the batch), ŷ fixed: the student reads x ++ ŷ, the teacher t ++ ŷ.
const ROWS: SdftRow[] = [
  { student: [1, 17, 5, 40, 9, 33, 12], teacher: [1, 17, 5, 22, 61, 8, 17, 5, 40, 9, 33, 12], sampled: 3 },
  { student: [1, 3, 50, 7, 7, 2], teacher: [1, 3, 50, 44, 19, 3, 50, 7, 7, 2], sampled: 3 },
];

const REF = `
import transformers
cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
torch.manual_seed(0)
m = transformers.LlamaForCausalLM(cfg).float()
with torch.no_grad():
    for n, p in m.named_parameters():
        if 'norm' not in n: p.normal_(0, 0.3)
m.save_pretrained(inp['dir'])
m.eval()
def lp(seq, n):
    logits = m(torch.tensor([seq])).logits[0]
    return torch.log_softmax(logits[len(seq) - n - 1: len(seq) - 1].float(), -1)
sums = []
for r in inp['rows']:
    with torch.no_grad():
        lt = lp(r['teacher'], r['sampled'])
    ls = lp(r['student'], r['sampled'])
    sums.append((ls.exp() * (ls - lt)).sum())
loss = torch.stack(sums).sum() / sum(r['sampled'] for r in inp['rows'])
loss.backward()
out['sums'] = [s.item() for s in sums]
out['loss'] = loss.item()
out['grads'] = {n: p.grad.flatten().tolist() for n, p in m.named_parameters()}
`;

function relMax(a: Tensor, b: number[]): number {
  const x = a.double().flatten().toArray() as number[];
  assert.equal(x.length, b.length);
  const scale = Math.max(...b.map(Math.abs), 1e-12);
  return x.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0) / scale;
}

test('sdft: reverse KL and its gradient equal a direct PyTorch computation on a transformers Llama', { skip: SKIP, timeout: 300_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'retain-sdft-'));
  try {
    const ref = refPy(REF, { dir, rows: ROWS });
    const p = await loadPretrained(dir);
    const model = p.model as unknown as LlamaForCausalLM;
    model.eval();
    const N = ROWS.reduce((s, r) => s + r.sampled, 0);
    const [sums, loss] = torch.tidy(() => {
      const lt = torch.noGrad(() => teacherLogProbs(model, ROWS));
      const s = reverseKlSums(model, ROWS, lt);
      const l = s.sum().div(N);
      l.backward();
      return [s.toArray() as number[], l.item()];
    });
    assert.ok(ref.sums.every((s: number) => s > 1e-3), `the teacher's context moves the distribution (KL ${ref.sums})`);
    const sumErr = Math.max(...sums.map((s, i) => Math.abs(s - ref.sums[i]) / Math.abs(ref.sums[i])));
    const lossErr = Math.abs(loss - ref.loss) / Math.abs(ref.loss);
    let gradErr = 0;
    let named = 0;
    for (const [n, q] of model.namedParameters()) {
      const g = ref.grads[n];
      assert.ok(g, `transformers has a parameter ${n}`);
      assert.ok(q.grad, `${n} has a gradient`);
      gradErr = Math.max(gradErr, relMax(q.grad!, g));
      named++;
    }
    assert.equal(named, Object.keys(ref.grads).length, 'every parameter compared');
    t.diagnostic(`loss ${loss} vs ${ref.loss}: rel ${lossErr.toExponential(2)}; row sums rel ${sumErr.toExponential(2)}; gradients (max |Δ| / max |g| per tensor) ${gradErr.toExponential(2)} over ${named} tensors`);
    assert.ok(lossErr < 1e-5 && sumErr < 1e-5, `loss differs by ${lossErr}, row sums by ${sumErr}`);
    assert.ok(gradErr < 1e-5, `gradients differ by ${gradErr} (relative to each tensor's largest)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The prompt/completion example of the demo's arithmetic data, as toExample makes it: BOS + prompt, completion + EOS.
async function stories(): Promise<{ tok: Tokenizer; example: Example }> {
  const p = await loadPretrained(join(ASSETS, 'stories260K.bin'));
  const tok = p.tokenizer!;
  const prompt = tok.encode('Mia had 5 stars and got 2 more. How many stars does Mia have? Answer:', { bos: true });
  const demo = [...tok.encode(' 7', { bos: false }).slice(1), tok.eosId]; // the completion continues the text: no dummy space
  return { tok, example: { id: 'add-0', ids: [...prompt, ...demo], lossMask: [...prompt.map(() => 0), ...demo.map(() => 1)], source: 'train' } };
}

test('sdft: the teacher reads the template with the prompt and the demonstration spliced in token space', async () => {
  const { tok, example } = await stories();
  const m = new Sdft({ tokenizer: tok });
  m.setup(ctxFor(new LlamaForCausalLM({ ...TINY, max_position_embeddings: 256 }), [example]));
  const ids = m.teacherContext(example);
  const prompt = example.ids.slice(0, example.lossMask.indexOf(1));
  assert.equal(ids[0], tok.bosId);
  assert.deepEqual(ids.slice(-prompt.length + 1), prompt.slice(1), 'the teacher context ends with the student prompt, token for token');
  // The second prompt keeps the student's own tokens, dummy-prefix space included ('▁Mia'), which decode shows mid-text.
  assert.equal(tok.decode(ids.slice(1)), 'Mia had 5 stars and got 2 more. How many stars does Mia have? Answer: 7\n\n Mia had 5 stars and got 2 more. How many stars does Mia have? Answer:');
  assert.ok(!ids.slice(1).includes(tok.eosId), "the demonstration's EOS is left out of the context");
});

const TINY: LlamaConfig = {
  model_type: 'llama', vocab_size: 64, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
  num_key_value_heads: 2, max_position_embeddings: 32, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};
const FAKE_TOK: Tokenizer = { vocabSize: 64, bosId: 1, eosId: 2, encode: (s) => [...s].map((c) => 3 + (c.charCodeAt(0) % 60)), decode: (ids) => ids.join(' '), piece: (i) => String(i) };

function ctxFor(model: torch.nn.Module, examples: Example[]): any {
  return { model, params: model.namedParameters(), examples, log: () => {}, state: new Map(), step: 0, epoch: 0, totalSteps: 1 };
}
function examples(n: number, prompt = 3): Example[] {
  return Array.from({ length: n }, (_, i) => {
    const ids = [1, ...Array.from({ length: prompt - 1 + 4 }, (_, t) => 3 + ((i * 7 + t * 5) % 60))];
    return { id: `e${i}`, ids, lossMask: ids.map((_, t) => (t >= prompt ? 1 : 0)), source: 'train' };
  });
}

test('sdft: teacher ema holds d·θ_ema + (1−d)·θ after each step, starting from θ₀', async () => {
  torch.manualSeed(3);
  const model = new LlamaForCausalLM(TINY);
  const theta0 = new Map(model.namedParameters().map(([n, q]) => [n, torch.keep(q.detach().clone())]));
  const m = new Sdft({ tokenizer: FAKE_TOK, teacher: 'ema', ema_decay: 0.75, max_tokens: 4 });
  const seen: Map<string, Tensor>[] = [];
  const after = m.afterStep.bind(m);
  m.afterStep = (ctx) => {
    after(ctx);
    seen.push(new Map(ctx.params.map(([n, q]) => [n, torch.keep(q.detach().clone())])));
  };
  await train({ model, optimizer: { kind: 'sgd' }, examples: examples(4), batchSize: 2, maxSteps: 2, schedule: { kind: 'constant', lr: 0.5 }, methods: [m], progress: false });
  const ema = m.stateTensors();
  let err = 0;
  let moved = 0;
  for (const [n, t0] of theta0) {
    // e1 = 0.75·θ0 + 0.25·θ1; e2 = 0.75·e1 + 0.25·θ2
    const want = torch.tidy(() => t0.double().mul(0.75).add(seen[0].get(n)!.double().mul(0.25)).mul(0.75).add(seen[1].get(n)!.double().mul(0.25)));
    err = Math.max(err, torch.tidy(() => ema.get(`ema.${n}`)!.double().sub(want).abs().max().item()));
    moved = Math.max(moved, torch.tidy(() => seen[1].get(n)!.sub(t0).abs().max().item()));
  }
  assert.ok(moved > 1e-3, 'the weights moved');
  assert.ok(err < 1e-6, `EMA differs from its recurrence by ${err}`);
});

test('sdft: refuses what it cannot train, naming the problem', async () => {
  const run = (model: torch.nn.Module, ex: Example[], o: Record<string, unknown> = {}) =>
    train({ model: model as any, optimizer: { kind: 'sgd' }, examples: ex, batchSize: 2, maxSteps: 1, schedule: { kind: 'constant', lr: 0.1 }, methods: [new Sdft({ tokenizer: FAKE_TOK, ...o })], progress: false });
  await assert.rejects(run(new LlamaForCausalLM(TINY), examples(2, 1)), { message: "sdft: sample 'e0' (train) has no prompt before its trained tokens (text data?); sdft needs a prompt and a demonstration: use prompt_completion or chat data" });
  const mlp = new MnistMLP({ sizes: [4, 4, 4, 2] });
  await assert.rejects(run(mlp, [{ id: 'i0', ids: [], lossMask: [], source: 'train', label: 1, features: new Float32Array(4), featureShape: [4] }]), { message: /^sdft: MnistMLP cannot sample a response with a key\/value cache from a token prompt; sdft needs a decoder-only language model/ });
  const t5 = new T5ForConditionalGeneration({ vocab_size: 64, d_model: 8, d_kv: 4, d_ff: 16, num_layers: 1, num_heads: 2 });
  await assert.rejects(run(t5, examples(2)), { message: /^sdft: T5ForConditionalGeneration cannot sample a response with a key\/value cache from a token prompt; .*not a classifier, the char-LSTM or T5$/ });
  const model = new LlamaForCausalLM(TINY);
  await assert.rejects(train({ model, optimizer: { kind: 'sgd' }, examples: examples(2), batchSize: 2, maxSteps: 1, schedule: { kind: 'constant', lr: 0.1 }, methods: [new Sdft({})], progress: false }),
    { message: "sdft: needs the run's tokenizer (for the template and the EOS that ends a sample); in code, give the option 'tokenizer'" });
  // BOS + 8 prompt + 4 demonstration + 2 template + 8 prompt again = 23 tokens of a 20-token context.
  const short = new LlamaForCausalLM({ ...TINY, max_position_embeddings: 20 });
  await assert.rejects(run(short, examples(2, 9)), { message: "sdft: sample 'e0' (train): the teacher's context (23 tokens: prompt, demonstration and template) leaves no room for a response in the model's context of 20; lower data.train.max_length or shorten the template" });
  assert.throws(() => new Sdft({ template: '{prompt} only' }), { message: 'sdft: option \'template\' must be a string holding {prompt} and {demonstration}, got "{prompt} only"' });
  assert.throws(() => new Sdft({ ema_decay: 0.9 }), { message: "sdft: option 'ema_decay' applies only with teacher: ema" });
  assert.throws(() => new Sdft({ max_tokens: 0 }), { message: "sdft: option 'max_tokens' must be an integer from 1 to 1000000, got 0" });
});

// The memory savers of the loop compose with SDFT's own loss: checkpointed layers recompute the student's forward in
// backward, and a chunked head computes the replay rows' plain loss (its deferred backward passed through).
test('sdft: gradient checkpointing and a chunked loss on the replay rows train the same weights', async () => {
  const general = examples(6).map((e, i) => ({ ...e, id: `g${i}`, source: 'general', lossMask: e.ids.map((_, t) => (t ? 1 : 0)) }));
  const { Mixing } = await import('../src/methods/mixing.js');
  const run = async (extra: Record<string, unknown>) => {
    torch.manualSeed(5);
    const model = new LlamaForCausalLM(TINY);
    // SGD: Adam's normalised step would turn rounding-level gradient differences on tiny coordinates into lr-sized ones.
    const methods = [new Sdft({ tokenizer: FAKE_TOK, max_tokens: 4 }), new Mixing({ ratio: '1:1', general })];
    await train({ model, optimizer: { kind: 'sgd' }, examples: examples(6), batchSize: 4, gradAccum: 2, maxSteps: 3, schedule: { kind: 'constant', lr: 0.5 }, seed: 2, methods, progress: false, ...extra });
    return new Map(model.namedParameters().map(([n, q]) => [n, torch.keep(q.detach().clone())]));
  };
  const plain = await run({ lossChunk: 'off' });
  for (const extra of [{ gradientCheckpointing: true, lossChunk: 'off' }, { lossChunk: 3 }]) {
    const other = await run(extra);
    let err = 0;
    let moved = 0;
    torch.tidy(() => {
      for (const [n, t] of plain) err = Math.max(err, t.sub(other.get(n)!).abs().max().item());
    });
    torch.manualSeed(5);
    const init = new LlamaForCausalLM(TINY);
    torch.tidy(() => {
      for (const [n, q] of init.namedParameters()) moved = Math.max(moved, q.sub(plain.get(n)!).abs().max().item());
    });
    assert.ok(moved > 1e-3, 'the weights moved');
    assert.ok(err < 1e-6, `${JSON.stringify(extra)}: weights differ from the plain run's by ${err}`);
  }
});

// `retain train` end to end on the demo's data with the real stories260K and its tokenizer: sdft with LoRA, 1:1 replay
// and the forgetting monitor, resumed from a checkpoint; each step's trained tokens are the sampled ones plus the
// replay rows' own.
test('retain train: sdft + lora + mixing with the monitor, resumed, on stories260K', { timeout: 300_000 }, async () => {
  const { spawnSync } = await import('node:child_process');
  const { readFileSync, writeFileSync } = await import('node:fs');
  const { DEFAULT_MODEL, prepareDemoData } = await import('../src/suite/demo.js');
  const dir = mkdtempSync(join(tmpdir(), 'retain-sdft-cli-'));
  try {
    const d = prepareDemoData(dir, { trainSize: 32, testSize: 8, seed: 0 });
    const cfg = (steps: number) => JSON.stringify({
      model: { path: DEFAULT_MODEL },
      data: { train: { path: d.train, format: { type: 'prompt_completion' }, max_length: 64 } },
      training: { max_steps: steps, batch_size: 8, lr: 0.003, schedule: 'constant', seed: 0, log_every: 1, save_every: 2 },
      monitor: { tasks: [join(dir, 'data', 'tasks.yaml')], target: ['arithmetic'], limit: 8, every: 2 },
      methods: [{ name: 'sdft', max_tokens: 6, teacher: 'ema', ema_decay: 0.9 }, { name: 'lora', r: 4 }, { name: 'mixing', ratio: '1:1', general: { path: d.replay, format: { type: 'text' }, max_length: 64 } }],
      output_dir: join(dir, 'run'),
    });
    const cli = (steps: number) => {
      writeFileSync(join(dir, 'train.yaml'), cfg(steps));
      return spawnSync(process.execPath, [new URL('../bin/retain.mjs', import.meta.url).pathname, 'train', join(dir, 'train.yaml')], { encoding: 'utf8', cwd: dir, timeout: 300_000 });
    };
    const a = cli(2);
    assert.equal(a.status, 0, a.stderr);
    const b = cli(4); // resumes from checkpoint-2
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stderr + b.stdout, /resumed from .*checkpoint-2/);
    const lines = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const sampled = lines.filter((l) => l.sdft_sampled_tokens !== undefined);
    const mixing = lines.filter((l) => l.kind === 'mixing' && l.tokens_general !== undefined);
    const steps = lines.filter((l) => l.loss !== undefined);
    assert.deepEqual(steps.map((l) => l.step), [1, 2, 3, 4]);
    for (const s of steps) {
      const y = sampled.find((l) => l.step === s.step)!.sdft_sampled_tokens;
      const g = mixing.find((l) => l.step === s.step)!.tokens_general;
      assert.ok(y >= 4 && y <= 4 * 6, `step ${s.step}: 4 training rows sample 1..6 tokens each, got ${y}`);
      assert.equal(s.tokens, y + g, `step ${s.step}: trained tokens = sampled + replay`);
    }
    assert.ok(lines.some((l) => l.kind === 'monitor'), 'the monitor probed during the run');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('sdft refuses the char-LSTM by name', { skip: needShared('models', 'charrnn-shakespeare') }, async () => {
  const p = await loadPretrained(sharedPath('models', 'charrnn-shakespeare'));
  const model = p.model as unknown as torch.nn.Module;
  await assert.rejects(
    train({ model: model as any, optimizer: { kind: 'sgd' }, examples: examples(2), batchSize: 2, maxSteps: 1, schedule: { kind: 'constant', lr: 0.1 }, methods: [new Sdft({ tokenizer: FAKE_TOK })], progress: false }),
    { message: /^sdft: CharLSTM cannot sample a response with a key\/value cache from a token prompt; sdft needs a decoder-only language model \(Llama family, GPT-2, Phi-3, Gemma\), not a classifier, the char-LSTM or T5$/ },
  );
});
