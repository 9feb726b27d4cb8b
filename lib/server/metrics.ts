// Prometheus metrics of one server, in their own registry (prom-client).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import type { Model } from '../model/model.js';

export interface ServerMetrics {
  registry: Registry;
  requests: Counter<'endpoint' | 'status'>;
  promptTokens: Counter;
  cachedPromptTokens: Counter;
  generatedTokens: Counter;
  timeToFirstToken: Histogram;
  tokensPerSecond: Histogram;
}

/** model(): the model once loaded (null before), for the gauges read at scrape time. */
export function createMetrics(model: () => Model | null): ServerMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'laminate_' });
  const requests = new Counter({ name: 'laminate_http_requests_total', help: 'HTTP requests answered, by endpoint and status code', labelNames: ['endpoint', 'status'] as const, registers: [registry] });
  const promptTokens = new Counter({ name: 'laminate_prompt_tokens_total', help: 'Prompt tokens of finished generations', registers: [registry] });
  const cachedPromptTokens = new Counter({ name: 'laminate_prompt_cached_tokens_total', help: 'Prompt tokens read from the prefix cache instead of computed', registers: [registry] });
  const generatedTokens = new Counter({ name: 'laminate_generated_tokens_total', help: 'Tokens generated', registers: [registry] });
  const timeToFirstToken = new Histogram({
    name: 'laminate_time_to_first_token_seconds',
    help: 'From the request to its first generated token',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const tokensPerSecond = new Histogram({
    name: 'laminate_generation_tokens_per_second',
    help: 'Decode speed of each finished generation, after its first token',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers: [registry],
  });
  new Gauge({
    name: 'laminate_queue_requests',
    help: 'Generations running (active) and waiting for KV cache memory (waiting)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const m = model();
      if (!m || m.disposed) return;
      const p = m.pendingRequests;
      this.set({ state: 'active' }, p.active);
      this.set({ state: 'waiting' }, p.waiting);
    },
  });
  new Gauge({
    name: 'laminate_kv_cache_pages',
    help: 'KV cache pages: held by sequences (in_use), held only by the prefix cache (cached), and the most there can be (capacity)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const m = model();
      if (!m || m.disposed) return;
      const s = m.cacheStats();
      this.set({ state: 'in_use' }, s.pagesInUse);
      this.set({ state: 'cached' }, s.cachedPages);
      this.set({ state: 'capacity' }, s.maxPages);
    },
  });
  new Gauge({
    name: 'laminate_kv_cache_usage_ratio',
    help: 'Share of the KV cache pages held by running sequences',
    registers: [registry],
    collect() {
      const m = model();
      if (!m || m.disposed) return;
      const s = m.cacheStats();
      this.set(s.maxPages > 0 ? s.pagesInUse / s.maxPages : 0);
    },
  });
  return { registry, requests, promptTokens, cachedPromptTokens, generatedTokens, timeToFirstToken, tokensPerSecond };
}
