// The router page: the served artifact's models and prices, presets, training data and its quality–cost curve
// (test split of its training report: every router's upper envelope, cheapest, best single model, oracle).
import { $, fill, h, lam as fmtLam, num, svg, table, usd } from "/ui/dom.js";

const W = 720;
const H = 400;
const M = { left: 62, right: 16, top: 14, bottom: 44 };
const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7b83", "#57606a"];

// Vertices of the non-decreasing concave hull of the points, sorted by cost (router_models' upper_envelope).
export function upperEnvelope(points) {
  const best = new Map();
  for (const [x, y] of points) best.set(x, Math.max(y, best.get(x) ?? -Infinity));
  const pts = [...best.entries()].sort((a, b) => a[0] - b[0]);
  const hull = [];
  for (const p of pts) {
    while (hull.length >= 2) {
      const [x1, y1] = hull[hull.length - 2];
      const [x2, y2] = hull[hull.length - 1];
      if ((x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0) hull.pop();
      else break;
    }
    hull.push(p);
  }
  let peak = 0;
  hull.forEach((p, i) => (p[1] > hull[peak][1] ? (peak = i) : null));
  return hull.slice(0, peak + 1);
}

function price(p) {
  if (!p) return "–";
  if (p.per_call !== null && p.per_call !== undefined) return `${usd(p.per_call)} per call`;
  if (p.input_per_mtok === null && p.output_per_mtok === null) return "–";
  return `$${p.input_per_mtok ?? "–"} / $${p.output_per_mtok ?? "–"}`;
}

function modelsTable(info) {
  return table(
    `Models (${info.models.length}); prices in USD per million input / output tokens`,
    [{ label: "model" }, { label: "backend" }, { label: "training price" }, { label: "backend price" }],
    info.models.map((m) => [
      m.name,
      m.backend ? `${m.backend}${m.upstream_model && m.upstream_model !== m.backend ? ` → ${m.upstream_model}` : ""}` : "none (never chosen)",
      price(m.training_price),
      price(m.backend_price),
    ]),
  );
}

function presetsTable(info) {
  return table(
    "Presets: λ and the target each was calibrated to (validation figures)",
    [
      { label: "preset" },
      { label: "λ", cls: "num" },
      { label: "target" },
      { label: "met" },
      { label: "val. quality", cls: "num" },
      { label: "val. cost", cls: "num" },
    ],
    info.presets.map((p) => [
      p.alias_of ? `${p.name} (= ${p.alias_of})` : p.name,
      fmtLam(p.lambda),
      p.target ? `${p.target.kind} ${p.target.value}${p.target.model ? ` (${p.target.model})` : ""}` : "–",
      p.met === null || p.met === undefined ? "–" : p.met ? "yes" : "no",
      num(p.val_quality),
      usd(p.val_cost),
    ]),
  );
}

function training(t) {
  if (!t) return h("p", { class: "muted", text: "No training report (served through a remote feature worker, or none recorded)." });
  const facts = [
    ["dataset", t.dataset],
    ["train prompts", t.n_train],
    ["test prompts", t.n_test],
    ["cross-validation folds", t.folds],
    ["data fingerprint", t.fingerprint ? String(t.fingerprint).slice(0, 16) + "…" : null],
    ["selected scorer", t.selected],
    ["selected by", t.selection],
    ["calibration", t.calibration],
  ].filter(([, v]) => v !== null && v !== undefined);
  const cands = Object.entries(t.candidates || {});
  return [
    h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: String(v) })])),
    cands.length
      ? table(
          "Candidate scorers (cross-validated on the train split)",
          [{ label: "candidate" }, { label: "features" }, { label: "cv AUC", cls: "num" }, { label: "cv cost at 95%", cls: "num" }],
          cands.map(([name, c]) => [name === t.selected ? `${name} (selected)` : name, c.features ?? "", num(c.cv_auc), num(c.cv_cost_at_95)]),
        )
      : null,
  ];
}

