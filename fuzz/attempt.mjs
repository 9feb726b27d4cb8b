// One fuzz attempt, in its own process: `node fuzz/attempt.mjs TARGET SEED CACHE WORK`.
// Prints one line `RESULT {json}` (outcome success, error, unclean or wrong; the longest
// event-loop block) and then leaves the process to exit by itself, so that a handle the
// library forgets to release shows up as a hang.
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
const log = [];
const rng = new Rng(Number(seedText));
const cache = JSON.parse(cacheText);
let result;
// The longest time the event loop was held: the largest lateness of a 5 ms interval. The
// clock runs from when the target has made its inputs (start) until it ends, except while
// the target checks its own results (untimed).
const PERIOD = 5;
let worst = 0;
let last = 0;
let paused = true;
let timer;
const start = () => {
  paused = false;
  last = performance.now();
  timer = setInterval(() => {
    const now = performance.now();
    if (!paused) worst = Math.max(worst, now - last - PERIOD);
    last = now;
  }, PERIOD);
};
const untimed = (fn) => {
  paused = true;
  try {
    return fn();
  } finally {
    last = performance.now();
    paused = false;
  }
};
try {
  const detail = await target({
    rng,
    cache,
    work,
    // (also written at once, so that a crash shows what the attempt was doing)
    log: (line) => {
      log.push(line);
      process.stderr.write(`${line.slice(0, 2000)}\n`);
    },
    start,
    untimed,
  });
  result = { outcome: 'success', detail: String(detail ?? '').slice(0, 300) };
} catch (e) {
  result = e instanceof Wrong ? { outcome: 'wrong', detail: e.message.slice(0, 500) } : classify(e);
}
clearInterval(timer);
result.blockMs = Math.round(Math.max(0, worst) * 10) / 10;
result.log = log;
process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
