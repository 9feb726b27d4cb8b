// Choosing one measured option per block so that the model meets its bit budget with the
// least damage. ExLlamaV2 anneals; here the choice is exact over a fine discretisation of
// the budget (dynamic programming, costs rounded up so the budget is never exceeded), then
// finished greedily with the exact costs.
//
// The objective is the sum of squared block errors: each block's error is a relative
// perturbation of the residual stream, and independent perturbations add in square, as
// the divergence of the output distribution does to first order.

export interface SlotOption {
  bits: number;
  error: number;
}

export class BudgetError extends RangeError {
  override name = 'BudgetError';
}

const UNITS = 100_000;

/**
 * Picks an option index per slot with Σ bits ≤ budget, minimising Σ error². With `least`,
 * the total must also reach that many bits where some choice can (else the budget alone
 * holds): a target is met from below, not undershot.
 */
export function optimize(slots: SlotOption[][], budget: number, least = 0): number[] {
  if (slots.length === 0) return [];
  const smallest = slots.reduce((a, s) => a + Math.min(...s.map((o) => o.bits)), 0);
  if (smallest > budget) throw new BudgetError(`the smallest option of every block needs ${smallest} bits, more than the budget of ${budget}`);
  const unit = budget / UNITS;
  const cost = slots.map((s) => s.map((o) => Math.ceil(o.bits / unit - 1e-9)));
  const B = UNITS;
  // best[u]: least objective of the slots so far at u units exactly; choice[s][u]: the option taken.
  let best = new Float64Array(B + 1).fill(Infinity);
  let next = new Float64Array(B + 1);
  best[0] = 0;
  const choice = slots.map(() => new Uint8Array(B + 1));
  for (let s = 0; s < slots.length; s++) {
    next.fill(Infinity);
    const options = slots[s]!, c = cost[s]!, pick = choice[s]!;
    for (let o = 0; o < options.length; o++) {
      const e = options[o]!.error ** 2, co = c[o]!;
      for (let u = co; u <= B; u++) {
        const v = best[u - co]! + e;
        if (v < next[u]!) {
          next[u] = v;
          pick[u] = o;
        }
      }
    }
    [best, next] = [next, best];
  }
  // The best total within [least, budget] (costs are rounded up: u units hold at most u
  // units of real bits, and at least u - slots); else the best within the budget.
  const lowest = Math.min(B, Math.max(0, Math.ceil(least / unit) + slots.length));
  const argmin = (from: number) => {
    let at = -1;
    for (let u = from; u <= B; u++) if (Number.isFinite(best[u]!) && (at < 0 || best[u]! < best[at]!)) at = u;
    return at;
  };
  let u = argmin(lowest);
  if (u < 0) u = argmin(0);
  const picked = new Array<number>(slots.length);
  if (u < 0) return slots.map((s) => s.reduce((bi, o, i) => (o.bits < s[bi]!.bits ? i : bi), 0));
  for (let s = slots.length - 1; s >= 0; s--) {
    picked[s] = choice[s]![u]!;
    u -= cost[s]![picked[s]!]!;
  }
  // With exact costs there may be room left: take the best single changes that still fit.
  let used = picked.reduce((a, o, s) => a + slots[s]![o]!.bits, 0);
  for (;;) {
    let gain = 0, at = -1, to = -1;
    slots.forEach((options, s) => {
      const cur = options[picked[s]!]!;
      options.forEach((o, i) => {
        const g = cur.error ** 2 - o.error ** 2;
        const total = used - cur.bits + o.bits;
        if (g > gain && total <= budget && (total >= least || total >= used)) (gain = g), (at = s), (to = i);
      });
    });
    if (at < 0) break;
    used += slots[at]![to]!.bits - slots[at]![picked[at]!]!.bits;
    picked[at] = to;
  }
  return picked;
}
