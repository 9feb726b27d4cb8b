// Counting turns of the event loop: a counter advanced once per turn (setImmediate), so a
// test can tell whether the loop turned while native work ran, without timing anything.

export interface TurnCounter {
  /** Turns counted so far. */
  readonly turns: number;
  /** Stops counting (resolves after the last turn). */
  stop(): Promise<void>;
}

export function countTurns(): TurnCounter {
  let turns = 0;
  let running = true;
  const spin = (async () => {
    while (running) {
      await new Promise((r) => setImmediate(r));
      turns++;
    }
  })();
  return {
    get turns() {
      return turns;
    },
    stop: () => {
      running = false;
      return spin;
    },
  };
}
