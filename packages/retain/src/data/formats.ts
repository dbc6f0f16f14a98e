// Turning records into training examples: token ids, a loss mask (train only on completion / assistant tokens),
// and the record's id, kept end to end so per-sample methods (FLOW weights, replay accounting) can name samples.
import type { ChatMessage, ChatTemplate, Tokenizer } from '../tokenizers/types.js';
import { DataError, recordFields, type Record_ } from './records.js';
import { alpacaConversation, messageList, openaiConversation, sharegptConversation, type AlpacaColumns, type Conversation, type MessagesColumns, type SharegptColumns, type SharegptTags } from './conversations.js';

export interface Example {
  id: string;
  /** Token ids, BOS first where the tokenizer uses one. */
  ids: number[];
  /** 1 where the token at this position is a target of the loss (it is predicted from the positions before it). */
  lossMask: number[];
  /** Which data source this came from (mixing logs shares per source). */
  source: string;
  /** Classification label index, for classification formats. */
  label?: number;
  /** Dense inputs (image pixels, features) for models that do not read tokens, row-major in `featureShape`. */
  features?: Float32Array;
  featureShape?: number[];
}

export type FormatSpec =
  | { type: 'prompt_completion'; promptField?: string; completionField?: string; template?: string; chatTemplate?: boolean }
  | { type: 'chat'; messagesField?: string }
  | { type: 'alpaca'; columns?: AlpacaColumns }
  | { type: 'sharegpt'; columns?: SharegptColumns; tags?: SharegptTags }
  | { type: 'messages'; columns?: MessagesColumns }
  | { type: 'text'; textField?: string }
  | { type: 'classification'; textField?: string; labelField?: string; labels: string[]; template?: string }
  | { type: 'image_classification'; imageField?: string; labelField?: string; shape: number[]; numClasses: number; scale?: number };

export interface FormatContext {
  tokenizer: Tokenizer;
  chatTemplate?: ChatTemplate;
  source?: string;
  /** Truncate each example to this many tokens (from the right, keeping the prompt's start). */
  maxLength?: number;
}

function field(r: Record_, name: string, kind: string): string {
  const v = r[name];
  if (typeof v !== 'string') {
    throw new DataError(`record ${r.id}: ${kind} field '${name}' is ${v === undefined ? 'missing' : `a ${typeof v}, not a string`} (${recordFields(r)})`);
  }
  return v;
}

/** Fills `{name}` placeholders from the record; unknown names are an error naming the placeholder and the record's fields. */
export function fillTemplate(template: string, r: Record<string, unknown>, id: string): string {
  return template.replace(/\{(\w+)\}/g, (_, k: string) => {
    if (!(k in r)) throw new DataError(`record ${id}: the template uses {${k}} but the record has no '${k}' field (${recordFields(r)})`);
    return String(r[k]);
  });
}

function truncate(ex: Example, maxLength?: number): Example {
  if (!maxLength || ex.ids.length <= maxLength) return ex;
  return { ...ex, ids: ex.ids.slice(0, maxLength), lossMask: ex.lossMask.slice(0, maxLength) };
}

/** A tokenizer without an end-of-sequence token (a character vocabulary: eosId −1) gets none appended. */
function withEos(ids: number[], tok: Tokenizer): number[] {
  return tok.eosId >= 0 ? [...ids, tok.eosId] : ids;
}

/** Tokens of `text` that continue `prefixIds`, so BPE merges at the seam match tokenizing the whole. */
function continuation(tok: Tokenizer, prefixText: string, fullText: string): { prefix: number[]; full: number[] } {
  return { prefix: tok.encode(prefixText, { bos: true }), full: tok.encode(fullText, { bos: true }) };
}

/** Tokens kept beyond max_length when a text is cut before tokenizing, so that merges at the cut cannot reach the kept ones. */
const SEAM_TOKENS = 16;

/**
 * The start of `text` that holds its first `maxLength` tokens, so that a record far longer than max_length is not
 * tokenized whole only to be cut (a 50 MB line took 4.7 GB and minutes for 512 tokens). No characters-per-token
 * figure is safe for every tokenizer: bytes ≥ tokens holds for byte-level BPE and character vocabularies, but that
 * bounds tokens from above, and a cut needs the other side — a vocabulary may hold 100-character pieces, and a
 * normalizer may drop characters (control characters, accents). So the cut grows (×2) from 4 characters per token
 * until it tokenizes to more than maxLength + SEAM_TOKENS tokens, or is the whole text: the first maxLength tokens
 * are then those of the whole text, for any tokenizer whose merges do not run back SEAM_TOKENS tokens from the cut
 * (BPE and SentencePiece merge within a word; the cut is put at whitespace where the last quarter has some). Work
 * stays within twice that of tokenizing the kept part.
 */
