// Chat templates rendered as transformers' apply_chat_template(..., tokenize=False) renders them: the same variables
// (the tokenizer's named special tokens, messages, tools, documents, add_generation_prompt, extra switches) and the
// same aliasing of reasoning fields. @huggingface/jinja itself provides what transformers' Jinja environment adds
// (raise_exception, strftime_now, a tojson that does not escape HTML, trimmed blocks).
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import type { ChatMessage, ChatTemplate } from './types.js';

/** The chat template does not parse (@huggingface/jinja throws a SyntaxError, which would read as a bug of ours). */
export class TemplateError extends Error {}

/** Chat templates by name ('default', 'tool_use', ...), each with the file (and key) it came from, for errors. */
export type TemplateSources = Map<string, { source: string; from: string }>;

/** A token entry of tokenizer_config.json: a string or an AddedToken object ({content, ...}). */
export function tokenText(t: unknown): string | null {
  if (typeof t === 'string') return t;
  if (t && typeof t === 'object' && typeof (t as { content?: unknown }).content === 'string') return (t as { content: string }).content;
  return null;
}

/**
 * The named special tokens a template sees (transformers passes its special_tokens_map): every `*_token` key of
 * tokenizer_config.json holding a token, and the names in extra_special_tokens (Gemma 3's boi_token, ...).
 */
export function templateTokens(config: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  const extra = config.extra_special_tokens;
  const named = { ...config, ...(extra && typeof extra === 'object' && !Array.isArray(extra) ? extra : {}) } as Record<string, unknown>;
  for (const [k, v] of Object.entries(named)) {
    const text = k.endsWith('_token') ? tokenText(v) : null;
    if (text !== null) out[k] = text;
  }
  return out;
}

// Python's str.isspace() set, which strip() without an argument removes (JS trim also takes U+FEFF, not U+001C-1F/85).
const PY_SPACE = new Set(Array.from('\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000'));

/** Python's str.strip / lstrip / rstrip: `chars` is a set of characters (code points), whitespace when absent. */
export function pyStrip(s: string, chars: string | null | undefined, left: boolean, right: boolean): string {
  const set = typeof chars === 'string' ? new Set(Array.from(chars)) : PY_SPACE;
  const cps = Array.from(s);
  let a = 0;
  let b = cps.length;
  while (left && a < b && set.has(cps[a])) a++;
  while (right && b > a && set.has(cps[b - 1])) b--;
  return cps.slice(a, b).join('');
}

// String filters that Python's Jinja applies to an undefined value as to '' (its Undefined prints as nothing).
const STRING_FILTERS = new Set(['trim', 'upper', 'lower', 'title', 'capitalize', 'length', 'string', 'indent', 'replace']);

/**
 * Two places where @huggingface/jinja (0.5.11, and 0.5.13, the newest) renders otherwise than Python's Jinja, both
 * in real templates: a string's strip/lstrip/rstrip ignore their argument and trim all whitespace (Qwen3 writes
 * `content.lstrip('\n')`, so an answer starting with spaces lost them), and a string filter on an undefined value
 * throws (Llama 3.1 writes `message['content'] | trim`, and a tool-call turn has no content). The string type is not
 * exported, so its methods are replaced through a string value's prototype; the filter through Interpreter's.
 */
