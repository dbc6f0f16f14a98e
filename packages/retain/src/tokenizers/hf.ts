// Hugging Face tokenizers (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers, and chat
// templates (Jinja, from tokenizer_config.json) through @huggingface/jinja.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTok } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import type { Tokenizer } from './llama2c.js';
import type { ChatMessage, ChatTemplate } from '../data/formats.js';

function tokenText(t: unknown): string | null {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as { content?: unknown }).content === 'string') return (t as { content: string }).content;
  return null;
}

/** The chat template does not parse (@huggingface/jinja throws a SyntaxError, which would read as a bug of ours). */
class TemplateError extends Error {
  constructor(cause: unknown) {
    super((cause as Error).message);
  }
}

export class HfTokenizer implements Tokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly vocabSize: number;
  readonly chatTemplate: ChatTemplate | null;
  private readonly bosText: string | null;
  private readonly eosText: string | null;

  constructor(private readonly tok: HfTok, readonly json: Record<string, any>, readonly config: Record<string, any>) {
    this.bosText = tokenText(config.bos_token);
    this.eosText = tokenText(config.eos_token);
    this.bosId = this.bosText ? tok.token_to_id(this.bosText) ?? -1 : -1;
    this.eosId = this.eosText ? tok.token_to_id(this.eosText) ?? -1 : -1;
    const vocab = json.model?.vocab;
    const base = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === 'object' ? Object.keys(vocab).length : 0;
    const ids = Array.isArray(json.added_tokens) ? json.added_tokens.map((t: { id?: unknown } | null) => t?.id).filter((id: unknown): id is number => Number.isInteger(id)) : [];
    this.vocabSize = ids.reduce((m: number, id: number) => Math.max(m, id + 1), base);
    const src = config.chat_template;
    const text = typeof src === 'string' ? src : Array.isArray(src) ? src.find((t: { name?: unknown } | null) => t?.name === 'default')?.template : null;
    if (typeof text === 'string') {
      let tpl: Template;
      try {
        tpl = new Template(text);
      } catch (e) {
        throw new TemplateError(e);
      }
      this.chatTemplate = (messages: ChatMessage[], addGenerationPrompt: boolean) =>
        tpl.render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: this.bosText ?? '', eos_token: this.eosText ?? '' });
    } else this.chatTemplate = null;
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
   * refuses an empty list, which a generation that stops at once produces.
   */
  decode(ids: number[]): string {
    const known = ids.filter((id) => this.tok.id_to_token(id) !== undefined);
    return known.length ? this.tok.decode(known, { skip_special_tokens: true }) : '';
  }

  piece(id: number): string {
    if (this.tok.id_to_token(id) === undefined) throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    return this.tok.decode([id], { skip_special_tokens: false });
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
 * `path` is a directory holding tokenizer.json (and optionally tokenizer_config.json), or a tokenizer.json file under
 * any name; a file's tokenizer_config.json is looked for beside it, since bos/eos and the chat template live there.
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
  try {
    return new HfTokenizer(tok, json, config);
  } catch (e) {
    if (e instanceof TemplateError) throw new Error(`${cfgPath}: chat_template is not a valid Jinja template (${e.message}); fix or remove it`);
    throw e;
  }
}
