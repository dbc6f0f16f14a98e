// Quality filters for synthesised text. Small models sampled from an empty context fail in recognisable ways: they
// loop ("the cat the cat the cat"), stop at once, or drift into text they themselves find improbable. Each filter
// names the reason a sample was dropped, so a run can report what its filters did.

export interface FilterOptions {
  /** Fewest / most tokens of the generated text (the model's tokenizer). */
  minTokens?: number;
  maxTokens?: number;
  /** Largest share of word n-grams that repeat an earlier n-gram of the same text (0..1). Default 0.5. */
  maxRepeat?: number | null;
  /** Words per n-gram for maxRepeat. Default 3. */
  repeatNgram?: number;
  /** Bounds on the base model's mean token loss (nats) of the text: too low is usually a loop, too high gibberish. */
  minLoss?: number;
  maxLoss?: number;
}

export type FilterReason = 'empty' | 'too_short' | 'too_long' | 'repetitive' | 'loss_low' | 'loss_high' | 'loss_nan';

/** The options with their defaults filled in (what a run records to recognise its settings on resume). */
export function resolveFilters(o: FilterOptions): FilterOptions {
  const r: FilterOptions = { maxRepeat: o.maxRepeat === undefined ? 0.5 : o.maxRepeat, repeatNgram: o.repeatNgram ?? 3 };
  for (const k of ['minTokens', 'maxTokens', 'minLoss', 'maxLoss'] as const) if (o[k] !== undefined) r[k] = o[k];
  return r;
}

/** Share of the text's word n-grams that already occurred earlier in it: 0 for no repeats, near 1 for a loop. */
export function repeatedNgramRatio(text: string, n = 3): number {
  const w = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (w.length < n) return 0;
  const seen = new Set<string>();
  let rep = 0;
  let total = 0;
  for (let i = 0; i + n <= w.length; i++) {
    const g = w.slice(i, i + n).join(' ');
    if (seen.has(g)) rep++;
    else seen.add(g);
    total++;
  }
  return rep / total;
}

/** Filters that need only the text and its token count (cheap; they run before the model scores anything). */
export function textFilter(text: string, tokens: number, o: FilterOptions): FilterReason | null {
  if (text.trim().length === 0) return 'empty';
  if (o.minTokens !== undefined && tokens < o.minTokens) return 'too_short';
  if (o.maxTokens !== undefined && tokens > o.maxTokens) return 'too_long';
  const maxRepeat = o.maxRepeat === undefined ? 0.5 : o.maxRepeat;
  if (maxRepeat !== null && repeatedNgramRatio(text, o.repeatNgram ?? 3) > maxRepeat) return 'repetitive';
  return null;
}

export function needsLoss(o: FilterOptions): boolean {
  return o.minLoss !== undefined || o.maxLoss !== undefined;
}

export function lossFilter(loss: number, o: FilterOptions): FilterReason | null {
  if (!needsLoss(o)) return null;
  if (!Number.isFinite(loss)) return 'loss_nan';
  if (o.minLoss !== undefined && loss < o.minLoss) return 'loss_low';
  if (o.maxLoss !== undefined && loss > o.maxLoss) return 'loss_high';
  return null;
}
