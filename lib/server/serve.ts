// serve(): load a model and answer HTTP on a port, as `laminate serve` does. The socket
// listens before the model loads, so /health can report the loading.
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { loadModel, type LoadOptions } from '../model/load.js';
import type { Model } from '../model/model.js';
import { createServer, type LaminateServer, type ServerOptions } from './server.js';

export interface ServeOptions extends Omit<ServerOptions, 'model'>, Omit<LoadOptions, 'signal'> {
  /** A model directory or a passthrough merge configuration (default: the demo model). */
  model?: string;
  /** Interface to bind (default 127.0.0.1: this machine only). */
  host?: string;
  /** Port (default 8080; 0 picks a free one). */
  port?: number;
}

export interface RunningServer {
  http: Server;
  app: LaminateServer;
  /** Resolves with the model once loaded. */
  model: Promise<Model>;
  url: string;
  /**
   * Graceful stop: no new connections or requests, running requests finish (aborted after
   * `timeoutMs`), then the model is disposed and the socket closed.
   */
  close(timeoutMs?: number): Promise<void>;
}

export async function serve(options: ServeOptions = {}): Promise<RunningServer> {
  const { model: source, host = '127.0.0.1', port = 8080, modelName, apiKeys, cors, maxBodyBytes, defaultMaxTokens, ...load } = options;
  if (!Number.isSafeInteger(port) || port < 0 || port > 65535) throw new RangeError(`port must be an integer in [0, 65535] (got ${String(port)})`);
  const loading = new AbortController();
  const model = loadModel(source, { ...load, signal: loading.signal });
  model.catch(() => undefined);
  const app = createServer({
    model,
    ...(modelName !== undefined ? { modelName } : {}),
    ...(apiKeys !== undefined ? { apiKeys } : {}),
    ...(cors !== undefined ? { cors } : {}),
    ...(maxBodyBytes !== undefined ? { maxBodyBytes } : {}),
    ...(defaultMaxTokens !== undefined ? { defaultMaxTokens } : {}),
  });
  const http = createHttpServer(app);
  // Generations can outlast Node's default request timeout.
  http.requestTimeout = 0;
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(port, host, () => {
      http.off('error', reject);
      resolve();
    });
  }).catch((e: unknown) => {
    loading.abort();
    throw e;
  });
  const address = http.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | null = null;
  return {
    http,
    app,
    model,
    url: `http://${shown}:${address.port}`,
    close(timeoutMs = 30_000) {
      closing ??= (async () => {
        loading.abort();
        const closed = new Promise<void>((resolve) => http.close(() => resolve()));
        http.closeIdleConnections();
        await app.drain(timeoutMs);
        http.closeAllConnections();
        await closed;
        const m = await model.catch(() => null);
        m?.dispose();
      })();
      return closing;
    },
  };
}
