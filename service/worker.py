"""The feature worker: turns prompt texts into ``PromptScores``, batched, off the event loop.

In:  one routed text per awaiting request. Out: its ``PromptScores``.

:class:`BatchingWorker` (in-process, the default) queues texts and hands up to ``max_batch`` of them, or
whatever arrived within ``max_wait_ms`` of the first, to one ``engine.score_batch`` call. That call runs
on a single dedicated thread, so the backbone/SAE is never entered concurrently and the event loop keeps
serving; while it runs, new texts queue up and form the next batch. Concurrent requests for the same text
share one slot. Results are fanned back to the awaiting requests; batch sizes go to the ``batch_size`` histogram.

:class:`RemoteScorer` is the same interface over HTTP, for a gateway whose ``worker_url`` points at a
separate ``sae-router worker`` (:mod:`service.worker_app`) so GPU workers scale on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import httpx

from router_models.decide.engine import PromptScores, RoutingEngine
from service.core.errors import EngineError, NotReady
from service.core.metrics import Metrics
from service.models import scores_from_json, scores_to_json

__all__ = ["WARMUP_TEXT", "BatchingWorker", "Prices", "RemoteScorer", "Scorer", "engine_prices"]

log = logging.getLogger("sae_router.worker")
WARMUP_TEXT = "Warm-up: what is 2 + 2?"
Prices = dict[str, dict[str, float | None]]  # model -> {input_per_mtok, output_per_mtok, per_call}
_PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "per_call")


def engine_prices(engine: object) -> Prices:
    """The prices a router was trained with, when the engine carries them (``TrainedRouter.prices``)."""
    prices = getattr(engine, "prices", None)
    if not isinstance(prices, dict):
        return {}
    return {str(m): {k: getattr(p, k, None) for k in _PRICE_FIELDS} for m, p in prices.items()}


class Scorer(Protocol):
    """What the gateway needs from a router: its identity, and scores/explanations on demand."""

    version: str
    models: tuple[str, ...]
    presets: dict[str, float]
    prices: Prices

    @property
    def runtime(self) -> str | None: ...  # what runs the backbone's blocks ("onnx" / "torch"), when known

    async def score(self, text: str) -> PromptScores: ...

    async def explain(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]: ...


_Item = tuple[str, "asyncio.Future[PromptScores]"]


class BatchingWorker:
    """Batches concurrent ``score`` calls into ``engine.score_batch`` on one thread."""

    def __init__(self, engine: RoutingEngine, *, max_batch: int, max_wait_ms: float, metrics: Metrics) -> None:
        self.engine = engine
        self.version: str = engine.version
        self.models: tuple[str, ...] = tuple(engine.models)
        self.presets: dict[str, float] = dict(engine.presets)
        self.prices: Prices = engine_prices(engine)
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000
        self.metrics = metrics
        self.warm = False
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sae-router-engine")
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Future[PromptScores]] = {}

    async def start(self) -> None:
        """Warm the engine with a dummy batch (first call pays for lazy init), then start batching."""
        await self._score_batch([WARMUP_TEXT])
        self.warm = True
        self._task = asyncio.create_task(self._run(), name="sae-router-batcher")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for fut in list(self._inflight.values()):  # queued, or in a batch that was cut short
            if not fut.done():
                fut.set_exception(NotReady("the router is shutting down"))
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    @property
    def runtime(self) -> str | None:
        """What runs the engine's backbone blocks ("onnx" / "torch"; None for an engine without one)."""
        runtime = getattr(self.engine, "runtime", None)
        return None if runtime is None else str(runtime)

    async def score(self, text: str) -> PromptScores:
        """Scores ``text`` in the next batch; concurrent calls for the same text share one slot."""
        if self._task is None or self._task.done():
            raise NotReady("the router's feature worker is not running")
        fut = self._inflight.get(text)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._inflight[text] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(text, None))
            self._queue.put_nowait((text, fut))
        return await asyncio.shield(fut)  # one caller going away must not cancel the others' result

    async def score_many(self, texts: Sequence[str]) -> list[PromptScores]:
        return list(await asyncio.gather(*(self.score(t) for t in texts)))

    async def explain(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.engine.explain, scores, chosen, runner_up)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if self._queue.empty():
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            batch.append(await self._queue.get())
                    except TimeoutError:
                        break
                else:
                    batch.append(self._queue.get_nowait())
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Item]) -> None:
        texts = [t for t, _ in batch]  # unique: score() shares one slot per text in flight
        try:
            results = await self._score_batch(texts)
        except Exception as exc:
            log.error("score_batch failed for a batch of %d", len(texts), exc_info=exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(EngineError("the router failed to score the prompt"))
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(result)

    async def _score_batch(self, texts: list[str]) -> list[PromptScores]:
        self.metrics.batch_size.observe(len(texts))
        loop = asyncio.get_running_loop()
        with self.metrics.score_seconds.time():
            out = await loop.run_in_executor(self._executor, self.engine.score_batch, texts)
        if len(out) != len(texts):
            raise RuntimeError(f"score_batch returned {len(out)} results for {len(texts)} texts")
        return out


class RemoteScorer:
    """The :class:`Scorer` interface over a feature worker's HTTP API (``/v1/info``, ``/v1/score``)."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, timeout_s: float) -> None:
        self.client, self.base_url, self.timeout = client, base_url.rstrip("/"), httpx.Timeout(timeout_s)
        self.version: str = ""
        self.models: tuple[str, ...] = ()
        self.presets: dict[str, float] = {}
        self.prices: Prices = {}
        self.runtime: str | None = None
        self.warm = False

    async def connect(self) -> None:
        """Fetch the worker's router identity; raises httpx errors while it is unreachable."""
        r = await self.client.get(f"{self.base_url}/v1/info", timeout=self.timeout)
        r.raise_for_status()
        info = r.json()
        self.version, self.models, self.presets = info["version"], tuple(info["models"]), dict(info["presets"])
        self.prices = dict(info.get("prices") or {})
        self.runtime = info.get("runtime")
        self.warm = True

    async def score(self, text: str) -> PromptScores:
        data = await self._post("/v1/score", {"texts": [text]})
        if data.get("version") != self.version:
            raise EngineError(f"the feature worker now serves router {data.get('version')!r}, not {self.version!r}")
        return scores_from_json(data["results"][0])

    async def explain(self, scores: PromptScores, chosen: str, runner_up: str | None) -> dict[str, Any]:
        body = {"scores": scores_to_json(scores), "chosen": chosen, "runner_up": runner_up}
        return dict(await self._post("/v1/explain", body))

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if not self.warm:
            raise NotReady("the remote feature worker has not been reached yet")
        try:
            r = await self.client.post(f"{self.base_url}{path}", json=body, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise NotReady(f"the feature worker is unreachable ({type(exc).__name__})") from exc
        if r.status_code != 200:
            raise EngineError(f"the feature worker answered {r.status_code}")
        data: dict[str, Any] = r.json()
        return data
