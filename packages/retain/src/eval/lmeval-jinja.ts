// lm-evaluation-harness's Jinja fields (doc_to_text, doc_to_choice, doc_to_target, description) rendered as lm_eval
// renders them. lm_eval uses Python's Jinja with its defaults plus keep_trailing_newline, and reads list and number
// fields back from the rendered text (ast.literal_eval); @huggingface/jinja trims blocks the way transformers' chat
// templates want and drops a final newline, so both are undone here, and values are read through `tojson` instead.
import { Template } from '@huggingface/jinja';
import '../tokenizers/chat.js';

/** Marks the template's end so that a final newline is not the last character (which the renderer would drop). */
const END = '\u{F8FF}';
const cache = new Map<string, Template>();

/** Names a template may use without the doc having them: literals, loop and set variables. */
function localNames(tpl: string): Set<string> {
  const names = new Set(['true', 'false', 'none', 'True', 'False', 'None', 'loop', 'range', 'namespace']);
  for (const m of tpl.matchAll(/\{%-?\s*for\s+([\w\s,]+?)\s+in\b/g)) for (const n of m[1].split(',')) names.add(n.trim());
  for (const m of tpl.matchAll(/\{%-?\s*set\s+(\w+)/g)) names.add(m[1]);
  return names;
}

/**
 * lm_eval renders with StrictUndefined: a field the doc lacks is an error, not an empty string. The first name of
 * each expression is checked here (where the renderer would print nothing).
 */
function checkNames(tpl: string, doc: Record<string, unknown>, where: string): void {
  const local = localNames(tpl);
  for (const m of tpl.matchAll(/\{\{-?\s*([A-Za-z_]\w*)/g)) {
    if (!(m[1] in doc) && !local.has(m[1])) throw new Error(`${where}: the template uses '${m[1]}', which the record does not have (record has: ${Object.keys(doc).join(', ')})`);
  }
}

/** Python Jinja's default whitespace: no newline removed after a block tag, no indentation removed before one. */
function pythonWhitespace(tpl: string): string {
  return tpl.replace(/([^-])%\}\n/g, '$1%}\n\n').replace(/(^|\n)([ \t]+)\{%(?!-)/g, "$1$2{{ '' }}{%");
}

function compile(source: string, where: string): Template {
  let t = cache.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new Error(`${where}: not a valid Jinja template (${(e as Error).message})`);
    }
    cache.set(source, t);
  }
  return t;
}

/** A template rendered to text with the doc's fields, as lm_eval's utils.apply_template. */
export function renderText(tpl: string, doc: Record<string, unknown>, where: string): string {
  checkNames(tpl, doc, where);
  let out: string;
  try {
    out = compile(pythonWhitespace(tpl) + END, where).render(doc);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  return out.endsWith(END) ? out.slice(0, -END.length) : out;
}

/** `{{ expr }}` alone, nothing around it (text around it, even a space, makes the value text): its expression, else null. */
function soleExpression(tpl: string): string | null {
  const m = /^\{\{-?([\s\S]*?)-?\}\}$/.exec(tpl);
  return m && !m[1].includes('{{') && !m[1].includes('}}') ? m[1] : null;
}

/**
 * A template's value: what lm_eval gets by rendering it and reading the text back as a Python literal (a list of
 * choices, a gold index). A lone `{{ expr }}` is evaluated to its value directly; other templates are read as JSON,
 * else kept as text.
 */
export function renderValue(tpl: string, doc: Record<string, unknown>, where: string): unknown {
  const expr = soleExpression(tpl);
  if (expr === null) {
    const text = renderText(tpl, doc, where);
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  checkNames(tpl, doc, where);
  let json: string;
  try {
    json = compile(`{{ (${expr}) | tojson }}`, where).render(doc);
  } catch (e) {
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  return JSON.parse(json);
}
