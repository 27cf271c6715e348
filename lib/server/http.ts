// HTTP plumbing of the server: errors in OpenAI's shape, JSON bodies read under a size limit,
// JSON and server-sent-event responses. Parsing of HTTP itself is node:http's.
import type { IncomingMessage, ServerResponse } from 'node:http';

/** An error answered as { error: { message, type, param, code } } with an HTTP status. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) => new HttpError(400, message, 'invalid_request_error', param, code);

/** Past this many bytes of an oversized body we stop reading and drop the connection. */
const DRAIN_LIMIT = 64 << 20;

/**
 * Reads the request body as JSON. Over `limit` bytes it answers 413, after reading (and
 * discarding) the rest of the body up to DRAIN_LIMIT, so the client is not reset before it can
 * read the answer; past that the socket is destroyed.
 */
export function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new HttpError(413, `request body is larger than the server's limit of ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > DRAIN_LIMIT) {
      req.socket.destroy(); // not worth reading; nobody should send this much
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = declared > limit;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      if (over) {
        chunks.length = 0;
        if (size > DRAIN_LIMIT) req.socket.destroy();
      } else chunks.push(c);
    });
    req.on('error', reject);
    req.on('aborted', () => reject(new HttpError(400, 'the client closed the connection before the body ended')));
    req.on('end', () => {
      if (over) return reject(tooLarge());
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return reject(badRequest('the request body is empty; expected a JSON object'));
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(badRequest(`the request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json'));
      }
    });
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

export function sendError(res: ServerResponse, e: HttpError): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  sendJson(res, e.status, e.body(), e.headers);
}

/** A server-sent-event stream whose headers go out with the first event (so early errors keep their status). */
export class EventStream {
  constructor(private res: ServerResponse) {}

  get started(): boolean {
    return this.res.headersSent;
  }

  send(data: unknown): void {
    if (this.res.destroyed || this.res.writableEnded) return;
    if (!this.res.headersSent) {
      this.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    }
    this.res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  }

  end(): void {
    if (!this.res.writableEnded) this.res.end();
  }
}
