// Conversation datasets as users already have them (LLaMA-Factory's alpaca and sharegpt, OpenAI messages), turned
// into one shape: the messages a chat template renders, and the tools it is given. Field names are mapped as
// LLaMA-Factory's dataset_info.json `columns` and `tags` map them.
import type { ChatMessage } from '../tokenizers/types.js';
import { DataError, recordFields, type Record_ } from './records.js';

export interface Conversation {
  messages: ChatMessage[];
  tools?: unknown[];
}

/** alpaca: which record field holds each part (LLaMA-Factory's `columns`). */
export interface AlpacaColumns {
  prompt?: string;
  query?: string;
  response?: string;
  system?: string;
  history?: string;
}

/** sharegpt: the conversation's and system prompt's fields, and how turns name their speaker (LLaMA-Factory's `tags`). */
export interface SharegptColumns {
  messages?: string;
  system?: string;
  tools?: string;
}
export interface SharegptTags {
  role_tag?: string;
  content_tag?: string;
  user_tag?: string;
  assistant_tag?: string;
  observation_tag?: string;
  function_tag?: string;
  system_tag?: string;
}

/** OpenAI messages: the conversation's and the tool schemas' fields. */
export interface MessagesColumns {
  messages?: string;
  tools?: string;
}

const ROLES = new Set(['system', 'user', 'assistant', 'tool']);

/** A string field that may be absent (or empty) when `optional`. */
function text(r: Record_, name: string, what: string, optional: boolean): string | undefined {
  const v = r[name];
  if ((v === undefined || v === null) && optional) return undefined;
  if (typeof v !== 'string') {
    throw new DataError(`record ${r.id}: ${what} field '${name}' is ${v === undefined ? 'missing' : `a ${Array.isArray(v) ? 'list' : typeof v}, not a string`} (${recordFields(r)})`);
  }
  return v;
}

/** Tool schemas as a list: a JSON string (LLaMA-Factory keeps them so) or the list itself. */
function tools(r: Record_, name: string | undefined): unknown[] | undefined {
  const v = name === undefined ? undefined : r[name];
  if (v === undefined || v === null || v === '') return undefined;
  let list = v;
  if (typeof v === 'string') {
    try {
      list = JSON.parse(v);
    } catch {
      throw new DataError(`record ${r.id}: tools field '${name}' is a string but not JSON; give the tool schemas as a list (or a JSON string of one)`);
    }
  }
  if (!Array.isArray(list)) throw new DataError(`record ${r.id}: tools field '${name}' must be a list of tool schemas`);
  return list;
}

/**
 * alpaca (instruction / input / output, optional system and history): the last user turn is the instruction and the
 * input joined by a newline, as LLaMA-Factory joins them (an empty part is left out); history is earlier
 * [query, response] pairs, each a user and an assistant turn.
 */
export function alpacaConversation(r: Record_, c: AlpacaColumns = {}): Conversation {
  const messages: ChatMessage[] = [];
  const system = text(r, c.system ?? 'system', 'system', true);
  if (system) messages.push({ role: 'system', content: system });
  const historyField = c.history ?? 'history';
  const history = r[historyField] ?? [];
  if (!Array.isArray(history) || history.some((h) => !Array.isArray(h) || h.length !== 2 || h.some((s) => typeof s !== 'string'))) {
    throw new DataError(`record ${r.id}: history field '${historyField}' must be a list of [query, response] string pairs`);
  }
  for (const [q, a] of history as [string, string][]) messages.push({ role: 'user', content: q }, { role: 'assistant', content: a });
  const parts = [text(r, c.prompt ?? 'instruction', 'instruction', false), text(r, c.query ?? 'input', 'input', true)];
  messages.push({ role: 'user', content: parts.filter((p) => p).join('\n') });
  messages.push({ role: 'assistant', content: text(r, c.response ?? 'output', 'response', false)! });
  return { messages };
}

/**
 * sharegpt (`conversations: [{from, value}]`): speakers mapped to roles by the tags; a leading system turn or a
 * system field becomes the system message; function calls are assistant turns and observations tool turns.
 */
