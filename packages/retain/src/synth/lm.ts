// What synthesis needs from a language model, behind one interface so that the Llama family, GPT-2 and the char-LSTM
// all work: n sampled continuations of one prompt in a single batch, the mean log-probability of a continuation given
// its prefix, and mean-pooled last hidden states for diverse selection.
//
// Batching n continuations of the same prompt needs no padding (every row has the same length at every step), which
// is why synthesis groups samples by prompt: on stories260K a batch of 16 makes tokens about 7× cheaper than one
// sequence at a time.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Pretrained } from '../models/hub.js';
import type { Tokenizer } from '../tokenizers/types.js';
import type { ChatTemplate } from '../tokenizers/types.js';
import { CharLSTM } from '../models/charlstm.js';
import { collate, disposeBatch } from '../data/loader.js';
import { causalLmLoss } from '../train/trainer.js';

export interface SampleOptions {
  maxNewTokens: number;
  /** 0 decodes greedily. */
  temperature: number;
  topP?: number;
  topK?: number;
  stopTokens?: number[];
  /** The continuation is cut before the first of these. */
  stop?: string[];
}

export interface Sample {
  ids: number[];
  text: string;
  finish: 'stop_token' | 'stop_string' | 'length' | 'context';
}

/** A batch of rows that advances by one chunk of tokens and returns the next-token logits of each row [B, V]. */
interface Stepper {
  feed(ids: Tensor): Tensor;
  full(): boolean;
  dispose(): void;
}

export interface SynthModel {
  readonly name: string;
  readonly tokenizer: Tokenizer;
  readonly chatTemplate: ChatTemplate | null;
  /** Longest sequence the model takes (Infinity for a recurrent model). */
  readonly contextLength: number;
  /** Token ids that start a context-free sample: BOS, else EOS as a document separator (GPT-2), else `startText`. */
  startIds(startText?: string): number[];
  /** `n` sampled continuations of one prompt; the caller seeds torch's generator. */
  sample(prompt: number[], n: number, o: SampleOptions): Sample[];
  /** Mean log-probability per token of ids[from..] given ids[..from], for each sequence (NaN when nothing is scored). */
  meanLogProbs(seqs: { ids: number[]; from: number }[], batchSize?: number): number[];
  /** Mean over positions of the last hidden state, one vector per sequence. */
  embed(seqs: number[][], batchSize?: number): Float64Array[];
  dispose(): void;
}

type CausalWithCache = torch.nn.Module & {
  forward(ids: Tensor, o?: { cache?: unknown; lastOnly?: boolean; hidden?: boolean }): Tensor;
  newCache(batch: number, maxLen?: number): { length: number; readonly maxLen: number; dispose(): void };
  config: { max_position_embeddings?: number; n_positions?: number };
};

/** Picks one token per row of logits [B, V]: argmax, or a sample after temperature, top-k and top-p (nucleus) filtering. */
export function sampleRows(logits: Tensor, o: { temperature: number; topP?: number; topK?: number }): number[] {
  return torch.tidy(() => {
    if (o.temperature <= 0) return (logits.argmax(-1).toArray() as number[]);
    let l = logits.float().div(o.temperature);
    const V = l.shape[1];
    if (o.topK && o.topK > 0 && o.topK < V) {
      const [vals] = l.topk(o.topK, -1);
      l = l.maskedFill(l.lt(vals.narrow(1, o.topK - 1, 1)), -Infinity);
    }
    let probs = l.softmax(-1);
    if (o.topP !== undefined && o.topP < 1) {
      // The smallest set of tokens whose mass reaches top_p; the most likely token always stays.
      const [sorted, idx] = probs.sort(-1, true);
      const drop = sorted.cumsum(-1).sub(sorted).gt(o.topP);
      probs = probs.maskedFill(torch.zerosLike(drop).scatter(1, idx, drop), 0);
    }
    return torch.ops.multinomial(probs, 1).view(-1).toArray() as number[];
  });
}

