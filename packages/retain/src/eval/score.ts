// Scoring primitives: log-likelihood of continuations (multiple choice, label words), rolling log-likelihood of text
// (perplexity, bits per character, next-token accuracy), greedy generation with answer extraction, and classifier
// accuracy. Definitions follow lm-evaluation-harness where it has one.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { EvalModel } from './model.js';

export interface LoglikRequest {
  context: string;
  continuation: string;
}

export interface Loglik {
  /** Sum of the continuation tokens' log-probabilities. */
  logprob: number;
  /** Whether greedy decoding would have produced exactly the continuation. */
  greedy: boolean;
  tokens: number;
  /** Whether context and continuation were longer than the model's window and lost their start. */
  truncated: boolean;
}

interface Encoded {
  /** Context then continuation token ids, BOS first when the model has one. */
  ids: number[];
  /** Continuation tokens are ids[ids.length - contLen ..]. */
  contLen: number;
}

/**
 * Tokenises as lm-evaluation-harness does: encode context + continuation together and take the tokens past the
 * context's own encoding as the continuation, so a continuation that starts with a space gets the tokenizer's
 * word-initial tokens. When the joint encoding does not start with the context's, encode the two apart.
 */
export function encodeRequest(m: EvalModel, r: LoglikRequest, contexts?: Map<string, number[]>): Encoded {
  // A context that starts with BOS as text (a rendered chat template) gets no second one, as lm-evaluation-harness
  // encodes it.
  const pre = m.bosId === null || (m.bosText && r.context.startsWith(m.bosText)) ? [] : [m.bosId];
  // Whitespace ending the context is scored with the continuation (lm-evaluation-harness moves it there too), so
  // "Answer: " + "Paris" is tokenised as "Answer:" + " Paris".
  const context = r.context.trimEnd();
  const continuation = r.context.slice(context.length) + r.continuation;
  // Every choice of a question shares its context: `contexts` memoises the context's own encoding across them.
  let ctx = contexts?.get(context);
  if (!ctx) {
    ctx = [...pre, ...m.encode(context)];
    contexts?.set(context, ctx);
  }
  const whole = [...pre, ...m.encode(context + continuation)];
  let ids: number[];
  let contLen: number;
  if (whole.length > ctx.length && ctx.every((t, i) => whole[i] === t)) {
    ids = whole;
    contLen = whole.length - ctx.length;
  } else {
    const cont = m.encode(continuation);
    ids = [...ctx, ...cont];
    contLen = cont.length;
  }
  if (contLen === 0) throw new Error(`the continuation ${JSON.stringify(continuation)} encodes to no tokens`);
  if (ids.length - contLen < 1) throw new Error(`empty context and the model has no BOS token: the first token of ${JSON.stringify(continuation)} cannot be scored`);
  return { ids, contLen };
}

/**
 * Log-probability and argmax hit of each target: `rows` index the flattened positions of logits [B, T, V], `targets`
 * the token each should predict.
 */
function pickTargets(logits: Tensor, rows: number[], targets: number[], device: string): { lp: Float64Array; hits: Uint8Array } {
  const [B, T, V] = logits.shape;
  const picked = logits.reshape(B * T, V).indexSelect(0, torch.tensor(rows, { dtype: 'int64' }).to({ device })); // [N, V]
  // Half-precision logits are widened for the softmax; float64 models keep their precision.
  const sel = picked.dtype === 'float64' ? picked : picked.float();
  const target = torch.tensor(targets, { dtype: 'int64' }).to({ device }); // [N]
  const lp = sel.logSoftmax(-1).gather(1, target.unsqueeze(1)).squeeze(1).to({ device: 'cpu', dtype: 'float64' }).data() as Float64Array;
  const hits = sel.argmax(-1).eq(target).to({ device: 'cpu' }).data() as Uint8Array;
  return { lp, hits };
}

/**
 * Runs windows through the model in batches and returns, per window, the log-probability and argmax-hit of each
 * target. A window is input ids and the targets of its last `n` positions.
 */
