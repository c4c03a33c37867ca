// The live page: GET /ui/api/live (the gateway's own metrics over a recent window) every few seconds,
// plus /readyz for the router's and Redis' state.
import { call } from "/ui/api.js";
import { $, bar, fill, h, num, table, usd } from "/ui/dom.js";

const EVERY_MS = 5000;
let timer = null;

function card(label, value, id) {
  return h("div", { class: "stat" }, h("div", { class: "stat-label", text: label }), h("div", { class: "stat-value", id, text: value }));
}

function ms(x) {
  return x === null || x === undefined ? "–" : `${num(x, 1)} ms`;
}

function windowText(d) {
  if (d.since_start) return `since the gateway started (window ${d.window_s} s not yet covered)`;
  return `over the last ${Math.round(d.span_s)} s`;
}

function decisions(d) {
  const entries = Object.entries(d.decisions);
  if (!entries.length) return h("p", { class: "muted", text: "No routed requests in this window." });
  const max = Math.max(...entries.map(([, v]) => v.route + v.chat), 1);
  const t = table(
    "Decisions per model (/route and /v1/chat/completions)",
    [{ label: "model" }, { label: "share" }, { label: "/route", cls: "num" }, { label: "chat", cls: "num" }, { label: "spend", cls: "num" }],
    entries.map(([m, v]) => {
      return [m, h("span", { class: "barcell" }, bar((v.route + v.chat) / max)), String(v.route), String(v.chat), usd(d.spend_usd.by_model[m] ?? 0)];
    }),
    (i) => ({ "data-model": entries[i][0] }),
  );
  t.id = "live-decisions";
  return t;
}

function fallbacks(d) {
  const rows = [];
  for (const [m, reasons] of Object.entries(d.fallbacks.by_model)) for (const [r, n] of Object.entries(reasons)) rows.push([m, r, String(n)]);
  if (!rows.length) return h("p", { class: "muted", text: "No fallbacks in this window." });
  return table("Fallbacks: the backend that failed, and why", [{ label: "model" }, { label: "reason" }, { label: "count", cls: "num" }], rows);
}

function render(d, ready) {
  const rl = Object.entries(d.rate_limited).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  fill(
    $("#live"),
    h("p", { class: "muted", id: "live-window-text", text: `Gateway metrics ${windowText(d)}.` }),
    h(
      "div",
      { class: "stats" },
      card("requests (errors)", `${d.requests.total} (${d.requests.errors})`, "live-requests"),
      card("estimated spend", usd(d.spend_usd.total), "live-spend"),
      card("cache hit rate", d.cache.hit_rate === null ? "–" : `${(d.cache.hit_rate * 100).toFixed(1)}%`, "live-cache"),
      card("routing p50 / p99", `${ms(d.routing_latency.p50_ms)} / ${ms(d.routing_latency.p99_ms)}`, "live-routing"),
      card("upstream p50 / p99", `${ms(d.upstream_latency.p50_ms)} / ${ms(d.upstream_latency.p99_ms)}`, "live-upstream"),
      card("fallbacks", String(d.fallbacks.total), "live-fallbacks"),
    ),
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "dec-h" }, h("h2", { id: "dec-h", text: "Decisions" }), decisions(d)),
      h("section", { class: "card", "aria-labelledby": "fb-h" },
        h("h2", { id: "fb-h", text: "Fallbacks and limits" }),
        fallbacks(d),
        h("p", { text: `Rate-limited requests: ${rl}.` }),
        ready ? h("p", { id: "live-ready", text: `Gateway ${ready.status}${ready.reason ? ` (${ready.reason})` : ""}; Redis: ${ready.redis}.` }) : null,
      ),
    ),
  );
}

async function refresh() {
  const windowS = $("#live-window").value;
  try {
    const [{ body }, ready] = await Promise.all([
      call(`/ui/api/live?window_s=${encodeURIComponent(windowS)}`),
      fetch("/readyz").then((r) => r.json()).catch(() => null),
    ]);
    render(body, ready);
    $("#live-status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("#live-status").textContent = `could not update: ${e.message}`;
  }
}

export function startLive() {
  stopLive();
  refresh();
  timer = setInterval(() => {
    if (!$("#live-pause").checked) refresh();
  }, EVERY_MS);
}

export function stopLive() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

export function initLive() {
  $("#live-window").addEventListener("change", refresh);
  $("#live-form").addEventListener("submit", (e) => e.preventDefault());
}