export function headFor(tok: Tokenizer, text: string, maxLength: number): string {
  const want = maxLength + SEAM_TOKENS;
  for (let n = 4 * want; n < text.length; n *= 2) {
    let cut = n;
    while (cut > (3 * n) / 4 && !/\s/.test(text[cut])) cut--;
    if (cut <= (3 * n) / 4) cut = n;
    // Never between the two halves of a surrogate pair.
    if (/[\ud800-\udbff]/.test(text[cut - 1])) cut--;
    const head = text.slice(0, cut);
    if (tok.encode(head, { bos: false }).length > want) return head;
  }
  return text;
}

export function toExample(r: Record_, spec: FormatSpec, ctx: FormatContext): Example {
  const tok = ctx.tokenizer;
  const source = ctx.source ?? 'data';
  // Text past what max_length keeps is dropped before tokenizing (a packed run keeps all of it).
  const head = (text: string) => (ctx.maxLength ? headFor(tok, text, ctx.maxLength) : text);
  switch (spec.type) {
    case 'image_classification':
      return imageExample(r, spec, source);
    case 'prompt_completion': {
      const promptField = spec.promptField ?? 'prompt';
      // TRL's conversational form (prompt and completion as message lists) always goes through the template.
      if (spec.chatTemplate || Array.isArray(r[promptField])) return completionChatExample(r, spec, ctx, head);
      const prompt = head(spec.template ? fillTemplate(spec.template, r, r.id) : field(r, promptField, 'prompt'));
      const completion = head(field(r, spec.completionField ?? 'completion', 'completion'));
      const { prefix, full } = continuation(tok, prompt, prompt + completion);
      // Positions whose tokens agree with the prompt's tokenization are prompt; the rest (and EOS) are trained.
      let k = 0;
      while (k < prefix.length && k < full.length && prefix[k] === full[k]) k++;
      const ids = withEos(full, tok);
      const lossMask = ids.map((_, i) => (i >= k ? 1 : 0));
      return truncate({ id: r.id, ids, lossMask, source }, ctx.maxLength);
    }
    case 'chat': {
      const msgs = r[spec.messagesField ?? 'messages'];
      if (!Array.isArray(msgs) || msgs.some((m) => !m || typeof m.role !== 'string' || typeof m.content !== 'string')) {
        throw new DataError(`record ${r.id}: '${spec.messagesField ?? 'messages'}' must be an array of {role, content} strings`);
      }
      return chatExample(r, { messages: msgs as ChatMessage[] }, 'chat', ctx, head);
    }
    case 'alpaca':
      return chatExample(r, alpacaConversation(r, spec.columns), spec.type, ctx, head);
    case 'sharegpt':
      return chatExample(r, sharegptConversation(r, spec.columns, spec.tags), spec.type, ctx, head);
    case 'messages':
      return chatExample(r, openaiConversation(r, spec.columns), spec.type, ctx, head);
    case 'text': {
      const text = head(field(r, spec.textField ?? 'text', 'text'));
      const ids = withEos(tok.encode(text, { bos: true }), tok);
      return truncate({ id: r.id, ids, lossMask: ids.map((_, i) => (i === 0 ? 0 : 1)), source }, ctx.maxLength);
    }
    case 'classification': {
      const text = head(spec.template ? fillTemplate(spec.template, r, r.id) : field(r, spec.textField ?? 'text', 'text'));
      const raw = r[spec.labelField ?? 'label'];
      const label = typeof raw === 'number' ? raw : spec.labels.indexOf(String(raw));
      if (!Number.isInteger(label) || label < 0 || label >= spec.labels.length) {
        throw new DataError(`record ${r.id}: label ${JSON.stringify(raw)} is not one of ${spec.labels.join(', ')}`);
      }
      const ids = tok.encode(text, { bos: true });
      return truncate({ id: r.id, ids, lossMask: ids.map(() => 0), source, label }, ctx.maxLength);
    }
  }
}

function needTemplate(ctx: FormatContext, type: string): ChatTemplate {
  if (!ctx.chatTemplate) throw new DataError(`${type} data needs a chat template, and this model's tokenizer has none (no chat_template.jinja beside its tokenizer.json, no chat_template in its tokenizer_config.json): add one, or use format type prompt_completion (without chat_template) or text`);
  return ctx.chatTemplate;
}

