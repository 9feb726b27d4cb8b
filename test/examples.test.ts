// The scripts in examples/ run as a user runs them: `node examples/x.mjs`, importing the
// package by its name (Node resolves 'laminate' inside this repository to dist/ through the
// package's own `exports`), with small settings so that each finishes in seconds.
// Like test/cli.test.ts this needs dist/ built (`npm test` builds it first: pretest).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { tmpDir } from './helpers/checkpoint.js';
import { projectRoot } from './helpers/fixtures.js';

const example = (name: string) => join(projectRoot, 'examples', name);
const env = (extra: Record<string, string>) => ({ ...process.env, THREADS: '2', ...extra });
const run = (name: string, args: string[], extra: Record<string, string>) =>
  spawnSync(process.execPath, [example(name), ...args], { cwd: projectRoot, env: env(extra), encoding: 'utf8', timeout: 60_000 });

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

beforeAll(() => {
  if (!existsSync(join(projectRoot, 'dist/index.js'))) throw new Error('dist/ is not built: run `npm run build:ts` (npm test does it first)');
});

describe('examples', () => {
  it('generate.mjs streams a completion, then a chat of two turns whose KV cache grows', () => {
    const r = run('generate.mjs', ['The function'], { MAX_TOKENS: '8' });
    expect(r.status, r.stderr).toBe(0);
    const out = r.stdout;
    expect(out).toMatch(/--- generate ---\nThe function/);
    const gen = /\[generate: (\d+) tokens, finish: (\w+)/.exec(out);
    expect(gen, out).not.toBeNull();
    expect(Number(gen![1])).toBeGreaterThan(0);
    expect(Number(gen![1])).toBeLessThanOrEqual(8);
    const turns = [...out.matchAll(/\[chat: (\d+) tokens, finish: \w+; the conversation holds (\d+) tokens in the KV cache\]/g)];
    expect(turns.length, out).toBe(2);
    expect(Number(turns[1]![2])).toBeGreaterThan(Number(turns[0]![2]));
    expect(out).toContain('> What is a list?');
  });

  it('server.mjs answers /health and a chat completion, finishes a running stream on SIGTERM, and exits 0', async () => {
    const child = spawn(process.execPath, [example('server.mjs')], { cwd: projectRoot, env: env({ PORT: '0' }), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      // The script prints the URL once listening and 'ready' once the model is loaded.
      const deadline = Date.now() + 30_000;
      while (!/listening on http[^]*ready: /.test(stdout)) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start:\n${stdout}\n${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /listening on (http:\/\/\S+)/.exec(stdout)![1]!;

      const health = await fetch(`${url}/health`);
      expect(health.status).toBe(200);
      expect(await health.json()).toMatchObject({ status: 'ready' });

      const post = (body: object) =>
        fetch(`${url}/v1/chat/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'tiny-mistral-bf16', messages: [{ role: 'user', content: 'What is a list?' }], ...body }),
        });
      const res = await post({ max_tokens: 8 });
      expect(res.status).toBe(200);
      const completion = (await res.json()) as { choices: { message: { role: string; content: string } }[]; usage: { completion_tokens: number } };
      expect(completion.choices[0]!.message.role).toBe('assistant');
      expect(typeof completion.choices[0]!.message.content).toBe('string');
      expect(completion.usage.completion_tokens).toBeGreaterThan(0);
      expect(completion.usage.completion_tokens).toBeLessThanOrEqual(8);

      // A stream that is running when SIGTERM comes is finished, not cut off.
      const stream = await post({ max_tokens: 32, ignore_eos: true, stream: true });
      expect(stream.status).toBe(200);
      const reader = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
      let sse = (await reader.read()).value ?? '';
      child.kill('SIGTERM');
      for (let part = await reader.read(); !part.done; part = await reader.read()) sse += part.value;
      expect(sse).toContain('data: [DONE]');
      expect(sse).toContain('"finish_reason":"length"');
      expect(await exited).toBe(0);
      expect(stdout).toMatch(/SIGTERM: draining [01] running request\(s\)\nstopped/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });

  it('pipeline.mjs merges, quantizes to EXL2 with a 6-bit head, loads the quant and chats', () => {
    const out = tmpDir('laminate-examples-');
    dirs.push(out);
    // two slices of two layers (the example's default is [0, 6) + [2, 8)), the tests' small calibration
    const r = run('pipeline.mjs', [out], { SLICES: '0-2,1-3', BPW: '4', HEAD_BITS: '6', ROWS: '3', LENGTH: '48', MEASUREMENT_ROWS: '2', MAX_TOKENS: '8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`working in ${out}`);
    expect(r.stdout).toMatch(/merged: \d+ tensors/);
    const q = /quantized: ([\d.]+) bits per weight over 4 layers, 6-bit head/.exec(r.stdout);
    expect(q, r.stdout).not.toBeNull();
    expect(Number(q![1])).toBeLessThanOrEqual(4);
    expect(Number(q![1])).toBeGreaterThan(3.5);
    expect(r.stdout).toMatch(/loaded: 4 layers, exl2/);
    expect(r.stdout).toMatch(/\[chat: [1-8] tokens, finish: \w+\]/);
    expect(r.stderr).toMatch(/measure\.\.\.\n {2}quantize\.\.\.\n {2}write\.\.\./);

    expect(readFileSync(join(out, 'upscale.yml'), 'utf8')).toContain('merge_method: passthrough');
    const merged = JSON.parse(readFileSync(join(out, 'merged/config.json'), 'utf8')) as { num_hidden_layers: number };
    expect(merged.num_hidden_layers).toBe(4);
    const quant = JSON.parse(readFileSync(join(out, 'exl2/config.json'), 'utf8')) as { quantization_config: { quant_method: string; head_bits: number } };
    expect(quant.quantization_config).toMatchObject({ quant_method: 'exl2', head_bits: 6 });
    expect(existsSync(join(out, 'exl2/measurement.json'))).toBe(true);
  });
});
