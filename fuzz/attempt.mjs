// One fuzz attempt, in its own process: `node fuzz/attempt.mjs TARGET SEED CACHE WORK`.
// Prints one line `RESULT {json}` (outcome success, error, unclean or wrong; the longest
// event-loop block) and then leaves the process to exit by itself, so that a handle the
// library forgets to release shows up as a hang.
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { Rng } from './random.mjs';
import { classify, targets, Wrong } from './targets.mjs';

const [name, seedText, cacheText, work] = process.argv.slice(2);
const target = targets[name];
if (!target || !cacheText || !work) {
  console.error('usage: node fuzz/attempt.mjs TARGET SEED CACHE WORK');
  process.exit(2);
}

// the library is imported before the clock starts: its start-up is not the input's doing
await import('../dist/index.js');
const delay = monitorEventLoopDelay({ resolution: 5 });
const log = [];
const rng = new Rng(Number(seedText));
const cache = JSON.parse(cacheText);
let result;
// the clock runs from when the target has made its inputs (start) until it ends, except
// while the target checks its own results (untimed)
let timing = false;
const start = () => {
  timing = true;
  delay.enable();
};
const untimed = (fn) => {
  if (timing) delay.disable();
  try {
    return fn();
  } finally {
    if (timing) delay.enable();
  }
};
try {
  const detail = await target({ rng, cache, work, log: (line) => log.push(line), start, untimed });
  result = { outcome: 'success', detail: String(detail ?? '').slice(0, 300) };
} catch (e) {
  result = e instanceof Wrong ? { outcome: 'wrong', detail: e.message.slice(0, 500) } : classify(e);
}
delay.disable();
result.blockMs = Math.round(delay.max / 1e5) / 10;
result.log = log;
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
