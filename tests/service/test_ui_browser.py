"""``/ui`` in a real browser: Playwright drives Debian's Chromium against a live gateway on loopback.

The gateway (uvicorn in a thread) serves a small trained router (:mod:`ui_router`) with client keys required;
its backends are the scripted fake upstream, with ``strong`` answering 500 so that a chat routed to it falls
back. Nothing leaves 127.0.0.1. Without Chromium (``apt-get install chromium``; Playwright's own browser
download is not used) or the ``playwright`` package the tests skip and say why.

``SAE_ROUTER_UI_SCREENSHOT=docs/playground.png`` makes the first test save the README's screenshot there.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_fakes import CLIENT_AUTH, CLIENT_KEY, FakeUpstream, serve, sha256
from router_fakes import MODELS
from ui_router import ui_router

from service.core.config import Settings
from service.main import create_app

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = playwright_api.expect

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAILING = "strong"  # its backend answers 500: chats routed to it fall back
CODE_PROMPT = "some code please"  # routes to coder at the default preset, with a finite λ interval
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)
SCREENSHOT = os.environ.get("SAE_ROUTER_UI_SCREENSHOT")  # read at import: the tests' fixtures clear SAE_ROUTER_*


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def gateway(upstream: FakeUpstream) -> Iterator[str]:
    behavior = {m: "e500" if m == FAILING else "ok" for m in MODELS}
    backends = [
        {"name": m, "base_url": f"{upstream.url}/{behavior[m]}/v1", "upstream_model": f"vendor/{m}"} for m in MODELS
    ]
    settings = Settings(
        backends=backends,
        auth={"require_auth": True, "api_keys": [{"name": "team-a", "sha256": sha256(CLIENT_KEY)}]},
        batching={"max_batch": 8, "max_wait_ms": 1},
        fallback={"max_attempts": 3, "total_timeout_s": 5},
    )
    with serve(create_app(settings, ui_router())) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found at /usr/bin/chromium or on PATH: apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser page on the gateway's /ui, with the console errors and page errors it saw."""

    def __init__(self, browser: Any, base: str, key: str | None) -> None:
        self.context = browser.new_context(viewport={"width": 1366, "height": 860})
        if key is not None:  # a returning user: the key is already in this tab's sessionStorage
            self.context.add_init_script(f"sessionStorage.setItem('sae-router-key', {key!r});")
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.base = base

    def open(self, hash_: str = "") -> Any:
        self.page.goto(f"{self.base}/ui{hash_}")
        return self.page

    def route(self, prompt: str, preset: str = "") -> dict[str, str]:
        page = self.page
        page.locator("#preset option").nth(1).wait_for(state="attached")  # presets loaded
        page.fill("#prompt", prompt)
        page.select_option("#preset", preset)
        with page.expect_response(lambda r: r.url == f"{self.base}/route") as answer:
            page.click("#route-btn")
        request_id = answer.value.headers["x-request-id"]
        expect(page.locator(f"#route-said[data-request-id='{request_id}']")).to_be_attached()
        return self.state()

    def state(self) -> dict[str, str]:
        return dict(
            self.page.evaluate(
                """() => ({
                    model: document.querySelector('#chosen-model').dataset.model,
                    lam: document.querySelector('#lambda-input').value,
                    lo: document.querySelector('#interval').dataset.lo,
                    hi: document.querySelector('#interval').dataset.hi,
                })"""
            )
        )

    def set_lambda(self, lam: float) -> str:
        self.page.fill("#lambda-input", repr(lam))
        return self.state()["model"]


@pytest.fixture
def ui(browser: Any, gateway: str) -> Iterator[Page]:
    p = Page(browser, gateway, CLIENT_KEY)
    try:
        yield p
    finally:
        p.context.close()


