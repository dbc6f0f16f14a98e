// Hugging Face tokenizers (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers, and chat
// templates (Jinja: chat_template.jinja, else tokenizer_config.json's chat_template) through @huggingface/jinja,
// rendered with what transformers' apply_chat_template gives the template (bench/parity/tokenizers.ts checks both).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTok } from '@huggingface/tokenizers';
import type { Tokenizer } from './llama2c.js';
import type { ChatTemplate } from '../data/formats.js';
import { compileChatTemplate, templateTokens, TemplateError, tokenText } from './chat.js';

export class HfTokenizer implements Tokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly vocabSize: number;
  readonly chatTemplate: ChatTemplate | null;
  /**
   * transformers 5 tidies spaces before punctuation on decode only when the config asks for it and the model is not
   * BPE (the tidying corrupts byte-level text); @huggingface/tokenizers would tidy whenever the config does not say no.
   */
  private readonly cleanUp: boolean;

  /** `templateSource`: chat_template.jinja's text when the folder has one (it overrides the config's chat_template). */
  constructor(private readonly tok: HfTok, readonly json: Record<string, any>, readonly config: Record<string, any>, templateSource?: string) {
    const bos = tokenText(config.bos_token);
    const eos = tokenText(config.eos_token);
    this.bosId = bos ? tok.token_to_id(bos) ?? -1 : -1;
    this.eosId = eos ? tok.token_to_id(eos) ?? -1 : -1;
    const vocab = json.model?.vocab;
    const base = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === 'object' ? Object.keys(vocab).length : 0;
    const ids = Array.isArray(json.added_tokens) ? json.added_tokens.map((t: { id?: unknown } | null) => t?.id).filter((id: unknown): id is number => Number.isInteger(id)) : [];
    this.cleanUp = config.clean_up_tokenization_spaces === true
      && (json.model?.type !== 'BPE' || config.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output === true);
    this.vocabSize = ids.reduce((m: number, id: number) => Math.max(m, id + 1), base);
    const src = config.chat_template;
    const text = templateSource ?? (typeof src === 'string' ? src : Array.isArray(src) ? src.find((t: { name?: unknown } | null) => t?.name === 'default')?.template : null);
    this.chatTemplate = typeof text === 'string' ? compileChatTemplate(text, templateTokens(config)) : null;
  }

  /**
   * With bos = true the tokenizer's own special-token rules apply (e.g. Llama prepends <s>); with bos = false
   * nothing is added (chat templates write their own special tokens).
   */
  encode(text: string, opts: { bos?: boolean; eos?: boolean } = {}): number[] {
    const ids = this.tok.encode(text, { add_special_tokens: opts.bos ?? true }).ids.map(Number);
    if (opts.eos && this.eosId >= 0) ids.push(this.eosId);
    return ids;
  }

  /**
   * Ids the tokenizer has no token for are dropped, as the Rust tokenizers do: a model's embedding is often padded
   * past the tokenizer's vocabulary, and the JS library would otherwise fail on them with a TypeError. It also
   * refuses an empty list, which a generation that stops at once produces. Special tokens are left out unless
   * `skipSpecialTokens` is false (transformers' decode(ids, skip_special_tokens=...)).
   */
  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const known = ids.filter((id) => this.tok.id_to_token(id) !== undefined);
    return known.length ? this.tok.decode(known, { skip_special_tokens: opts.skipSpecialTokens ?? true, clean_up_tokenization_spaces: this.cleanUp }) : '';
  }

  piece(id: number): string {
    if (this.tok.id_to_token(id) === undefined) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return this.tok.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}

/** Reads one JSON file; a parse failure names the file instead of surfacing as a SyntaxError with a stack. */
function readJsonObject(path: string, what: string): Record<string, any> {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    if (e instanceof SyntaxError) throw new Error(`${path}: not valid JSON (${e.message.replace(/\s+/g, ' ')}); ${what}`);
    throw e;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${path}: must hold a JSON object, got ${JSON.stringify(v)?.slice(0, 80)}; ${what}`);
  return v as Record<string, any>;
}

const REWRITE = "write it again with transformers' tokenizer.save_pretrained(dir)";

/**
 * `path` is a directory holding tokenizer.json (and optionally tokenizer_config.json and chat_template.jinja), or a
 * tokenizer.json file under any name; the other two are looked for beside it, since bos/eos and the chat template
 * live there.
 */
export async function loadHfTokenizer(path: string): Promise<HfTokenizer> {
  const isDir = existsSync(path) && statSync(path).isDirectory();
  const tj = isDir ? join(path, 'tokenizer.json') : path;
  if (!existsSync(tj)) throw new Error(isDir ? `${path}: no tokenizer.json` : `tokenizer not found: ${path}`);
  const json = readJsonObject(tj, `a tokenizer.json must be the file that Hugging Face tokenizers write; ${REWRITE}`);
  const cfgPath = join(dirname(tj), 'tokenizer_config.json');
  const config = existsSync(cfgPath) ? readJsonObject(cfgPath, `fix it or delete it (it only adds bos/eos tokens and the chat template)`) : {};
  let tok: HfTok;
  try {
    tok = new HfTok(json, config);
  } catch (e) {
    // The library reports a malformed file as whatever its parsing tripped over (often a TypeError); it is the
    // file's fault either way.
    throw new Error(`${tj}: not a usable Hugging Face tokenizer (${(e as Error).message}); ${REWRITE}`);
  }
  // transformers 5 saves the template as chat_template.jinja beside the config, which then has none.
  const jinjaPath = join(dirname(tj), 'chat_template.jinja');
  const jinja = existsSync(jinjaPath) ? readFileSync(jinjaPath, 'utf8') : undefined;
  try {
    return new HfTokenizer(tok, json, config, jinja);
  } catch (e) {
    if (!(e instanceof TemplateError)) throw e;
    throw new Error(jinja !== undefined
      ? `${jinjaPath}: not a valid Jinja template (${e.message}); fix or remove it`
      : `${cfgPath}: chat_template is not a valid Jinja template (${e.message}); fix or remove it`);
  }
}
