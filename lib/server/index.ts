// An OpenAI-compatible HTTP server over one Model: /v1/completions and /v1/chat/completions
// (streaming as server-sent events or not), /v1/models, /health and /metrics (Prometheus text).
// Built on node:http rather than a framework: no dependency for library users, Node's own HTTP
// parser and its header/request timeouts (slow clients), and direct access to the response for
// server-sent events and to the connection's close (a client that leaves aborts its request).
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { chatPromptTokens, ChatTemplateError, NoChatTemplateError } from '../chat';
import { DisposedError, OutOfPagesError } from '../errors';
import type { Completion, GenerateChunk, GenerateOptions, Generation, Model } from '../model';
import { badRequest, EventStream, HttpError, readJson, sendError, sendJson } from './http';
import { Metrics } from './metrics';
import { chatLogprobs, completionLogprobs, finishReason, parseCommon, parseMessages, parsePrompts, usage, type ParsedCommon } from './openai';

export interface ServerOptions {
  /** When set, every /v1 route needs `Authorization: Bearer <apiKey>` (compared in constant time). */
  apiKey?: string;
  /** Most generations held at once (running or waiting for the engine); more are answered 429. Default 256. */
  maxQueue?: number;
  /** Largest request body in bytes; larger ones are answered 413. Default 2 MiB. */
  maxBodyBytes?: number;
  /** Largest n (choices per prompt). Default 16. */
  maxN?: number;
  /** The model's id in /v1/models and the name requests may use. Default: the file name without .gguf. */
  modelName?: string;
  /** A Jinja chat template to use instead of the model's tokenizer.chat_template. */
  chatTemplate?: string;
  /** A client must send its whole request head within this time (ms), else 408. Default 10000. */
  headersTimeoutMs?: number;
  /** A client must send its whole request (head and body) within this time (ms), else 408. Default 30000. */
  requestTimeoutMs?: number;
  /** Idle keep-alive connections close after this time (ms). Default 5000. */
  keepAliveTimeoutMs?: number;
  /** Seconds a 429 asks the client to wait (Retry-After). Default 1. */
  retryAfterSeconds?: number;
}