/** The conversation rendered by the model's template; each assistant turn is trained, the rest is context. */
function chatExample(r: Record_, conv: Conversation, type: string, ctx: FormatContext, head: (t: string) => string): Example {
  const template = needTemplate(ctx, type);
  const tok = ctx.tokenizer;
  const opts = { tools: conv.tools };
  const messages = conv.messages.map((m) => ({ ...m, content: typeof m.content === 'string' ? head(m.content) : m.content }));
  const ids = tok.encode(template(messages, false, opts), { bos: false });
  const lossMask = new Array<number>(ids.length).fill(0);
  // Each assistant turn is what the rendering gains from the turn before it with a generation prompt.
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = tok.encode(template(messages.slice(0, i), true, opts), { bos: false }).length;
    const after = tok.encode(template(messages.slice(0, i + 1), false, opts), { bos: false }).length;
    for (let p = before; p < Math.min(after, ids.length); p++) lossMask[p] = 1;
  });
  if (!lossMask.some((v) => v)) throw new DataError(`record ${r.id}: the conversation has no assistant turn to train on`);
  return truncate({ id: r.id, ids, lossMask, source: ctx.source ?? 'data' }, ctx.maxLength);
}

/**
 * prompt / completion through the chat template, as TRL does for conversational data: the prompt rendered with the
 * generation prompt is context, everything the completion adds after it is trained. Plain strings become one user
 * and one assistant turn.
 */
function completionChatExample(r: Record_, spec: Extract<FormatSpec, { type: 'prompt_completion' }>, ctx: FormatContext, head: (t: string) => string): Example {
  const template = needTemplate(ctx, 'prompt_completion (conversational or chat_template: true)');
  const tok = ctx.tokenizer;
  const turns = (name: string, role: string): ChatMessage[] => {
    const v = r[name];
    if (typeof v === 'string') return [{ role, content: v }];
    if (v === undefined) throw new DataError(`record ${r.id}: ${role === 'user' ? 'prompt' : 'completion'} field '${name}' is missing (${recordFields(r)})`);
    return messageList(v, `record ${r.id}: field '${name}'`);
  };
  if (spec.template) throw new DataError(`record ${r.id}: format.template applies to plain prompts; with the chat template the record's prompt is rendered by the model's template, so leave template out`);
  const prompt = turns(spec.promptField ?? 'prompt', 'user').map((m) => ({ ...m, content: head(m.content) }));
  const completion = turns(spec.completionField ?? 'completion', 'assistant').map((m) => ({ ...m, content: head(m.content) }));
  const prefix = tok.encode(template(prompt, true), { bos: false });
  const ids = tok.encode(template([...prompt, ...completion], false), { bos: false });
  let k = 0;
  while (k < prefix.length && k < ids.length && prefix[k] === ids[k]) k++;
  if (k === ids.length) throw new DataError(`record ${r.id}: the completion adds nothing to the rendered prompt`);
  return truncate({ id: r.id, ids, lossMask: ids.map((_, i) => (i >= k ? 1 : 0)), source: ctx.source ?? 'data' }, ctx.maxLength);
}

function imageExample(r: Record_, spec: Extract<FormatSpec, { type: 'image_classification' }>, source: string): Example {
  const name = spec.imageField ?? 'image';
  const px = r[name];
  const n = spec.shape.reduce((a, b) => a * b, 1);
  if (!Array.isArray(px) || px.length !== n || px.some((v) => typeof v !== 'number')) {
    throw new DataError(`record ${r.id}: '${name}' must be an array of ${n} numbers (shape [${spec.shape}])`);
  }
  const label = Number(r[spec.labelField ?? 'label']);
  if (!Number.isInteger(label) || label < 0 || label >= spec.numClasses) throw new DataError(`record ${r.id}: label must be an integer in 0..${spec.numClasses - 1}`);
  const scale = spec.scale ?? 1;
  return { id: r.id, ids: [], lossMask: [], source, label, features: Float32Array.from(px as number[], (v) => v * scale), featureShape: spec.shape };
}

/**
 * Packs examples end to end into blocks of `blockSize` tokens (raw-text LM): no padding, one sample id per block
 * (`<first id>+<count>`), loss on every position after the first.
 */
export function pack(examples: Example[], blockSize: number): Example[] {
  const out: Example[] = [];
  let ids: number[] = [];
  let mask: number[] = [];
  let members: string[] = [];
  for (const ex of examples) {
    // Element by element: spreading a long record's tokens as call arguments overflows the stack.
    for (let i = 0; i < ex.ids.length; i++) {
      ids.push(ex.ids[i]);
      mask.push(ex.lossMask[i]);
    }
    members.push(ex.id);
    // Blocks are cut at an offset and the rest kept once per record: re-slicing the rest per block was quadratic
    // in a long record (a 50 MB line never finished).
    let at = 0;
    while (ids.length - at >= blockSize) {
      out.push({ id: `${members[0]}+${members.length}#${out.length}`, ids: ids.slice(at, at + blockSize), lossMask: mask.slice(at, at + blockSize), source: ex.source });
      at += blockSize;
      members = [ex.id];
    }
    if (at > 0) {
      ids = ids.slice(at);
      mask = mask.slice(at);
    }
  }
  return out;
}
