// The routing policy, in the page: argmax(quality − λ·cost), ties to the cheaper model, then the router's order.
// Mirrors router_models' decide() and lambda_interval() exactly (same float64 arithmetic, same tie tolerance),
// so moving λ in the page gives the choice /route would give, without a request.

export const TIE_ATOL = 1e-12;

// rows: [{name, quality, cost}] of the eligible models, in the router's order.
export function utility(row, lam) {
  return lam ? row.quality - lam * row.cost : row.quality;
}

export function choose(rows, lam) {
  let best = -Infinity;
  for (const r of rows) best = Math.max(best, utility(r, lam));
  let pick = -1;
  rows.forEach((r, i) => {
    if (utility(r, lam) >= best - TIE_ATOL && (pick < 0 || r.cost < rows[pick].cost)) pick = i;
  });
  return pick;
}

// The fallback order at λ: the choice, then utility descending, cost ascending, router order.
export function rank(rows, lam) {
  const best = choose(rows, lam);
  const rest = rows.map((_, i) => i).filter((i) => i !== best);
  rest.sort((a, b) => utility(rows[b], lam) - utility(rows[a], lam) || rows[a].cost - rows[b].cost || a - b);
  return [best, ...rest];
}

// [lo, hi] of λ ≥ 0 over which rows[chosen] keeps the best utility (hi may be Infinity; NaN if never).
export function lambdaInterval(rows, chosen) {
  let lo = 0;
  let hi = Infinity;
  const c = rows[chosen];
  for (let j = 0; j < rows.length; j++) {
    if (j === chosen) continue;
    const dq = c.quality - rows[j].quality;
    const dc = c.cost - rows[j].cost;
    if (dc > 0) hi = Math.min(hi, dq / dc);
    else if (dc < 0) lo = Math.max(lo, dq / dc);
    else if (dq < -TIE_ATOL) return [NaN, NaN];
  }
  return [Math.max(lo, 0), hi];
}

// The whole λ axis as segments [{from, to, index}]: which model wins where (the upper envelope).
export function segments(rows) {
  const out = [];
  let lam = 0;
  for (let step = 0; step <= rows.length && rows.length; step++) {
    const i = choose(rows, lam);
    const [lo, hi] = lambdaInterval(rows, i);
    out.push({ from: out.length ? out[out.length - 1].to : lo, to: hi, index: i });
    if (!Number.isFinite(hi)) break;
    lam = hi * (1 + 1e-9) + 1e-300;
  }
  return out;
}
