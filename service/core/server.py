"""Running an app with uvicorn the way both services do: JSON logs, no uvicorn access log, bounded connections.

``serve_app(make_app, host, port, log_level, server_settings, workers=1)`` blocks; the gateway
(:func:`service.main.serve`) and the feature worker (:func:`service.worker_app.serve_worker`) both call it.
Logging is configured before the app is built, so start-up lines are JSON too. :func:`build_server` is the same
server without running it (tests serve the real app through it on a loopback socket).

The HTTP protocol is :class:`_GatewayHttpTools`: uvicorn's httptools (llhttp, C) parser, on uvloop where it is
installed (uvicorn's ``loop="auto"``), plus what plain uvicorn does not do:

- a request's headers must arrive within ``header_timeout_s`` of the connection opening (or, on a keep-alive
  connection, of the next request's first byte, or of the previous response when it was pipelined);
  otherwise the connection is closed. Without it a client sending partial headers holds a connection
  forever (slowloris);
- a request the parser rejects (a bad ``Content-Length``, a broken request line) gets the OpenAI error body,
  not uvicorn's plain-text 400;
- when the server begins to shut down it tells the app (``app.state.begin_shutdown(grace_s)``), so in-flight
  streams get ``shutdown_grace_s`` to finish and then end with an SSE error event; uvicorn's own graceful
  timeout is set a little longer, so their usage is still recorded before the lifespan closes.

All three live in the protocol class, which uvicorn builds in every process, so ``workers > 1`` (uvicorn's
multiprocess supervisor: N processes accept on one socket) serves exactly like one process. The protocol reads
its settings from :class:`_GatewayConfig`, which is pickled into each spawned process with the app factory.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import Multiprocess

from service.core.config import ServerSettings, idle_openmp_threads_sleep
from service.core.errors import error_body
from service.core.logging import configure_logging

__all__ = ["build_server", "serve_app"]

_SHUTDOWN_SLACK_S = 3.0  # after the streams' grace: time to write their error events and record usage
# A spawned process answers the supervisor's health pings only once it has imported everything: on a busy
# machine that takes longer than uvicorn's default 5 s, and the supervisor would kill and respawn it forever.
_WORKER_HEALTHCHECK_S = 60


class _GatewayConfig(uvicorn.Config):
    """uvicorn's config plus our :class:`ServerSettings`, where each connection's protocol finds them."""

    def __init__(self, app: Any, server_settings: ServerSettings, **options: Any) -> None:
        self.server_settings = server_settings
        super().__init__(
            app,
            http=_GatewayHttpTools,
            log_config=None,
            access_log=False,  # one JSON line per request comes from GatewayMiddleware
            timeout_keep_alive=max(1, round(server_settings.keep_alive_s)),
            timeout_graceful_shutdown=round(server_settings.shutdown_grace_s + _SHUTDOWN_SLACK_S),
            lifespan="on",
            **options,
        )


_HTTP_400 = json.dumps(
    error_body(
        "malformed HTTP request (check Content-Length and the headers)",
        "invalid_request_error",
        None,
        "invalid_http_request",
    )
).encode()


class _GatewayHttpTools(HttpToolsProtocol):
    config: _GatewayConfig

    def __init__(self, config: _GatewayConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout_s = config.server_settings.header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False  # the parser has begun a request whose headers are not complete yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _CoalescedWrites(transport, self.loop)))
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._header_timer is None and self._idle():
            self._arm_header_timer()  # the next request on a keep-alive connection started arriving

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm_header_timer()  # headers complete: the app's own timeouts take over
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_headers and not self.transport.is_closing():
            self._arm_header_timer()  # part of a pipelined next request is already here
        # else uvicorn's keep-alive timer covers the idle wait for the next request

    def _idle(self) -> bool:
        """No request is being served on this connection."""
        return self.cycle is None or self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._idle() and not self.transport.is_closing():
            self.logger.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._disarm_header_timer()
        head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
        self.transport.write(head + b"content-length: %d\r\n\r\n" % len(_HTTP_400) + _HTTP_400)
        self.transport.close()

    def shutdown(self) -> None:
        _begin_app_shutdown(self.app, self.config.server_settings.shutdown_grace_s)
        super().shutdown()


class _CoalescedWrites:
    """A transport whose writes made in one event-loop step go out in one ``send()``.

    uvicorn writes a response's head and its body separately; on a small JSON answer that is two syscalls
    (and two packets) where one does. Everything but ``write`` and ``close`` is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _begin_app_shutdown(app: Any, grace_s: float) -> None:
    """Call ``app.state.begin_shutdown(grace_s)`` on the app, looking through uvicorn's wrappers (``.app``)."""
    for _ in range(8):
        begin = getattr(getattr(app, "state", None), "begin_shutdown", None)
        if callable(begin):
            begin(grace_s)
            return
        app = getattr(app, "app", None)
        if app is None:
            return


def build_server(app: Any, settings: ServerSettings, host: str = "127.0.0.1", port: int = 0) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the protections above; run it with ``.run()`` (or ``.run(sockets)``)."""
    return uvicorn.Server(_GatewayConfig(app, settings, host=host, port=port))


def serve_app(
    make_app: Callable[[], Any],
    host: str,
    port: int,
    log_level: str,
    settings: ServerSettings,
    workers: int = 1,
) -> None:
    """Configure JSON logging, build the app, and run it on ``host:port`` until stopped.

    With ``workers > 1`` uvicorn's supervisor spawns that many processes sharing one listening socket, each
    building its own app: ``make_app`` must then be picklable (a module-level function or a
    ``functools.partial`` of one)."""
    idle_openmp_threads_sleep()  # before torch loads (in the app's lifespan)
    configure_logging(log_level)
    if workers == 1:
        build_server(make_app(), settings, host, port).run()
        return
    factory = functools.partial(_app_in_worker, make_app, log_level)
    config = _GatewayConfig(
        factory,
        settings,
        host=host,
        port=port,
        factory=True,
        workers=workers,
        timeout_worker_healthcheck=_WORKER_HEALTHCHECK_S,
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def _app_in_worker(make_app: Callable[[], Any], log_level: str) -> Any:
    configure_logging(log_level)  # a spawned process starts with Python's default logging
    return make_app()