// ---------------------------------------------------------------------------------------------- chart
function scales(curve) {
  const xs = [];
  const ys = [];
  for (const r of Object.values(curve.routers)) for (const [x, y] of r.curve || []) xs.push(x), ys.push(y);
  for (const k of ["cheapest", "best_single", "oracle"]) {
    const ref = curve.reference[k];
    if (ref) xs.push(ref.cost), ys.push(ref.quality);
  }
  const pos = xs.filter((x) => x > 0);
  const [x0, x1] = [Math.min(...pos), Math.max(...pos)];
  const log = x1 > 8 * x0;
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = (y1 - y0) * 0.06 || 0.05;
  const fx = log ? (x) => Math.log10(Math.max(x, x0 / 2)) : (x) => x;
  const [a, b] = log ? [Math.log10(x0 / 1.3), Math.log10(x1 * 1.3)] : [0, x1 * 1.05];
  return {
    log,
    x: (x) => M.left + ((fx(x) - a) / (b - a)) * (W - M.left - M.right),
    y: (y) => H - M.bottom - ((y - (y0 - pad)) / (y1 + pad - (y0 - pad))) * (H - M.top - M.bottom),
    xTicks: log ? decades(a, b) : linear(0, x1 * 1.05),
    yTicks: linear(y0 - pad, y1 + pad),
  };
}

function decades(a, b) {
  const out = [];
  for (let e = Math.ceil(a); e <= Math.floor(b); e++) out.push(10 ** e);
  return out;
}

function linear(lo, hi) {
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4 || 1));
  const k = [1, 2, 5].find((m) => (hi - lo) / (m * step) <= 6) ?? 10;
  const out = [];
  for (let v = Math.ceil(lo / (k * step)) * k * step; v <= hi; v += k * step) out.push(+v.toPrecision(6));
  return out;
}

function axes(s) {
  const g = svg("g", { class: "axes" });
  for (const t of s.xTicks) {
    g.append(svg("line", { x1: s.x(t), x2: s.x(t), y1: M.top, y2: H - M.bottom, class: "grid" }));
    g.append(svg("text", { x: s.x(t), y: H - M.bottom + 16, "text-anchor": "middle", text: usd(t) }));
  }
  for (const t of s.yTicks) {
    g.append(svg("line", { x1: M.left, x2: W - M.right, y1: s.y(t), y2: s.y(t), class: "grid" }));
    g.append(svg("text", { x: M.left - 6, y: s.y(t) + 4, "text-anchor": "end", text: t.toFixed(2) }));
  }
  g.append(svg("text", { x: (W + M.left) / 2, y: H - 6, "text-anchor": "middle", text: `mean cost per prompt (USD${s.log ? ", log scale" : ""})` }));
  g.append(svg("text", { x: 14, y: H / 2, transform: `rotate(-90 14 ${H / 2})`, "text-anchor": "middle", text: "mean quality" }));
  return g;
}

function readout(text) {
  $("#curve-readout").textContent = text;
}

function point(s, x, y, label, attrs) {
  const text = `${label}: cost ${usd(x)}, quality ${num(y)}`;
  return svg(
    "circle",
    { cx: s.x(x), cy: s.y(y), tabindex: 0, "aria-label": text, onmouseenter: () => readout(text), onfocus: () => readout(text), ...attrs },
    svg("title", { text }),
  );
}

function routerSeries(s, name, r, color, ours) {
  const g = svg("g", { class: `series${ours ? " ours" : ""}`, "data-router": name });
  const pts = r.curve || [];
  for (const [x, y] of pts) g.append(svg("circle", { cx: s.x(x), cy: s.y(y), r: 1.6, fill: color, class: "raw" }));
  const env = upperEnvelope(pts);
  g.append(svg("polyline", { points: env.map(([x, y]) => `${s.x(x)},${s.y(y)}`).join(" "), stroke: color, class: "envelope" }));
  for (const [x, y] of env) g.append(point(s, x, y, name, { r: ours ? 4 : 3, fill: color, class: "vertex" }));
  return g;
}

