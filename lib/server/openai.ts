// The OpenAI request fields, checked and mapped to Tessera's generate() options, and the response
// objects (completions, chat completions, their stream chunks, logprobs, usage). Unknown fields
// are ignored, as OpenAI does; a known field of the wrong type or range is a 400 naming it.
import type { GenerateChunk, GenerateOptions, FinishReason } from '../model';
import { badRequest } from './http';

type Body = Record<string, unknown>;

export interface ParsedCommon {
  model: string | undefined;
  stream: boolean;
  includeUsage: boolean;
  n: number;
  /** Top alternatives per token (0: only the chosen token's), or null when logprobs are off. */
  logprobs: number | null;
  /** Options for every choice; choice i adds i to the seed. */
  options: GenerateOptions;
}

const present = (b: Body, k: string) => b[k] !== undefined && b[k] !== null;

function num(b: Body, k: string, min: number, max: number, opts: { integer?: boolean; minOpen?: boolean } = {}): number | undefined {
  if (!present(b, k)) return undefined;
  const v = b[k];
  const what = opts.integer ? 'an integer' : 'a number';
  if (typeof v !== 'number' || !Number.isFinite(v) || (opts.integer && !Number.isInteger(v))) {
    throw badRequest(`${k} must be ${what}, got ${JSON.stringify(v)}`, k, 'invalid_type');
  }
  if (v < min || v > max || (opts.minOpen && v === min)) {
    throw badRequest(`${k} must be ${what} in ${opts.minOpen ? '(' : '['}${min}, ${max}], got ${v}`, k, 'invalid_value');
  }
  return v;
}

function bool(b: Body, k: string): boolean | undefined {
  if (!present(b, k)) return undefined;
  if (typeof b[k] !== 'boolean') throw badRequest(`${k} must be a boolean, got ${JSON.stringify(b[k])}`, k, 'invalid_type');
  return b[k] as boolean;
}

export interface Limits {
  maxN: number;
  vocabSize: number;
  contextSize: number;
}

/** The fields both endpoints share. `chat` selects chat's logprobs fields and max_completion_tokens. */
export function parseCommon(body: unknown, chat: boolean, limits: Limits): ParsedCommon {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  const b = body as Body;
  let model: string | undefined;
  if (present(b, 'model')) {
    if (typeof b.model !== 'string') throw badRequest(`model must be a string, got ${JSON.stringify(b.model)}`, 'model', 'invalid_type');
    model = b.model;
  }
  const stream = bool(b, 'stream') ?? false;
  let includeUsage = false;
  if (present(b, 'stream_options')) {
    const so = b.stream_options;
    if (typeof so !== 'object' || so === null || Array.isArray(so)) throw badRequest('stream_options must be an object', 'stream_options', 'invalid_type');
    includeUsage = bool(so as Body, 'include_usage') ?? false;
  }
  const n = num(b, 'n', 1, limits.maxN, { integer: true }) ?? 1;

  const maxKey = chat && present(b, 'max_completion_tokens') ? 'max_completion_tokens' : 'max_tokens';
  // OpenAI's defaults: 16 for completions, up to the context for chat.
  const maxTokens = num(b, maxKey, 1, 1 << 24, { integer: true }) ?? (chat ? limits.contextSize : 16);

  let stop: string[] | undefined;
  if (present(b, 'stop')) {
    const s = b.stop;
    const list = typeof s === 'string' ? [s] : s;
    if (!Array.isArray(list) || list.length > 16 || !list.every((x) => typeof x === 'string' && x.length > 0)) {
      throw badRequest('stop must be a non-empty string or an array of up to 16 non-empty strings', 'stop', 'invalid_type');
    }
    stop = list as string[];
  }

  let logitBias: Map<number, number> | undefined;
  if (present(b, 'logit_bias')) {
    const lb = b.logit_bias;
    if (typeof lb !== 'object' || lb === null || Array.isArray(lb)) throw badRequest('logit_bias must be an object of token id to bias', 'logit_bias', 'invalid_type');
    logitBias = new Map();
    for (const [k, v] of Object.entries(lb)) {
      const id = /^\d+$/.test(k) ? Number(k) : NaN;
      if (!(id < limits.vocabSize)) throw badRequest(`logit_bias key ${JSON.stringify(k)} is not a token id of this model (vocabulary of ${limits.vocabSize})`, 'logit_bias', 'invalid_value');
      if (typeof v !== 'number' || !(v >= -100 && v <= 100)) throw badRequest(`logit_bias[${k}] must be a number in [-100, 100]`, 'logit_bias', 'invalid_value');
      logitBias.set(id, v);
    }
  }

  let logprobs: number | null = null;
  if (chat) {
    const on = bool(b, 'logprobs') ?? false;
    const top = num(b, 'top_logprobs', 0, 20, { integer: true });
    if (top !== undefined && !on) throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs', 'invalid_value');
    if (on) logprobs = top ?? 0;
  } else {
    const lp = num(b, 'logprobs', 0, 20, { integer: true });
    if (lp !== undefined) logprobs = lp;
  }

  if (present(b, 'echo') && b.echo !== false) throw badRequest('echo is not supported', 'echo', 'unsupported_value');
  if (present(b, 'best_of') && b.best_of !== 1) throw badRequest('best_of other than 1 is not supported', 'best_of', 'unsupported_value');
  if (present(b, 'suffix') && b.suffix !== '') throw badRequest('suffix is not supported', 'suffix', 'unsupported_value');
  if (Array.isArray(b.tools) && b.tools.length > 0) throw badRequest('tools (function calling) are not supported yet', 'tools', 'unsupported_value');
  if (present(b, 'response_format')) {
    const rf = b.response_format as Body;
    if (typeof rf !== 'object' || rf.type !== 'text') throw badRequest('response_format other than { type: "text" } is not supported yet', 'response_format', 'unsupported_value');
  }

  const options: GenerateOptions = {
    maxTokens,
    temperature: num(b, 'temperature', 0, 2) ?? 1,
    topP: num(b, 'top_p', 0, 1, { minOpen: true }),
    topK: num(b, 'top_k', 0, limits.vocabSize, { integer: true }), // llama-server's extensions: top_k, min_p, repeat_penalty
    minP: num(b, 'min_p', 0, 1),
    repeatPenalty: num(b, 'repeat_penalty', 0, 10, { minOpen: true }),
    presencePenalty: num(b, 'presence_penalty', -2, 2),
    frequencyPenalty: num(b, 'frequency_penalty', -2, 2),
    seed: num(b, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, { integer: true }),
    stop,
    logitBias,
    logprobs: logprobs === null ? false : logprobs > 0 ? logprobs : true,
  };
  for (const k of Object.keys(options) as (keyof GenerateOptions)[]) if (options[k] === undefined) delete options[k];
  return { model, stream, includeUsage, n, logprobs, options };
}

