// The char-LSTM's vocabulary (vocab.json) seen through the Tokenizer interface, so data formats, the trainer and
// the hub treat a character model like any other. The ml5 models were trained without BOS/EOS symbols, so both ids
// are -1 (formats then add neither) and `bos` / `eos` requests add nothing.
import { CharVocab } from '../models/charlstm.js';
import type { Tokenizer } from './llama2c.js';

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
