// Small DOM helpers: build elements without innerHTML (text is always set as text, never parsed).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat(Infinity)) if (c) el.append(c);
  return el;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

// A table: columns [{label, cls}] and rows of cells (strings or nodes); caption for screen readers.
export function table(caption, columns, rows, rowAttrs = () => ({})) {
  return h(
    "table",
    {},
    h("caption", { text: caption }),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.cls, text: c.label })))),
    h(
      "tbody",
      {},
      rows.map((cells, i) => h("tr", rowAttrs(i), cells.map((v, j) => h("td", { class: columns[j].cls }, v)))),
    ),
  );
}

export function usd(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return "–";
  if (x === 0) return "$0";
  const a = Math.abs(x);
  return "$" + (a >= 0.01 ? x.toFixed(4) : a >= 1e-6 ? x.toPrecision(3) : x.toExponential(2));
}

export function num(x, digits = 3) {
  if (x === null || x === undefined || !Number.isFinite(x)) return x === Infinity ? "∞" : "–";
  return Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(2) : x.toFixed(digits);
}

export function lam(x) {
  if (x === null || x === undefined) return "∞";
  if (!Number.isFinite(x)) return x === Infinity ? "∞" : "–";
  return x === 0 ? "0" : Math.abs(x) >= 1000 || Math.abs(x) < 0.01 ? x.toExponential(3) : x.toPrecision(5);
}

export function signed(x, digits = 3) {
  return (x > 0 ? "+" : x < 0 ? "−" : "") + Math.abs(x).toFixed(digits);
}

// A horizontal bar for a share in [0, 1] inside a fixed-width track; cls colours it (pos, neg).
export function bar(share, cls = "") {
  const fillEl = h("span", { class: `bar ${cls}`.trim() });
  fillEl.style.width = `${Math.max(0, Math.min(1, share)) * 100}%`;
  return h("span", { class: "track", "aria-hidden": "true" }, fillEl);
}