function fixJinja(): void {
  const env = new Environment();
  env.set('s', '');
  const sample = env.lookupVariable('s') as { value: string; constructor: new (v: string) => unknown };
  const proto = Object.getPrototypeOf(sample);
  const getter = Object.getOwnPropertyDescriptor(proto, 'builtins')?.get;
  const original = getter?.call(sample) as Map<string, unknown> | undefined;
  const Fn = (original?.get('strip') as { constructor?: new (f: (args: { value?: unknown }[]) => unknown) => unknown } | undefined)?.constructor;
  const interp = Interpreter.prototype as unknown as { applyFilter?: (operand: { type: string }, node: FilterNode, env: unknown) => unknown };
  const applyFilter = interp.applyFilter;
  if (!getter || !Fn || !applyFilter) throw new Error('@huggingface/jinja changed: chat.ts must be updated for its string methods and filters');
  const Str = sample.constructor;
  const fixed = new WeakSet<object>();
  Object.defineProperty(proto, 'builtins', {
    configurable: true,
    get(this: { value: string }) {
      const map = getter.call(this) as Map<string, unknown>;
      if (!fixed.has(map)) {
        const self = this;
        for (const [name, left, right] of [['strip', true, true], ['lstrip', true, false], ['rstrip', false, true]] as const) {
          map.set(name, new Fn((args) => new Str(pyStrip(self.value, args[0]?.value as string | null | undefined, left, right))));
        }
        fixed.add(map);
      }
      return map;
    },
  });
  interp.applyFilter = function (operand, node, environment) {
    const name = node.type === 'Identifier' ? node.value : node.callee?.value;
    const asEmpty = operand.type === 'UndefinedValue' && name !== undefined && STRING_FILTERS.has(name);
    return applyFilter.call(this, asEmpty ? (new Str('') as { type: string }) : operand, node, environment);
  };
}
type FilterNode = { type: string; value?: string; callee?: { value?: string } };
fixJinja();

const REASONING = ['reasoning_content', 'thinking', 'reasoning'];

/**
 * What apply_chat_template does to each message before rendering: keys holding None are dropped (an OpenAI-style
 * `content: null` beside tool_calls is then undefined, not "None"), and the reasoning (under any of its names) is
 * copied to `thinking` and `reasoning_content`.
 */
function asTransformersMessage(message: ChatMessage): ChatMessage {
  const m = Object.fromEntries(Object.entries(message).filter(([, v]) => v !== null && v !== undefined)) as ChatMessage;
  const key = REASONING.find((k) => m[k] !== undefined);
  return key === undefined ? m : { thinking: m[key], ...m, reasoning_content: m[key] };
}

/** Compiles Jinja source into a ChatTemplate; `tokens` are the named special tokens (templateTokens). */
export function compileChatTemplate(source: string, tokens: Record<string, string>): ChatTemplate {
  let tpl: Template;
  try {
    tpl = new Template(source);
  } catch (e) {
    throw new TemplateError((e as Error).message);
  }
  return (messages, addGenerationPrompt, opts = {}) =>
    tpl.render({
      ...tokens,
      ...opts.vars,
      messages: messages.map(asTransformersMessage),
      tools: opts.tools ?? null,
      documents: opts.documents ?? null,
      add_generation_prompt: addGenerationPrompt,
    });
}

/**
 * A tokenizer's templates as one ChatTemplate, picked as transformers picks: 'tool_use' when tools are passed and
 * there is one, else 'default'. Null when there is neither. A template that does not parse is named by its origin.
 */
export function namedChatTemplate(sources: TemplateSources, tokens: Record<string, string>): ChatTemplate | null {
  const compiled = new Map<string, ChatTemplate>();
  for (const [name, { source, from }] of sources) {
    try {
      compiled.set(name, compileChatTemplate(source, tokens));
    } catch (e) {
      if (!(e instanceof TemplateError)) throw e;
      throw new Error(`${from} is not a valid Jinja template (${e.message}); fix or remove it`);
    }
  }
  const fallback = compiled.get('default');
  const toolUse = compiled.get('tool_use');
  if (!fallback && !toolUse) return null;
  return (messages, addGenerationPrompt, opts) => {
    const tpl = opts?.tools != null && toolUse ? toolUse : fallback;
    if (!tpl) throw new Error(`this tokenizer's chat templates (${[...sources.keys()].join(', ')}) have no 'default' for a conversation without tools`);
    return tpl(messages, addGenerationPrompt, opts);
  };
}
