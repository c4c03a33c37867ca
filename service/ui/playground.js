// The playground: route a prompt (POST /route, explain: true), move λ to re-decide in the page, read why,
// and send the prompt through /v1/chat/completions.
import { call } from "/ui/api.js";
import { lambdaInterval, rank, segments, utility } from "/ui/decide.js";
import { $, bar, fill, h, lam as fmtLam, num, signed, table, usd } from "/ui/dom.js";

const STEPS = 500; // slider positions; 0 is λ = 0, the rest a log scale (about 1% apart)

const state = {
  presets: {}, // name -> λ
  routed: null, // the last /route answer
  rows: [], // eligible models: {name, quality, cost}, router order
  segs: [],
  lam: 0,
  custom: false, // λ moved away from the routed / preset value
  scale: [1e-3, 1e3],
};

export function setPresets(presets) {
  state.presets = Object.fromEntries(presets.map((p) => [p.name, p.lambda]));
  const select = $("#preset");
  const names = presets.map((p) => p.name).filter((n) => n !== "default");
  fill(
    select,
    h("option", { value: "", text: `default (λ ${fmtLam(state.presets.default ?? 0)})` }),
    names.map((n) => h("option", { value: n, text: `${n} (λ ${fmtLam(state.presets[n])})` })),
  );
}

// ---------------------------------------------------------------------------------------------- input
function messagesOrPrompt() {
  const text = $("#prompt").value;
  if (!$("#as-messages").checked) return { prompt: text };
  let messages;
  try {
    messages = JSON.parse(text);
  } catch (e) {
    throw new Error(`the text is not JSON: ${e.message}`);
  }
  if (!Array.isArray(messages)) throw new Error('messages must be a JSON list like [{"role": "user", "content": "…"}]');
  return { messages };
}

function target() {
  const preset = $("#preset").value;
  if (state.custom) return { lambda: state.lam };
  return preset ? { preset } : {};
}

function chatModel() {
  const t = target();
  if (t.lambda !== undefined) return `router:${t.lambda}`;
  return t.preset ? `router:${t.preset}` : "router";
}

function status(text) {
  $("#route-status").textContent = text;
}

/** The form's messages or prompt; null (and the reason in the status line) when the input is not valid. */
function readInput() {
  try {
    return messagesOrPrompt();
  } catch (err) {
    status(err.message);
    return null;
  }
}

// ------------------------------------------------------------------------------------------ routing
async function route(e) {
  e.preventDefault();
  const input = readInput();
  if (!input) return;
  status("Routing…");
  try {
    const { body, headers } = await call("/route", { method: "POST", body: { ...input, ...target(), explain: true } });
    status("");
    setRouted(body, headers.get("x-request-id"));
  } catch (err) {
    status(`Routing failed (${err.status ?? "network"}): ${err.message}`);
  }
}

function setRouted(body, requestId) {
  const eligible = new Set(body.ranking);
  state.routed = body;
  state.requestId = requestId;
  state.rows = Object.entries(body.models)
    .filter(([name, m]) => eligible.has(name) && Number.isFinite(m.quality) && Number.isFinite(m.cost))
    .map(([name, m]) => ({ name, quality: m.quality, cost: m.cost }));
  state.segs = segments(state.rows);
  state.scale = scaleFor(state.segs, body.lambda);
  state.custom = false;
  $("#lambda-box").hidden = false;
  setLambda(body.lambda, true);
  renderExplanation();
}

function scaleFor(segs, routedLam) {
  const xs = [...segs.map((s) => s.to), routedLam, ...Object.values(state.presets)].filter(
    (x) => Number.isFinite(x) && x > 0,
  );
  if (!xs.length) return [1e-3, 1e3];
  return [Math.min(...xs) / 10, Math.max(...xs) * 10];
}

function posToLam(pos) {
  if (pos <= 0) return 0;
  const [a, b] = state.scale.map(Math.log10);
  return 10 ** (a + ((b - a) * (pos - 1)) / (STEPS - 1));
}