/** A running server; see createServer. */
export interface TesseraServer {
  /** @internal the underlying node:http server (kept out of the published types, which need no @types/node) */
  readonly http: http.Server;
  readonly metrics: Metrics;
  /** Starts listening (port 0: any free port); resolves with the address and base URL. */
  listen(port?: number, host?: string): Promise<{ port: number; host: string; url: string }>;
  /**
   * Graceful shutdown: stops accepting connections, lets running requests finish for up to
   * `timeoutMs` (default 10000), then aborts what still runs (streams get an error event,
   * others 503) and closes every connection. Does not dispose the model.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

interface Live {
  controller: AbortController;
  done: Promise<void>;
}

const ALLOWED: Record<string, string> = {
  '/v1/completions': 'POST',
  '/v1/chat/completions': 'POST',
  '/v1/models': 'GET',
  '/health': 'GET',
  '/metrics': 'GET',
};

/** Waits for every job; when one fails, aborts the others and throws its error once all have ended. */
async function allOrAbort<T>(jobs: Promise<T>[], controller: AbortController): Promise<T[]> {
  for (const j of jobs) j.catch(() => controller.abort());
  const settled = await Promise.allSettled(jobs);
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/** decodeURIComponent that leaves a malformed escape as it is (a 404 later, not a 500). */
const safeDecode = (s: string) => {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
};

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Serves `model` over HTTP with the OpenAI API. The model stays the caller's (close() leaves it loaded). */
export function createServer(model: Model, options: ServerOptions = {}): TesseraServer {
  const maxQueue = options.maxQueue ?? 256;
  const maxBody = options.maxBodyBytes ?? 2 << 20;
  const maxN = options.maxN ?? 16;
  const retryAfter = String(options.retryAfterSeconds ?? 1);
  const modelName = options.modelName ?? path.basename(model.info.path).replace(/\.gguf$/i, '');
  const keyDigest = options.apiKey !== undefined ? digest(options.apiKey) : null;
  const created = Math.floor(Date.now() / 1000);
  const metrics = new Metrics();
  const live = new Set<Live>();
  let inFlight = 0; // generations admitted (each choice of each request counts)
  let closing = false;

  const server = http.createServer({
    headersTimeout: options.headersTimeoutMs ?? 10_000,
    requestTimeout: options.requestTimeoutMs ?? 30_000,
    // How often Node checks those two timeouts; a quarter of the shorter one, at most 30 s.
    connectionsCheckingInterval: Math.max(50, Math.min(30_000, Math.floor(Math.min(options.headersTimeoutMs ?? 10_000, options.requestTimeoutMs ?? 30_000) / 4))),
  });
  server.keepAliveTimeout = options.keepAliveTimeoutMs ?? 5_000;

  const authorized = (req: http.IncomingMessage): boolean => {
    if (!keyDigest) return true;
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h.trim());
    // Equal-length digests: the comparison takes the same time whatever the key sent.
    return timingSafeEqual(digest(m ? m[1] : ''), keyDigest) && m !== null;
  };

  const piece = { piece: (id: number) => model.tokenizer.tokenToPiece(id) };
  const counted = (c: GenerateChunk) => c.token >= 0 && !model.tokenizer.isEog(c.token);

  /** Runs one generation, calling onChunk per chunk, and records its timing metrics. */
  /** Drains a started generation, observing time to first token and per-token latency. */
  async function drain(g: Generation, t0: number, onChunk?: (c: GenerateChunk) => void): Promise<Completion> {
    let last = 0;
    for await (const c of g) {
      const now = performance.now();
      if (c.token >= 0) {
        if (last === 0) metrics.ttft.observe((now - t0) / 1000);
        else metrics.perToken.observe((now - last) / 1000);
        last = now;
      }
      onChunk?.(c);
    }
    const r = await g.result;
    metrics.promptTokens.inc({}, r.promptTokens);
    metrics.generatedTokens.inc({}, r.tokens.length);
    return r;
  }

  /** Tokens of a chat prompt: the template's special tokens parsed, one BOS at most. */
  function chatPromptIds(body: Record<string, unknown>): number[] {
    let text: string;
    try {
      text = model.applyChatTemplate(parseMessages(body), options.chatTemplate !== undefined ? { template: options.chatTemplate } : {});
    } catch (e) {
      if (e instanceof NoChatTemplateError) throw new HttpError(400, e.message, 'invalid_request_error', 'messages', 'no_chat_template');
      if (e instanceof ChatTemplateError) throw badRequest(e.message, 'messages', 'chat_template_error');
      throw e;
    }
    return chatPromptTokens(model, text);
  }

  /** Tokenizes and checks the prompts against the context before anything starts (a 400, not a broken stream). */
  function promptIds(prompts: (string | number[])[]): number[][] {
    const ctx = model.info.contextSize;
    return prompts.map((p) => {
      const ids = typeof p === 'string' ? model.tokenize(p) : p;
      if (ids.length > ctx) throw badRequest(`the prompt has ${ids.length} tokens, more than the model's context of ${ctx}`, 'prompt', 'context_length_exceeded');
      if (ids.length === 0) throw badRequest('the prompt has no tokens', 'prompt', 'invalid_value');
      return ids;
    });
  }

  async function generationRoute(req: http.IncomingMessage, res: http.ServerResponse, chat: boolean, t0: number): Promise<void> {
    const body = (await readJson(req, maxBody)) as Record<string, unknown>;
    const p: ParsedCommon = parseCommon(body, chat, { maxN, vocabSize: model.info.vocabSize, contextSize: model.info.contextSize });
    if (p.model !== undefined && p.model !== modelName) {
      throw new HttpError(404, `the model ${JSON.stringify(p.model)} does not exist; this server has ${JSON.stringify(modelName)}`, 'invalid_request_error', 'model', 'model_not_found');
    }
    const prompts = chat ? [chatPromptIds(body)] : promptIds(parsePrompts(body, model.info.vocabSize));
    if (chat && prompts[0].length > model.info.contextSize) {
      throw badRequest(`the messages make ${prompts[0].length} tokens, more than the model's context of ${model.info.contextSize}`, 'messages', 'context_length_exceeded');
    }
    const count = prompts.length * p.n;
    if (count > maxQueue) throw badRequest(`this request asks for ${count} generations, more than the server holds at once (${maxQueue})`, 'n', 'invalid_value');
    if (inFlight + count > maxQueue) {
      throw new HttpError(429, `the server is busy (${inFlight} generations in flight, limit ${maxQueue}); retry after ${retryAfter} s`, 'rate_limit_exceeded', null, 'queue_full', { 'retry-after': retryAfter });
    }

    const controller = new AbortController();
    let finished!: () => void;
    const entry: Live = { controller, done: new Promise<void>((r) => (finished = r)) };
    live.add(entry);
    inFlight += count;
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(); // the client left: free its pages now
    });
    try {
      await (p.stream ? streamResponse(res, chat, p, prompts, controller, t0) : wholeResponse(res, chat, p, prompts, controller, t0));
    } finally {
      inFlight -= count;
      live.delete(entry);
      finished();
    }
  }

  const choiceOptions = (p: ParsedCommon, i: number, signal: AbortSignal): GenerateOptions => ({
    ...p.options,
    ...(p.options.seed !== undefined ? { seed: (p.options.seed + i) % 2 ** 53 } : {}), // choice i: seed + i, kept a safe integer
    signal,
  });

  /**
   * Starts every choice (prompts x n) before anything is sent, so a request the engine refuses
   * (a bad option, an unloaded model) gets its error status whether it streams or not.
   */
  function startAll(p: ParsedCommon, prompts: number[][], signal: AbortSignal): Generation[] {
    const gens: Generation[] = [];
    try {
      for (const ids of prompts) for (let i = 0; i < p.n; i++) gens.push(model.generate(ids, choiceOptions(p, i, signal)));
    } catch (e) {
      for (const g of gens) void g[Symbol.asyncIterator]().return?.();
      throw e;
    }
    return gens;
  }

  async function wholeResponse(res: http.ServerResponse, chat: boolean, p: ParsedCommon, prompts: number[][], controller: AbortController, t0: number): Promise<void> {
    const jobs = startAll(p, prompts, controller.signal).map((g) => {
      const chunks: GenerateChunk[] = [];
      return drain(g, t0, p.logprobs !== null ? (c) => chunks.push(c) : undefined).then((r) => ({ r, chunks: chunks.filter(counted) }));
    });
    const results = await allOrAbort(jobs, controller);
    if (controller.signal.aborted) {
      if (!res.destroyed) throw new HttpError(503, 'the server is shutting down; the request was stopped', 'server_error', null, 'shutting_down');
      return;
    }
    const promptTokens = prompts.reduce((s, ids) => s + ids.length, 0);
    const completionTokens = results.reduce((s, x) => s + x.r.tokens.length, 0);
    const common = { id: `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`, object: chat ? 'chat.completion' : 'text_completion', created: Math.floor(Date.now() / 1000), model: modelName };
    const choices = results.map(({ r, chunks }, index) =>
      chat
        ? {
            index,
            message: { role: 'assistant', content: r.text, refusal: null },
            logprobs: p.logprobs !== null ? { content: chatLogprobs(chunks, piece), refusal: null } : null,
            finish_reason: finishReason(r.finishReason),
          }
        : { index, text: r.text, logprobs: p.logprobs !== null ? completionLogprobs(chunks, piece, 0) : null, finish_reason: finishReason(r.finishReason) },
    );
    sendJson(res, 200, { ...common, choices, usage: usage(promptTokens, completionTokens) });
  }

  async function streamResponse(res: http.ServerResponse, chat: boolean, p: ParsedCommon, prompts: number[][], controller: AbortController, t0: number): Promise<void> {
    const es = new EventStream(res);
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const object = chat ? 'chat.completion.chunk' : 'text_completion';
    const frame = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ id, object, created, model: modelName, choices, ...extra });
    let promptTokens = 0;
    let completionTokens = 0;
    const gens = startAll(p, prompts, controller.signal);
    const jobs = gens.map(async (g, index) => {
        const i = index % p.n;
        let offset = 0;
        if (chat) es.send(frame([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]));
        const r = await drain(g, t0, (c) => {
          const lp = p.logprobs !== null && counted(c) ? [c] : null;
          if (c.text === '' && !lp) return;
          const logprobs = lp ? (chat ? { content: chatLogprobs(lp, piece), refusal: null } : completionLogprobs(lp, piece, offset)) : null;
          offset += c.text.length;
          es.send(frame([chat ? { index, delta: { content: c.text }, logprobs, finish_reason: null } : { index, text: c.text, logprobs, finish_reason: null }]));
        });
        promptTokens += i === 0 ? r.promptTokens : 0;
        completionTokens += r.tokens.length;
        if (r.finishReason === 'abort') return;
        const fr = finishReason(r.finishReason);
        es.send(frame([chat ? { index, delta: {}, logprobs: null, finish_reason: fr } : { index, text: '', logprobs: null, finish_reason: fr }]));
    });
    try {
      await allOrAbort(jobs, controller);
    } catch (e) {
      if (!es.started) throw e; // nothing sent yet: an ordinary error response
      es.send(errorOf(e).body());
      es.end();
      return;
    }
    if (controller.signal.aborted) {
      if (res.destroyed) return;
      if (!es.started) throw new HttpError(503, 'the server is shutting down; the request was stopped', 'server_error', null, 'shutting_down');
      es.send(new HttpError(503, 'the server is shutting down; the stream was stopped', 'server_error', null, 'shutting_down').body());
      es.end();
      return;
    }
    if (p.includeUsage) es.send(frame([], { usage: usage(promptTokens, completionTokens) }));
    es.send('[DONE]');
    es.end();
  }

  /** Maps anything thrown while serving to an HTTP error; a 500 only for what is not the client's doing. */
  function errorOf(e: unknown): HttpError {
    if (e instanceof HttpError) return e;
    if (e instanceof DisposedError) return new HttpError(503, 'the model was unloaded (the server is shutting down)', 'server_error', null, 'shutting_down');
    if (e instanceof OutOfPagesError) return badRequest(e.message, 'prompt', 'context_length_exceeded');
    if (e instanceof TypeError || e instanceof RangeError) return badRequest((e as Error).message); // an engine option check the parser let through
    return new HttpError(500, `internal error: ${(e as Error)?.message ?? String(e)}`, 'server_error');
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const url = new URL(req.url ?? '/', 'http://localhost');
    let route = url.pathname.replace(/\/+$/, '') || '/';
    const modelRoute = route.startsWith('/v1/models/') ? safeDecode(route.slice('/v1/models/'.length)) : null;
    if (modelRoute !== null) route = '/v1/models/:id';
    const allowed = modelRoute !== null ? 'GET' : ALLOWED[route];
    const label = allowed ? route : 'unknown';
    res.on('finish', () => {
      metrics.requests.inc({ route: label, status: String(res.statusCode) });
      if (label.endsWith('completions')) metrics.duration.observe((performance.now() - t0) / 1000);
    });
    try {
      if (closing) {
        res.setHeader('connection', 'close');
        throw new HttpError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
      }
      if (route.startsWith('/v1') && !authorized(req)) {
        throw new HttpError(401, 'missing or wrong API key: send Authorization: Bearer <key>', 'invalid_request_error', null, 'invalid_api_key', { 'www-authenticate': 'Bearer' });
      }
      if (!allowed) throw new HttpError(404, `no route ${req.method} ${url.pathname}`, 'invalid_request_error', null, 'not_found');
      if (req.method !== allowed) throw new HttpError(405, `${url.pathname} takes ${allowed}, not ${req.method}`, 'invalid_request_error', null, 'method_not_allowed', { allow: allowed });
      const modelObject = { id: modelName, object: 'model', created, owned_by: 'tessera' };
      switch (route) {
        case '/health': {
          const s = model.stats();
          return sendJson(res, 200, { status: 'ok', running: s.running, waiting: s.waiting, in_flight: inFlight });
        }
        case '/metrics': {
          const text = metrics.render({ inFlight, ...model.stats() }); // before the head: stats() throws once the model is disposed
          res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
          res.end(text);
          return;
        }
        case '/v1/models':
          return sendJson(res, 200, { object: 'list', data: [modelObject] });
        case '/v1/models/:id':
          if (modelRoute !== modelName) throw new HttpError(404, `the model ${JSON.stringify(modelRoute)} does not exist`, 'invalid_request_error', 'model', 'model_not_found');
          return sendJson(res, 200, modelObject);
        case '/v1/completions':
          return await generationRoute(req, res, false, t0);
        case '/v1/chat/completions':
          return await generationRoute(req, res, true, t0);
      }
    } catch (e) {
      const err = errorOf(e);
      if ((err.status === 413 || err.status === 503) && !res.headersSent) res.setHeader('connection', 'close');
      if (!res.destroyed) sendError(res, err);
    }
  }

  // handle() answers its own errors; anything that still escapes closes that connection, never the process.
  server.on('request', (req, res) => void handle(req, res).catch(() => res.destroy()));

  return {
    http: server,
    metrics,
    listen(port = 8080, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const a = server.address() as AddressInfo;
          const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
          resolve({ port: a.port, host: a.address, url: `http://${h}:${a.port}` });
        });
      });
    },
    async close({ timeoutMs = 10_000 } = {}) {
      closing = true;
      const stopped = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)));
      await Promise.race([Promise.all([...live].map((l) => l.done)), deadline]);
      clearTimeout(timer);
      for (const l of live) l.controller.abort(); // past the deadline: stop at the next step
      await Promise.all([...live].map((l) => l.done));
      server.closeAllConnections();
      await stopped;
    },
  };
}