function samplingLoop(tok: Tokenizer, open: (n: number, maxLen: number) => Stepper, device: string, contextLength: number, prompt: number[], n: number, o: SampleOptions): Sample[] {
  if (prompt.length === 0) throw new Error('synth: a prompt needs at least one token');
  if (prompt.length >= contextLength) throw new RangeError(`synth: a prompt of ${prompt.length} tokens fills the model's context of ${contextLength}`);
  const stops = new Set([...(tok.eosId >= 0 ? [tok.eosId] : []), ...(o.stopTokens ?? [])]);
  const rows: Sample[] = Array.from({ length: n }, () => ({ ids: [], text: '', finish: 'length' as Sample['finish'] }));
  const live = new Array<boolean>(n).fill(true);
  const stepper = open(n, Math.min(contextLength, prompt.length + o.maxNewTokens));
  try {
    torch.inferenceMode(() => {
      let next = torch.tidy(() => sampleRows(stepper.feed(torch.tensor([prompt], { dtype: 'int64', device }).expand(n, prompt.length).contiguous()), o));
      for (let step = 0; ; step++) {
        for (let r = 0; r < n; r++) {
          if (!live[r]) continue;
          if (stops.has(next[r])) {
            rows[r].finish = 'stop_token';
            live[r] = false;
            continue;
          }
          rows[r].ids.push(next[r]);
          if (o.stop?.length) {
            const text = decodeAfter(tok, prompt, rows[r].ids);
            if (o.stop.some((s) => text.includes(s))) {
              rows[r].finish = 'stop_string';
              live[r] = false;
            }
          }
        }
        if (!live.some(Boolean) || step + 1 >= o.maxNewTokens) break;
        if (stepper.full()) {
          for (let r = 0; r < n; r++) if (live[r]) rows[r].finish = 'context';
          break;
        }
        const prev = next;
        next = torch.tidy(() => sampleRows(stepper.feed(torch.tensor(prev.map((t) => [t]), { dtype: 'int64', device })), o));
      }
    });
  } finally {
    stepper.dispose();
  }
  for (const r of rows) {
    let text = decodeAfter(tok, prompt, r.ids);
    if (r.finish === 'stop_string' && o.stop) text = text.slice(0, Math.min(...o.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0)));
    r.text = text;
  }
  return rows;
}

/** The text of `ids` as it reads after `prompt` (decoding with the prompt keeps a leading space the tokenizer would drop). */
export function decodeAfter(tok: Tokenizer, prompt: number[], ids: number[]): string {
  const head = tok.decode(prompt);
  const full = tok.decode([...prompt, ...ids]);
  return full.startsWith(head) ? full.slice(head.length) : tok.decode(ids);
}

function deviceOf(m: torch.nn.Module): string {
  return m.parameters()[0]?.device ?? 'cpu';
}

/** Rows of different lengths, right-padded, forwarded in batches; `each` gets the output and the true lengths. */
function padded(seqs: number[][], batchSize: number, device: string, run: (ids: Tensor, lens: number[], start: number) => void): void {
  for (let s = 0; s < seqs.length; s += batchSize) {
    const chunk = seqs.slice(s, s + batchSize);
    const T = Math.max(...chunk.map((q) => q.length));
    const flat = new BigInt64Array(chunk.length * T);
    chunk.forEach((q, b) => q.forEach((t, i) => (flat[b * T + i] = BigInt(t))));
    torch.tidy(() => run(torch.tensor(flat, { shape: [chunk.length, T] }).to({ device }), chunk.map((q) => q.length), s));
  }
}

/** Mean over each row's real positions of hidden states [B, T, C] → one Float64Array per row. */
function meanPool(h: Tensor, lens: number[]): Float64Array[] {
  const [B, T] = h.shape;
  const mask = torch.tensor(Float32Array.from({ length: B * T }, (_, i) => (i % T < lens[Math.floor(i / T)] ? 1 : 0)), { shape: [B, T, 1] }).to({ device: h.device });
  const pooled = h.float().mul(mask).sum(1).div(mask.sum(1)).double().cpu(); // [B, C]
  const C = pooled.shape[1];
  const d = pooled.data() as Float64Array;
  return Array.from({ length: B }, (_, b) => d.slice(b * C, (b + 1) * C));
}