function lamToPos(lam) {
  if (!(lam > 0)) return 0;
  const [a, b] = state.scale.map(Math.log10);
  return Math.min(STEPS, Math.max(1, Math.round(1 + ((Math.log10(lam) - a) / (b - a)) * (STEPS - 1))));
}

function setLambda(lam, moveSlider) {
  state.lam = lam;
  if (moveSlider) $("#lambda-slider").value = String(lamToPos(lam));
  $("#lambda-input").value = String(lam);
  $("#lambda-slider").setAttribute("aria-valuetext", `λ ${fmtLam(lam)}`);
  renderDecision();
}

function initLambda() {
  $("#lambda-slider").addEventListener("input", (e) => {
    state.custom = true;
    setLambda(posToLam(Number(e.target.value)), false);
  });
  $("#lambda-input").addEventListener("input", (e) => {
    const v = Number(e.target.value);
    if (e.target.value === "" || !Number.isFinite(v) || v < 0) return;
    state.custom = true;
    state.lam = v;
    $("#lambda-slider").value = String(lamToPos(v));
    renderDecision();
  });
  $("#preset").addEventListener("change", () => {
    if (!state.routed) return;
    const name = $("#preset").value || "default";
    if (state.presets[name] === undefined) return;
    state.custom = false;
    setLambda(state.presets[name], true);
  });
}

// ---------------------------------------------------------------------------------------- rendering
function renderDecision() {
  const r = state.routed;
  if (!r || !state.rows.length) return;
  const order = rank(state.rows, state.lam);
  const best = order[0];
  const chosen = state.rows[best];
  const [lo, hi] = lambdaInterval(state.rows, best);
  const intervalText = `λ ∈ [${fmtLam(lo)}, ${fmtLam(hi)}]`;
  fill(
    $("#decision"),
    h(
      "p",
      { class: "chosen-line" },
      "Chosen: ",
      h("strong", { id: "chosen-model", "data-model": chosen.name, text: chosen.name }),
      ` at λ = ${fmtLam(state.lam)}`,
    ),
    h(
      "p",
      {},
      "Holds for ",
      h("span", { id: "interval", "data-lo": lo, "data-hi": hi, text: intervalText }),
      order.length > 1 ? ` · runner-up ${state.rows[order[1]].name}` : "",
    ),
    h(
      "p",
      { id: "route-said", class: "muted", "data-request-id": state.requestId },
      `/route chose ${r.model} at λ = ${fmtLam(r.lambda)}${r.preset ? ` (preset ${r.preset})` : ""}, ` +
        `holding for λ ∈ [${fmtLam(r.lambda_interval[0])}, ${fmtLam(r.lambda_interval[1])}] · ` +
        `cache ${r.cache} · ${num(r.routing_ms, 1)} ms · ${r.routed_chars} chars routed${r.truncated ? " (cut)" : ""}`,
    ),
  );
  renderSegments(best);
  renderRanking(order);
  const stale = $("#explain-stale");
  if (stale) stale.hidden = chosen.name === r.model;
}

function renderSegments(best) {
  const list = h("ol", { id: "segment-list", class: "segments" });
  for (const s of state.segs) {
    const name = state.rows[s.index].name;
    list.append(
      h(
        "li",
        { class: s.index === best ? "active" : null, "data-from": s.from, "data-to": s.to, "data-model": name },
        h("span", { class: "seg-range", text: `λ ${fmtLam(s.from)} – ${fmtLam(s.to)}` }),
        h("span", { class: "seg-model", text: name }),
      ),
    );
  }
  fill($("#segments"), h("p", { class: "muted", text: "Which model wins along λ (switch points):" }), list);
}