def api_route(base: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{base}/route", json=body, headers=CLIENT_AUTH, timeout=30)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def num(text: str) -> float | None:
    return math.inf if text == "Infinity" else float(text)


def test_page_loads_routes_and_shows_every_page_without_console_errors(ui: Page, gateway: str) -> None:
    page = ui.open()
    expected = api_route(gateway, prompt=CODE_PROMPT)
    shown = ui.route(CODE_PROMPT)
    assert shown["model"] == expected["model"] == "coder"
    assert page.locator("#ranking-table tbody tr").count() == len(MODELS)
    assert page.locator("#ranking-table tr.chosen").get_attribute("data-model") == expected["model"]
    assert page.inner_text("#router-version") == f"router {expected['router_version']}"
    if SCREENSHOT:  # the README's picture: a routed prompt, its explanation and the answer
        page.click("#chat-btn")
        page.wait_for_selector("#chat-answer")
        page.screenshot(path=SCREENSHOT, full_page=True)
    page.keyboard.press("Tab")  # keyboard reaches the tabs: ArrowRight moves to the next page
    page.focus("#tab-playground")
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#curve")
    assert page.evaluate("location.hash") == "#router"
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("#live-requests")
    assert not ui.errors, ui.errors


def test_moving_lambda_switches_exactly_where_route_says(ui: Page, gateway: str) -> None:
    page = ui.open()
    routed = api_route(gateway, prompt=CODE_PROMPT)
    lo, hi = routed["lambda_interval"]
    assert 0 < lo < routed["lambda"] < hi < math.inf, "the test prompt needs an interval bounded on both sides"
    shown = ui.route(CODE_PROMPT)
    assert close(num(shown["lo"]), lo) and close(num(shown["hi"]), hi)
    seg = page.locator(f"#segment-list li[data-model='{routed['model']}']")
    assert close(float(seg.get_attribute("data-from") or "nan"), lo)
    assert close(float(seg.get_attribute("data-to") or "nan"), hi)

    # the slider, by keyboard: the page's choice is the routed model exactly inside [lo, hi]
    page.focus("#lambda-slider")
    page.keyboard.press("Home")
    seen = set()
    for _ in range(int(page.get_attribute("#lambda-slider", "max") or 0)):
        page.keyboard.press("ArrowRight")
        st = ui.state()
        lam = float(st["lam"])
        inside = lo * (1 + 1e-9) < lam < hi * (1 - 1e-9)
        outside = lam < lo * (1 - 1e-9) or lam > hi * (1 + 1e-9)
        if inside:
            assert st["model"] == routed["model"], (lam, st)
        elif outside:
            assert st["model"] != routed["model"], (lam, st)
        seen.add((inside, outside))
    assert {(True, False), (False, True)} <= seen  # the sweep crossed both switch points

    # typed λ just either side of each end: the page agrees with /route asked at that λ
    for edge in (lo, hi):
        for lam in (edge * (1 - 1e-9), edge * (1 + 1e-9)):
            page_choice = ui.set_lambda(lam)
            assert page_choice == api_route(gateway, prompt=CODE_PROMPT, **{"lambda": lam})["model"], lam
            assert (page_choice == routed["model"]) == (lo <= lam <= hi), lam
    assert not ui.errors, ui.errors


def test_explanation_lists_labelled_features(ui: Page, gateway: str) -> None:
    page = ui.open()
    routed = api_route(gateway, prompt=CODE_PROMPT, explain=True)
    ui.route(CODE_PROMPT)
    features = routed["explanation"]["probe"]["features"]
    labels = page.locator("#features .feature-label").all_inner_texts()
    assert labels == [f["label"] for f in features] and all(labels)
    signs = page.locator("#features td:last-child").all_inner_texts()
    assert [s.strip()[0] for s in signs] == ["+" if f["contribution"] > 0 else "−" for f in features]
    cited = routed["explanation"]["features"]  # ranked by measured effect on the served margin
    assert cited and page.locator("#cited .feature-label").all_inner_texts() == [
        f["label"] or f"latent {f['latent']} (unlabelled)" for f in cited
    ]
    drops = page.locator("#cited td:nth-child(4)").all_inner_texts()
    assert [d.strip()[0] for d in drops] == ["−"] * len(cited)  # every cited latent lowers the margin
    margins = page.inner_text("#margins")
    assert "utility margin" in margins and "quality margin" in margins
    assert page.get_by_text(f"{routed['model']} vs {routed['ranking'][1]}").is_visible()
    if routed["explanation"].get("clusters"):
        assert page.get_by_text("Nearest prompt clusters").is_visible()
    assert not ui.errors, ui.errors


def test_chat_button_shows_the_upstream_answer_backend_fallbacks_and_overhead(
    ui: Page, gateway: str, upstream: FakeUpstream
) -> None:
    page = ui.open()
    ui.route(CODE_PROMPT)
    page.click("#chat-btn")
    page.wait_for_selector("#chat-answer")
    assert page.inner_text("#chat-answer") == f"echo: {CODE_PROMPT}"
    fact = lambda k: page.inner_text(f"#chat-facts dd[data-fact='{k}']")  # noqa: E731
    assert fact("x-router-model") == fact("answered by (response model)") == "coder"
    assert fact("fallbacks (x-router-fallbacks)") == "0"
    assert float(fact("overhead (x-router-overhead-ms)").removesuffix(" ms")) >= 0
    assert upstream.received[-1].body["model"] == "vendor/coder"

    ui.route("history please", preset="quality")  # routes to strong, whose backend fails: one fallback
    assert ui.state()["model"] == FAILING
    page.click("#chat-btn")
    expect(page.locator("#chat-facts dd[data-fact='asked for']")).to_have_text("router:quality")
    assert fact("fallbacks (x-router-fallbacks)") == "1"
    assert fact("x-router-model") != FAILING and page.inner_text("#chat-answer") == "echo: history please"
    assert not ui.errors, ui.errors


def test_keys_are_required_when_configured(browser: Any, gateway: str) -> None:
    p = Page(browser, gateway, key=None)
    try:
        page = p.open()
        page.wait_for_selector("#key-form:not([hidden])")
        assert page.inner_text("#key-message") == "This gateway needs an API key."
        assert page.evaluate("document.activeElement.id") == "api-key"
        page.fill("#api-key", "sk-wrong")
        page.keyboard.press("Enter")
        expect(page.locator("#key-message")).to_contain_text("refused")
        page.fill("#api-key", CLIENT_KEY)
        page.keyboard.press("Enter")
        assert p.route(CODE_PROMPT)["model"] == "coder"
        assert page.locator("#key-form").is_hidden()
        assert page.evaluate("sessionStorage.getItem('sae-router-key')") == CLIENT_KEY
        assert p.errors and all("401" in e for e in p.errors), p.errors  # the two refused loads, nothing else
    finally:
        p.context.close()


def test_router_page_draws_the_curve_with_best_single_and_oracle(ui: Page, gateway: str) -> None:
    info = httpx.get(f"{gateway}/ui/api/router", headers=CLIENT_AUTH).json()
    page = ui.open("#router")
    page.wait_for_selector("#curve")
    ref = info["curve"]["reference"]
    best = page.locator("#curve [data-ref='best_single']")
    assert ref["best_single"]["model"] in (best.get_attribute("aria-label") or "")
    assert page.locator("#curve [data-ref='oracle']").count() == 1
    assert page.locator("#curve .series").count() == len(info["curve"]["routers"])
    page.locator("#curve .vertex").first.focus()
    assert "quality" in page.inner_text("#curve-readout")
    page.get_by_role("checkbox", name=next(iter(info["curve"]["routers"])), exact=False).uncheck()
    assert page.locator("#curve .series.off").count() == 1
    for m in MODELS:
        assert page.get_by_role("cell", name=m, exact=True).count() >= 1
    assert page.get_by_text(f"{info['training']['dataset']}").first.is_visible()
    assert not ui.errors, ui.errors


def test_live_page_summarises_the_gateways_traffic(ui: Page, gateway: str) -> None:
    for _ in range(2):  # the second is a cache hit
        api_route(gateway, prompt="math: 12 * 7 ?")
    chat = {"model": "router", "messages": [{"role": "user", "content": CODE_PROMPT}]}
    assert httpx.post(f"{gateway}/v1/chat/completions", json=chat, headers=CLIENT_AUTH).status_code == 200
    page = ui.open("#live")
    page.wait_for_selector("#live-decisions")
    row = page.locator("#live-decisions tr[data-model='coder']")
    assert row.count() == 1
    assert page.inner_text("#live-cache").endswith("%")
    assert "ms" in page.inner_text("#live-routing")
    assert page.inner_text("#live-spend").startswith("$")
    assert "ready" in page.inner_text("#live-ready")
    assert not ui.errors, ui.errors
