// createServer(): an OpenAI-compatible HTTP API over a loaded model, as a request handler
// (an Express application) that node:http, Express and Fastify can mount.
import { createHash, timingSafeEqual } from 'node:crypto';
import { basename } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';

import express, { type NextFunction, type Request, type Response } from 'express';

import type { Model } from '../model/model.js';
import { ApiError, apiErrorOf } from './errors.js';
import { createMetrics, type ServerMetrics } from './metrics.js';
import { TokenStrings, chatCompletion, completion, writeJson, type EndpointContext } from './openai.js';
import { parseChatRequest, parseCompletionRequest } from './request.js';

export interface ServerOptions {
  /** The model, or a promise of it: until it settles /health answers 503 (loading) and the
   * API answers 503. */
  model: Model | Promise<Model>;
  /** The id clients name in `model` and that GET /v1/models lists (default: the model
   * directory's name). */
  modelName?: string;
  /** Keys accepted as `Authorization: Bearer KEY`; none: no authentication. */
  apiKeys?: string[];
  /** Cross-origin requests: false (default), true (any origin), or the origins allowed. */
  cors?: boolean | string[];
  /** Largest request body in bytes (default 4 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** max_tokens of a request that gives none, capped by what the context leaves (default 1024). */
  defaultMaxTokens?: number;
}

export type ServerState = 'loading' | 'ready' | 'draining' | 'failed';

/** A request handler with the server's state and controls. */
export interface LaminateServer {
  (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
  readonly state: ServerState;
  /** The model, once loaded. */
  readonly model: Model | null;
  /** Requests being answered now. */
  readonly inflight: number;
  readonly metrics: ServerMetrics;
  /**
   * Stops taking requests (they get 503 and /health turns 503), waits for running ones to
   * finish, and after `timeoutMs` aborts those still running. Resolves when none is left.
   */
  drain(timeoutMs?: number): Promise<void>;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Checks a bearer token against every key in constant time (the same work whatever matches). */
function authorizer(keys: string[]): (header: string | undefined) => boolean {
  const digests = keys.map(digest);
  return (header) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    const given = digest(m ? m[1]! : '');
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, given) || ok;
    return ok && m !== null;
  };
}