function renderRanking(order) {
  const rows = order.map((i, k) => {
    const r = state.rows[i];
    return [String(k + 1), r.name, h("span", { class: "barcell" }, bar(r.quality), num(r.quality)), usd(r.cost), num(utility(r, state.lam), 4)];
  });
  const columns = [
    { label: "#", cls: "num" },
    { label: "model" },
    { label: "predicted quality" },
    { label: "predicted cost", cls: "num" },
    { label: "utility q − λ·c", cls: "num" },
  ];
  const t = table(`Models ranked at λ = ${fmtLam(state.lam)} (the fallback order)`, columns, rows, (k) => ({
    "data-model": state.rows[order[k]].name,
    class: k === 0 ? "chosen" : k === 1 ? "runner" : null,
  }));
  t.id = "ranking-table";
  fill($("#ranking"), t);
}

function pairTable(ex) {
  const sides = [ex.chosen, ex.runner_up].filter((s) => s && typeof s === "object");
  if (!sides.length) return null;
  return table(
    "Predicted quality and cost of the two",
    [{ label: "" }, { label: "model" }, { label: "quality", cls: "num" }, { label: "cost", cls: "num" }],
    sides.map((s, i) => [i ? "runner-up" : "chosen", s.model, num(s.quality), usd(s.cost)]),
  );
}

function margins(ex, r) {
  const items = [
    ["utility margin", ex.utility_margin, (x) => signed(x, 5)],
    ["quality margin", ex.quality_margin, (x) => signed(x, 4)],
    ["cost margin", ex.cost_margin, (x) => (x < 0 ? "−" : "+") + usd(Math.abs(x))],
  ].filter(([, v]) => typeof v === "number");
  const li = items.map(([k, v, f]) => h("li", {}, `${k}: `, h("strong", { text: f(v) })));
  const pair = ex.pair_lambda_interval;
  if (Array.isArray(pair)) li.push(h("li", { text: `beats the runner-up for λ ∈ [${fmtLam(pair[0])}, ${fmtLam(pair[1])}]` }));
  li.push(h("li", { text: `stays the choice for λ ∈ [${fmtLam(r.lambda_interval[0])}, ${fmtLam(r.lambda_interval[1])}]` }));
  if (ex.scorer) li.push(h("li", { text: `served scorer: ${ex.scorer}` }));
  return h("ul", { id: "margins" }, li);
}

function ensembleTable(parts, names) {
  if (!Array.isArray(parts) || !parts.length) return null;
  return table(
    "Parts of the ensemble: what each predicts for the two, and its weight",
    [{ label: "part" }, { label: "features" }, { label: "weight", cls: "num" }, ...names.map((n) => ({ label: `quality: ${n}`, cls: "num" }))],
    parts.map((p) => [p.part, p.features ?? "", num(p.weight), ...names.map((n) => num(p.quality?.[n]))]),
  );
}

function citedTable(feats) {
  if (!Array.isArray(feats) || !feats.length) return null;
  const maxAbs = Math.max(...feats.map((f) => Math.abs(f.delta_utility_margin)), 1e-12);
  const rows = feats.map((f) => [
    h("span", { class: "feature-label", text: f.label || `latent ${f.latent} (unlabelled)` }),
    String(f.latent),
    `${num(f.activation?.max)} / ${num(f.activation?.mean)}`,
    h("span", { class: "barcell signed" }, bar(Math.abs(f.delta_utility_margin) / maxAbs, "neg"), signed(f.delta_utility_margin, 5)),
    signed(f.delta_quality_margin, 4),
  ]);
  const t = table(
    "SAE features the choice rests on: deleting each one and re-scoring with the served router lowers the utility margin by this much",
    [{ label: "feature" }, { label: "latent" }, { label: "activation max / mean", cls: "num" }, { label: "Δ utility margin" }, { label: "Δ quality margin", cls: "num" }],
    rows,
  );
  t.id = "cited";
  return t;
}

