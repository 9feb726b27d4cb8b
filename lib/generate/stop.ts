// Stop strings over streamed text: text is released only once it cannot be the start of
// a stop string, so a stop string split over several tokens is found and never emitted.
export class StopMatcher {
  readonly #stops: string[];
  #held = '';

  constructor(stops: string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Feeds text; returns what may be shown, and whether a stop string was reached (the
   * text before it is in `text`, the stop string and anything after are dropped). */
  push(piece: string): { text: string; stopped: boolean } {
    const buffer = this.#held + piece;
    let cut = -1;
    for (const s of this.#stops) {
      const at = buffer.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#held = '';
      return { text: buffer.slice(0, cut), stopped: true };
    }
    // Hold back the longest tail that is a prefix of some stop string.
    let keep = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, buffer.length); n > keep; n--) {
        if (buffer.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.#held = buffer.slice(buffer.length - keep);
    return { text: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  /** The held-back text, when the generation ends for another reason. */
  flush(): string {
    const rest = this.#held;
    this.#held = '';
    return rest;
  }
}
