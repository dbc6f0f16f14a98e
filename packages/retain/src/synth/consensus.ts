// Multi-model consensus (instruction reconstruction, Ding & Wang 2025): several models answer a synthesised prompt,
// every model scores every answer, the answer with the best mean score is kept and prompts whose best answer scores
// too low are dropped.
//
// Scores share one 1-5 scale so that base and chat models can judge together:
//   chat model (has a chat template): asked to rate the answer 1-5, greedy, the first digit of its reply;
//   base model: 1 + 4·p̄, where p̄ = exp(mean log-probability of the answer's tokens given the prompt) is the
//               geometric-mean token probability — 5 for an answer the model finds certain, toward 1 for improbable.
// A judge reply without a digit is left out of the mean; an answer nobody could score gets NaN and is never kept.
import * as torch from '@retain/torch';
import type { SynthModel, SampleOptions } from './lm.js';
import { assistantTurnEnd, judgePrompt, parseJudgeScore, stopText } from './prompts.js';

export interface Candidate {
  model: string;
  answer: string;
}

export interface Scored extends Candidate {
  /** Per scorer, in scorer order (NaN where a judge gave no digit). */
  scores: number[];
  score: number;
}

/** Stop tokens for an end marker that is a single special token (decoding skips it, so a stop string cannot see it). */
export function specialStops(m: SynthModel, text: string | null): number[] {
  if (!text) return [];
  const ids = m.tokenizer.encode(text, { bos: false });
  return ids.length === 1 && m.tokenizer.decode(ids) === '' ? ids : [];
}

/** Token ids of a prompt for a base (template-free) model: BOS, or the model's start tokens, then the text. */
export function basePromptIds(m: SynthModel, text: string): number[] {
  const tok = m.tokenizer;
  if (tok.bosId >= 0) return tok.encode(text, { bos: true });
  const ids = tok.encode(text, { bos: false });
  return [...m.startIds(), ...ids];
}

/** A prompt to answer: as a chat model sees it, and as a base model continues it (`base` + `lead` + answer). */
export interface AnswerTask {
  prompt: string;
  /** The text a base model continues (e.g. the instruction and a line break, or a prompt field as training joins it). */
  base: string;
  /** Whitespace between `base` and the answer (a completion field's leading space). */
  lead: string;
}

/** The prompt ids and stopping rules under which `m` answers: its chat template when it has one, else plain continuation. */
export function answerSetup(m: SynthModel, t: AnswerTask): { ids: number[]; stop: string[]; stopTokens: number[] } {
  if (m.chatTemplate) {
    const end = stopText(assistantTurnEnd(m.chatTemplate, t.prompt));
    const stopTokens = specialStops(m, end);
    const ids = m.tokenizer.encode(m.chatTemplate([{ role: 'user', content: t.prompt }], true), { bos: false });
    return { ids, stop: stopTokens.length || !end ? [] : [end], stopTokens };
  }
  // A base model continues the prompt; a blank line ends the answer, as it ends an example in a few-shot prompt.
  return { ids: basePromptIds(m, t.base + t.lead), stop: ['\n\n'], stopTokens: [] };
}

/** One answer (trimmed) from `m`, seeded so that the same prompt index always gets the same answer. */
export function answer(m: SynthModel, t: AnswerTask, o: SampleOptions, seed: number): string {
  const s = answerSetup(m, t);
  torch.manualSeed(seed);
  return m.sample(s.ids, 1, { ...o, stop: [...(o.stop ?? []), ...s.stop], stopTokens: [...(o.stopTokens ?? []), ...s.stopTokens] })[0].text.trim();
}

/** Mean log-probability per token of the answer after the prompt under a model read as a base model. */
export function answerLogProb(m: SynthModel, t: AnswerTask, ans: string): number {
  const full = basePromptIds(m, t.base + t.lead + ans);
  const head = basePromptIds(m, t.base);
  // The first position where the joint tokenisation departs from the prompt's is where the answer starts.
  let k = 0;
  while (k < head.length && k < full.length && head[k] === full[k]) k++;
  return m.meanLogProbs([{ ids: full, from: Math.max(1, k) }])[0];
}

/** One scorer's score of one answer on the 1-5 scale. */
export function scoreAnswer(scorer: SynthModel, t: AnswerTask, ans: string): number {
  if (!scorer.chatTemplate) {
    const lp = answerLogProb(scorer, t, ans);
    return Number.isFinite(lp) ? 1 + 4 * Math.exp(lp) : NaN;
  }
  const ids = scorer.tokenizer.encode(scorer.chatTemplate([{ role: 'user', content: judgePrompt(t.prompt, ans) }], true), { bos: false });
  const reply = scorer.sample(ids, 1, { maxNewTokens: 8, temperature: 0 })[0].text;
  return parseJudgeScore(reply);
}

/** Scores every candidate with every scorer and orders them best first (ties keep candidate order). */
export function rankAnswers(t: AnswerTask, candidates: Candidate[], scorers: SynthModel[]): Scored[] {
  const scored = candidates.map((c) => {
    const scores = scorers.map((s) => scoreAnswer(s, t, c.answer));
    const ok = scores.filter(Number.isFinite);
    return { ...c, scores, score: ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : NaN };
  });
  const rank = (x: Scored) => (Number.isFinite(x.score) ? x.score : -Infinity);
  return scored.map((s, i) => [s, i] as const).sort((a, b) => rank(b[0]) - rank(a[0]) || a[1] - b[1]).map(([s]) => s);
}