function scoreWindows(m: EvalModel, windows: { input: number[]; targets: number[] }[], batchSize: number, onBatch?: (done: number) => void): { logp: Float64Array; hit: Uint8Array }[] {
  const out = new Array<{ logp: Float64Array; hit: Uint8Array }>(windows.length);
  // Longest first: batches of similar lengths waste less padding, and an out-of-memory shows up at once.
  const order = windows.map((_, i) => i).sort((a, b) => windows[b].input.length - windows[a].input.length);
  const device = m.module.parameters()[0]?.device ?? 'cpu';
  torch.inferenceMode(() => {
    for (let s = 0; s < order.length; s += batchSize) {
      const idx = order.slice(s, s + batchSize);
      torch.tidy(() => {
        const B = idx.length;
        const T = windows[idx[0]].input.length;
        const flat = new BigInt64Array(B * T);
        const rows: number[] = [];
        const tg: number[] = [];
        idx.forEach((w, b) => {
          const { input, targets } = windows[w];
          input.forEach((t, j) => (flat[b * T + j] = BigInt(t)));
          const first = input.length - targets.length;
          targets.forEach((t, j) => {
            rows.push(b * T + first + j);
            tg.push(t);
          });
        });
        const ids = torch.tensor(flat, { shape: [B, T] }).to({ device });
        const { lp, hits } = pickTargets(m.logits(ids), rows, tg, device);
        let k = 0;
        for (const w of idx) {
          const n = windows[w].targets.length;
          out[w] = { logp: lp.slice(k, k + n), hit: hits.slice(k, k + n) };
          k += n;
        }
      });
      onBatch?.(Math.min(s + batchSize, order.length));
    }
  });
  return out;
}

/**
 * Log-likelihood of each continuation given its context; inputs longer than the model's window lose their left end
 * (and a continuation longer than the window keeps only its last tokens). Requests that share a context (the choices
 * of a question) run it once when the model can copy a cache across rows; the others run whole, in batches.
 */
export function loglikelihood(m: EvalModel, reqs: LoglikRequest[], batchSize = 16, onBatch?: (done: number) => void): Loglik[] {
  const contexts = new Map<string, number[]>();
  const encoded = reqs.map((r) => encodeRequest(m, r, contexts));
  const windows = encoded.map(({ ids, contLen }) => {
    const keep = ids.slice(-(m.maxLength + 1));
    // A continuation longer than the window is scored on the tokens that fit (every one but the window's first).
    return { input: keep.slice(0, -1), targets: keep.slice(-Math.min(contLen, keep.length - 1)), truncated: keep.length < ids.length };
  });
  const out = new Array<{ logp: Float64Array; hit: Uint8Array }>(windows.length);
  const groups = m.logitsAfter ? sharedContexts(encoded, windows.map((w) => w.truncated)) : [];
  let done = 0;
  for (const g of groups) {
    const scored = scoreSharedContext(m, encoded, g);
    if (!scored) break;
    g.forEach((i, j) => (out[i] = scored[j]));
    done += g.length;
    onBatch?.(done);
  }
  const rest = windows.map((_, i) => i).filter((i) => !out[i]);
  scoreWindows(m, rest.map((i) => windows[i]), batchSize, onBatch && ((n) => onBatch(done + n))).forEach((w, j) => (out[rest[j]] = w));
  return out.map((w, i) => ({
    logprob: w.logp.reduce((a, b) => a + b, 0),
    greedy: w.hit.every((h) => h === 1),
    tokens: w.logp.length,
    truncated: windows[i].truncated,
  }));
}

/** Indices of requests that share a context of at least two tokens, two or more to a group; truncated ones run whole. */
function sharedContexts(encoded: Encoded[], truncated: boolean[]): number[][] {
  const byContext = new Map<string, number[]>();
  encoded.forEach(({ ids, contLen }, i) => {
    const c = ids.length - contLen;
    if (truncated[i] || c < 2) return;
    const key = ids.slice(0, c).join(',');
    byContext.get(key)?.push(i) ?? byContext.set(key, [i]);
  });
  return [...byContext.values()].filter((g) => g.length > 1);
}

/**
 * One group's continuations: the context but its last token runs once, and each row is that last token and the
 * continuation but its last, right-padded, so row position j predicts continuation token j. Null when the model
 * cannot share (its cache does not copy across rows).
 */
function scoreSharedContext(m: EvalModel, encoded: Encoded[], group: number[]): { logp: Float64Array; hit: Uint8Array }[] | null {
  const c = encoded[group[0]].ids.length - encoded[group[0]].contLen;
  const R = Math.max(...group.map((i) => encoded[i].contLen));
  const device = m.module.parameters()[0]?.device ?? 'cpu';
  return torch.inferenceMode(() =>
    torch.tidy(() => {
      const flat = new BigInt64Array(group.length * R);
      const rows: number[] = [];
      const tg: number[] = [];
      group.forEach((i, b) => {
        // Every member's context is the group's key, so its continuation is ids[c..].
        const { ids } = encoded[i];
        ids.slice(c - 1, -1).forEach((t, j) => (flat[b * R + j] = BigInt(t)));
        ids.slice(c).forEach((t, j) => {
          rows.push(b * R + j);
          tg.push(t);
        });
      });
      const prefix = torch.tensor([encoded[group[0]].ids.slice(0, c - 1)], { dtype: 'int64' }).to({ device }); // [1, c-1]
      const logits = m.logitsAfter!(prefix, torch.tensor(flat, { shape: [group.length, R] }).to({ device })); // [k, R, V]
      if (!logits) return null;
      const { lp, hits } = pickTargets(logits, rows, tg, device);
      let k = 0;
      return group.map((i) => {
        const n = encoded[i].contLen;
        k += n;
        return { logp: lp.slice(k - n, k), hit: hits.slice(k - n, k) };
      });
    }),
  );
}