/** Wraps a loaded model for synthesis; throws for models that do not generate text. */
export function synthModel(p: Pretrained, opts: { name?: string; chatTemplate?: ChatTemplate | null } = {}): SynthModel {
  const tok = p.tokenizer;
  if (!tok) throw new Error(`synth: the model at ${p.source.path} has no tokenizer; load it with one (loadPretrained's tokenizer option), or put tokenizer.json or a llama2.c tok*.bin in its directory`);
  const name = opts.name ?? p.source.path;
  const chatTemplate = opts.chatTemplate !== undefined ? opts.chatTemplate : ((tok as { chatTemplate?: ChatTemplate | null }).chatTemplate ?? null);
  const raw = p.model as unknown;
  const start = (startText?: string): number[] => {
    if (tok.bosId >= 0) return [tok.bosId];
    if (tok.eosId >= 0) return [tok.eosId];
    const ids = tok.encode(startText ?? '\n', { bos: false });
    if (ids.length === 0) throw new Error('synth: the start text encodes to no tokens');
    return ids;
  };
  const scored = (model: torch.nn.Module) => (seqs: { ids: number[]; from: number }[], batchSize = 16): number[] => {
    const out = new Array<number>(seqs.length).fill(NaN);
    const ex = seqs.map((s, i) => ({ id: String(i), ids: s.ids, lossMask: s.ids.map((_, k) => (k >= s.from ? 1 : 0)), source: 'synth' }));
    const order = ex.map((_, i) => i).filter((i) => ex[i].ids.length >= 2 && seqs[i].from < ex[i].ids.length).sort((a, b) => ex[a].ids.length - ex[b].ids.length || a - b);
    const device = deviceOf(model);
    torch.inferenceMode(() => {
      for (let s = 0; s < order.length; s += batchSize) {
        const idx = order.slice(s, s + batchSize);
        torch.tidy(() => {
          const b = collate(idx.map((i) => ex[i]));
          const moved = device === 'cpu' ? b : { ...b, ids: b.ids.to({ device }), targets: b.targets.to({ device }) };
          const sl = causalLmLoss(model as never, moved);
          const mean = sl.sums.double().div(sl.counts.double()).neg().cpu().data() as Float64Array;
          idx.forEach((i, k) => (out[i] = mean[k]));
          disposeBatch(b);
        });
      }
    });
    return out;
  };

  if (raw instanceof CharLSTM) {
    const m = raw;
    const device = deviceOf(m);
    return {
      name, tokenizer: tok, chatTemplate, contextLength: Infinity, startIds: start,
      sample: (prompt, n, o) => samplingLoop(tok, (b) => {
        const state = m.newState(b);
        return {
          feed: (ids) => m.forward(ids, { state }).select(1, -1),
          full: () => false,
          dispose: () => state.dispose(),
        };
      }, device, Infinity, prompt, n, o),
      meanLogProbs: scored(m),
      embed: (seqs, batchSize = 16) => {
        const out: Float64Array[] = [];
        torch.inferenceMode(() => padded(seqs, batchSize, device, (ids, lens) => out.push(...meanPool(m.forward(ids, { hidden: true }), lens))));
        return out;
      },
      dispose: () => m.dispose?.(),
    };
  }
  const m = raw as CausalWithCache;
  if (typeof m.newCache !== 'function' || typeof m.forward !== 'function') {
    throw new Error(`synth: the model at ${p.source.path} (${String(p.config.model_type)}) is not a causal language model with a generation cache`);
  }
  const ctx = Number(m.config.max_position_embeddings ?? m.config.n_positions ?? Infinity);
  const device = deviceOf(m);
  return {
    name, tokenizer: tok, chatTemplate, contextLength: ctx, startIds: start,
    sample: (prompt, n, o) => samplingLoop(tok, (b, maxLen) => {
      const cache = m.newCache(b, maxLen);
      return {
        feed: (ids) => m.forward(ids, { cache, lastOnly: true }).select(1, 0),
        full: () => cache.length >= cache.maxLen,
        dispose: () => cache.dispose(),
      };
    }, device, ctx, prompt, n, o),
    meanLogProbs: scored(m),
    embed: (seqs, batchSize = 16) => {
      const out: Float64Array[] = [];
      const cut = seqs.map((q) => q.slice(0, ctx));
      torch.inferenceMode(() => padded(cut, batchSize, device, (ids, lens) => out.push(...meanPool(m.forward(ids, { hidden: true }), lens))));
      return out;
    },
    dispose: () => m.dispose?.(),
  };
}
