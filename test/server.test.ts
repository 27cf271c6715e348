// The OpenAI-compatible server, started for real on 127.0.0.1 (port 0) over the embedded model:
// the official `openai` client gets the same greedy tokens as model.complete (chat and
// completions, streaming and not); bad input of every kind is answered 4xx in OpenAI's error
// shape; a client that leaves mid-stream frees its KV pages; slow clients time out; a full queue
// answers 429; shutdown is graceful; and a randomized concurrent mix loses and mixes up nothing.
// Last, `tessera serve` and `tessera generate --chat` as built (node dist/cli.js; npm run build:ts).
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, loadModel, type Completion, type GenerateOptions, type Model, type TesseraServer } from '../lib';
import { chatPromptTokens } from '../lib/chat';
import { demoModelPath } from '../lib/native';

const CTX = 256;
const KEY = 'sk-tessera-test';
const NAME = 'stories260K-q8_0';
// stories260K has no chat template: a plain one, with a role line per message.
const TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

let model: Model;
let server: TesseraServer;
let base: string;
let client: OpenAI;

beforeAll(async () => {
  model = await loadModel(demoModelPath, { threads: 1, contextSize: CTX, kvPages: 128, pageSize: 16 });
  server = createServer(model, { apiKey: KEY, chatTemplate: TEMPLATE, maxQueue: 64, maxBodyBytes: 1 << 20, headersTimeoutMs: 600, requestTimeoutMs: 1200 });
  base = (await server.listen(0, '127.0.0.1')).url;
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0, timeout: 20_000 });
});
afterAll(async () => {
  await server?.close({ timeoutMs: 1000 });
  await model?.dispose();
});

/** Rejects when `p` has not settled after `ms`: a lost request fails the test instead of hanging it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms: ${what}`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const soloCache = new Map<string, Completion>();
/** The greedy reference: model.complete alone. */
async function solo(prompt: string, opts: GenerateOptions): Promise<Completion> {
  const key = JSON.stringify([prompt, opts]);
  if (!soloCache.has(key)) soloCache.set(key, await model.complete(prompt, { temperature: 0, ...opts }));
  return soloCache.get(key)!;
}
const chatSolo = (messages: { role: string; content: string }[], maxTokens: number) =>
  solo(model.applyChatTemplate(messages, { template: TEMPLATE }), { maxTokens, special: true });

