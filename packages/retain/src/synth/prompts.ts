// The prompts synthesis builds: the open user turn of a chat template (Magpie), few-shot prompts from demonstrations
// and their parsing back into fields, and the 1-5 judging prompt with its answer parser.
import type { ChatTemplate } from '../tokenizers/types.js';
import { compileChatTemplate } from '../tokenizers/chat.js';

// A marker no template writes: the template is rendered with it as the message and cut where it appears.
const MARK = '\u0000RETAIN_SYNTH_MARK\u0000';

export interface TurnOpening {
  /** The rendered text up to where the message's content starts. */
  prefix: string;
  /** What the template writes right after the content (end-of-turn marker), for stopping generation. */
  suffix: string;
}

function cut(rendered: string, what: string): TurnOpening {
  const at = rendered.indexOf(MARK);
  if (at < 0) throw new Error(`synth: the chat template does not write the ${what}'s content, so there is no place to cut it`);
  return { prefix: rendered.slice(0, at), suffix: rendered.slice(at + MARK.length) };
}

/** The opening of a user turn in the model's own template (Magpie: the model then writes an instruction). */
export function userTurnOpening(tpl: ChatTemplate, system?: string): TurnOpening {
  const msgs = system ? [{ role: 'system', content: system }] : [];
  return cut(tpl([...msgs, { role: 'user', content: MARK }], false), 'user message');
}

/** Where an assistant answer ends in the template, found by rendering an answered turn. */
export function assistantTurnEnd(tpl: ChatTemplate, instruction: string): string {
  return cut(tpl([{ role: 'user', content: instruction }, { role: 'assistant', content: MARK }], false), 'assistant message').suffix;
}

/** A chat template from Jinja source (a `--chat-template` file), rendered as tokenizers render theirs. */
export function jinjaChatTemplate(source: string, tokens: { bos?: string; eos?: string } = {}): ChatTemplate {
  return compileChatTemplate(source, { bos_token: tokens.bos ?? '', eos_token: tokens.eos ?? '' });
}

/**
 * The text at which generation of one part stops: the template's suffix up to its first line break (or the whole
 * suffix when it is only whitespace, e.g. a template that ends a turn with "\n").
 */
export function stopText(suffix: string): string | null {
  if (suffix.length === 0) return null;
  const firstLine = suffix.split('\n').find((l) => l.trim().length > 0);
  if (firstLine === undefined) return suffix;
  const lead = suffix.slice(0, suffix.indexOf(firstLine));
  return lead.length ? lead : firstLine.trim();
}

// ---- few-shot self-synthesis ---------------------------------------------------------------------------------------

export type Demo = Record<string, string>;

/** The string fields of the demonstrations (all of them must have each), in the first demonstration's order. */
export function demoFields(demos: Record<string, unknown>[]): string[] {
  if (demos.length === 0) throw new Error('synth: fewshot needs at least one demonstration');
  const fields = Object.keys(demos[0]).filter((k) => k !== 'id' && k !== 'synth' && typeof demos[0][k] === 'string');
  if (fields.length === 0) throw new Error('synth: the demonstrations have no string fields');
  demos.forEach((d, i) => {
    for (const f of fields) if (typeof d[f] !== 'string') throw new Error(`synth: demonstration ${i + 1} lacks the string field '${f}' that the first one has`);
  });
  return fields;
}

// Blank lines separate examples in the prompt; a blank line inside a value would read as the end of the example.
function flat(v: string): string {
  return v.replace(/\r\n/g, '\n').replace(/\n\s*\n+/g, '\n').trim();
}

/**
 * k demonstrations, then the start of a new one. One field: the values separated by blank lines (a text model just
 * continues with another document). Several: `field: value` lines per example, and the new example opened with the
 * first field's label.
 */
export function fewshotPrompt(demos: Demo[], fields: string[]): string {
  if (fields.length === 1) return demos.map((d) => flat(d[fields[0]])).join('\n\n') + '\n\n';
  const block = (d: Demo) => fields.map((f) => `${f}: ${flat(d[f])}`).join('\n');
  return demos.map(block).join('\n\n') + `\n\n${fields[0]}:`;
}

/** A generated example (the text after the prompt, up to the blank line) back into fields; null when a field is missing or empty. */
export function parseFewshot(generated: string, fields: string[]): Demo | null {
  const text = generated.split(/\n\s*\n/)[0];
  if (fields.length === 1) {
    const v = text.trim();
    return v ? { [fields[0]]: v } : null;
  }
  const out: Demo = {};
  let rest = text;
  for (let i = 0; i < fields.length; i++) {
    const next = fields[i + 1];
    let value: string;
    if (next === undefined) value = rest;
    else {
      const at = rest.indexOf(`\n${next}:`);
      if (at < 0) return null;
      value = rest.slice(0, at);
      rest = rest.slice(at + next.length + 2);
    }
    value = value.trim();
    if (!value) return null;
    out[fields[i]] = value;
  }
  return out;
}

// ---- judging ---------------------------------------------------------------------------------------------------------

export function judgePrompt(instruction: string, answer: string): string {
  return (
    'Rate how well the response answers the instruction, on a scale from 1 (useless or wrong) to 5 (correct, complete and clear). ' +
    'Reply with a single digit.\n\n' +
    `Instruction: ${instruction}\n\nResponse: ${answer}\n\nRating (1-5):`
  );
}

/** The first digit 1-5 standing on its own in a judge's reply; NaN when there is none. */
export function parseJudgeScore(reply: string): number {
  const m = /(?<![\d.])([1-5])(?![\d.]\d|\d)/.exec(reply);
  return m ? Number(m[1]) : NaN;
}