export interface TextScore {
  /** Negative log-likelihood, nats, summed over predicted tokens. */
  nll: number;
  tokens: number;
  correct: number;
  /** Characters and UTF-8 bytes of the predicted text. */
  chars: number;
  bytes: number;
  /** Whether textLoglik's maxWindows stopped before the text's end. */
  cut: boolean;
}

/**
 * Every token of each text predicted exactly once, in disjoint windows of the model's length (a window's first
 * input is the last token of the previous window), as lm-evaluation-harness's rolling log-likelihood. A model
 * without BOS cannot predict a text's first token; it counts as context. With `maxWindows`, only the first that many
 * windows (in text order) are scored: characters and bytes are those of the tokens predicted, and a text past the
 * cap scores nothing (tokens 0). `tokens` replaces the encoding (its first id is context only).
 */
export function textLoglik(m: EvalModel, texts: string[], batchSize = 8, onBatch?: (done: number) => void, maxWindows = Infinity, tokens?: (text: string) => number[]): TextScore[] {
  const L = m.maxLength;
  const windows: { input: number[]; targets: number[]; doc: number }[] = [];
  const chars: number[] = [];
  const bytes: number[] = [];
  const cut: boolean[] = [];
  texts.forEach((text, d) => {
    const ids = tokens ? tokens(text) : m.bosId === null ? m.encode(text) : [m.bosId, ...m.encode(text)];
    let end = 1;
    for (let s = 1; s < ids.length && windows.length < maxWindows; s += L) {
      end = Math.min(s + L, ids.length);
      windows.push({ input: ids.slice(s - 1, end - 1), targets: ids.slice(s, end), doc: d });
    }
    const predicted = m.bosId !== null && end === ids.length ? text : m.decode(ids.slice(1, end));
    chars.push([...predicted].length);
    bytes.push(Buffer.byteLength(predicted, 'utf8'));
    cut.push(end < ids.length);
  });
  const scored = scoreWindows(m, windows, batchSize, onBatch);
  const res = texts.map((_, d) => ({ nll: 0, tokens: 0, correct: 0, chars: chars[d], bytes: bytes[d], cut: cut[d] }));
  windows.forEach((w, i) => {
    const r = res[w.doc];
    for (const v of scored[i].logp) r.nll -= v;
    r.tokens += scored[i].logp.length;
    for (const h of scored[i].hit) r.correct += h;
  });
  return res;
}

// --- Answer extraction (generative tasks) ----------------------------------------------------------------------------

const NUMBER = /-?[\d,]*\.?\d+/g;

/** Pulls the answer out of generated text: `#### N` for GSM8K (else the last number), the last number, or the text. */
export function extractAnswer(text: string, how: 'trim' | 'first_line' | 'gsm8k' | 'last_number'): string {
  const normNum = (s: string) => {
    const t = s.replace(/,/g, '').replace(/\.$/, '');
    const n = Number(t);
    return Number.isFinite(n) ? String(n) : t;
  };
  switch (how) {
    case 'trim': return text.trim();
    case 'first_line': return text.trim().split(/\r?\n/)[0].trim();
    case 'gsm8k': {
      const m = /####\s*(-?[\d,]*\.?\d+)/.exec(text);
      if (m) return normNum(m[1]);
      return extractAnswer(text, 'last_number');
    }
    case 'last_number': {
      const all = text.match(NUMBER);
      return all ? normNum(all[all.length - 1]) : text.trim();
    }
  }
}

/** Exact match after trimming and lower-casing, as the mixed-training study scores short answers. */
export function exactMatch(pred: string, gold: string): boolean {
  return pred.trim().toLowerCase() === gold.trim().toLowerCase();
}

// --- Statistics ------------------------------------------------------------------------------------------------------

/** Mean and its standard error (sample standard deviation / √n), as lm-evaluation-harness reports. */
export function meanStderr(xs: number[]): { mean: number; stderr: number | null } {
  const n = xs.length;
  if (n === 0) return { mean: NaN, stderr: null };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { mean, stderr: null };
  const v = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return { mean, stderr: Math.sqrt(v / n) };
}