/** A raw request (for what the openai client would not send); resolves with status, headers and parsed body. */
async function raw(method: string, route: string, body?: string | Buffer, headers: Record<string, string> = {}) {
  const res = await fetch(base + route, { method, body, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

async function waitIdle(ms = 5000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const s = model.stats();
    if (s.running === 0 && s.waiting === 0 && s.kvPagesInUse === 0) return;
    if (Date.now() - t0 > ms) throw new Error(`model not idle after ${ms} ms: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('openai client', () => {
  it('lists the model', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([NAME]);
    expect((await client.models.retrieve(NAME)).id).toBe(NAME);
  });

  it('completions, not streamed, match model.complete (greedy)', async () => {
    const ref = await solo('Once upon a time', { maxTokens: 40 });
    const r = await client.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 40, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0].text).toBe(ref.text);
    expect(r.choices[0].finish_reason).toBe(ref.finishReason === 'stop' ? 'stop' : 'length');
    expect(r.usage).toMatchObject({ prompt_tokens: ref.promptTokens, completion_tokens: ref.tokens.length, total_tokens: ref.promptTokens + ref.tokens.length });
    expect((r.usage as any).prompt_tokens_details).toEqual({ cached_tokens: 0 }); // eslint-disable-line @typescript-eslint/no-explicit-any
  });

  it('completions, streamed, match model.complete (greedy), with usage', async () => {
    const ref = await solo('The little dog', { maxTokens: 48, stop: ['.'] });
    const stream = await client.completions.create({ model: NAME, prompt: 'The little dog', max_tokens: 48, temperature: 0, stop: '.', stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      if (c.choices[0]) {
        text += c.choices[0].text;
        finish = c.choices[0].finish_reason ?? finish;
      }
      if (c.usage) usage = c.usage;
    }
    expect(text).toBe(ref.text);
    expect(finish).toBe(ref.finishReason === 'stop' ? 'stop' : 'length');
    expect(usage?.completion_tokens).toBe(ref.tokens.length);
  });

  it('chat, not streamed and streamed, match model.complete on the templated prompt (greedy)', async () => {
    const messages = [
      { role: 'system' as const, content: 'You tell short stories.' },
      { role: 'user' as const, content: 'Tell me about a cat.' },
    ];
    const ref = await chatSolo(messages, 32);
    const r = await client.chat.completions.create({ model: NAME, messages, max_completion_tokens: 32, temperature: 0 });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0].message).toMatchObject({ role: 'assistant', content: ref.text });
    expect(r.usage?.prompt_tokens).toBe(ref.promptTokens);
    expect(r.usage?.completion_tokens).toBe(ref.tokens.length);

    const stream = await client.chat.completions.create({ model: NAME, messages, max_tokens: 32, temperature: 0, stream: true });
    let text = '';
    let role: string | undefined;
    let finish: string | null = null;
    for await (const c of stream) {
      role ??= c.choices[0]?.delta.role;
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(role).toBe('assistant');
    expect(text).toBe(ref.text);
    expect(finish).toBe(r.choices[0].finish_reason);
  });

  it('returns logprobs: chosen token and top alternatives, one entry per generated token', async () => {
    const messages = [{ role: 'user' as const, content: 'Hello' }];
    const ref = await chatSolo(messages, 8);
    const r = await client.chat.completions.create({ model: NAME, messages, max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 });
    const content = r.choices[0].logprobs!.content!;
    expect(content.map((c) => c.token).join('')).toBe(ref.text);
    expect(content.length).toBe(ref.tokens.filter((t) => !model.tokenizer.isEog(t)).length);
    for (const c of content) {
      expect(c.logprob).toBeLessThanOrEqual(0);
      expect(c.top_logprobs).toHaveLength(3);
      expect(c.top_logprobs[0].logprob).toBeCloseTo(c.logprob, 5); // greedy: the chosen token is the most likely
    }
    const legacy = await client.completions.create({ model: NAME, prompt: 'Once', max_tokens: 6, temperature: 0, logprobs: 2 });
    expect(legacy.choices[0].logprobs!.tokens!.length).toBe(6);
    expect(Object.keys(legacy.choices[0].logprobs!.top_logprobs![0]).length).toBe(2);
  });

  it('n choices and several prompts each get their own index; a seed makes sampling repeatable', async () => {
    const args = { model: NAME, prompt: ['Once upon', 'A bird'], max_tokens: 12, temperature: 1, seed: 7, n: 2 };
    const a = await client.completions.create(args);
    const b = await client.completions.create(args);
    expect(a.choices.map((c) => c.index)).toEqual([0, 1, 2, 3]);
    expect(a.choices.map((c) => c.text)).toEqual(b.choices.map((c) => c.text));
    const ref = await model.complete('A bird', { maxTokens: 12, temperature: 1, seed: 8 });
    expect(a.choices[3].text).toBe(ref.text); // choice i of a prompt samples with seed + i
  });
});

describe('bad input is answered 4xx in the OpenAI error shape', () => {
  const post = (route: string, body: unknown, headers?: Record<string, string>) => raw('POST', route, typeof body === 'string' ? body : JSON.stringify(body), headers);
  const ok = { model: NAME, prompt: 'Once', max_tokens: 4 };
  const cases: [string, () => ReturnType<typeof raw>, number, string | null][] = [
    ['malformed JSON', () => post('/v1/completions', '{"prompt": "Once",'), 400, null],
    ['a body that is not an object', () => post('/v1/completions', '[1, 2]'), 400, null],
    ['an empty body', () => post('/v1/completions', ''), 400, null],
    ['temperature of the wrong type', () => post('/v1/completions', { ...ok, temperature: 'hot' }), 400, 'temperature'],
    ['stream of the wrong type', () => post('/v1/completions', { ...ok, stream: 'yes' }), 400, 'stream'],
    ['a prompt of the wrong type', () => post('/v1/completions', { ...ok, prompt: { text: 'x' } }), 400, 'prompt'],
    ['a missing prompt', () => post('/v1/completions', { model: NAME }), 400, 'prompt'],
    ['token ids outside the vocabulary', () => post('/v1/completions', { ...ok, prompt: [1, 99999] }), 400, 'prompt'],
    ['negative max_tokens', () => post('/v1/completions', { ...ok, max_tokens: -5 }), 400, 'max_tokens'],
    ['fractional max_tokens', () => post('/v1/completions', { ...ok, max_tokens: 2.5 }), 400, 'max_tokens'],
    ['huge n', () => post('/v1/completions', { ...ok, n: 100000 }), 400, 'n'],
    ['top_p out of range', () => post('/v1/completions', { ...ok, top_p: 0 }), 400, 'top_p'],
    ['a bad logit_bias key', () => post('/v1/completions', { ...ok, logit_bias: { abc: 1 } }), 400, 'logit_bias'],
    ['a bad stop', () => post('/v1/completions', { ...ok, stop: [1] }), 400, 'stop'],
    ['messages missing', () => post('/v1/chat/completions', { model: NAME }), 400, 'messages'],
    ['a message without a role', () => post('/v1/chat/completions', { model: NAME, messages: [{ content: 'hi' }] }), 400, 'messages[0].role'],
    ['image content', () => post('/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }), 400, 'messages[0].content'],
    ['top_logprobs without logprobs', () => post('/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: 'hi' }], top_logprobs: 2 }), 400, 'top_logprobs'],
    ['a prompt over the context', () => post('/v1/completions', { ...ok, prompt: 'once upon a time '.repeat(200) }), 400, 'prompt'],
    ['an unknown model', () => post('/v1/completions', { ...ok, model: 'gpt-5' }), 404, 'model'],
    ['an unknown model id', () => raw('GET', '/v1/models/gpt-5'), 404, 'model'],
    ['a malformed escape in a model id', () => raw('GET', '/v1/models/%E0%A4%A'), 404, 'model'],
    ['a request line with a bad escape in the query', () => raw('GET', '/health/%zz?x=%'), 404, null],
    ['a missing key', () => post('/v1/completions', ok, { authorization: '' }), 401, null],
    ['a wrong key', () => post('/v1/completions', ok, { authorization: 'Bearer sk-tessera-tesT' }), 401, null],
    ['a wrong key on GET /v1/models', () => raw('GET', '/v1/models', undefined, { authorization: 'Bearer nope' }), 401, null],
    ['an unknown route', () => raw('GET', '/v1/engines'), 404, null],
    ['a wrong method', () => raw('GET', '/v1/completions'), 405, null],
  ];
  for (const [what, send, status, param] of cases) {
    it(what, async () => {
      const r = await send();
      expect(r.status, r.text).toBe(status);
      expect(r.json.error).toMatchObject({ message: expect.any(String), type: expect.any(String) });
      expect(r.json.error).toHaveProperty('code');
      expect(r.json.error.param).toBe(param);
    });
  }

  it('no field of any JSON type makes a 5xx (each known field x odd values, both endpoints)', async () => {
    const fields = ['model', 'prompt', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'min_p', 'n', 'stop', 'logit_bias', 'logprobs', 'top_logprobs', 'stream', 'stream_options', 'seed', 'presence_penalty', 'frequency_penalty', 'repeat_penalty', 'response_format', 'tools', 'echo', 'best_of', 'suffix', 'user'];
    const values = [null, true, false, -1, 0, 1.5, 1e308, -1e308, '', 'x', [], {}, [1, 'a'], [[]], { a: { b: 1 } }, { 0: 'x' }];
    const bases = [
      ['/v1/completions', { model: NAME, prompt: 'Once', max_tokens: 2 }],
      ['/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 }],
    ] as const;
    const bad: string[] = [];
    for (const [route, body] of bases) {
      for (const f of fields) {
        await Promise.all(
          values.map(async (v) => {
            const r = await post(route, { ...body, [f]: v });
            if (r.status >= 500 || (r.status !== 200 && !r.json?.error)) bad.push(`${route} ${f}=${JSON.stringify(v)}: ${r.status} ${r.text.slice(0, 200)}`);
          }),
        );
      }
    }
    expect(bad).toEqual([]);
    await waitIdle();
  });

  it('the prompt over the context has OpenAI code context_length_exceeded', async () => {
    const r = await post('/v1/chat/completions', { model: NAME, messages: [{ role: 'user', content: 'a cat '.repeat(300) }] });
    expect(r.status).toBe(400);
    expect(r.json.error.code).toBe('context_length_exceeded');
  });

  it('a 10 MB body is answered 413', async () => {
    const big = JSON.stringify({ ...ok, prompt: 'x'.repeat(10 << 20) });
    const r = await post('/v1/completions', big);
    expect(r.status).toBe(413);
    expect(r.json.error.code).toBe('request_too_large');
    // ... and the server still answers.
    expect((await raw('GET', '/health')).status).toBe(200);
  });

  it('the openai client sees typed errors', async () => {
    await expect(client.completions.create({ ...ok, max_tokens: -1 })).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    await expect(client.completions.create({ ...ok, model: 'nope' })).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('without a chat template the chat endpoint says so (400), with the override flag named', async () => {
    const plain = createServer(model, {});
    const { url } = await plain.listen(0, '127.0.0.1');
    try {
      const r = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }) });
      const j = await r.json();
      expect(r.status).toBe(400);
      expect(j.error.code).toBe('no_chat_template');
      expect(j.error.message).toMatch(/--chat-template/);
    } finally {
      await plain.close();
    }
  });
});

describe('serving behaviour', () => {
  it('a client that disconnects mid-stream aborts its request and frees its pages', async () => {
    await waitIdle();
    const genBefore = model.stats().steps;
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${base}/v1/completions`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' } }, (res) => {
        expect(res.statusCode).toBe(200);
        res.once('data', () => {
          req.destroy(); // leave after the first event
          resolve();
        });
      });
      req.on('error', (e) => (e.message.includes('aborted') || (e as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(e)));
      req.end(JSON.stringify({ model: NAME, prompt: 'Once upon a time', max_tokens: CTX, temperature: 0, stream: true, stop: ['@@@@'] }));
    });
    await waitIdle();
    // It stopped long before its ~250 tokens: far fewer steps ran than a full generation needs.
    expect(model.stats().steps - genBefore).toBeLessThan(CTX / 2);
  });

  /** Opens a raw connection, writes `head`, then drips one byte every 100 ms; resolves with what the server sent before closing. */
  const slowClient = (head: string) =>
    new Promise<string>((resolve) => {
      const s = net.connect(Number(new URL(base).port), '127.0.0.1', () => s.write(head));
      let data = '';
      s.on('data', (d) => (data += d));
      s.on('close', () => resolve(data));
      s.on('error', () => {});
      const drip = setInterval(() => !s.destroyed && s.write('a'), 100);
      s.on('close', () => clearInterval(drip));
    });

  it('a slow-loris request head times out (408 or closed)', async () => {
    const t0 = Date.now();
    const got = await slowClient('POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    expect(Date.now() - t0).toBeLessThan(5000);
    if (got) expect(got).toMatch(/^HTTP\/1\.1 408/);
  });

  it('a slow body times out (408 or closed)', async () => {
    const t0 = Date.now();
    const got = await slowClient(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt": "`);
    expect(Date.now() - t0).toBeLessThan(6000);
    if (got) expect(got).toMatch(/^HTTP\/1\.1 408/);
  });

  it('a full queue answers 429 with Retry-After; the others complete', async () => {
    const small = createServer(model, { maxQueue: 2, retryAfterSeconds: 3 });
    const { url } = await small.listen(0, '127.0.0.1');
    try {
      const send = () => fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 64, temperature: 0 }) });
      const rs = await within(Promise.all(Array.from({ length: 6 }, send)), 20_000, '6 requests on a queue of 2');
      const statuses = rs.map((r) => r.status).sort();
      expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(2);
      expect(statuses.every((s) => s === 200 || s === 429)).toBe(true);
      const busy = rs.find((r) => r.status === 429)!;
      expect(busy.headers.get('retry-after')).toBe('3');
      expect((await busy.json()).error.code).toBe('queue_full');
    } finally {
      await small.close();
    }
  });

  it('/health and /metrics (Prometheus text) answer without a key', async () => {
    const h = await fetch(`${base}/health`);
    expect(h.status).toBe(200);
    expect((await h.json()).status).toBe('ok');
    const m = await fetch(`${base}/metrics`);
    expect(m.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await m.text();
    for (const name of ['tessera_requests_total', 'tessera_generated_tokens_total', 'tessera_queue_depth', 'tessera_kv_pages_in_use', 'tessera_time_to_first_token_seconds_bucket', 'tessera_time_per_output_token_seconds_count']) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/tessera_requests_total\{route="\/v1\/completions",status="200"\} [1-9]/);
    for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$/);
  });

  it('/metrics and /health after the model was disposed answer 503; the server keeps running', async () => {
    const m = await loadModel(demoModelPath, { threads: 1, contextSize: 64 });
    const s = createServer(m, {});
    const { url } = await s.listen(0, '127.0.0.1');
    try {
      await m.dispose();
      expect((await fetch(`${url}/metrics`)).status).toBe(503);
      expect((await fetch(`${url}/health`)).status).toBe(503);
      for (const stream of [false, true]) {
        // refused before any frame: the same status whether it streams or not
        const r = await fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once', max_tokens: 2, stream }) });
        expect(r.status, `stream ${stream}`).toBe(503);
      }
      expect((await fetch(`${url}/metrics`)).status).toBe(503); // still up
    } finally {
      await s.close({ timeoutMs: 1000 });
    }
  });

  it('n = 2 at the largest seed answers 200 streamed or not (choice i seeds seed + i, wrapped into range)', async () => {
    const body = { prompt: 'Once', max_tokens: 2, n: 2, seed: Number.MAX_SAFE_INTEGER, temperature: 0.8, logit_bias: {} };
    for (const stream of [false, true]) {
      const r = await raw('POST', '/v1/completions', JSON.stringify({ ...body, stream }));
      expect(r.status, `stream ${stream}`).toBe(200); // the seed wraps into range: both answer
    }
  });

  it('graceful shutdown: running requests finish within the deadline, new connections are refused', async () => {
    const s = createServer(model, {});
    const { url } = await s.listen(0, '127.0.0.1');
    const ref = await solo('Once upon a time', { maxTokens: 30 });
    const running = fetch(`${url}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 30, temperature: 0 }) });
    // Close only once the request runs (a loaded machine may take a while to deliver it).
    for (const t0 = Date.now(); model.stats().running + model.stats().waiting === 0 && Date.now() - t0 < 10_000; ) await new Promise((r) => setTimeout(r, 1));
    await within(s.close({ timeoutMs: 10_000 }), 15_000, 'close');
    const r = await running;
    expect(r.status).toBe(200);
    expect((await r.json()).choices[0].text).toBe(ref.text);
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });

  it('shutdown past its deadline stops what runs: a stream gets an error event', async () => {
    const s = createServer(model, {});
    const { url } = await s.listen(0, '127.0.0.1');
    const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
    const stream = await c.completions.create({ prompt: 'Once upon a time', max_tokens: CTX, temperature: 0, stop: ['@@@@'], stream: true, model: NAME });
    const it = stream[Symbol.asyncIterator]();
    await it.next(); // running
    const closing = s.close({ timeoutMs: 0 });
    await expect((async () => {
      for (;;) if ((await it.next()).done) return;
    })()).rejects.toThrow(/shutting down/);
    await within(closing, 5000, 'close');
    await waitIdle();
  });
});

