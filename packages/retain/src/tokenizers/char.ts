// The char-LSTM's vocabulary (vocab.json) seen through the Tokenizer interface, so data formats, the trainer and
// the hub treat a character model like any other. The ml5 models were trained without BOS/EOS symbols, so both ids
// are -1 (formats then add neither) and `bos` / `eos` requests add nothing.
import { CharVocab } from '../models/charlstm.js';
import type { Tokenizer } from './llama2c.js';

export class CharTokenizer implements Tokenizer {
  readonly bosId = -1;
  readonly eosId = -1;

  constructor(readonly vocab: CharVocab) {}

  static fromFile(path: string): CharTokenizer {
    return new CharTokenizer(CharVocab.fromFile(path));
  }

  get vocabSize(): number {
    return this.vocab.size;
  }

  /** A character outside the vocabulary is an error naming it (drop such characters from the data first). */
  encode(text: string, _opts?: { bos?: boolean; eos?: boolean }): number[] {
    return this.vocab.encode(text);
  }

  decode(ids: number[]): string {
    return this.vocab.decode(ids);
  }

  piece(id: number): string {
    return this.vocab.decode([id]);
  }
}
