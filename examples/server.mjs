// An OpenAI-compatible HTTP microservice: laminate's request handler mounted in node:http,
// with a graceful stop on SIGTERM (what a container orchestrator sends).
//
//   node examples/server.mjs
//   curl localhost:8080/health
//   curl localhost:8080/v1/chat/completions -d '{"model":"tiny-mistral-bf16","messages":[{"role":"user","content":"Hi"}],"max_tokens":32}'
//
// Environment: PORT (default 8080; 0 picks a free one), HOST (default 127.0.0.1), MODEL (a
// model directory or merge configuration; default the bundled demo model), API_KEY (when
// set, required as `Authorization: Bearer KEY`), THREADS, SHUTDOWN_TIMEOUT (seconds running
// requests get to finish after SIGTERM; default 30).
// (`serve(options)` from laminate does all of this in one call; this shows the parts.)
import { createServer as createHttpServer } from 'node:http';

import { createServer, loadModel } from 'laminate';

const port = Number(process.env.PORT ?? 8080);
const host = process.env.HOST ?? '127.0.0.1';
const shutdownMs = Number(process.env.SHUTDOWN_TIMEOUT ?? 30) * 1000;
const threads = process.env.THREADS ? Number(process.env.THREADS) : undefined;

// Listen while the model loads: /health answers 503 {"status":"loading"} until it is ready,
// so a load balancer or readiness probe waits for it.
const loading = new AbortController();
const model = loadModel(process.env.MODEL || undefined, { maxQueue: 64, signal: loading.signal, ...(threads ? { threads } : {}) });
const app = createServer({ model, ...(process.env.API_KEY ? { apiKeys: [process.env.API_KEY] } : {}) });
const server = createHttpServer(app);
server.requestTimeout = 0; // a long generation may outlast Node's default request timeout

await new Promise((resolve, reject) => {
  server.once('error', reject); // the port is taken, say
  server.listen(port, host, resolve);
}).catch((e) => {
  console.error(`cannot listen on ${host}:${port}: ${e.message}`);
  process.exit(1);
});
console.log(`listening on http://${host}:${server.address().port}`);

// SIGTERM (or Ctrl-C): stop accepting connections, let running requests finish for up to
// SHUTDOWN_TIMEOUT seconds (/health turns 503 "draining" meanwhile), abort what is left,
// free the model, exit 0.
let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`${signal}: draining ${app.inflight} running request(s)`);
  loading.abort(); // a model still loading stops loading
  const closed = new Promise((resolve) => server.close(resolve));
  server.closeIdleConnections();
  await app.drain(shutdownMs);
  server.closeAllConnections();
  await closed;
  await model.then((m) => m.dispose(), () => undefined);
  console.log('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

try {
  const loaded = await model;
  console.log(`ready: ${loaded.info.dir} on ${loaded.info.device}`);
} catch (e) {
  if (!stopping) {
    console.error(`the model failed to load: ${e.message}`);
    server.close();
    process.exit(1);
  }
}