export function sharegptConversation(r: Record_, c: SharegptColumns = {}, t: SharegptTags = {}): Conversation {
  const field = c.messages ?? 'conversations';
  const turns = r[field];
  if (!Array.isArray(turns)) throw new DataError(`record ${r.id}: conversation field '${field}' is ${turns === undefined ? 'missing' : 'not a list'} (${recordFields(r)})`);
  const roleTag = t.role_tag ?? 'from';
  const contentTag = t.content_tag ?? 'value';
  const roles: Record<string, string> = {
    [t.user_tag ?? 'human']: 'user',
    [t.assistant_tag ?? 'gpt']: 'assistant',
    [t.observation_tag ?? 'observation']: 'tool',
    [t.function_tag ?? 'function_call']: 'assistant',
    [t.system_tag ?? 'system']: 'system',
  };
  const messages: ChatMessage[] = [];
  const system = text(r, c.system ?? 'system', 'system', true);
  if (system) messages.push({ role: 'system', content: system });
  turns.forEach((turn: unknown, i) => {
    const m = (turn ?? {}) as Record<string, unknown>;
    const role = roles[String(m[roleTag])];
    if (typeof m[contentTag] !== 'string' || role === undefined) {
      throw new DataError(`record ${r.id}: ${field}[${i}] must be {${roleTag}: one of ${Object.keys(roles).map((k) => `'${k}'`).join(', ')}, ${contentTag}: string}, got ${JSON.stringify(turn)} (set format.tags to map other names)`);
    }
    if (role === 'system' && messages.length > 0) throw new DataError(`record ${r.id}: ${field}[${i}] is a system turn after the conversation started; only the first turn may be one`);
    messages.push({ role, content: m[contentTag] as string });
  });
  return { messages, tools: tools(r, c.tools ?? 'tools') };
}

/** An OpenAI content value: a string, null (an assistant turn that only calls tools) or a list of text parts. */
function openaiContent(v: unknown, where: string): string | null {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return null;
  if (Array.isArray(v) && v.every((p) => p && p.type === 'text' && typeof p.text === 'string')) return v.map((p) => p.text).join('');
  throw new DataError(`${where}: content must be a string, null or a list of {type: 'text', text} parts (images and audio are not read)`);
}

/**
 * OpenAI messages (system, user, assistant with optional tool_calls, tool with tool_call_id): passed to the template
 * as given, so it sees tool_calls, name and the like, except that list content is joined and null content is '';
 * tools from the record's tools field.
 */
export function openaiConversation(r: Record_, c: MessagesColumns = {}): Conversation {
  const field = c.messages ?? 'messages';
  const list = r[field];
  if (!Array.isArray(list)) throw new DataError(`record ${r.id}: messages field '${field}' is ${list === undefined ? 'missing' : 'not a list'} (${recordFields(r)})`);
  const messages = list.map((m: unknown, i): ChatMessage => {
    const where = `record ${r.id}: ${field}[${i}]`;
    const o = (m ?? {}) as Record<string, unknown>;
    if (typeof o.role !== 'string' || !ROLES.has(o.role)) throw new DataError(`${where}: role must be one of system, user, assistant, tool; got ${JSON.stringify(o.role)}`);
    const content = openaiContent(o.content, where);
    if (content === null && !(o.role === 'assistant' && Array.isArray(o.tool_calls))) throw new DataError(`${where}: a ${o.role} turn needs content (only an assistant turn with tool_calls may leave it out)`);
    // A tool-call turn's null content becomes '': real templates (Qwen3's) concatenate it, and fail on None.
    return { ...o, role: o.role, content: content ?? '' };
  });
  return { messages, tools: tools(r, c.tools ?? 'tools') };
}

/** A TRL conversational prompt or completion: a list of {role, content} messages. */
export function messageList(v: unknown, where: string): ChatMessage[] {
  if (!Array.isArray(v)) throw new DataError(`${where} must be a list of {role, content} messages`);
  return v.map((m, i) => {
    const o = (m ?? {}) as Record<string, unknown>;
    if (typeof o.role !== 'string' || typeof o.content !== 'string') throw new DataError(`${where}[${i}] must be {role, content} with strings, got ${JSON.stringify(m)}`);
    return { ...o, role: o.role, content: o.content };
  });
}