describe('randomized concurrent clients', () => {
  // Batched steps round differently from single-row ones (up to ~0.06 nats in a token's logprob
  // on this model), so a greedy near-tie may flip: an output must equal its solo run, or follow it
  // exactly up to a token whose two best candidates were within TIE nats in the solo run.
  const TIE = 0.15;
  async function soloChunks(prompt: string | number[], maxTokens: number) {
    const chunks: { text: string; top?: { logprob: number }[] }[] = [];
    for await (const c of model.generate(prompt, { maxTokens, temperature: 0, logprobs: 2 })) chunks.push(c);
    return { text: chunks.map((c) => c.text).join(''), chunks };
  }
  function verdict(text: string, want: Awaited<ReturnType<typeof soloChunks>>): 'same' | 'tie' | 'mixed' {
    if (text === want.text) return 'same';
    let k = 0;
    while (k < text.length && text[k] === want.text[k]) k++;
    let at = 0;
    for (const c of want.chunks) {
      at += c.text.length;
      if (at > k) return c.top && c.top.length > 1 && c.top[0].logprob - c.top[1].logprob < TIE ? 'tie' : 'mixed';
    }
    return 'mixed';
  }

  it('every request completes with its solo greedy output (nothing lost or mixed up), pages return to zero', async () => {
    await waitIdle();
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const prompts = ['Once upon a time', 'The cat', 'Lily went to the park', 'A big red ball', 'Tom and Sam', 'One day, a little bird'];
    const specs = Array.from({ length: 32 }, () => ({
      prompt: prompts[Math.floor(rand() * prompts.length)],
      maxTokens: 4 + Math.floor(rand() * 60),
      chat: rand() < 0.4,
      stream: rand() < 0.5,
      delay: Math.floor(rand() * 50),
    }));
    const refs = [];
    for (const s of specs) {
      const ids = s.chat ? chatPromptTokens(model, model.applyChatTemplate([{ role: 'user', content: s.prompt }], { template: TEMPLATE })) : model.tokenize(s.prompt);
      refs.push(await soloChunks(ids, s.maxTokens)); // one at a time, before the load
    }
    const texts = specs.map(async ({ prompt, maxTokens, chat, stream, delay }) => {
      await new Promise((r) => setTimeout(r, delay));
      const messages = [{ role: 'user' as const, content: prompt }];
      let text = '';
      if (chat && stream) {
        for await (const c of await client.chat.completions.create({ model: NAME, messages, max_tokens: maxTokens, temperature: 0, stream: true })) text += c.choices[0]?.delta.content ?? '';
      } else if (chat) {
        text = (await client.chat.completions.create({ model: NAME, messages, max_tokens: maxTokens, temperature: 0 })).choices[0].message.content ?? '';
      } else if (stream) {
        for await (const c of await client.completions.create({ model: NAME, prompt, max_tokens: maxTokens, temperature: 0, stream: true })) text += c.choices[0]?.text ?? '';
      } else {
        text = (await client.completions.create({ model: NAME, prompt, max_tokens: maxTokens, temperature: 0 })).choices[0].text;
      }
      return text;
    });
    const got = await within(Promise.all(texts), 30_000, `${specs.length} concurrent requests`);
    const verdicts = got.map((t, i) => verdict(t, refs[i]));
    verdicts.forEach((v, i) => expect(v, `request ${i}: ${JSON.stringify(specs[i])}\n  got:  ${JSON.stringify(got[i])}\n  solo: ${JSON.stringify(refs[i].text)}`).not.toBe('mixed'));
    expect(verdicts.filter((v) => v === 'same').length).toBeGreaterThan(specs.length / 2);
    await waitIdle();
  });
});

