// Hugging Face tokenizers (tokenizer.json + tokenizer_config.json) through @huggingface/tokenizers, and chat
// templates (Jinja, from tokenizer_config.json) through @huggingface/jinja.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer as HfTok } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import type { Tokenizer } from './llama2c.js';
import type { ChatMessage, ChatTemplate } from '../data/formats.js';

function tokenText(t: unknown): string | null {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as { content?: unknown }).content === 'string') return (t as { content: string }).content;
  return null;
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
    const base = Array.isArray(vocab) ? vocab.length : vocab ? Object.keys(vocab).length : 0;
    const added = Array.isArray(json.added_tokens) ? Math.max(0, ...json.added_tokens.map((t: { id: number }) => t.id + 1)) : 0;
    this.vocabSize = Math.max(base, added);
    const src = config.chat_template;
    const text = typeof src === 'string' ? src : Array.isArray(src) ? src.find((t: { name: string }) => t.name === 'default')?.template : null;
    if (typeof text === 'string') {
      const tpl = new Template(text);
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

  decode(ids: number[]): string {
    return this.tok.decode(ids, { skip_special_tokens: true });
  }

  piece(id: number): string {
    return this.tok.decode([id], { skip_special_tokens: false });
  }
}

export async function loadHfTokenizer(dir: string): Promise<HfTokenizer> {
  const tj = join(dir, 'tokenizer.json');
  if (!existsSync(tj)) throw new Error(`${dir}: no tokenizer.json`);
  const json = JSON.parse(readFileSync(tj, 'utf8'));
  const cfgPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, 'utf8')) : {};
  return new HfTokenizer(new HfTok(json, config), json, config);
}
