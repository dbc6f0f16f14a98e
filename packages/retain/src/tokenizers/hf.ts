// Hugging Face tokenizers (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers, and chat
// templates (Jinja: chat_template.jinja and additional_chat_templates/, else tokenizer_config.json's chat_template)
// through @huggingface/jinja, rendered as transformers' apply_chat_template renders them (bench/parity/tokenizers.ts
// checks both against the real libraries).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Tokenizer as HfTok } from '@huggingface/tokenizers';
import type { Tokenizer } from './types.js';
import type { ChatTemplate } from './types.js';
import { namedChatTemplate, templateTokens, tokenText, type TemplateSources } from './chat.js';

/**
 * Rust tokenizers' ByteFallback decoder turns a run of byte tokens that is not valid UTF-8 into one U+FFFD per byte
 * and keeps a byte-order mark; @huggingface/tokenizers' decodes the run as a browser does (one U+FFFD per invalid
 * subsequence, a leading mark dropped), so a generated <0xDB><0x26> read "\uFFFD&", not "\uFFFD\uFFFD". Its decoder
 * objects are reachable from the tokenizer, so their text decoder is swapped.
 */
function rustByteFallback(decoder: unknown): void {
  const d = decoder as { config?: { type?: string }; decoders?: unknown[]; text_decoder?: unknown } | null;
  if (!d) return;
  if (d.config?.type === 'ByteFallback') {
    const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    d.text_decoder = {
      decode: (bytes: Uint8Array) => {
        try {
          return strict.decode(bytes);
        } catch {
          return '\uFFFD'.repeat(bytes.length);
        }
      },
    };
  }
  for (const inner of d.decoders ?? []) rustByteFallback(inner);
}

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

  /** `templates`: the chat templates found beside the files (templateSources). */
  constructor(private readonly tok: HfTok, readonly json: Record<string, any>, readonly config: Record<string, any>, templates: TemplateSources = new Map()) {
    rustByteFallback(tok.decoder);
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
    this.chatTemplate = namedChatTemplate(templates, templateTokens(config));
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
  return new HfTokenizer(tok, json, config, templateSources(dirname(tj), config, cfgPath));
}

/**
 * transformers 5 saves the default template as chat_template.jinja and others as additional_chat_templates/<name>.jinja
 * beside the config, which then has none; files, when there are any, take priority over the config's chat_template
 * (a string, or a list of {name, template}), as in transformers.
 */
export function templateSources(dir: string, config: Record<string, any>, cfgPath: string): TemplateSources {
  const out: TemplateSources = new Map();
  const file = join(dir, 'chat_template.jinja');
  if (existsSync(file)) out.set('default', { source: readFileSync(file, 'utf8'), from: file });
  const extra = join(dir, 'additional_chat_templates');
  if (existsSync(extra) && statSync(extra).isDirectory()) {
    for (const f of readdirSync(extra).filter((n) => n.endsWith('.jinja')).sort()) {
      out.set(f.slice(0, -'.jinja'.length), { source: readFileSync(join(extra, f), 'utf8'), from: join(extra, f) });
    }
  }
  if (out.size) return out;
  const src = config.chat_template;
  if (typeof src === 'string') out.set('default', { source: src, from: `${cfgPath}: chat_template` });
  if (Array.isArray(src)) {
    for (const t of src) {
      if (typeof t?.name === 'string' && typeof t?.template === 'string') out.set(t.name, { source: t.template, from: `${cfgPath}: chat_template '${t.name}'` });
    }
  }
  return out;
}