describe('tessera serve and generate --chat (node dist/cli.js)', () => {
  const CLI = path.resolve(__dirname, '..', 'dist', 'cli.js');

  it('serves the embedded model with a key, and exits 0 on SIGTERM after finishing a running request', async () => {
    const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--ctx', '128', '--threads', '1', '--api-key', 'k1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const url = await within(
        new Promise<string>((resolve) => child.stderr.on('data', () => /(http:\/\/[\d.:]+)\/v1/.test(stderr) && resolve(/(http:\/\/[\d.:]+)\/v1/.exec(stderr)![1]))),
        20_000,
        'serve to listen',
      );
      expect((await fetch(`${url}/health`)).status).toBe(200);
      expect((await fetch(`${url}/v1/models`)).status).toBe(401);
      const c = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k1', maxRetries: 0 });
      const chat = await c.chat.completions.create({ model: NAME, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0 });
      expect(chat.choices[0].message.content?.length).toBeGreaterThan(0); // the embedded model gets a plain template
      const running = c.completions.create({ model: NAME, prompt: 'Once upon a time', max_tokens: 60, temperature: 0 });
      // SIGTERM only once the server holds the request (its /health counts it in flight).
      for (const t0 = Date.now(); Date.now() - t0 < 10_000; ) {
        if (((await (await fetch(`${url}/health`)).json()) as { in_flight: number }).in_flight > 0) break;
        await new Promise((r) => setTimeout(r, 1));
      }
      child.kill('SIGTERM');
      expect((await running).choices[0].text.length).toBeGreaterThan(0);
      expect(await within(exited, 15_000, 'serve to exit')).toBe(0);
      expect(stderr).toMatch(/SIGTERM/);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('usage errors exit 2 with the usage', () => {
    for (const args of [['--port', '70000'], ['--max-queue', '0'], ['--api-key', ''], ['extra']]) {
      const r = spawnSync(process.execPath, [CLI, 'serve', ...args], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/Usage:\n {2}tessera serve/);
    }
  });

  it('generate --chat prints the greedy reply to the templated message; without a template it says how to pass one', async () => {
    const file = path.join(os.tmpdir(), `tessera-template-${process.pid}.jinja`);
    fs.writeFileSync(file, TEMPLATE);
    try {
      const r = spawnSync(process.execPath, [CLI, 'generate', '-m', demoModelPath, '-p', 'Hi', '--chat', '--chat-template', file, '-n', '12', '--temperature', '0', '--context', String(CTX)], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe(`${(await chatSolo([{ role: 'user', content: 'Hi' }], 12)).text}\n`);
      const none = spawnSync(process.execPath, [CLI, 'generate', '-m', demoModelPath, '-p', 'Hi', '--chat'], { encoding: 'utf8', timeout: 20_000 });
      expect(none.status).toBe(2);
      expect(none.stderr).toMatch(/no chat template.*--chat-template FILE/);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
