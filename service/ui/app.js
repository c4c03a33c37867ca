// Boot: tabs (hash-addressable: #playground, #router, #live), the API key form, the router info shared by pages.
import { apiKey, call, onUnauthorized, setApiKey } from "/ui/api.js";
import { $ } from "/ui/dom.js";
import { initLive, startLive, stopLive } from "/ui/live.js";
import { initPlayground, setPresets } from "/ui/playground.js";
import { renderRouter } from "/ui/router.js";

const PAGES = ["playground", "router", "live"];
let info = null;

function show(page, focus = false) {
  for (const p of PAGES) {
    const tab = $(`#tab-${p}`);
    const on = p === page;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#page-${p}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (page === "live") startLive();
  else stopLive();
  if (page === "router" && info) renderRouter(info);
}

function initTabs() {
  PAGES.forEach((p, i) => {
    const tab = $(`#tab-${p}`);
    tab.addEventListener("click", () => (location.hash = p));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step === undefined) return;
      e.preventDefault();
      location.hash = PAGES[(i + step + PAGES.length) % PAGES.length];
      show(location.hash.slice(1), true);
    });
  });
  window.addEventListener("hashchange", () => show(currentPage()));
}

function currentPage() {
  const p = location.hash.slice(1);
  return PAGES.includes(p) ? p : "playground";
}

function askForKey(message) {
  const form = $("#key-form");
  form.hidden = false;
  $("#key-message").textContent = message;
  $("#api-key").focus();
}

async function loadInfo() {
  try {
    info = (await call("/ui/api/router")).body;
  } catch (e) {
    if (e.status !== 401) $("#router").textContent = `Could not load the router: ${e.message}`;
    return;
  }
  $("#router-version").textContent = `router ${info.version}`;
  setPresets(info.presets);
  if (currentPage() === "router") renderRouter(info);
}

function initKeyForm() {
  onUnauthorized((e) =>
    askForKey(apiKey() ? `That key was refused (${e.message}).` : "This gateway needs an API key."),
  );
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("#api-key").value.trim());
    $("#api-key").value = "";
    $("#key-message").textContent = "";
    $("#key-form").hidden = true;
    loadInfo();
  });
}

initTabs();
initKeyForm();
initPlayground();
initLive();
show(currentPage());
loadInfo();
