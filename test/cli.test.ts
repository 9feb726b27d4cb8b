// The `laminate` command, run as a user runs it (from dist/, with the bundled model).
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { projectRoot } from './helpers/fixtures.js';

const cli = join(projectRoot, 'dist/cli/main.js');
const run = (args: string[], input?: string) =>
  spawnSync(process.execPath, [cli, ...args], { cwd: projectRoot, encoding: 'utf8', input: input ?? '', timeout: 60_000 });

describe('laminate CLI', () => {
  it('generate streams text; --json gives the result', () => {
    const json = run(['generate', 'The function', '--max-tokens', '12', '--ignore-eos', '--json']);
    expect(json.status, json.stderr).toBe(0);
    const result = JSON.parse(json.stdout) as { text: string; tokens: number[]; finishReason: string };
    expect(result.tokens.length).toBe(12);
    expect(result.finishReason).toBe('length');
    const text = run(['generate', 'The function', '--max-tokens', '12', '--ignore-eos']);
    expect(text.status).toBe(0);
    expect(text.stdout).toBe(`The function${result.text}\n`);
  });

  it('generate takes token ids and sampling flags', () => {
    const a = run(['generate', '--tokens', '1,366,474', '--max-tokens', '8', '--temperature', '0.8', '--top-p', '0.9', '--seed', '5', '--json']);
    const b = run(['generate', '--tokens', '1,366,474', '--max-tokens', '8', '--temperature', '0.8', '--top-p', '0.9', '--seed', '5', '--json']);
    const other = run(['generate', '--tokens', '1,366,474', '--max-tokens', '8', '--temperature', '0.8', '--top-p', '0.9', '--seed', '6', '--json']);
    const greedy = run(['generate', '--tokens', '1,366,474', '--max-tokens', '8', '--json']);
    expect(a.status, a.stderr).toBe(0);
    const tokens = (r: typeof a) => JSON.parse(r.stdout).tokens as number[];
    expect(tokens(a)).toEqual(tokens(b));
    // the flags are read: another seed, or none of them, gives other tokens
    expect(tokens(other)).not.toEqual(tokens(a));
    expect(tokens(greedy)).not.toEqual(tokens(a));
  });

  it('chat answers each line of input until the input ends', () => {
    const out = run(['chat', '--max-tokens', '8'], 'What is a list?\nAnd a tuple?\n');
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout.split('> ').length).toBeGreaterThanOrEqual(3);
  });

  it('quantize measures once, then quantizes a merge configuration at a bitrate, and stops with a reason', () => {
    const root = join(tmpdir(), `laminate-cli-quant-${process.pid}`);
    try {
      rmSync(root, { recursive: true, force: true });
      mkdirSync(root);
      const yml = join(root, 'two.yml');
      writeFileSync(yml, `slices:\n- sources: [{ model: ${join(projectRoot, 'models/tiny-mistral-bf16')}, layer_range: [2, 4] }]\nmerge_method: passthrough\ndtype: bfloat16\n`);
      const m = run(['quantize', '--model', yml, '--measure-only', join(root, 'm.json'), '--length', '32', '--measurement-rows', '2']);
      expect(m.status, m.stderr).toBe(0);
      expect(m.stdout).toMatch(/wrote the measurement of 4 blocks/);
      expect(m.stderr).toMatch(/measure 2\/2/);
      const q = run(['quantize', '--model', yml, join(root, 'q'), '--bpw', '5', '--measurement', join(root, 'm.json'), '--rows', '3', '--length', '32', '--json']);
      expect(q.status, q.stderr).toBe(0);
      const r = JSON.parse(q.stdout) as { bitsPerWeight: number; headBits: number };
      expect(r.bitsPerWeight).toBeLessThanOrEqual(5);
      expect(r.headBits).toBe(6);
      const g = run(['generate', '--model', join(root, 'q'), 'The function', '--max-tokens', '4', '--json']);
      expect(g.status, g.stderr).toBe(0);
      const bad = run(['quantize', '--model', yml, join(root, 'x')]);
      expect(bad.status).toBe(1);
      expect(bad.stderr).toMatch(/--bpw/);
      const far = run(['quantize', '--model', yml, join(root, 'x'), '--bpw', '9']);
      expect(far.stderr).toMatch(/from 2 to 8/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('merge writes a merged model that generate can run, and --model takes the YAML itself', () => {
    const out = join(tmpdir(), `laminate-cli-merge-${process.pid}`);
    const yml = join(tmpdir(), `laminate-cli-merge-${process.pid}.yml`);
    const demo = join(projectRoot, 'models/tiny-mistral-bf16');
    writeFileSync(yml, `slices:\n- sources:\n  - model: ${demo}\n    layer_range: [0, 6]\n- sources:\n  - model: ${demo}\n    layer_range: [2, 8]\nmerge_method: passthrough\n`);
    try {
      const merged = run(['merge', yml, out, '--json']);
      expect(merged.status, merged.stderr).toBe(0);
      expect(JSON.parse(merged.stdout)).toMatchObject({ tensors: 3 + 12 * 9, shards: ['model.safetensors'] });
      const fromDisk = JSON.parse(run(['generate', '--model', out, 'The function', '--max-tokens', '6', '--json']).stdout);
      const virtual = JSON.parse(run(['generate', '--model', yml, 'The function', '--max-tokens', '6', '--json']).stdout);
      expect(virtual.tokens).toEqual(fromDisk.tokens);
      expect(run(['merge', yml, out])).toMatchObject({ status: 1, stderr: expect.stringMatching(/already exists/) });
    } finally {
      rmSync(out, { recursive: true, force: true });
      rmSync(yml, { force: true });
    }
  });

  it('--kv-cache-type picks the KV cache format', () => {
    const info = run(['info', '--kv-cache-type', 'q8']);
    expect(info.status, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout).info.kvCacheType).toBe('q8');
    const q8 = run(['generate', 'The function', '--max-tokens', '6', '--ignore-eos', '--kv-cache-type', 'q8', '--json']);
    expect(q8.status, q8.stderr).toBe(0);
    expect(JSON.parse(q8.stdout).tokens.length).toBe(6);
    expect(run(['generate', 'x', '--kv-cache-type', 'q4'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/kvCacheType must be 'f16' or 'q8'/) });
  });

  it('bad input is a message and exit code 1', () => {
    expect(run(['dance'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/unknown command 'dance'/) });
    expect(run(['generate', 'x', '--temperature', 'hot'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/--temperature must be a number/) });
    expect(run(['generate', 'x', '--top-p', '2'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/topP must be in/) });
    expect(run(['info', '--model', '/nonexistent'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/config\.json: cannot read/) });
    expect(run(['generate', '--bogus'])).toMatchObject({ status: 1, stderr: expect.stringMatching(/bogus/) });
  });
});
