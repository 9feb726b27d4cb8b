import { loadModel } from 'laminate';
const model = await loadModel(process.argv[2], { threads: Number(process.argv[3] ?? 1) });
await model.forward([1, 2, 3, 4]);
const batches = [];
for (let b = 0; b < 8; b++) {
  const t0 = performance.now();
  for (let i = 0; i < 8; i++) await model.forward([5 + i]);
  batches.push((performance.now() - t0) / 8);
}
batches.sort((a, b) => a - b);
console.log('min', batches[0].toFixed(1), 'median', batches[4].toFixed(1));