export function createServer(options: ServerOptions): LaminateServer {
  if (typeof options !== 'object' || options === null) throw new TypeError('createServer: options must be an object');
  const { apiKeys = [], cors = false } = options;
  if (!Array.isArray(apiKeys) || !apiKeys.every((k) => typeof k === 'string' && k.length > 0)) throw new TypeError('createServer: apiKeys must be a list of non-empty strings');
  const maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024;
  const defaultMaxTokens = options.defaultMaxTokens ?? 1024;
  for (const [name, v] of [['maxBodyBytes', maxBodyBytes], ['defaultMaxTokens', defaultMaxTokens]] as const)
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`createServer: ${name} must be a positive integer (got ${String(v)})`);
  if (!(typeof cors === 'boolean' || (Array.isArray(cors) && cors.every((o) => typeof o === 'string')))) throw new TypeError('createServer: cors must be a boolean or a list of origins');

  let state: ServerState = 'loading';
  let model: Model | null = null;
  let loadError: Error | null = null;
  let ctx: EndpointContext | null = null;
  const metrics = createMetrics(() => model);
  const running = new Set<AbortController>();
  let idle: (() => void) | null = null;

  const ready = (m: Model) => {
    if (state !== 'loading') return;
    model = m;
    state = 'ready';
    ctx = { model: m, modelName: options.modelName ?? basename(m.info.dir), metrics, defaultMaxTokens, tokens: new TokenStrings(m.tokenizer) };
  };
  if (options.model instanceof Promise)
    options.model.then(ready, (e: unknown) => {
      loadError = e instanceof Error ? e : new Error(String(e));
      if (state === 'loading') state = 'failed';
    });
  else ready(options.model);

  const authorized = apiKeys.length > 0 ? authorizer(apiKeys) : () => true;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // Every answer is counted by endpoint and status.
  app.use((req, res, next) => {
    res.on('finish', () => metrics.requests.inc({ endpoint: endpointLabel(req.originalUrl), status: String(res.statusCode) }));
    next();
  });

  if (cors !== false) {
    app.use((req, res, next) => {
      const origin = req.headers.origin;
      if (origin && (cors === true || cors.includes(origin))) {
        res.setHeader('Access-Control-Allow-Origin', cors === true ? '*' : origin);
        res.setHeader('Vary', 'Origin');
        if (req.method === 'OPTIONS') {
          res.setHeader('Access-Control-Allow-Methods', 'GET, POST, OPTIONS');
          res.setHeader('Access-Control-Allow-Headers', req.headers['access-control-request-headers'] ?? 'Authorization, Content-Type');
          res.setHeader('Access-Control-Max-Age', '600');
          res.status(204).end();
          return;
        }
      }
      next();
    });
  }

  app.get('/health', (_req, res) => {
    const body = { status: state, ...(model ? { model: ctx!.modelName } : {}), ...(loadError ? { error: loadError.message } : {}) };
    writeJson(res, state === 'ready' ? 200 : 503, body);
  });
  app.get('/health/live', (_req, res) => writeJson(res, 200, { status: 'alive' }));

  app.get('/metrics', async (_req, res, next) => {
    try {
      const text = await metrics.registry.metrics();
      res.setHeader('Content-Type', metrics.registry.contentType);
      res.end(text);
    } catch (e) {
      next(e);
    }
  });

  const api = express.Router();
  api.use((req, _res, next) => {
    if (!authorized(req.headers.authorization)) return next(new ApiError(401, 'invalid or missing API key: send Authorization: Bearer KEY', 'invalid_request_error', null, 'invalid_api_key'));
    if (state === 'loading') return next(new ApiError(503, 'the model is still loading', 'server_error', null, 'model_loading', 5));
    if (state === 'failed') return next(new ApiError(503, `the model failed to load: ${loadError?.message}`, 'server_error', null, 'model_load_failed'));
    if (state === 'draining') return next(new ApiError(503, 'the server is shutting down', 'server_error', null, 'server_shutting_down', 1));
    next();
  });
  api.get('/models', (_req, res) => writeJson(res, 200, { object: 'list', data: [modelEntry(ctx!)] }));
  api.get('/models/:id', (req, res, next) => (req.params.id === ctx!.modelName ? writeJson(res, 200, modelEntry(ctx!)) : next(unknownModel(req.params.id))));

  // A JSON body whatever its content type (curl without -H works); parse errors are 400 and
  // bodies over the limit 413, as OpenAI error objects.
  const json = express.json({ limit: maxBodyBytes, type: () => true, strict: false });
  const generation = (handler: (c: EndpointContext, body: unknown, res: ServerResponse, signal: AbortSignal) => Promise<void>) =>
    async (req: Request, res: Response, next: NextFunction) => {
      const abort = new AbortController();
      running.add(abort);
      // A client that goes away cancels its generations.
      res.on('close', () => {
        if (!res.writableFinished) abort.abort();
      });
      try {
        await handler(ctx!, req.body, res, abort.signal);
      } catch (e) {
        if (!abort.signal.aborted || !res.destroyed) next(e);
      } finally {
        abort.abort();
        running.delete(abort);
        if (running.size === 0) idle?.();
      }
    };
  const checkModel = (body: unknown) => {
    const name = (body as { model?: unknown } | null)?.model;
    if (typeof name === 'string' && name !== ctx!.modelName) throw unknownModel(name);
  };
  api.post('/chat/completions', json, generation(async (c, body, res, signal) => {
    const parsed = parseChatRequest(body);
    checkModel(body);
    await chatCompletion(c, parsed, res, signal);
  }));
  api.post('/completions', json, generation(async (c, body, res, signal) => {
    const parsed = parseCompletionRequest(body, c.model.config.vocabSize);
    checkModel(body);
    await completion(c, parsed, res, signal);
  }));
  app.use('/v1', api);

  app.use((req, _res, next) => next(new ApiError(404, `unknown request URL: ${req.method} ${req.path}`, 'invalid_request_error', null, 'unknown_url')));
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = httpError(err) ?? apiErrorOf(err);
    if (res.headersSent) {
      res.end();
      return;
    }
    const headers: Record<string, string> = e.retryAfter !== undefined ? { 'Retry-After': String(e.retryAfter) } : {};
    if (state === 'draining') headers['Connection'] = 'close';
    const send = () => writeJson(res, e.status, e.body(), headers);
    // A client still sending a body that was refused gets the answer once it has sent it
    // (answering mid-upload resets its connection before it reads the answer); a few
    // seconds at most.
    if (e.status === 413 && !req.complete) {
      headers['Connection'] = 'close';
      const timer = setTimeout(send, 5000);
      req.once('end', () => {
        clearTimeout(timer);
        send();
      });
      req.once('error', () => clearTimeout(timer));
      req.resume();
    } else send();
  });

  const handler = ((req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => app(req as Request, res as Response, next ?? (() => undefined))) as LaminateServer;
  Object.defineProperties(handler, {
    state: { get: () => state },
    model: { get: () => model },
    inflight: { get: () => running.size },
    metrics: { value: metrics },
    drain: {
      value: async (timeoutMs = 30_000): Promise<void> => {
        if (state !== 'failed') state = 'draining';
        if (running.size === 0) return;
        const done = new Promise<void>((resolve) => (idle = resolve));
        const timer = setTimeout(() => {
          for (const a of running) a.abort();
        }, timeoutMs);
        await done;
        clearTimeout(timer);
      },
    },
  });
  return handler;
}

/** The endpoint a URL names, wherever the handler is mounted. */
function endpointLabel(url: string): string {
  const m = /(\/v1\/chat\/completions|\/v1\/completions|\/v1\/models(\/[^/]+)?|\/health(\/live)?|\/metrics)\/?$/.exec(url.split('?')[0]!);
  return m ? (m[2] ? '/v1/models/:id' : m[1]!) : 'other';
}

function modelEntry(ctx: EndpointContext) {
  return { id: ctx.modelName, object: 'model', created: 0, owned_by: 'laminate' };
}

function unknownModel(name: string): ApiError {
  return new ApiError(404, `the model '${name}' does not exist on this server`, 'invalid_request_error', 'model', 'model_not_found');
}

/** body-parser's errors (malformed JSON, too large, bad encoding) as API errors. */
function httpError(err: unknown): ApiError | null {
  if (err instanceof ApiError) return err;
  const e = err as { type?: unknown; status?: unknown; message?: unknown; limit?: unknown };
  if (typeof e !== 'object' || e === null || typeof e.type !== 'string' || typeof e.status !== 'number') return null;
  if (e.type === 'entity.parse.failed') return new ApiError(400, `the request body is not valid JSON: ${String(e.message)}`);
  if (e.type === 'entity.too.large') return new ApiError(413, `the request body is larger than ${String(e.limit)} bytes`, 'invalid_request_error', null, 'request_too_large');
  return new ApiError(e.status >= 400 && e.status < 500 ? e.status : 400, String(e.message));
}