const MARKS = {
  cheapest: { label: "cheapest", shape: (x, y) => `M${x},${y + 6} L${x - 6},${y - 5} L${x + 6},${y - 5} Z`, cls: "mark-cheapest" },
  best_single: { label: "best single model", shape: (x, y) => `M${x - 5},${y - 5} h10 v10 h-10 Z`, cls: "mark-best" },
  oracle: {
    label: "oracle",
    shape: (x, y) => {
      const p = [];
      for (let i = 0; i < 10; i++) {
        const r = i % 2 ? 3.2 : 8;
        const a = (Math.PI / 5) * i - Math.PI / 2;
        p.push(`${x + r * Math.cos(a)},${y + r * Math.sin(a)}`);
      }
      return `M${p.join(" L")} Z`;
    },
    cls: "mark-oracle",
  },
};

function references(s, ref) {
  const g = svg("g", { class: "references" });
  const rnd = ref.random?.curve;
  if (rnd) g.append(svg("polyline", { points: rnd.map(([x, y]) => `${s.x(x)},${s.y(y)}`).join(" "), class: "random" }));
  for (const [key, m] of Object.entries(MARKS)) {
    const r = ref[key];
    if (!r) continue;
    const label = `${m.label}${r.model ? ` (${r.model})` : ""}`;
    const text = `${label}: cost ${usd(r.cost)}, quality ${num(r.quality)}`;
    const x = s.x(r.cost);
    const y = s.y(r.quality);
    g.append(
      svg(
        "path",
        { d: m.shape(x, y), class: `mark ${m.cls}`, tabindex: 0, "aria-label": text, "data-ref": key, onmouseenter: () => readout(text), onfocus: () => readout(text) },
        svg("title", { text }),
      ),
    );
    const right = x > W * 0.7; // keep the label inside the plot
    g.append(svg("text", { x: right ? x - 9 : x + 9, y: y - 8, "text-anchor": right ? "end" : "start", class: "mark-label", text: label }));
  }
  return g;
}

function chart(curve) {
  const s = scales(curve);
  const names = Object.keys(curve.routers);
  const plot = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "curve-title", id: "curve" });
  plot.append(svg("title", { id: "curve-title", text: `Quality vs cost on the test split of ${curve.dataset ?? "the training data"}` }));
  plot.append(axes(s));
  const series = {};
  names.forEach((n, i) => {
    series[n] = routerSeries(s, n, curve.routers[n], COLORS[i % COLORS.length], n === curve.router);
    plot.append(series[n]);
  });
  plot.append(references(s, curve.reference));
  const legend = h(
    "fieldset",
    { class: "legend" },
    h("legend", { text: "Routers (upper envelope of the λ sweep; AUC)" }),
    names.map((n, i) => {
      const id = `curve-router-${i}`;
      const box = h("input", { type: "checkbox", id, checked: true });
      box.addEventListener("change", () => series[n].classList.toggle("off", !box.checked));
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = COLORS[i % COLORS.length];
      return h("div", { class: "row" }, box, h("label", { for: id }, swatch, `${n} (AUC ${num(curve.routers[n].auc)})`));
    }),
  );
  return [
    h("div", { class: "chart" }, plot, legend),
    h("p", { id: "curve-readout", class: "muted", role: "status", text: "Hover or tab to a point to read it." }),
  ];
}

export function renderRouter(info) {
  const curve = info.curve;
  fill(
    $("#router"),
    h(
      "section",
      { class: "card", "aria-labelledby": "curve-h" },
      h("h2", { id: "curve-h", text: curve ? `Quality–cost curve (${curve.dataset ?? "test split"}, n = ${curve.n_test ?? "?"})` : "Quality–cost curve" }),
      curve ? chart(curve) : h("p", { class: "muted", text: "This router's manifest has no test report with curves." }),
    ),
    h("div", { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "models-h" }, h("h2", { id: "models-h", text: `Router ${info.version} (${info.worker})` }), modelsTable(info)),
      h("div", {},
        h("section", { class: "card", "aria-labelledby": "presets-h" }, h("h2", { id: "presets-h", text: "Presets" }), presetsTable(info)),
        h("section", { class: "card", "aria-labelledby": "train-h" }, h("h2", { id: "train-h", text: "Training data" }), training(info.training)),
      ),
    ),
  );
}