function featureTable(probe) {
  const feats = probe?.features;
  if (!Array.isArray(feats) || !feats.length) return null;
  const maxAbs = Math.max(...feats.map((f) => Math.abs(f.contribution)), 1e-12);
  const rows = feats.map((f) => {
    const label = f.label || `latent ${f.latent} (unlabelled)`;
    return [
      h("span", { class: "feature-label", text: label }),
      f.pooling ? `${f.latent} · ${f.pooling}` : String(f.latent ?? f.feature),
      num(f.activation),
      h("span", { class: "barcell signed" }, bar(Math.abs(f.contribution) / maxAbs, f.contribution >= 0 ? "pos" : "neg"), signed(f.contribution)),
    ];
  });
  const t = table(
    "The SAE probe's own view: features that most separate the two in its logits (chosen minus runner-up)",
    [{ label: "feature" }, { label: "latent" }, { label: "activation", cls: "num" }, { label: "contribution" }],
    rows,
  );
  t.id = "features";
  const rest = `other features ${signed(probe.other_features ?? 0)} · bias ${signed(probe.bias_difference ?? 0)} · ` +
    `logit difference ${signed(probe.logit_difference ?? 0)}`;
  return [t, h("p", { class: "muted", text: rest })];
}

function clusterTable(clusters, names) {
  if (!Array.isArray(clusters) || !clusters.length) return null;
  return table(
    "Nearest prompt clusters: each model's mean score there (results)",
    [{ label: "cluster" }, { label: "weight", cls: "num" }, ...names.map((n) => ({ label: n, cls: "num" }))],
    clusters.map((c) => [
      String(c.cluster),
      num(c.weight),
      ...names.map((n) => `${num(c.mean_score?.[n])} (${c.n_results?.[n] ?? "–"})`),
    ]),
  );
}

function renderExplanation() {
  const r = state.routed;
  const ex = r.explanation;
  if (!ex) {
    fill($("#explanation"), h("p", { class: "muted", text: "This router gave no explanation." }));
    return;
  }
  const names = [ex.chosen?.model ?? r.model, ex.runner_up?.model].filter(Boolean);
  fill(
    $("#explanation"),
    h("p", { id: "explain-stale", class: "notice", hidden: true },
      "This explains the choice /route made; at the λ set above the page picks another model. Route again to explain it."),
    h("h3", { text: `${names.join(" vs ")} at λ = ${fmtLam(r.lambda)}` }),
    pairTable(ex),
    margins(ex, r),
    ex.note ? h("p", { class: "muted", text: ex.note }) : null,
    ensembleTable(ex.ensemble, names),
    citedTable(ex.features),
    featureTable(ex.probe),
    clusterTable(ex.clusters, names),
  );
}

// -------------------------------------------------------------------------------------------- chat
async function chat() {
  const input = readInput();
  if (!input) return;
  const messages = input.messages ?? [{ role: "user", content: input.prompt }];
  const model = chatModel();
  fill($("#chat"), h("p", { class: "muted", text: `Asking ${model}…` }));
  try {
    const { body, headers } = await call("/v1/chat/completions", { method: "POST", body: { model, messages } });
    const answer = body.choices?.[0]?.message?.content ?? "";
    fill($("#chat"), h("pre", { id: "chat-answer", class: "answer", text: answer }), chatFacts(model, headers, body.model));
  } catch (err) {
    fill(
      $("#chat"),
      h("p", { id: "chat-error", class: "error", text: `${err.status ?? "network"}: ${err.message}` }),
      err.headers ? chatFacts(model, err.headers, null) : null,
    );
  }
}

function chatFacts(model, headers, responseModel) {
  const facts = [
    ["asked for", model],
    ["answered by (response model)", responseModel],
    ["x-router-model", headers.get("x-router-model")],
    ["fallbacks (x-router-fallbacks)", headers.get("x-router-fallbacks")],
    ["overhead (x-router-overhead-ms)", headers.get("x-router-overhead-ms") && `${headers.get("x-router-overhead-ms")} ms`],
    ["λ (x-router-lambda)", headers.get("x-router-lambda")],
    ["request id", headers.get("x-request-id")],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  return h(
    "dl",
    { id: "chat-facts", class: "facts" },
    facts.map(([k, v]) => [h("dt", { text: k }), h("dd", { "data-fact": k, text: v })]),
  );
}

export function initPlayground() {
  $("#route-form").addEventListener("submit", route);
  $("#chat-btn").addEventListener("click", chat);
  initLambda();
}
