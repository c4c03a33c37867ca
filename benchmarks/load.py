"""Sustained load through the gateway: N clients for T seconds, routed chat completions to a fake upstream.

    python -m benchmarks.load                      # 60 s, 32 clients (the issue-11 acceptance run)
    python -m benchmarks.load --seconds 10 --clients 8

Three processes on 127.0.0.1: the scripted fake OpenAI-compatible upstream and the keyword routing engine
from ``tests/service/gateway_fakes.py`` (so the numbers measure the gateway, not a backbone), the gateway
itself (production server settings, in-process cache/limits/usage), and this one driving ``--clients``
concurrent keep-alive connections. Prompts cycle through 500 variants, so the routing cache sees hits and
misses. The gateway's RSS is read from /proc after a warm-up and at the end. Prints a markdown table; the
run passes (exit 0) with 0 errors and RSS growth <= --max-rss-growth-mb over at least --min-requests.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_FAKES = Path(__file__).resolve().parents[1] / "tests" / "service"


def _fakes() -> Any:
    if str(_FAKES) not in sys.path:
        sys.path.insert(0, str(_FAKES))
    import gateway_fakes

    return gateway_fakes


def _run_upstream(port: int) -> None:
    from service.core.config import ServerSettings
    from service.core.server import build_server

    fakes = _fakes()
    build_server(fakes.make_upstream_app(fakes.FakeUpstream()), ServerSettings(request_log="off"), port=port).run()


def _run_gateway(port: int, upstream_port: int) -> None:
    from service.core.config import Settings
    from service.core.server import build_server
    from service.main import create_app

    fakes = _fakes()
    base = f"http://127.0.0.1:{upstream_port}/ok/v1"
    settings = Settings(
        backends=[
            {"name": n, "base_url": base, "max_concurrency": 64} for n in ("small-model", "medium-model", "large-model")
        ],
        auth={"require_auth": False},
        server={"request_log": "errors"},
    )
    build_server(create_app(settings, fakes.FakeEngine()), settings.server, port=port).run()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def _wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url) as client:
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not become ready")
            await asyncio.sleep(0.1)


async def _drive(url: str, clients: int, seconds: float, pid: int, warmup: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss: dict[str, float] = {}
    stop_at = time.monotonic() + seconds
    kinds = ("easy", "hard", "")

    async def client_loop(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            n = 0
            while time.monotonic() < stop_at:
                prompt = f"{kinds[n % 3]} question {(i * 7919 + n) % 500}"
                body = {"model": "router", "messages": [{"role": "user", "content": prompt}]}
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
                    key = "" if ok else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                latencies.append(time.perf_counter() - t0)
                if key:
                    errors[key] = errors.get(key, 0) + 1
                if len(latencies) == warmup and "start" not in rss:
                    rss["start"] = _rss_mb(pid)
                n += 1

    t0 = time.monotonic()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    rss["end"] = _rss_mb(pid)
    rss.setdefault("start", rss["end"])
    return {"latencies": latencies, "errors": errors, "rss": rss, "wall_s": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the clients send (default 60)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent keep-alive clients (default 32)")
    parser.add_argument("--warmup", type=int, default=1000, help="requests before the first RSS reading")
    parser.add_argument("--min-requests", type=int, default=10_000, help="fewer than this fails the run")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0, help="more growth than this fails the run")
    args = parser.parse_args(argv)

    fakes = _fakes()
    up_port, gw_port = fakes.free_port(), fakes.free_port()
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_run_upstream, args=(up_port,), daemon=True),
        ctx.Process(target=_run_gateway, args=(gw_port, up_port), daemon=True),
    ]
    for p in procs:
        p.start()
    url = f"http://127.0.0.1:{gw_port}"
    try:
        asyncio.run(_wait_ready(url))
        assert procs[1].pid is not None
        out = asyncio.run(_drive(url, args.clients, args.seconds, procs[1].pid, args.warmup))
    finally:
        for p in procs:
            p.terminate()
            p.join(10)
    lat = sorted(out["latencies"])
    n, errors = len(lat), sum(out["errors"].values())

    def pct(q: float) -> float:
        return lat[min(n - 1, int(q * n))] * 1000

    growth = out["rss"]["end"] - out["rss"]["start"]
    print(
        "| clients | seconds | requests | req/s | errors | p50 ms | p95 ms | p99 ms | max ms "
        f"| RSS after {args.warmup} | RSS end | RSS growth |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.clients} | {out['wall_s']:.1f} | {n} | {n / out['wall_s']:.0f} | {errors} | {pct(0.5):.1f} | "
        f"{pct(0.95):.1f} | {pct(0.99):.1f} | {lat[-1] * 1000:.1f} | {out['rss']['start']:.1f} MB | "
        f"{out['rss']['end']:.1f} MB | {growth:+.1f} MB |"
    )
    if out["errors"]:
        print(f"errors: {out['errors']}")
    print(f"mean latency {statistics.fmean(lat) * 1000:.1f} ms")
    ok = errors == 0 and n >= args.min_requests and growth <= args.max_rss_growth_mb
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
