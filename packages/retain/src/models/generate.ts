// Text generation with a key/value cache: greedy, temperature and nucleus (top-p) sampling, top-k, stop tokens and
// stop strings. The prompt runs once through the model; each new token then costs one position.
import * as torch from '@retain/torch';
import type { Tensor } from '@retain/torch';
import type { Tokenizer } from '../tokenizers/types.js';

/** What generation needs from a model's cache (Llama's KVCache, GPT-2's): positions held, capacity, release. */
export interface GenerationCache {
  length: number;
  readonly maxLen: number;
  dispose(): void;
}

/** What generation needs from a model: a forward over ids with an optional cache, and a way to make a cache. */
export interface CausalLM {
  forward(ids: Tensor, opts?: { cache?: GenerationCache; lastOnly?: boolean }): Tensor;
  newCache(batch: number, maxLen?: number): GenerationCache;
  config: { max_position_embeddings: number };
}

export interface GenerateOptions {
  maxNewTokens?: number;
  /** 0 (default) decodes greedily. */
  temperature?: number;
  topP?: number;
  topK?: number;
  /** Token ids that end generation (the tokenizer's EOS is always one). */
  stopTokens?: number[];
  /** Strings that end generation; the returned text is cut before the first one. */
  stop?: string[];
  seed?: number;
}

export interface Generation {
  text: string;
  ids: number[];
  finishReason: 'length' | 'stop_token' | 'stop_string' | 'context';
}

/** Picks the next token from logits [V]: argmax, or a sample after temperature / top-k / top-p filtering. */
export function sampleNext(logits: Tensor, o: GenerateOptions): number {
  return torch.tidy(() => {
    const t = o.temperature ?? 0;
    if (t <= 0) return logits.argmax().item();
    let l = logits.float().div(t);
    if (o.topK && o.topK > 0 && o.topK < l.shape[0]) {
      const [vals] = l.topk(o.topK);
      l = l.maskedFill(l.lt(vals.i(-1)), -Infinity);
    }
    let probs = l.softmax(-1);
    if (o.topP !== undefined && o.topP < 1) {
      // Keep the smallest set of tokens whose probability mass reaches top_p (always at least the best one).
      const [sorted, idx] = probs.sort(-1, true);
      const cum = sorted.cumsum(-1);
      const drop = cum.sub(sorted).gt(o.topP); // mass before this token already reached p
      const dropOrig = torch.zerosLike(drop).scatter(0, idx, drop);
      probs = probs.maskedFill(dropOrig, 0);
    }
    return torch.ops.multinomial(probs, 1).item();
  });
}

export function generate(model: CausalLM, tok: Tokenizer, prompt: string | number[], o: GenerateOptions = {}): Generation {
  const maxNew = o.maxNewTokens ?? 64;
  if (o.seed !== undefined) torch.manualSeed(o.seed);
  const promptIds = typeof prompt === 'string' ? tok.encode(prompt, { bos: true }) : prompt;
  if (promptIds.length === 0) throw new Error('generate: the prompt has no tokens (encode with bos: true to start from BOS)');
  const limit = model.config.max_position_embeddings;
  if (promptIds.length >= limit) throw new RangeError(`prompt of ${promptIds.length} tokens fills the model's context of ${limit}`);
  const stops = new Set([tok.eosId, ...(o.stopTokens ?? [])]);
  const cache = model.newCache(1, Math.min(limit, promptIds.length + maxNew));
  const out: number[] = [];
  let finish = 'length' as Generation['finishReason'];
  try {
    torch.inferenceMode(() => {
      let next = torch.tidy(() => {
        const logits = model.forward(torch.tensor([promptIds], { dtype: 'int64' }), { cache, lastOnly: true }); // [1, 1, V]
        return sampleNext(logits.i(0, 0), o);
      });
      for (;;) {
        if (stops.has(next)) {
          finish = 'stop_token';
          break;
        }
        out.push(next);
        if (o.stop?.length) {
          const text = tok.decode(out);
          if (o.stop.some((s) => text.includes(s))) {
            finish = 'stop_string';
            break;
          }
        }
        if (out.length >= maxNew) break;
        if (cache.length >= cache.maxLen) {
          finish = 'context';
          break;
        }
        next = torch.tidy(() => sampleNext(model.forward(torch.tensor([[next]], { dtype: 'int64' }), { cache, lastOnly: true }).i(0, 0), o));
      }
    });
  } finally {
    cache.dispose();
  }
  // Decode with the prompt so the first new piece keeps its leading space, then drop the prompt's text.
  const full = tok.decode([...promptIds, ...out]);
  const head = tok.decode(promptIds);
  let text = full.startsWith(head) ? full.slice(head.length) : tok.decode(out);
  if (finish === 'stop_string' && o.stop) {
    const cut = Math.min(...o.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0));
    text = text.slice(0, cut);
  }
  return { text, ids: out, finishReason: finish };
}
