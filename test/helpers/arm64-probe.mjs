// Run by test/arm64.test.ts with an arm64 Node under qemu-user (PREBUILDS_ONLY=1, so that
// the package loads prebuilds/linux-arm64/ and not the x86-64 build/): the job file names
// model directories and EXL2 cases; the results (the CPU's kernel families, logits of every
// position per model (and KV cache format) and family, EXL2 outputs per case and family) go to the output file.
//
//   node test/helpers/arm64-probe.mjs job.json out.json
import { readFileSync, writeFileSync } from 'node:fs';

import { cpuInfo, loadModel } from '../../dist/index.js';
import { native } from '../../dist/native.js';

const [jobFile, outFile] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobFile, 'utf8'));
const cpu = cpuInfo();
const out = { arch: process.arch, cpu, models: [], exl2: [] };

for (const { dir, tokens, kvCacheType } of job.models ?? []) {
  const perIsa = {};
  for (const isa of cpu.isas) {
    const model = await loadModel(dir, { isa, threads: 2, kvCacheType });
    const logits = await model.forward(tokens, { allLogits: true });
    const { tokens: generated } = await model.generate({ tokens: tokens.slice(0, 4), maxTokens: 6, stopAtEos: false });
    perIsa[isa] = { logits: Array.from(logits), generated, info: model.info.isa };
    await model.dispose();
  }
  out.models.push(perIsa);
}

const typed = { qWeight: Int32Array, qInvperm: Int32Array, qScale: Int32Array, qScaleMax: Uint16Array, qGroups: Int16Array };
for (const c of job.exl2 ?? []) {
  const layer = { n: c.layer.n, k: c.layer.k };
  for (const [key, Type] of Object.entries(typed)) layer[key] = Type.from(c.layer[key]);
  const perIsa = {};
  for (const isa of cpu.isas) {
    const r = native().exl2Matmul(layer, Float32Array.from(c.x), c.m, isa);
    perIsa[isa] = { y: Array.from(r.y), xq: Array.from(r.xq), scale: Array.from(r.scale) };
  }
  out.exl2.push(perIsa);
}

let forced = null;
try {
  await loadModel(job.models?.[0]?.dir ?? '.', { isa: 'avx2' });
} catch (e) {
  forced = e.message;
}
out.foreignIsaError = forced;
writeFileSync(outFile, JSON.stringify(out));
