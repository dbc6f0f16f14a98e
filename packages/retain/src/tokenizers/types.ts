// What the rest of retain needs from a tokenizer and a chat template, whatever the tokenizer's format (llama2.c,
// Hugging Face tokenizer.json, the char-LSTM's vocabulary): data, models and training depend on these shapes only, so
// a new tokenizer format is one file here.

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  encode(text: string, opts?: { bos?: boolean; eos?: boolean }): number[];
  decode(ids: number[]): string;
  /** The text of one token as it appears inside a sequence (no special handling of leading spaces). */
  piece(id: number): string;
}

/** One turn; templates may also read tool_calls, reasoning_content and the like, passed through as given. */
export interface ChatMessage {
  role: string;
  content: string;
  [field: string]: unknown;
}

/** What apply_chat_template passes besides the messages: tools (JSON schemas), documents, template switches. */
export interface ChatOptions {
  tools?: unknown[] | null;
  documents?: unknown[] | null;
  /** Further template variables, e.g. Qwen3's enable_thinking. */
  vars?: Record<string, unknown>;
}

/** Renders a conversation; `addGenerationPrompt` appends the opening of an assistant turn. */
export type ChatTemplate = (messages: ChatMessage[], addGenerationPrompt: boolean, opts?: ChatOptions) => string;
