// Chat templates: renders a list of chat messages into one prompt string with the model's Jinja
// template (GGUF key tokenizer.chat_template, as Hugging Face's tokenizer_config.json has it) or
// an override, using @huggingface/jinja (the implementation transformers.js uses).
import { Template } from '@huggingface/jinja';
import { describe, typeError } from './errors';

/** One message of a conversation. Content parts other than text are not supported yet. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | 'tool' | (string & {});
  content: string;
  /** Passed to the template as is (some templates read name, tool_calls, reasoning_content...). */
  [key: string]: unknown;
}

export interface ChatTemplateOptions {
  /** A Jinja template to use instead of the model's own. */
  template?: string;
  /** End with the header of an assistant turn, so the model writes the reply (default true). */
  addGenerationPrompt?: boolean;
  /** More variables for the template (e.g. { enable_thinking: false } for Qwen3). */
  variables?: Record<string, unknown>;
}

/** Thrown (code TESSERA_NO_CHAT_TEMPLATE) when a model has no chat template and none was given. */
export class NoChatTemplateError extends Error {
  override name = 'NoChatTemplateError';
  readonly code = 'TESSERA_NO_CHAT_TEMPLATE';
}

/** Thrown (code TESSERA_CHAT_TEMPLATE) when a template does not parse or fails while rendering. */
export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
  readonly code = 'TESSERA_CHAT_TEMPLATE';
}

const compiled = new Map<string, Template>(); // parsed templates by source; a process sees few
const MAX_COMPILED = 16;

function compile(source: string): Template {
  let t = compiled.get(source);
  if (!t) {
    try {
      t = new Template(source);
    } catch (e) {
      throw new ChatTemplateError(`chat template does not parse: ${(e as Error).message}`);
    }
    if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value as string);
    compiled.set(source, t);
  }
  return t;
}

/** Checks the messages' shape; returns copies whose content is a string. */
export function checkMessages(where: string, messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw typeError(where, 'messages', 'a non-empty array of messages', messages);
  return messages.map((m, i) => {
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw typeError(where, `messages[${i}]`, 'an object with role and content', m);
    const { role, content } = m as { role?: unknown; content?: unknown };
    if (typeof role !== 'string' || role === '') throw typeError(where, `messages[${i}].role`, 'a non-empty string', role);
    if (typeof content !== 'string') throw typeError(where, `messages[${i}].content`, 'a string', content);
    return { ...(m as object), role, content } as ChatMessage;
  });
}

/**
 * Renders `messages` with `source`. bosToken/eosToken are the vocabulary's texts of BOS/EOS (''
 * when it has none), as templates expect them in bos_token / eos_token.
 */
export function renderChatTemplate(
  source: string,
  messages: ChatMessage[],
  tokens: { bosToken: string; eosToken: string },
  options: Omit<ChatTemplateOptions, 'template'> = {},
): string {
  const where = 'applyChatTemplate';
  const add = options.addGenerationPrompt ?? true;
  if (typeof add !== 'boolean') throw typeError(where, 'addGenerationPrompt', 'a boolean', add);
  const vars = options.variables ?? {};
  if (typeof vars !== 'object' || vars === null || Array.isArray(vars)) throw typeError(where, 'variables', 'an object', vars);
  const t = compile(source);
  try {
    return t.render({
      ...vars,
      messages,
      add_generation_prompt: add,
      bos_token: tokens.bosToken,
      eos_token: tokens.eosToken,
    });
  } catch (e) {
    throw new ChatTemplateError(`chat template failed: ${(e as Error).message}`);
  }
}

/** Picks the template: the override, else the model's; a clear error when there is neither. */
export function chosenTemplate(modelTemplate: unknown, override: unknown, modelName: string): string {
  if (override !== undefined) {
    if (typeof override !== 'string' || override === '') throw typeError('applyChatTemplate', 'template', 'a non-empty string', override);
    return override;
  }
  if (typeof modelTemplate === 'string' && modelTemplate !== '') return modelTemplate;
  throw new NoChatTemplateError(
    `${modelName} has no chat template (no tokenizer.chat_template in its GGUF): pass one ` +
      `(applyChatTemplate's template option, createServer's chatTemplate, or --chat-template FILE on the command line)` +
      (modelTemplate !== undefined ? `; tokenizer.chat_template is ${describe(modelTemplate)}` : ''),
  );
}

/**
 * The token ids of a rendered chat prompt: control-token text parsed as such, and one BOS at most
 * (templates that write bos_token themselves would otherwise get a second from the vocabulary).
 */
export function chatPromptTokens(model: { tokenize(text: string, o: { special?: boolean }): number[]; tokenizer: { bos: number } }, text: string): number[] {
  const ids = model.tokenize(text, { special: true });
  const bos = model.tokenizer.bos;
  if (bos >= 0 && ids.length > 1 && ids[0] === bos && ids[1] === bos) ids.shift();
  return ids;
}
