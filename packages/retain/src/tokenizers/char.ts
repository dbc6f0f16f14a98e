// The char-LSTM's vocabulary (vocab.json) seen through the Tokenizer interface, so data formats, the trainer and
// the hub treat a character model like any other. The ml5 models were trained without BOS/EOS symbols, so both ids
// are -1 (formats then add neither) and `bos` / `eos` requests add nothing.
import { readFileSync } from 'node:fs';
import type { Tokenizer } from './types.js';

export class CharTokenizer implements Tokenizer {
  readonly bosId = -1;
  readonly eosId = -1;

  /**
   * With `dropUnknown` (a data entry's `unknown_chars: drop`), characters outside the vocabulary are left out of the
   * text, and collected in `dropped`, instead of being an error. A set, not counts: callers may encode a text's
   * prefixes more than once (cutting a long record to max_length), which would count a character again.
   */
  readonly dropped = new Set<string>();

  constructor(readonly vocab: CharVocab, readonly dropUnknown = false) {}

  static fromFile(path: string): CharTokenizer {
    return new CharTokenizer(CharVocab.fromFile(path));
  }

  get vocabSize(): number {
    return this.vocab.size;
  }

  /** A character outside the vocabulary is an error naming it (UnknownCharError), unless dropUnknown. */
  encode(text: string, _opts?: { bos?: boolean; eos?: boolean }): number[] {
    if (!this.dropUnknown) return this.vocab.encode(text);
    const chars = [...text];
    const kept = chars.filter((ch, i) => {
      if (this.vocab.has(ch)) return true;
      // '\r\n' reads as '\n' (CharVocab.encode): that '\r' is a line end, not a dropped character.
      if (!(ch === '\r' && chars[i + 1] === '\n')) this.dropped.add(ch);
      return false;
    });
    return this.vocab.encode(kept.join(''));
  }

  decode(ids: number[]): string {
    return this.vocab.decode(ids);
  }

  piece(id: number): string {
    return this.vocab.decode([id]);
  }
}

/** A character a CharVocab cannot encode, with its position (in characters) in the text given to encode. */
export class UnknownCharError extends Error {
  constructor(readonly char: string, readonly position: number) {
    super(`character ${JSON.stringify(char)} at position ${position} is not in the vocabulary`);
  }
}

/**
 * The character ↔ id table of vocab.json. ml5's exports damaged two keys: the key of two spaces stands for 'u' and
 * the empty key for 'U' (docs/DATA.md); they are repaired when 'u' / 'U' are otherwise absent.
 */
export class CharVocab {
  readonly chars: string[];
  private readonly ids = new Map<string, number>();

  constructor(table: Record<string, number>) {
    const fixed = new Map<string, number>();
    const keys = Object.keys(table);
    for (const k of keys) {
      let ch = k;
      if (k === '  ' && !keys.includes('u')) ch = 'u';
      else if (k === '' && !keys.includes('U')) ch = 'U';
      if ([...ch].length !== 1) throw new Error(`vocab.json: key ${JSON.stringify(k)} is not a single character`);
      fixed.set(ch, table[k]);
    }
    const n = fixed.size;
    this.chars = new Array<string>(n);
    for (const [ch, id] of fixed) {
      if (!Number.isInteger(id) || id < 0 || id >= n) throw new Error(`vocab.json: id ${id} of ${JSON.stringify(ch)} is outside 0..${n - 1}`);
      if (this.chars[id] !== undefined) throw new Error(`vocab.json: id ${id} is used by both ${JSON.stringify(this.chars[id])} and ${JSON.stringify(ch)}`);
      this.chars[id] = ch;
      this.ids.set(ch, id);
    }
  }

  static fromFile(path: string): CharVocab {
    return new CharVocab(JSON.parse(readFileSync(path, 'utf8')) as Record<string, number>);
  }

  get size(): number {
    return this.chars.length;
  }

  has(ch: string): boolean {
    return this.ids.has(ch);
  }

  /**
   * Text → ids; a character outside the vocabulary is an error naming it and its position. A Windows line end is
   * one '\n' to a vocabulary that has '\n' but no '\r' (ml5's models were trained on '\n' text); a vocabulary
   * with '\r' reads it as it is.
   */
  encode(text: string): number[] {
    const out: number[] = [];
    const crlfIsLf = this.ids.has('\n') && !this.ids.has('\r');
    const chars = [...text];
    chars.forEach((ch, pos) => {
      if (crlfIsLf && ch === '\r' && chars[pos + 1] === '\n') return;
      const id = this.ids.get(ch);
      if (id === undefined) throw new UnknownCharError(ch, pos);
      out.push(id);
    });
    return out;
  }

  decode(ids: number[]): string {
    return ids.map((i) => {
      const ch = this.chars[i];
      if (ch === undefined) throw new RangeError(`id ${i} is outside the vocabulary of ${this.size}`);
      return ch;
    }).join('');
  }
}