/** The completions prompt: a string, strings, token ids, or arrays of token ids. */
export function parsePrompts(body: Body, vocabSize: number): (string | number[])[] {
  const p = body.prompt;
  const isIds = (x: unknown): x is number[] => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t));
  let list: (string | number[])[];
  if (typeof p === 'string') list = [p];
  else if (isIds(p)) list = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || isIds(x))) list = p as (string | number[])[];
  else throw badRequest('prompt must be a string, an array of strings, an array of token ids, or an array of those', 'prompt', present(body, 'prompt') ? 'invalid_type' : 'missing');
  for (const x of list) {
    if (typeof x === 'string' && x === '') throw badRequest('prompt must not be empty', 'prompt', 'invalid_value');
    if (typeof x !== 'string') for (const t of x) if (t < 0 || t >= vocabSize) throw badRequest(`prompt token ${t} is not a token id of this model (vocabulary of ${vocabSize})`, 'prompt', 'invalid_value');
  }
  return list;
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

/** Chat messages with string content (text parts joined); developer becomes system. */
export function parseMessages(body: Body): { role: string; content: string }[] {
  const m = body.messages;
  if (!Array.isArray(m) || m.length === 0) throw badRequest('messages must be a non-empty array', 'messages', present(body, 'messages') ? 'invalid_type' : 'missing');
  return m.map((x, i) => {
    const param = `messages[${i}]`;
    if (typeof x !== 'object' || x === null || Array.isArray(x)) throw badRequest(`${param} must be an object with role and content`, param, 'invalid_type');
    const { role, content } = x as Body;
    if (typeof role !== 'string' || !ROLES.has(role)) throw badRequest(`${param}.role must be one of ${[...ROLES].join(', ')}`, `${param}.role`, 'invalid_value');
    let text: string;
    if (typeof content === 'string') text = content;
    else if ((content === null || content === undefined) && role === 'assistant') text = '';
    else if (Array.isArray(content)) {
      text = content
        .map((part, j) => {
          const pp = part as Body;
          if (typeof pp !== 'object' || pp === null || pp.type !== 'text' || typeof pp.text !== 'string') {
            throw badRequest(`${param}.content[${j}] must be a text part ({ type: "text", text }); other parts are not supported`, `${param}.content`, 'invalid_type');
          }
          return pp.text;
        })
        .join('');
    } else throw badRequest(`${param}.content must be a string or an array of text parts`, `${param}.content`, 'invalid_type');
    const out: Record<string, unknown> = { ...(x as Body), role: role === 'developer' ? 'system' : role, content: text };
    return out as { role: string; content: string };
  });
}

/** OpenAI's finish_reason: a generation that reached the context end stopped for length. */
export const finishReason = (f: FinishReason): 'stop' | 'length' => (f === 'length' || f === 'context' ? 'length' : 'stop');

export interface TokenText {
  piece(id: number): string;
}

const bytes = (s: string) => Array.from(Buffer.from(s, 'utf8'));

/** Chat's logprobs entries for generated chunks (the caller leaves out end-of-generation tokens). */
export function chatLogprobs(chunks: GenerateChunk[], t: TokenText): { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number; bytes: number[] }[] }[] {
  return chunks
    .filter((c) => c.logprob !== undefined)
    .map((c) => {
      const token = t.piece(c.token);
      return {
        token,
        logprob: c.logprob as number,
        bytes: bytes(token),
        top_logprobs: (c.top ?? []).map((a) => {
          const s = t.piece(a.token);
          return { token: s, logprob: a.logprob, bytes: bytes(s) };
        }),
      };
    });
}

/** The legacy completions logprobs object. `offset` is the text length before these chunks. */
export function completionLogprobs(chunks: GenerateChunk[], t: TokenText, offset: number) {
  const out = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Record<string, number>[], text_offset: [] as number[] };
  let at = offset;
  for (const c of chunks) {
    if (c.logprob === undefined) continue;
    const s = t.piece(c.token);
    out.tokens.push(s);
    out.token_logprobs.push(c.logprob);
    const top: Record<string, number> = {};
    for (const a of c.top ?? []) top[t.piece(a.token)] = a.logprob;
    out.top_logprobs.push(top);
    out.text_offset.push(at);
    at += c.text.length;
  }
  return out;
}

export function usage(promptTokens: number, completionTokens: number) {
  // No prefix cache yet: cached_tokens is always 0.
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens, prompt_tokens_details: { cached_tokens: 0 } };
}
